/**
 * Crash-safe file operations: write to a temporary file in the same real
 * directory, fsync, rename into place, fsync the directory.
 *
 * @example Write a file atomically
 * ```ts
 * await writeFileAtomic("/var/lib/addon-agent/state.json", JSON.stringify({ addons: {} }));
 * ```
 *
 * @module
 */

import type * as fs from "node:fs";
import { NotRegularFileError, openNoFollow } from "../common/mod.ts";

/** A path that is not a real directory where one was required (a planted symlink, a file). */
export class NotADirectoryError extends Error {
  /** Make the error for `path`, saying what was found there. */
  constructor(readonly path: string, found: string) {
    super(`${path} must be a real directory, found ${found}; refusing to write through it`);
    this.name = "NotADirectoryError";
  }
}

/**
 * Throw unless `path` is a real directory according to `lstat` (symlinks are refused).
 *
 * @throws {NotADirectoryError} when `path` is a symlink or not a directory.
 * @throws {Deno.errors.NotFound} when `path` does not exist.
 */
export async function assertRealDir(path: string): Promise<void> {
  const st = await Deno.lstat(path);
  if (st.isSymlink) throw new NotADirectoryError(path, "a symlink");
  if (!st.isDirectory) throw new NotADirectoryError(path, "something that is not a directory");
}

/**
 * Create `path` (mode `mode`) if missing, then check it is a real directory.
 *
 * @throws {NotADirectoryError} when `path` is a symlink or not a directory.
 */
export async function ensureRealDir(path: string, mode = 0o755): Promise<void> {
  try {
    await Deno.mkdir(path, { mode });
  } catch (e) {
    if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
  }
  await assertRealDir(path);
}

/** fsync a directory so a rename inside it survives a power loss. */
export async function fsyncDir(path: string): Promise<void> {
  const f = await Deno.open(path, { read: true });
  try {
    await f.sync();
  } finally {
    f.close();
  }
}

/** Whether `name` is a temporary file of {@linkcode writeFileAtomic} (`.<name>.<hex8>.tmp`). */
export function isAtomicTemp(name: string): boolean {
  return /^\..+\.[0-9a-f]{8}\.tmp$/.test(name);
}

/** Whether `name` is a temporary link of {@linkcode switchSymlink} (`<name>.<hex8>.new`). */
export function isSymlinkTemp(name: string): boolean {
  return /^.+\.[0-9a-f]{8}\.new$/.test(name);
}

/**
 * Remove the temporaries that an interrupted {@linkcode writeFileAtomic} or
 * {@linkcode switchSymlink} left in `dir` (a kill -9 between create and
 * rename). Only regular files and symlinks of those exact name shapes go;
 * a missing `dir` is fine. Returns the names removed.
 *
 * @example Sweep the runtime root at start
 * ```ts
 * const removed = await sweepAtomicTemps("/var/lib/addon-agent");
 * ```
 */
export async function sweepAtomicTemps(dir: string): Promise<string[]> {
  const removed: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      const file = e.isFile && isAtomicTemp(e.name);
      const link = e.isSymlink && isSymlinkTemp(e.name);
      if (!file && !link) continue;
      try {
        await Deno.remove(`${dir}/${e.name}`);
        removed.push(e.name);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return removed;
    throw e;
  }
  return removed;
}

function _dirOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

/**
 * Write `data` to `path` atomically: a fresh temp file beside it (created exclusively, `mode`),
 * fsync, rename over `path`, fsync the directory. A reader sees the old content or the new,
 * never a part, and after a crash one of them is on disk; a link at `path` is replaced, not
 * followed. A temp left by a kill between create and rename is swept by
 * {@linkcode sweepAtomicTemps}.
 *
 * @throws {NotADirectoryError} when the directory of `path` is a symlink or no directory.
 * @throws {Deno.errors.PermissionDenied} (or another I/O error, e.g. a full disk or a read-only
 * file system) when it cannot be written; `path` is then as it was and no temp stays.
 *
 * @example
 * ```ts
 * await writeFileAtomic("/var/lib/addon-agent/state.json", "{}\n", 0o600);
 * ```
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  mode = 0o644,
): Promise<void> {
  const dir = _dirOf(path);
  await assertRealDir(dir);
  const tmp = `${dir}/.${path.slice(dir.length + 1)}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  const f = await Deno.open(tmp, { write: true, createNew: true, mode });
  try {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    let off = 0;
    while (off < bytes.length) off += await f.write(bytes.subarray(off));
    await f.sync();
  } catch (e) {
    f.close();
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  f.close();
  try {
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  await fsyncDir(dir);
}

/**
 * {@linkcode writeFileAtomic} unless `path` is already a regular file (not a link) holding
 * exactly `data` with no permission bits beyond `mode`: an add-on whose files are as they should
 * be starts from a runtime root that is read-only (SPEC 8). Returns whether it wrote.
 *
 * @example
 * ```ts
 * await writeFileAtomicIfChanged("/var/lib/addon-agent/addons/net-probe/config.json", "{}\n", 0o640);
 * ```
 */
