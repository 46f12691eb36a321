/**
 * Garbage collection (SPEC 8): keep at most `keep_versions` staged versions
 * per add-on (never `current` or `previous`), and drop resumable partials
 * nobody wants any more, and the files of an add-on no longer assigned.
 *
 * @example
 * ```ts
 * import { Layout } from "./runtime_root.ts";
 * const layout = new Layout("/var/lib/addon-agent");
 * await collectVersions(layout, "net-probe", 3);
 * const wantedSha256s = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"];
 * await collectPartials(layout, new Set(wantedSha256s));
 * ```
 *
 * @module
 */

import { linkedVersion } from "./versions.ts";
import { removeIfExists } from "./fs_atomic.ts";
import { log } from "../common/mod.ts";
import type { Layout } from "./runtime_root.ts";

/** Remove the oldest staged versions beyond `keep`; returns the versions removed. */
export async function collectVersions(
  layout: Layout,
  addonId: string,
  keep: number,
): Promise<string[]> {
  const protectedVersions = new Set(
    [
      await linkedVersion(layout, addonId, "current"),
      await linkedVersion(layout, addonId, "previous"),
    ].filter((v): v is string => v !== null),
  );
  const staged: { version: string; at: number }[] = [];
  try {
    for await (const e of Deno.readDir(layout.versionsDir(addonId))) {
      if (!e.isDirectory) continue;
      const st = await Deno.lstat(layout.versionDir(addonId, e.name));
      staged.push({ version: e.name, at: st.mtime?.getTime() ?? 0 });
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  if (staged.length <= keep) return [];
  staged.sort((a, b) => b.at - a.at);
  let kept = 0;
  const removed: string[] = [];
  for (const s of staged) {
    if (protectedVersions.has(s.version) || kept < keep - protectedVersions.size) {
      if (!protectedVersions.has(s.version)) kept++;
      continue;
    }
    await removeIfExists(layout.versionDir(addonId, s.version));
    removed.push(s.version);
  }
  if (removed.length) log.info("removed old versions", { addon_id: addonId, versions: removed });
  return removed;
}

/** Remove `tmp/<sha256>.partial` files whose digest is not in `wanted`. */
export async function collectPartials(layout: Layout, wanted: ReadonlySet<string>): Promise<void> {
  for await (const e of Deno.readDir(layout.tmp)) {
    const m = /^([0-9a-f]{64})\.partial$/.exec(e.name);
    if (m && !wanted.has(m[1]!)) await removeIfExists(`${layout.tmp}/${e.name}`);
  }
}

/**
 * Remove what the agent keeps of an add-on that is no longer assigned: `last-good.json`,
 * the `current` and `previous` links, every staged version and `config.json`. Its `data/`
 * directory stays (an operator may want it; a re-assignment finds it again).
 */
export async function removeAddonFiles(layout: Layout, addonId: string): Promise<void> {
  await removeIfExists(layout.lastGood(addonId));
  await removeIfExists(layout.current(addonId));
  await removeIfExists(layout.previous(addonId));
  await removeIfExists(layout.versionsDir(addonId));
  await removeIfExists(layout.configFile(addonId));
}
