/**
 * Garbage collection (SPEC 8): at most `keep_versions` staged versions per
 * add-on, never `current` or `previous`; partials nobody wants are dropped.
 */

import { assertEquals } from "./_assert.ts";
import {
  listTree,
  newKey,
  publishFs,
  runAgent,
  scriptAddon,
  sha256Hex,
  signFor,
  withTempDir,
  writeAssignments,
  writeConfig,
} from "./_helpers.ts";
import { collectPartials, collectVersions } from "../src/runtime/gc.ts";
import { Layout } from "../src/runtime/runtime_root.ts";

Deno.test("sync keeps at most keep_versions versions, never current or previous", async (t) => {
  await withTempDir(async (dir) => {
    const key = await newKey();
    const cfg = await writeConfig(dir, {
      object_store: { kind: "filesystem", root: `${dir}/store` },
      trust: { public_keys: [key.publicBase64] },
      limits: { keep_versions: 2 },
    });
    const versions = `${dir}/root/addons/gc/versions`;
    for (const v of ["1", "2", "3", "4"]) {
      await t.step(`after switching to ${v}`, async () => {
        const body = scriptAddon(`echo ${v}`);
        await publishFs(dir, `gc/${v}/gc`, body);
        await writeAssignments(dir, [{
          addon_id: "gc",
          version: v,
          delivery: "pushed_artifact",
          supervision: "agent_sidecar",
          artifact_object_key: `gc/${v}/gc`,
          ...(await signFor(key, "gc", v, body)),
        }]);
        const run = await runAgent(["sync", "--config", cfg]);
        assertEquals(run.code, 0, run.stderr);
        const kept = (await listTree(versions)).filter((p) => !p.includes("/"));
        const want = v === "1" ? ["1"] : [String(Number(v) - 1), v];
        assertEquals(kept, want);
        assertEquals(await Deno.readLink(`${dir}/root/addons/gc/current`), `versions/${v}`);
      });
    }
  });
});

Deno.test("collectVersions() removes the oldest beyond keep and protects current and previous", async (t) => {
  await withTempDir(async (dir) => {
    const layout = new Layout(dir);
    await Deno.mkdir(layout.versionsDir("a"), { recursive: true });
    // Staged in this order: v1 (oldest) … v5 (newest).
    for (const [i, v] of ["v1", "v2", "v3", "v4", "v5"].entries()) {
      await Deno.mkdir(layout.versionDir("a", v));
      const at = new Date(Date.UTC(2026, 0, 1, 0, i));
      await Deno.utime(layout.versionDir("a", v), at, at);
    }
    await t.step("an old current and previous survive; the newest fill the rest", async () => {
      await Deno.symlink("versions/v1", layout.current("a"));
      await Deno.symlink("versions/v2", layout.previous("a"));
      const removed = await collectVersions(layout, "a", 3);
      assertEquals(removed.sort(), ["v3", "v4"]);
      assertEquals((await listTree(layout.versionsDir("a"))).sort(), ["v1", "v2", "v5"]);
    });
    await t.step("nothing to do at or below keep", async () => {
      assertEquals(await collectVersions(layout, "a", 3), []);
      assertEquals(await collectVersions(layout, "missing", 3), []);
    });
  });
});

Deno.test("collectPartials() drops partials no assignment wants and keeps the rest", async () => {
  await withTempDir(async (dir) => {
    const layout = new Layout(dir);
    await Deno.mkdir(layout.tmp, { recursive: true });
    const wanted = sha256Hex("wanted");
    const gone = sha256Hex("gone");
    await Deno.writeTextFile(layout.partial(wanted), "w");
    await Deno.writeTextFile(layout.partial(gone), "g");
    await Deno.writeTextFile(`${layout.tmp}/other`, "o");
    await collectPartials(layout, new Set([wanted]));
    assertEquals(await listTree(layout.tmp), [`${wanted}.partial`, "other"]);
  });
});
