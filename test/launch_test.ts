/**
 * Launch preparation (`src/agent/launch.ts`): the one check a binary the
 * agent did not stage must pass — `os_package`'s `binary_path` and the host
 * binary a `pushed_artifact` falls back to — in the daemon's preparation and
 * in `sync`, against real files and the real filesystem store.
 */

import { assertEquals, assertRejects, assertStringIncludes } from "./_assert.ts";
import { withTempDir, writeAssignments, writeConfig } from "./_helpers.ts";
import { checkExecutable, prepareLaunch } from "../src/agent/launch.ts";
import { syncOnce } from "../src/agent/sync.ts";
import { deliveryContext, DeliveryError, storeDeliverer } from "../src/delivery/mod.ts";
import { openRuntimeRoot } from "../src/runtime/mod.ts";
import { decodeAssignment, hostPlatform, platformString } from "../src/protocol/mod.ts";
import { loadConfig } from "../src/config/mod.ts";
import { SYSTEM_CLOCK } from "../src/common/mod.ts";

const PLATFORM = hostPlatform();

/** `<dir>/bin/{tool (0755), data (0644), dir/}`. */
async function _files(dir: string): Promise<{ tool: string; data: string; sub: string }> {
  await Deno.mkdir(`${dir}/bin/dir`, { recursive: true });
  await Deno.writeTextFile(`${dir}/bin/tool`, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
  await Deno.chmod(`${dir}/bin/tool`, 0o755);
  await Deno.writeTextFile(`${dir}/bin/data`, "not a program\n");
  await Deno.chmod(`${dir}/bin/data`, 0o644);
  return { tool: `${dir}/bin/tool`, data: `${dir}/bin/data`, sub: `${dir}/bin/dir` };
}

Deno.test("checkExecutable() accepts an executable file and refuses anything else", async (t) => {
  await withTempDir(async (dir) => {
    const f = await _files(dir);
    await t.step("an absolute path to an executable file: itself", async () => {
      assertEquals(await checkExecutable(f.tool, "binary_path"), f.tool);
    });
    const refused: [string, string, string][] = [
      ["a relative path", "bin/tool", 'binary_path "bin/tool" must be an absolute path'],
      ["a missing file", `${dir}/bin/nope`, `binary_path ${dir}/bin/nope does not exist`],
      ["a file without an execute bit", f.data, `binary_path ${f.data} is not an executable file`],
      ["a directory", f.sub, `binary_path ${f.sub} is not an executable file`],
    ];
    for (const [what, path, message] of refused) {
      await t.step(`${what}: refused, saying why`, async () => {
        const e = await assertRejects(() => checkExecutable(path, "binary_path"), DeliveryError);
        assertEquals([e.message, e.kind], [message, "refused"]);
      });
    }
  });
});

Deno.test("prepareLaunch() runs the host binary only when it is executable", async (t) => {
  await withTempDir(async (dir) => {
    const f = await _files(dir);
    const cfgPath = await writeConfig(dir, {
      object_store: { kind: "filesystem", root: `${dir}/store` },
    });
    await Deno.mkdir(`${dir}/store`);
    const cfg = await loadConfig(cfgPath);
    const root = await openRuntimeRoot(cfg.runtime_root);
    const ctx = {
      layout: root,
      platform: PLATFORM,
      deliverer: storeDeliverer(await deliveryContext(cfg, root, PLATFORM)),
      clock: SYSTEM_CLOCK,
      hostBinaries: [`${dir}/bin/*`],
    };
    const hostBinary = (path: string) =>
      decodeAssignment(
        {
          addon_id: "probe",
          version: "1.0.0",
          delivery: "pushed_artifact",
          supervision: "agent_sidecar",
          binary_path: path,
        },
        "addons[0]",
        PLATFORM,
      );

    await t.step("a non-executable host file: refused before anything runs", async () => {
      const e = await assertRejects(
        () => prepareLaunch(ctx, hostBinary(f.data), {}),
        DeliveryError,
      );
      assertEquals(
        e.message,
        `no artifact for ${
          platformString(PLATFORM)
        }, and binary_path ${f.data} is not an executable file`,
      );
    });

    await t.step("an executable host file: launched as it is, with the add-on's env", async () => {
      const launch = await prepareLaunch(ctx, hostBinary(f.tool), {});
      assertEquals(launch.binary, f.tool);
      assertEquals(launch.env.ADDON_DATA_DIR, root.dataDir("probe"));
      assertEquals(JSON.parse(await Deno.readTextFile(root.configFile("probe"))), {});
    });
  });
});

Deno.test("syncOnce() reports a non-executable host binary as failed", async () => {
  await withTempDir(async (dir) => {
    const f = await _files(dir);
    await Deno.mkdir(`${dir}/store`);
    const cfg = await loadConfig(
      await writeConfig(dir, {
        object_store: { kind: "filesystem", root: `${dir}/store` },
        host_binaries: { allow: [`${dir}/bin/*`] },
      }),
    );
    const entry = (id: string, path: string) => ({
      addon_id: id,
      version: "1.0.0",
      delivery: "pushed_artifact",
      supervision: "agent_sidecar",
      binary_path: path,
    });
    await writeAssignments(dir, [entry("good", f.tool), entry("bad", f.data)]);
    const report = await syncOnce(cfg, await openRuntimeRoot(cfg.runtime_root), PLATFORM);
    const byId = Object.fromEntries(report.results.map((r) => [r.addon_id, r]));
    assertEquals(byId.good?.outcome, "host_binary");
    assertEquals(byId.bad?.outcome, "failed");
    assertStringIncludes(byId.bad?.message ?? "", `${f.data} is not an executable file`);
    assertEquals(report.ok, false);
  });
});
