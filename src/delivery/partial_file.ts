/**
 * The `tmp/<sha256>.partial` file of a download, opened safely: never through
 * a link someone planted, and resumed only when it is the very file found.
 *
 * @example Resume or start a partial download, hashing what is already there
 * ```ts
 * import { createHash } from "node:crypto";
 * const hash = createHash("sha256");
 * const { file, have } = await openPartial("/var/lib/addon-agent/tmp/ab12.partial", hash);
 * const syncer = await syncHandle("/var/lib/addon-agent/tmp/ab12.partial", file);
 * console.log(`resume at byte ${have}`);
 * syncer?.close();
 * file.close();
 * ```
 *
 * @module
 */

import type { Hash } from "node:crypto";
import { BATCH } from "./batch_io.ts";

/**
 * Open the partial at `path` once, never through a link, and hash what it
 * holds: an existing regular file is used only when the handle is the very
 * file `lstat` found (same device and inode, one link); anything else there
 * (a symlink or hard link someone planted, even in a race) is removed and a
 * new file is created exclusively (`O_EXCL`: it fails on anything planted
 * meanwhile). Opening without create or truncate changes nothing, so a link
 * followed by mistake is closed untouched.
 */
export async function openPartial(
  path: string,
  hash: Hash,
): Promise<{ file: Deno.FsFile; have: number }> {
  const st = await Deno.lstat(path).catch((e) => {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  });
  if (st?.isFile) {
    const f = await Deno.open(path, { read: true, write: true });
    const fst = await f.stat();
    if (fst.isFile && fst.dev === st.dev && fst.ino === st.ino && fst.nlink === 1) {
      try {
        const buf = new Uint8Array(BATCH);
        let total = 0;
        for (;;) {
          const n = await f.read(buf);
          if (n === null) break;
          hash.update(buf.subarray(0, n));
          total += n;
        }
        return { file: f, have: total };
      } catch (e) {
        f.close();
        throw e;
      }
    }
    f.close();
  }
  if (st) await Deno.remove(path, { recursive: true }); // a link goes, not what it points at
  const file = await Deno.open(path, { read: true, write: true, createNew: true, mode: 0o600 });
  return { file, have: 0 };
}

/** A second handle on `file` (opened by `path`) for background syncs, or null if `path` is another file now. */
export async function syncHandle(path: string, file: Deno.FsFile): Promise<Deno.FsFile | null> {
  const f = await Deno.open(path, { read: true });
  const [a, b] = await Promise.all([f.stat(), file.stat()]);
  if (a.dev === b.dev && a.ino === b.ino) return f;
  f.close();
  return null;
}
