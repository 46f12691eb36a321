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

/**
 * Remove the oldest staged versions of `addonId` beyond `keep` (by staging time); returns the
 * versions removed. Never removes the versions `current` or `previous` point at, whatever
 * `keep` says; must be idempotent (a second call removes nothing more). No `versions/`
 * directory is nothing to do.
 *
 * @throws {Deno.errors.PermissionDenied} (or another I/O error) when `versions/` cannot be
 * listed or a version cannot be removed; versions removed before that stay removed.
 *
 * @example Keep three versions after a switch
 * ```ts
 * import { Layout } from "./runtime_root.ts";
 * const removed = await collectVersions(new Layout("/var/lib/addon-agent"), "net-probe", 3);
 * console.log(removed); // e.g. ["1.2.0"]
 * ```
 */
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

/**
 * Remove `tmp/<sha256>.partial` files whose digest is not in `wanted` (no assignment wants
 * those bytes any more); a partial still wanted stays for a resumed download.
 *
 * @throws {Deno.errors.NotFound} when `tmp/` is missing, or another I/O error from listing it.
 */
export async function collectPartials(layout: Layout, wanted: ReadonlySet<string>): Promise<void> {
  for await (const e of Deno.readDir(layout.tmp)) {
    const m = /^([0-9a-f]{64})\.partial$/.exec(e.name);
    if (m && !wanted.has(m[1]!)) await removeIfExists(`${layout.tmp}/${e.name}`);
  }
}

/**
 * Remove what the agent keeps of an add-on that is no longer assigned: `last-good.json`,
 * the `current` and `previous` links, every staged version and `config.json`. Its `data/`
 * directory stays (an operator may want it; a re-assignment finds it again). Must be
 * idempotent: what is already gone is skipped, so a removal cut short is finished by the next.
 *
 * @throws {Deno.errors.PermissionDenied} (or another I/O error) when something cannot be
 * removed; what was removed before stays removed.
 */
export async function removeAddonFiles(layout: Layout, addonId: string): Promise<void> {
  await removeIfExists(layout.lastGood(addonId));
  await removeIfExists(layout.current(addonId));
  await removeIfExists(layout.previous(addonId));
  await removeIfExists(layout.versionsDir(addonId));
  await removeIfExists(layout.configFile(addonId));
}
