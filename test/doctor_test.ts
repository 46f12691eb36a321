// Tests of `addon-agent doctor` (SPEC 16) against a real runtime root, file
// source and filesystem store: a healthy host passes, and each way of
// breaking it fails its own line with what to change.

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import {
  freePort,
  MAIN_TS,
  newKey,
  publicKeyB64,
  publishFs,
  runDeno,
  signFor,
  withTempDir,
  writeAssignments,
  writeConfig,
} from "./_helpers.ts";

async function host(dir: string, extra: Record<string, unknown> = {}): Promise<string> {
  const key = await newKey();
  const bytes = "#!/bin/sh\nexec sleep 300\n";
  await publishFs(dir, "probe/1.0.0/probe", bytes);
  await writeAssignments(dir, [{
    addon_id: "probe",
    version: "1.0.0",
    delivery: "pushed_artifact",
    supervision: "agent_sidecar",
    artifact_object_key: "probe/1.0.0/probe",
    ...(await signFor(key, "probe", "1.0.0", bytes)),
  }]);
  return await writeConfig(dir, {
    object_store: { kind: "filesystem", root: `${dir}/store` },
    trust: { public_keys: [publicKeyB64(key)], require_signature: true },
    ...extra,
  });
}

function doctor(config: string) {
  return runDeno(["run", "-A", "--quiet", MAIN_TS, "doctor", "--config", config]);
}

function failed(stdout: string): string[] {
  return stdout.split("\n").filter((l) => l.startsWith("✘"));
}

Deno.test("doctor passes a healthy host: no ✘ line, exit 0", async () => {
  await withTempDir(async (dir) => {
    const r = await doctor(await host(dir));
    assertEquals(r.code, 0, r.stdout + r.stderr);
    assertEquals(failed(r.stdout), []);
    assertMatch(r.stdout, /✔ configuration .* decodes/);
    assertMatch(r.stdout, /✔ probe 1\.0\.0: .*probe\/1\.0\.0\/probe exists \(25 bytes\)/);
    assertMatch(r.stdout, /– no systemd_\* add-on assigned/);
  });
});

Deno.test("doctor names a missing artifact and what to publish", async () => {
  await withTempDir(async (dir) => {
    const config = await host(dir);
    await Deno.remove(`${dir}/store/probe/1.0.0/probe`);
    const r = await doctor(config);
    assertEquals(r.code, 1);
    assertEquals(failed(r.stdout).length, 1, r.stdout);
    assertMatch(
      r.stdout,
      /✘ probe 1\.0\.0: .*does not exist\n {4}fix: publish probe\/1\.0\.0\/probe/,
    );
  });
});

Deno.test("doctor names a loose runtime-root mode and the chmod that fixes it", async () => {
  await withTempDir(async (dir) => {
    const config = await host(dir);
    await Deno.chmod(`${dir}/root`, 0o777);
    const r = await doctor(config);
    assertEquals(r.code, 1);
    assertMatch(
      r.stdout,
      /✘ .*\/root is group- or world-writable \(mode 0777\)\n {4}fix: run: chmod go-w /,
    );
  });
});

Deno.test("doctor names an unreachable source", async () => {
  await withTempDir(async (dir) => {
    const config = await host(dir, {
      source: { kind: "control_plane", url: `http://127.0.0.1:${freePort()}` },
    });
    const r = await doctor(config);
    assertEquals(r.code, 1);
    assertMatch(r.stdout, /✘ the source .* does not answer: .*\n {4}fix: check source in /);
  });
});

Deno.test("doctor names an invalid trusted key by its field", async () => {
  await withTempDir(async (dir) => {
    const config = await host(dir, { trust: { public_keys: ["AAAA"], require_signature: true } });
    const r = await doctor(config);
    assertEquals(r.code, 1);
    assertMatch(r.stdout, /✘ configuration .* does not decode: .*trust\.public_keys\[0\]/);
  });
});

Deno.test("doctor with a bad flag is bad usage (exit 2)", async () => {
  const r = await runDeno(["run", "-A", "--quiet", MAIN_TS, "doctor", "--bogus"]);
  assertEquals(r.code, 2);
});

Deno.test("doctor refuses a token_file with a line break inside without quoting the token", async () => {
  await withTempDir(async (dir) => {
    // Deno's fetch would fail with `Invalid header value: "Bearer <token>"`, token and all.
    await Deno.writeTextFile(`${dir}/token`, "tok-5ec7et-part1\npart2\n", { mode: 0o600 });
    const config = await host(dir, {
      source: {
        kind: "control_plane",
        url: `http://127.0.0.1:${freePort()}`,
        token_file: `${dir}/token`,
      },
    });
    const r = await doctor(config);
    assertEquals(r.code, 1);
    assert(!(r.stdout + r.stderr).includes("5ec7et"), r.stdout + r.stderr);
    assertMatch(r.stdout, /✘ the source .* token_file .*\/token holds a line break/);
  });
});