export async function writeFileAtomicIfChanged(
  path: string,
  data: string | Uint8Array,
  mode = 0o644,
): Promise<boolean> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  let fh: fs.promises.FileHandle | null = null;
  try {
    // One open, never through a link, never waiting on a FIFO: fstat says what it is.
    fh = await openNoFollow(path);
    const st = await fh.stat();
    if (st.isFile() && st.size === bytes.length && (st.mode & 0o7777 & ~mode) === 0) {
      const have = new Uint8Array(bytes.length + 1);
      let n = 0;
      for (;;) {
        const { bytesRead } = await fh.read(have, n, have.length - n, null);
        if (bytesRead === 0 || (n += bytesRead) === have.length) break;
      }
      if (n === bytes.length && bytes.every((b, i) => b === have[i])) return false;
    }
  } catch (e) {
    // A link is replaced, not followed.
    if (!(e instanceof NotRegularFileError) && (e as { code?: string }).code !== "ENOENT") throw e;
  } finally {
    await fh?.close();
  }
  await writeFileAtomic(path, bytes, mode);
  return true;
}

/**
 * Point symlink `linkPath` at `target` atomically: a fresh link renamed over the old one, then
 * the directory fsynced. `linkPath` names the old target or the new one at every moment.
 *
 * @throws {NotADirectoryError} when the directory of `linkPath` is a symlink or no directory.
 * @throws {Deno.errors.PermissionDenied} (or another I/O error) when the link cannot be made or
 * renamed; `linkPath` is then as it was and no temporary link stays.
 *
 * @example
 * ```ts
 * await switchSymlink("/var/lib/addon-agent/addons/net-probe/current", "versions/1.4.2");
 * ```
 */
export async function switchSymlink(linkPath: string, target: string): Promise<void> {
  const dir = _dirOf(linkPath);
  await assertRealDir(dir);
  const tmp = `${linkPath}.${crypto.randomUUID().slice(0, 8)}.new`;
  await makeSymlink(target, tmp);
  try {
    await Deno.rename(tmp, linkPath);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  await fsyncDir(dir);
}

/**
 * `symlink(2)`: create `path` pointing at `target` (never replacing `path`).
 * Deno refuses `Deno.symlink` under path-scoped read/write grants (the
 * agent's permission set), so then `ln -s` does it: the agent may run
 * programs anyway, and only the link's own path is written.
 *
 * @example
 * ```ts
 * await makeSymlink("bin/net-probe", "/var/lib/addon-agent/tmp/stage-x/net-probe");
 * ```
 */
export async function makeSymlink(target: string, path: string): Promise<void> {
  try {
    await Deno.symlink(target, path);
    return;
  } catch (e) {
    if (!(e instanceof Deno.errors.NotCapable)) throw e;
  }
  const out = await new Deno.Command("ln", {
    args: ["-s", "--", target, path],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) {
    const why = new TextDecoder().decode(out.stderr).trim();
    throw new Error(`ln -s ${target} ${path} failed (exit ${out.code}): ${why}`);
  }
}

/**
 * Read a symlink's target (the text, not followed), or null when nothing is at `path`.
 *
 * @throws {Error} when something other than a symlink is at `path` (`EINVAL`) or it cannot be
 * read (`PermissionDenied`); only a missing path is null.
 */
export async function readLinkOrNull(path: string): Promise<string | null> {
  try {
    return await Deno.readLink(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/**
 * Remove `path` (recursively; a link itself, never what it points at); idempotent: a path
 * already gone is fine.
 *
 * @throws {Deno.errors.PermissionDenied} (or another I/O error) when it cannot be removed.
 */
export async function removeIfExists(path: string): Promise<void> {
  try {
    await Deno.remove(path, { recursive: true });
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}
