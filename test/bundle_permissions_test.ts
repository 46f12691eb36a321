/**
 * A bundle synced by the agent under its REAL permission set (`-P=agent`):
 * reading the archive through `node:fs`, unpacking with symlinks (made by
 * `ln -s`, since Deno refuses `symlink(2)` under path-scoped grants) and hard
 * links, and flushing the tree with `sync -f` all work within the set.
 */

import { assertEquals } from "./_assert.ts";
import {
  MAIN_TS,
  newKey,
  publishFs,
  signFor,
  syncJson,
  withTempDir,
  writeAssignments,
} from "./_helpers.ts";
import { baseEnv, runUnderSet, sandbox, sandboxConfig } from "./_permission_sandbox.ts";
import { hostileBundle } from "./_bundles.ts";

Deno.test("the agent permission set syncs a bundle with symlinks and hard links", async () => {
  await withTempDir(async (dir) => {
    const sb = await sandbox(dir);
    const key = await newKey();
    const bytes = await hostileBundle([
      { name: "bin/probe", body: "#!/bin/sh\necho probe\n", mode: 0o755 },
      { name: "lib/libprobe.so.1", body: "not really a library" },
      { name: "lib/libprobe.so", type: "symlink", linkname: "libprobe.so.1" },
      { name: "lib/copy.so.1", type: "link", linkname: "lib/libprobe.so.1" },
    ], "tar.zst");
    // The filesystem store lives below the config dir, which the set may read.
    await publishFs(sb.etc, "probe/1.0.0/probe.tar.zst", bytes);
    const cfg = await sandboxConfig(sb, {
      object_store: { kind: "filesystem", root: `${sb.etc}/store` },
      trust: { public_keys: [key.publicBase64], require_signature: true },
    });
    await writeAssignments(sb.etc, [{
      addon_id: "probe",
      version: "1.0.0",
      delivery: "pushed_artifact",
      supervision: "agent_sidecar",
      artifact_object_key: "probe/1.0.0/probe.tar.zst",
      artifact_format: "tar.zst",
      entrypoint: "bin/probe",
      ...(await signFor(key, "probe", "1.0.0", bytes)),
    }]);
    const run = await runUnderSet(sb, MAIN_TS, ["sync", "--config", cfg, "--json"], baseEnv());
    assertEquals(run.code, 0, run.stderr);
    assertEquals(syncJson(run).results.map((r) => r.outcome), ["current"]);
    const v = `${sb.root}/addons/probe/versions/1.0.0`;
    assertEquals(await Deno.readLink(`${v}/lib/libprobe.so`), "libprobe.so.1");
    assertEquals(
      (await Deno.stat(`${v}/lib/copy.so.1`)).ino,
      (await Deno.stat(`${v}/lib/libprobe.so.1`)).ino,
    );
    assertEquals(await Deno.readTextFile(`${v}/bin/probe`), "#!/bin/sh\necho probe\n");
  });
});
