/**
 * The versions of an add-on and the `current`/`previous` links between them
 * (SPEC 6): what is staged, which version a link points at, and the atomic
 * switches of activation and rollback.
 *
 * @example Which version runs
 * ```ts
 * import { linkedVersion } from "./versions.ts";
 * import { Layout } from "./runtime_root.ts";
 * const v = await linkedVersion(new Layout("/var/lib/addon-agent"), "net-probe", "current");
 * ```
 *
 * @module
 */

import {
  assertRealDir,
  fsyncDir,
  readLinkOrNull,
  removeIfExists,
  switchSymlink,
} from "./fs_atomic.ts";
import type { Layout } from "./runtime_root.ts";

/** The `artifact.json` of a staged version. */
export interface StagedArtifact {
  addon_id: string;
  version: string;
  sha256: string;
  size: number;
  object_key: string;
  /** Base64 public key that verified the signature; null for an unsigned artifact. */
  key: string | null;
  staged_at: string;
  /** A bundle's archive format (SPEC 15); absent for one executable. */
  format?: "tar.gz" | "tar.zst";
  /** A bundle's entrypoint, relative to the version directory. */
  entrypoint?: string;
  /** A bundle's regular files (hard links included). */
  files?: number;
  /** A bundle's content bytes as unpacked. */
  unpacked_bytes?: number;
  /** sha256 of a bundle's entrypoint as unpacked (`sha256` is the archive's). */
  entrypoint_sha256?: string;
}

/**
 * The version `current` (or `previous`) of `addonId` points at, or null when the link is
 * missing or points anywhere but `versions/<version>`. Reads the link only (never what it
 * points at); changes nothing.
 *
 * @throws {Deno.errors.PermissionDenied} (or another I/O error) when the link cannot be read;
 * a missing link is null, not an error.
 *
 * @example
 * ```ts
 * import { Layout } from "./runtime_root.ts";
 * const v = await linkedVersion(new Layout("/var/lib/addon-agent"), "net-probe", "current");
 * console.log(v ?? "nothing current");
 * ```
 */
export async function linkedVersion(
  layout: Layout,
  addonId: string,
  which: "current" | "previous",
): Promise<string | null> {
  const target = await readLinkOrNull(
    which === "current" ? layout.current(addonId) : layout.previous(addonId),
  );
  if (target === null) return null;
  const m = /^versions\/([^/]+)$/.exec(target);
  return m ? m[1]! : null;
}

/** What {@linkcode activate} did. */
export interface Switched {
  /** Whether `current` changed (false: it already pointed at the version). */
  changed: boolean;
}

/**
 * Point `current` at `version`, moving the old `current` to `previous` first.
 *
 * @throws {NotADirectoryError} when `addons/<id>` is not a real directory (a planted symlink).
 */
export async function activate(
  layout: Layout,
  addonId: string,
  version: string,
): Promise<Switched> {
  await assertRealDir(layout.addonDir(addonId));
  const oldCurrent = await readLinkOrNull(layout.current(addonId));
  const target = `versions/${version}`;
  if (oldCurrent === target) return { changed: false };
  // A `current` that points nowhere (a damaged version moved away) never becomes `previous`.
  if (oldCurrent !== null && await _resolves(layout, addonId, oldCurrent)) {
    await switchSymlink(layout.previous(addonId), oldCurrent);
  } else if (await readLinkOrNull(layout.previous(addonId)) === target) {
    await removeIfExists(layout.previous(addonId)); // no rollback to the version itself
  }
  await switchSymlink(layout.current(addonId), target);
  return { changed: true };
}

/**
 * Roll `current` back to `previous` and remove `previous` (SPEC 8); returns the version now
 * current, or null when there was nothing to roll back to (no `previous`, or one naming no
 * staged `versions/<version>` directory: it is removed and `current` is left as it was).
 * Each switch is an atomic rename, and the add-on directory is fsynced before it returns.
 * Idempotent in effect: a second call finds no `previous` and returns null.
 *
 * @throws {Deno.errors.PermissionDenied} (or another I/O error) when a link cannot be read,
 * switched or removed; `current` then still names a whole version (the old or the new).
 *
 * @example After a crash loop on probation
 * ```ts
 * import { Layout } from "./runtime_root.ts";
 * const back = await rollBack(new Layout("/var/lib/addon-agent"), "net-probe");
 * console.log(back === null ? "nothing to roll back to" : `current is ${back} again`);
 * ```
 */
export async function rollBack(layout: Layout, addonId: string): Promise<string | null> {
  const prev = await readLinkOrNull(layout.previous(addonId));
  if (prev === null) return null;
  if (!(await _resolves(layout, addonId, prev))) {
    // `previous` names no staged version (out of versions/, gone): nothing to switch back to.
    await removeIfExists(layout.previous(addonId));
    await fsyncDir(layout.addonDir(addonId));
    return null;
  }
  await switchSymlink(layout.current(addonId), prev);
  await removeIfExists(layout.previous(addonId));
  await fsyncDir(layout.addonDir(addonId));
  return /^versions\/([^/]+)$/.exec(prev)?.[1] ?? null;
}

/**
 * Whether link target `target` names a staged version: `versions/<version>`, a real directory
 * (not a link). Anything else — a path out of `versions/`, an absolute path, a file — points
 * nowhere the agent may use, even when it resolves.
 */
async function _resolves(layout: Layout, addonId: string, target: string): Promise<boolean> {
  if (!/^versions\/[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/.test(target)) return false;
  try {
    return (await Deno.lstat(`${layout.addonDir(addonId)}/${target}`)).isDirectory;
  } catch {
    return false;
  }
}

/**
 * Repair `current` and `previous` links of `addonId` that point nowhere
 * (SPEC 8) — dangling, or at anything but a real `versions/<version>`
 * directory (a path out of `versions/`, a file): such a `current` is pointed
 * at `ranVersion` (the version the state says ran) when that is staged, else
 * removed; such a `previous` is removed. Returns a description of each repair.
 *
 * @example At start, from `state.json`
 * ```ts
 * import { Layout } from "./runtime_root.ts";
 * await repairLinks(new Layout("/var/lib/addon-agent"), "net-probe", "1.4.2");
 * ```
 */
export async function repairLinks(
  layout: Layout,
  addonId: string,
  ranVersion: string | null,
): Promise<string[]> {
  const done: string[] = [];
  const cur = await readLinkOrNull(layout.current(addonId));
  if (cur !== null && !(await _resolves(layout, addonId, cur))) {
    const to = ranVersion === null ? null : `versions/${ranVersion}`;
    if (to !== null && to !== cur && await _resolves(layout, addonId, to)) {
      await switchSymlink(layout.current(addonId), to);
      done.push(`current ${cur} -> ${to}`);
    } else {
      await removeIfExists(layout.current(addonId));
      done.push(`current ${cur} removed`);
    }
  }
  const prev = await readLinkOrNull(layout.previous(addonId));
  if (prev !== null && !(await _resolves(layout, addonId, prev))) {
    await removeIfExists(layout.previous(addonId));
    done.push(`previous ${prev} removed`);
  }
  if (done.length) await fsyncDir(layout.addonDir(addonId));
  return done;
}
