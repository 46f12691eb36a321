// Tests of `addon-agent diagnostics` (SPEC 16): secrets planted in every
// place the agent can see them never reach the archive, and the archive holds
// what support needs.

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { gunzipSync } from "node:zlib";
import { unpackTar } from "modern-tar";
import {
  freePort,
  MAIN_TS,
  newKey,
  publishFs,
  runDeno,
  S3_ENV,
  sha256Hex,
  signFor,
  withTempDir,
  writeAssignments,
  writeConfig,
} from "./_helpers.ts";
import { baseEnv, runUnderSet, sandbox, sandboxConfig } from "./_permission_sandbox.ts";

const SECRETS = {
  env: "SECRET-ENV-5f1c",
  config: "SECRET-CONFIG-77aa",
  args: "SECRET-ARG-0b3e",
  token: "SECRET-TOKEN-c0de",
  key: "SECRET-KEYFILE-9d9d",
  aws: "SECRET-AWS-4242",
  url: "SECRET-URLPW-1717",
  override: "SECRET-OVERRIDE-ee01",
  lastGood: "SECRET-LASTGOOD-3131",
  data: "SECRET-DATA-abab",
};

Deno.test("diagnostics writes the support archive with every planted secret redacted", async () => {
  await withTempDir(async (dir) => {
    const key = await newKey();
    const bytes = "#!/bin/sh\nexec sleep 300\n";
    await publishFs(dir, "probe/1.0.0/probe", bytes);
    await writeAssignments(dir, [{
      addon_id: "probe",
      version: "1.0.0",
      delivery: "pushed_artifact",
      supervision: "agent_sidecar",
      artifact_object_key: "probe/1.0.0/probe",
      env: { API_TOKEN: SECRETS.env },
      config: { password: SECRETS.config, nested: { deep: SECRETS.config } },
      args: ["--secret", SECRETS.args],
      ...(await signFor(key, "probe", "1.0.0", bytes)),
    }]);
    const store = { object_store: { kind: "filesystem", root: `${dir}/store` } };
    let config = await writeConfig(dir, {
      ...store,
      trust: { public_keys: [key.publicBase64], require_signature: true },
    });
    const sync = await runDeno(["run", "-A", "--quiet", MAIN_TS, "sync", "--config", config]);
    assertEquals(sync.code, 0, sync.stderr);

    // The daemon keeps the document it applied in state.json (`pushed`); plant it as it would.
    const statePath = `${dir}/root/state.json`;
    const state = JSON.parse(await Deno.readTextFile(statePath));
    state.pushed = JSON.parse(await Deno.readTextFile(`${dir}/assignments.json`));
    await Deno.writeTextFile(statePath, JSON.stringify(state), { mode: 0o600 });
    // Plant a secret everywhere else the agent can see one.
    await Deno.writeTextFile(`${dir}/token`, SECRETS.token, { mode: 0o600 });
    await Deno.writeTextFile(`${dir}/client.key`, SECRETS.key, { mode: 0o600 });
    await Deno.writeTextFile(
      `${dir}/addons.local.json`,
      JSON.stringify({ addons: [{ addon_id: "probe", env: { PW: SECRETS.override } }] }),
      { mode: 0o600 },
    );
    await Deno.writeTextFile(
      `${dir}/root/addons/probe/last-good.json`,
      JSON.stringify({
        assignment: { addon_id: "probe", env: { K: SECRETS.lastGood }, args: [SECRETS.lastGood] },
      }),
      { mode: 0o600 },
    );
    await Deno.mkdir(`${dir}/root/addons/probe/data`, { recursive: true });
    await Deno.writeTextFile(`${dir}/root/addons/probe/data/cache.txt`, SECRETS.data);
    config = await writeConfig(dir, {
      ...store,
      trust: { public_keys: [key.publicBase64], require_signature: true },
      source: {
        kind: "control_plane",
        url: `http://agent:${SECRETS.url}@127.0.0.1:${freePort()}`,
        token_file: `${dir}/token`,
        key_file: `${dir}/client.key`,
        cert_file: `${dir}/client.crt`,
      },
    });

    const out = `${dir}/diag.tar.gz`;
    const r = await runDeno(
      ["run", "-A", "--quiet", MAIN_TS, "diagnostics", "--config", config, "--out", out],
      { env: { ...S3_ENV, AWS_SECRET_ACCESS_KEY: SECRETS.aws } },
    );
    assertEquals(r.code, 0, r.stderr);
    assertEquals((await Deno.stat(out)).mode! & 0o777, 0o600);
    const tar = gunzipSync(await Deno.readFile(out));
    const text = new TextDecoder().decode(tar);
    for (const [where, secret] of Object.entries(SECRETS)) {
      assert(!text.includes(secret), `the ${where} secret leaked into the archive`);
    }
    const entries = await unpackTar(tar);
    const names = entries.map((e) => e.header.name.replace(/^addon-agent-diagnostics\//, ""));
    for (
      const n of [
        "version.txt",
        "doctor.txt",
        "agent.json",
        "addons.local.json",
        "state.json",
        "document.json",
        "status.json",
        "addons/probe/last-good.json",
        "addons/probe/versions/1.0.0/artifact.json",
        "listing.txt",
      ]
    ) assert(names.includes(n), `${n} in ${names}`);
    const file = (n: string) =>
      new TextDecoder().decode(
        entries.find((e) => e.header.name === `addon-agent-diagnostics/${n}`)!.data,
      );
    const doc = JSON.parse(file("document.json"));
    assertEquals(doc.addons[0].env, { API_TOKEN: "<redacted>" });
    assertEquals(doc.addons[0].args, "<redacted>");
    assertEquals(doc.addons[0].config, "<redacted>");
    assertEquals(JSON.parse(file("agent.json")).source.token_file, `${dir}/token`);
    assertMatch(
      file("listing.txt"),
      /^- 0[0-7]{3} \d+:\d+ +\d+ addons\/probe\/data\/cache\.txt$/m,
    );
    assertMatch(file("listing.txt"), /^l 0777 .* addons\/probe\/current -> versions\/1\.0\.0$/m);
    assertMatch(file("doctor.txt"), /^✘ the source .* does not answer/m);
  });
});

Deno.test("diagnostics without --out is bad usage (exit 2)", async () => {
  const r = await runDeno(["run", "-A", "--quiet", MAIN_TS, "diagnostics"]);
  assertEquals(r.code, 2);
  assertMatch(r.stderr, /--out is required/);
});

/** Build an archive with the real program, with a deadline (a read that blocks must not hang it). */
async function _diagnostics(config: string, out: string): Promise<{ code: number; text: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", MAIN_TS, "diagnostics", "--config", config, "--out", out],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const deadline = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const r = await child.output();
  clearTimeout(deadline);
  const stderr = new TextDecoder().decode(r.stderr);
  assert(r.signal === null, `diagnostics hung and was killed: ${stderr}`);
  assertEquals(r.code, 0, stderr);
  return { code: r.code, text: new TextDecoder().decode(gunzipSync(await Deno.readFile(out))) };
}

Deno.test("diagnostics reads nothing through links, FIFOs or huge files planted in the runtime root", async () => {
  await withTempDir(async (dir) => {
    const bytes = "#!/bin/sh\nexec sleep 300\n";
    await publishFs(dir, "probe/1.0.0/probe", bytes);
    await writeAssignments(dir, [{
      addon_id: "probe",
      version: "1.0.0",
      delivery: "pushed_artifact",
      supervision: "agent_sidecar",
      artifact_object_key: "probe/1.0.0/probe",
      artifact_sha256: sha256Hex(bytes),
    }]);
    const config = await writeConfig(dir, {
      object_store: { kind: "filesystem", root: `${dir}/store` },
    });
    const sync = await runDeno(["run", "-A", "--quiet", MAIN_TS, "sync", "--config", config]);
    assertEquals(sync.code, 0, sync.stderr);
    const token = "LINKED-6a6a-TOKEN"; // JSON.parse's message would quote its first 10 characters
    const outside = "SECRET-OUTSIDE-JSON-7b7b";
    await Deno.writeTextFile(`${dir}/token`, token, { mode: 0o600 });
    await Deno.mkdir(`${dir}/elsewhere/9.9.9`, { recursive: true });
    await Deno.writeTextFile(`${dir}/elsewhere/9.9.9/artifact.json`, JSON.stringify({ outside }));
    const probe = `${dir}/root/addons/probe`;
    await Deno.remove(`${probe}/last-good.json`).catch(() => {});
    await Deno.symlink(`${dir}/token`, `${probe}/last-good.json`);
    await Deno.remove(`${probe}/versions/1.0.0/artifact.json`);
    await Deno.symlink(`${dir}/token`, `${probe}/versions/1.0.0/artifact.json`);
    // A whole versions/ directory that is a link elsewhere.
    await Deno.mkdir(`${dir}/root/addons/linked`, { mode: 0o700 });
    await Deno.symlink(`${dir}/elsewhere`, `${dir}/root/addons/linked/versions`);
    // A FIFO nobody writes to, and a sparse 1 GiB file.
    await Deno.mkdir(`${dir}/root/addons/fifo/versions/1.0.0`, { recursive: true, mode: 0o700 });
    const mk = await new Deno.Command("mkfifo", {
      args: [`${dir}/root/addons/fifo/last-good.json`],
    }).output();
    assertEquals(mk.code, 0);
    const big = await Deno.open(`${dir}/root/addons/fifo/versions/1.0.0/artifact.json`, {
      write: true,
      create: true,
      mode: 0o600,
    });
    await big.truncate(1 << 30);
    big.close();

    const { text } = await _diagnostics(config, `${dir}/diag.tar.gz`);
    assert(!text.includes(token.slice(0, 8)), "a linked token file was read into the archive");
    assert(!text.includes(outside), "a file behind a linked versions/ was read into the archive");
    assert(text.length < 4 << 20, `the archive holds ${text.length} bytes`);
    assertMatch(text, /addons\/probe\/last-good\.json -> /, "the listing shows the link");
  });
});

Deno.test("diagnostics quotes no part of a file that is not valid JSON, or not a JSON object", async () => {
  await withTempDir(async (dir) => {
    const secret = "SECRET-UNQUOTED-8c8c";
    const config = await writeConfig(dir, {
      object_store: { kind: "filesystem", root: `${dir}/store` },
    });
    await writeAssignments(dir, []);
    // An operator's edit with a value left unquoted: not JSON, so ignored, and never quoted.
    await Deno.writeTextFile(
      `${dir}/addons.local.json`,
      `{"addons":[{"addon_id":"probe","env":{"PW":${secret}}}]}`,
      { mode: 0o600 },
    );
    const { text } = await _diagnostics(config, `${dir}/diag.tar.gz`);
    assert(!text.includes(secret.slice(0, 10)), "a snippet of the override reached the archive");
    // A token of digits is valid JSON: an override linked to it by mistake shows nothing of it.
    await Deno.writeTextFile(`${dir}/token`, "81725364519\n", { mode: 0o600 });
    await Deno.remove(`${dir}/addons.local.json`);
    await Deno.symlink(`${dir}/token`, `${dir}/addons.local.json`);
    const linked = await _diagnostics(config, `${dir}/diag2.tar.gz`);
    assert(!linked.text.includes("81725364519"), "the token reached the archive");
    assertMatch(linked.text, /not a JSON object \(a number\); content left out/);
    assertMatch(text, /not valid JSON at line 1 column \d+/);
  });
});

Deno.test("doctor and diagnostics run under the agent's own permission set", async () => {
  await withTempDir(async (dir) => {
    const sb = await sandbox(dir);
    const bytes = "#!/bin/sh\nexec sleep 300\n";
    await Deno.mkdir(`${sb.etc}/store/probe/1.0.0`, { recursive: true });
    await Deno.writeTextFile(`${sb.etc}/store/probe/1.0.0/probe`, bytes);
    await Deno.writeTextFile(
      `${sb.etc}/assignments.json`,
      JSON.stringify({
        config_version: "1",
        addons: [{
          addon_id: "probe",
          version: "1.0.0",
          delivery: "pushed_artifact",
          supervision: "agent_sidecar",
          artifact_object_key: "probe/1.0.0/probe",
          artifact_sha256: sha256Hex(bytes),
        }],
      }),
    );
    const config = await sandboxConfig(sb, {
      object_store: { kind: "filesystem", root: `${sb.etc}/store` },
    });
    const sync = await runUnderSet(sb, MAIN_TS, ["sync", "--config", config], baseEnv());
    assertEquals(sync.code, 0, sync.stderr);
    const doctor = await runUnderSet(sb, MAIN_TS, ["doctor", "--config", config], baseEnv());
    assert(
      !/NotCapable|Requires .* access|\n\s+at /.test(doctor.stdout + doctor.stderr),
      doctor.stdout + doctor.stderr,
    );
    assertMatch(doctor.stdout, /✔ probe 1\.0\.0: .* exists \(25 bytes\)/);
    const out = `${sb.root}/diag.tar.gz`;
    const diag = await runUnderSet(
      sb,
      MAIN_TS,
      ["diagnostics", "--config", config, "--out", out],
      baseEnv(),
    );
    assertEquals(diag.code, 0, diag.stderr);
    const text = new TextDecoder().decode(gunzipSync(await Deno.readFile(out)));
    assert(!/NotCapable|Requires .* access/.test(text), text);
    assertMatch(text, /"object_key": "probe\/1\.0\.0\/probe"/);
  });
});
