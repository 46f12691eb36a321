/**
 * A bundled example: publish a signed example add-on into a filesystem
 * store in a temp dir, run `addon-agent sync` against it into a temp runtime
 * root, and print `addon-agent status`. Everything is removed at the end.
 *
 * Run: `deno task example`
 *
 * @module
 */

const here = new URL(".", import.meta.url).pathname;
const mainTs = new URL("../main.ts", import.meta.url).pathname;

async function _agent(args: string[]): Promise<{ code: number; stdout: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", mainTs, ...args, "--log-format", "text"],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  return { code: out.code, stdout: new TextDecoder().decode(out.stdout) };
}

function _step(text: string): void {
  console.log(`\n== ${text}`);
}

const dir = await Deno.makeTempDir({ prefix: "addon-agent-example-" });
try {
  _step("1. the publisher makes a signing key (addon-agent keygen)");
  await _agent(["keygen", "--out", `${dir}/keys`]);
  const pub = (await Deno.readTextFile(`${dir}/keys/signing.pub`)).trim();
  console.log(`public key: ${pub}`);

  _step("2. the publisher builds an add-on and signs it for linux/amd64 (addon-agent sign)");
  const { hostPlatform } = await import("../src/protocol/platform.ts");
  const p = hostPlatform();
  const store = `${dir}/store`;
  await Deno.mkdir(`${store}/hello/1.0.0`, { recursive: true });
  const artifact = `${store}/hello/1.0.0/hello`;
  await Deno.copyFile(`${here}/hello_addon.sh`, artifact);
  const signed = await _agent([
    "sign",
    "--key",
    `${dir}/keys/signing.key`,
    "--addon-id",
    "hello",
    "--version",
    "1.0.0",
    "--os",
    p.os,
    "--arch",
    p.arch,
    artifact,
  ]);
  const sig = JSON.parse(signed.stdout) as { artifact_sha256: string; artifact_signature: string };
  console.log(signed.stdout.trim());

  _step("3. the operator's assignment and agent.json (file source, filesystem store)");
  await Deno.writeTextFile(
    `${dir}/assignments.json`,
    JSON.stringify(
      {
        config_version: "example-1",
        addons: [{
          addon_id: "hello",
          version: "1.0.0",
          delivery: "pushed_artifact",
          supervision: "agent_sidecar",
          binary_path: "/usr/lib/hello/hello",
          args: ["--greeting", "hi"],
          artifact_object_key: "hello/1.0.0/hello",
          ...sig,
        }],
      },
      null,
      2,
    ),
  );
  await Deno.mkdir(`${dir}/root`, { mode: 0o755 });
  await Deno.writeTextFile(
    `${dir}/agent.json`,
    JSON.stringify(
      {
        agent_id: "example-host",
        runtime_root: `${dir}/root`,
        source: { kind: "file", path: `${dir}/assignments.json` },
        object_store: { kind: "filesystem", root: store },
        trust: { public_keys: [pub], require_signature: true },
      },
      null,
      2,
    ),
  );
  console.log(await Deno.readTextFile(`${dir}/agent.json`));

  _step("4. addon-agent sync: fetch, verify sha256 and signature, stage, switch current");
  const sync = await _agent(["sync", "--config", `${dir}/agent.json`]);
  console.log(sync.stdout.trim());

  _step("5. addon-agent status");
  const status = await _agent(["status", "--config", `${dir}/agent.json`]);
  console.log(status.stdout.trim());
  console.log(`\ncurrent -> ${await Deno.readLink(`${dir}/root/addons/hello/current`)}`);
  if (sync.code !== 0) Deno.exit(1);
} finally {
  await Deno.remove(dir, { recursive: true });
}
