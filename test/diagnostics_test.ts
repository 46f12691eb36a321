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
  signFor,
  withTempDir,
  writeAssignments,
  writeConfig,
} from "./_helpers.ts";

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
