/**
 * Streaming download into `tmp/<sha256>.partial`: hash and write in one pass
 * with bounded, double-buffered memory; resume an interrupted download with
 * a ranged read; stop at `max_artifact_bytes`; check free disk space first.
 * One download per sha256 runs at a time, shared by every add-on that wants
 * those bytes.
 *
 * @example Fetch an object whose digest is known
 * ```ts
 * const lease = await downloads.fetch({ store, layout, key, sha256, maxBytes });
 * try {
 *   console.log(lease.path, lease.size);
 * } finally {
 *   await lease.release();
 * }
 * ```
 *
 * @module
 */

import { createHash, type Hash } from "node:crypto";
import fs from "node:fs";
import type { ObjectStore } from "./object_store.ts";
import type { Layout } from "./runtime_root.ts";

const BATCH = 1 << 20;
/** Free space kept beyond the object's size before a download starts. */
export const DISK_MARGIN_BYTES = 64 << 20;

/** Why a download did not produce the expected bytes. */
export class DownloadError extends Error {
  /** `transient`: the store or network failed and a retry may succeed. */
  constructor(message: string, readonly transient: boolean) {
    super(message);
    this.name = "DownloadError";
  }
}

/** What to download. */
export interface DownloadRequest {
  store: ObjectStore;
  layout: Layout;
  key: string;
  /** Expected lowercase hex sha256. */
  sha256: string;
  maxBytes: number;
  /** Called now and then while bytes arrive. */
  onProgress?: (bytes: number, total: number) => void;
}

/** A verified partial file that stays in place until every user released it. */
export interface DownloadLease {
  /** Path of `tmp/<sha256>.partial`, whose digest matched. */
  path: string;
  size: number;
  /** Bytes fetched from the store by this download (less than size after a resume). */
  fetched: number;
  /** Give the file up; the last user removes it. */
  release(): Promise<void>;
}

interface _Flight {
  promise: Promise<{ size: number; fetched: number }>;
  users: number;
}

async function _writeAll(f: Deno.FsFile, b: Uint8Array): Promise<void> {
  let off = 0;
  while (off < b.length) off += await f.write(b.subarray(off));
}

async function _hashExisting(path: string, hash: Hash): Promise<number> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return 0;
    throw e;
  }
  if (!st.isFile) {
    await Deno.remove(path, { recursive: true });
    return 0;
  }
  const f = await Deno.open(path, { read: true });
  try {
    const buf = new Uint8Array(BATCH);
    let total = 0;
    for (;;) {
      const n = await f.read(buf);
      if (n === null) break;
      hash.update(buf.subarray(0, n));
      total += n;
    }
    return total;
  } finally {
    f.close();
  }
}

function _freeBytes(dir: string): number {
  const s = fs.statfsSync(dir);
  return Number(s.bavail) * Number(s.bsize);
}

/** Runs downloads, one per sha256 at a time. */
export class Downloads {
  readonly #flights = new Map<string, _Flight>();

  /** Download (or resume, or join the running download of) the object; the digest is checked. */
  async fetch(req: DownloadRequest): Promise<DownloadLease> {
    let flight = this.#flights.get(req.sha256);
    if (!flight) {
      flight = { promise: _download(req), users: 0 };
      this.#flights.set(req.sha256, flight);
      const f = flight;
      f.promise.catch(() => {
        if (this.#flights.get(req.sha256) === f) this.#flights.delete(req.sha256);
      });
    }
    flight.users++;
    let result;
    try {
      result = await flight.promise;
    } catch (e) {
      flight.users--;
      throw e;
    }
    const path = req.layout.partial(req.sha256);
    let released = false;
    const f = flight;
    return {
      path,
      size: result.size,
      fetched: result.fetched,
      release: async () => {
        if (released) return;
        released = true;
        f.users--;
        if (f.users === 0 && this.#flights.get(req.sha256) === f) {
          this.#flights.delete(req.sha256);
          await Deno.remove(path).catch(() => {});
        }
      },
    };
  }

  /** sha256 digests with a download running now. */
  active(): string[] {
    return [...this.#flights.keys()];
  }
}

async function _download(req: DownloadRequest): Promise<{ size: number; fetched: number }> {
  const path = req.layout.partial(req.sha256);
  const hash = createHash("sha256");
  let have = await _hashExisting(path, hash);
  if (have > req.maxBytes) {
    await Deno.remove(path);
    have = 0;
    hash.destroy();
    return _download(req);
  }
  if (have > 0 && hash.copy().digest("hex") === req.sha256) {
    return { size: have, fetched: 0 };
  }
  let obj;
  try {
    obj = await req.store.open(req.key, have);
  } catch (e) {
    throw new DownloadError((e as Error).message, (e as { transient?: boolean }).transient ?? true);
  }
  const size = obj.size;
  try {
    if (size > req.maxBytes) {
      throw new DownloadError(
        `${
          req.store.describe(req.key)
        } is ${size} bytes, more than limits.max_artifact_bytes (${req.maxBytes})`,
        false,
      );
    }
    if (size >= 0) {
      const need = size - have + DISK_MARGIN_BYTES;
      const free = _freeBytes(req.layout.tmp);
      if (free < need) {
        throw new DownloadError(
          `not enough free disk space in ${req.layout.tmp}: ${free} bytes free, ${need} needed (the object plus a ${DISK_MARGIN_BYTES}-byte margin)`,
          true,
        );
      }
    }
    const file = await Deno.open(path, { write: true, create: true, mode: 0o600 });
    let total = have;
    let fetched = 0;
    try {
      await file.truncate(have);
      await file.seek(have, Deno.SeekMode.Start);
      let buf = new Uint8Array(BATCH);
      let spare = new Uint8Array(BATCH);
      let fill = 0;
      let pending: Promise<void> = Promise.resolve();
      let lastReport = 0;
      const flush = async (): Promise<void> => {
        await pending;
        const full = fill === BATCH ? buf : buf.subarray(0, fill);
        hash.update(full);
        pending = _writeAll(file, full);
        [buf, spare] = [spare, buf];
        fill = 0;
      };
      for await (const chunk of obj.body) {
        total += chunk.length;
        fetched += chunk.length;
        if (total > req.maxBytes) {
          throw new DownloadError(
            `${
              req.store.describe(req.key)
            } passed limits.max_artifact_bytes (${req.maxBytes}); download stopped`,
            false,
          );
        }
        let off = 0;
        while (off < chunk.length) {
          const n = Math.min(chunk.length - off, BATCH - fill);
          buf.set(chunk.subarray(off, off + n), fill);
          fill += n;
          off += n;
          if (fill === BATCH) await flush();
        }
        if (req.onProgress) {
          const now = Date.now();
          if (now - lastReport > 250) {
            lastReport = now;
            req.onProgress(total, size);
          }
        }
      }
      if (fill > 0) await flush();
      await pending;
      await file.sync();
    } finally {
      file.close();
    }
    if (size >= 0 && total < size) {
      throw new DownloadError(
        `${
          req.store.describe(req.key)
        }: download cut short after ${total} of ${size} bytes; the next attempt resumes`,
        true,
      );
    }
    req.onProgress?.(total, size);
    const digest = hash.digest("hex");
    if (digest !== req.sha256) {
      await Deno.remove(path).catch(() => {});
      throw new DownloadError(
        `${req.store.describe(req.key)}: sha256 mismatch: expected ${req.sha256}, got ${digest}`,
        false,
      );
    }
    return { size: total, fetched };
  } catch (e) {
    if (e instanceof DownloadError && !e.transient) await Deno.remove(path).catch(() => {});
    if (e instanceof DownloadError) throw e;
    if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable) throw e;
    throw new DownloadError(
      `${req.store.describe(req.key)}: download failed: ${
        (e as Error).message
      }; the next attempt resumes`,
      true,
    );
  } finally {
    obj.close();
  }
}
