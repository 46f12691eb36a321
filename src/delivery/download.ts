/**
 * Streaming download into `tmp/<sha256>.partial`: hash and write in one pass
 * with bounded memory; resume an interrupted download with a ranged read;
 * stop at `max_artifact_bytes`; check free disk space first. One download per
 * sha256 runs at a time, shared by every add-on that wants those bytes.
 *
 * The pipeline: a ring of four 1 MiB buffers. A byte-stream body (both
 * stores give one) is read straight into a buffer, 1 MiB per read; other
 * bodies are copied in. While one buffer is hashed (on this thread) the next
 * one fills and earlier ones are written (on I/O threads), in order; every
 * 32 MiB a background fdatasync lets the disk catch up, so the fsync before
 * the digest is checked has little left to do. The buffers are released as
 * soon as the download ends.
 *
 * @example Fetch an object whose digest is known
 * ```ts
 * import type { ObjectStore } from "../store/mod.ts";
 * import { Layout } from "../runtime/mod.ts";
 * declare const store: ObjectStore;
 * const downloads = new Downloads();
 * const lease = await downloads.fetch({
 *   store,
 *   layout: new Layout("/var/lib/addon-agent"),
 *   key: "net-probe/1.4.2/linux-amd64/net-probe",
 *   sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
 *   maxBytes: 512 << 20,
 * });
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
import { BATCH, BatchWriter, bodyFiller, freeBuffer } from "./batch_io.ts";
import { openPartial, syncHandle } from "./partial_file.ts";
import fs from "node:fs";
import { type ObjectStore, type OpenedObject, StoreError } from "../store/mod.ts";
import type { Layout } from "../runtime/mod.ts";
import { interruptionOf, KindedError } from "../common/mod.ts";

/** Batches in flight: one filling while the others are being written. */
const RING = 4;
/** Largest default free-space margin (SPEC 8). */
export const MAX_DEFAULT_MARGIN_BYTES = 64 << 20;

/**
 * The free space kept beyond an object's size (SPEC 8): `configured` when
 * given, else 5 % of the filesystem's size, at most 64 MiB.
 *
 * @example An 8 MiB volume keeps 419430 bytes free
 * ```ts
 * freeSpaceMargin(8 << 20); // 419430: 5 % of the volume
 * freeSpaceMargin(8 << 30); // 67108864: at most 64 MiB
 * freeSpaceMargin(8 << 30, 0); // 0: limits.free_space_margin_bytes given
 * ```
 */
export function freeSpaceMargin(fsSizeBytes: number, configured?: number): number {
  if (configured !== undefined) return configured;
  return Math.min(Math.floor(fsSizeBytes * 0.05), MAX_DEFAULT_MARGIN_BYTES);
}

/**
 * Why a download did not produce the expected bytes:
 * - `unavailable`: the store, the network or the disk failed, the object is not (yet) in the
 *   store, or the agent is stopping; the partial is kept and a later attempt resumes it.
 * - `integrity`: the store's bytes are not the assigned ones (sha256 mismatch); the partial
 *   is deleted, and only a fixed object or a new assignment helps.
 * - `refused`: the object may not be fetched (larger than `limits.max_artifact_bytes`, a key
 *   the store refuses); the partial is deleted.
 */
export type DownloadErrorKind = "unavailable" | "integrity" | "refused";

/**
 * Why a download did not produce the expected bytes, naming the object.
 *
 * @example Retry only what may pass
 * ```ts
 * const e = new DownloadError("s3://b/k: sha256 mismatch", { kind: "integrity" });
 * if (e.kind !== "unavailable") console.log("retrying soon will not help:", e.message);
 * ```
 */
export class DownloadError extends KindedError<DownloadErrorKind> {
  override readonly name = "DownloadError";
}

/** What to download. */
export interface DownloadRequest {
  store: ObjectStore;
  layout: Layout;
  key: string;
  /** Expected lowercase hex sha256. */
  sha256: string;
  maxBytes: number;
  /** `limits.free_space_margin_bytes`; absent: the default of {@linkcode freeSpaceMargin}. */
  marginBytes?: number;
  /** Called now and then while bytes arrive. */
  onProgress?: (bytes: number, total: number) => void;
  /**
   * This caller no longer wants the bytes (its assignment changed): its wait
   * ends at once, and the download itself stops, even in the middle of a
   * read, once no caller wants it (the partial stays for a resume).
   */
  signal?: AbortSignal;
}

/** A verified partial file that stays in place until every user released it. */
export interface DownloadLease {
  /** Path of `tmp/<sha256>.partial`, whose digest matched. */
  path: string;
  size: number;
  /** Bytes fetched from the store by this download (less than size after a resume). */
  fetched: number;
  /**
   * Give the file up; the last user removes it, unless `keep` says a retry
   * may still use these verified bytes (they stay as a resumable partial).
   */
  release(keep?: boolean): Promise<void>;
  /**
   * Move the verified file to `dest` (same filesystem) when this lease is its only user, so
   * staging needs no second copy of the bytes (SPEC 8, small disks); the lease is then released.
   * Returns false, having done nothing, when others use the file too (they copy).
   */
  moveTo(dest: string): boolean;
}

interface _Flight {
  promise: Promise<{ size: number; fetched: number }>;
  users: number;
  /** Stops this download (every user gave up, or the agent is stopping). */
  abort: AbortController;
}

/** `p`, or a rejection as soon as `signal` aborts (the caller gave up waiting). */
function _unlessAbandoned<T>(p: Promise<T>, signal: AbortSignal, what: string): Promise<T> {
  const abandoned = () =>
    new DownloadError(`${what}: abandoned (${String(signal.reason?.message ?? signal.reason)})`, {
      kind: "unavailable",
      cause: signal.reason,
    });
  if (signal.aborted) return Promise.reject(abandoned());
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abandoned());
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}

function _space(dir: string): { free: number; size: number } {
  const s = fs.statfsSync(dir);
  return { free: Number(s.bavail) * Number(s.bsize), size: Number(s.blocks) * Number(s.bsize) };
}

/** Runs downloads, one per sha256 at a time. */
export class Downloads {
  readonly #flights = new Map<string, _Flight>();
  readonly #abort = new AbortController();

  /** Stop every running download at once, even mid-read (the agent is stopping); partials stay. */
  abortAll(): void {
    this.#abort.abort();
    for (const f of this.#flights.values()) f.abort.abort();
  }

  /**
   * Download (or resume, or join the running download of) the object; the digest is checked.
   *
   * @throws {DownloadError} when the bytes could not be fetched or are not the assigned ones.
   * @throws {Deno.errors.NotCapable} when this build may not write the runtime root's `tmp/`.
   */
  async fetch(req: DownloadRequest): Promise<DownloadLease> {
    let flight = this.#flights.get(req.sha256);
    if (!flight) {
      const abort = new AbortController();
      if (this.#abort.signal.aborted) abort.abort();
      flight = { promise: _download({ ...req, signal: abort.signal }), users: 0, abort };
      this.#flights.set(req.sha256, flight);
      const f = flight;
      f.promise.catch(() => {
        if (this.#flights.get(req.sha256) === f) this.#flights.delete(req.sha256);
      });
    }
    flight.users++;
    let result;
    try {
      result = await (req.signal
        ? _unlessAbandoned(flight.promise, req.signal, req.store.describe(req.key))
        : flight.promise);
    } catch (e) {
      flight.users--;
      // The last one who wanted these bytes gave up: stop the download itself, even mid-read.
      if (req.signal?.aborted && flight.users === 0) flight.abort.abort(req.signal.reason);
      throw e;
    }
    const path = req.layout.partial(req.sha256);
    let released = false;
    const f = flight;
    return {
      path,
      size: result.size,
      fetched: result.fetched,
      release: async (keep = false) => {
        if (released) return;
        released = true;
        f.users--;
        if (f.users === 0 && this.#flights.get(req.sha256) === f) {
          this.#flights.delete(req.sha256);
          if (!keep) await Deno.remove(path).catch(() => {});
        }
      },
      // Synchronous from the check to the rename: no other fetch can join the flight between.
      moveTo: (dest) => {
        if (released || f.users !== 1 || this.#flights.get(req.sha256) !== f) return false;
        Deno.renameSync(path, dest);
        released = true;
        f.users--;
        this.#flights.delete(req.sha256);
        return true;
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
  let partial: { file: Deno.FsFile; have: number };
  try {
    partial = await openPartial(path, hash);
  } catch (e) {
    if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable) throw e;
    throw new DownloadError(`cannot open the partial download ${path}: ${(e as Error).message}`, {
      kind: "unavailable",
      cause: e,
    });
  }
  try {
    return await _fill(req, path, hash, partial.file, partial.have);
  } finally {
    try {
      partial.file.close();
    } catch {
      // closed already
    }
  }
}

async function _fill(
  req: DownloadRequest,
  path: string,
  hash: Hash,
  file: Deno.FsFile,
  have: number,
): Promise<{ size: number; fetched: number }> {
  if (have > req.maxBytes) {
    file.close();
    await Deno.remove(path);
    hash.destroy();
    return _download(req);
  }
  if (have > 0 && hash.copy().digest("hex") === req.sha256) {
    return { size: have, fetched: 0 };
  }
  let obj: OpenedObject;
  try {
    obj = await req.store.open(req.key, have, {
      sha256: req.sha256,
      ...(req.signal ? { signal: req.signal } : {}),
    });
  } catch (e) {
    if (req.signal?.aborted) throw _stopped(req, have);
    throw new DownloadError((e as Error).message, {
      kind: e instanceof StoreError && e.kind === "refused" ? "refused" : "unavailable",
      cause: e,
    });
  }
  // A read waiting on a silent store ends now, not at the next batch.
  const onAbort = () => obj.close();
  req.signal?.addEventListener("abort", onAbort, { once: true });
  const size = obj.size;
  let total = have;
  try {
    if (size > req.maxBytes) {
      throw new DownloadError(
        `${
          req.store.describe(req.key)
        } is ${size} bytes, more than limits.max_artifact_bytes (${req.maxBytes})`,
        { kind: "refused" },
      );
    }
    if (size >= 0) {
      const space = _space(req.layout.tmp);
      const margin = freeSpaceMargin(space.size, req.marginBytes);
      const need = size - have + margin;
      const free = space.free;
      if (free < need) {
        throw new DownloadError(
          `not enough free disk space in ${req.layout.tmp}: ${free} bytes free, ${need} needed (the object plus a ${margin}-byte margin, limits.free_space_margin_bytes)`,
          { kind: "unavailable" },
        );
      }
    }
    let fetched = 0;
    let writer: BatchWriter | null = null;
    const ring = Array.from(
      { length: RING },
      (): { buf: Uint8Array; written: Promise<void> } => ({
        buf: new Uint8Array(BATCH),
        written: Promise.resolve(),
      }),
    );
    try {
      await file.truncate(have);
      await file.seek(have, Deno.SeekMode.Start);
      writer = new BatchWriter(file, await syncHandle(path, file));
      const fill = bodyFiller(obj.body);
      // Fill slot `i` once its last write is done; asks for at most one byte more than the
      // limit allows, to notice an oversized object.
      const start = (i: number) => {
        const slot = ring[i]!;
        const want = Math.min(BATCH, req.maxBytes - total + 1);
        const p = slot.written.then(() => fill(slot.buf, want));
        p.catch(() => {});
        return p;
      };
      let lastReport = 0;
      let pending = start(0);
      for (let i = 0;; i = (i + 1) % RING) {
        const slot = ring[i]!;
        const got = await pending;
        slot.buf = got.buf;
        total += got.n;
        fetched += got.n;
        if (total > req.maxBytes) {
          throw new DownloadError(
            `${
              req.store.describe(req.key)
            } passed limits.max_artifact_bytes (${req.maxBytes}); download stopped`,
            { kind: "refused" },
          );
        }
        // The next batch arrives (or is read from disk) while this one is hashed.
        if (!got.done) pending = start((i + 1) % RING);
        if (got.n > 0) {
          const batch = got.n === BATCH ? slot.buf : slot.buf.subarray(0, got.n);
          hash.update(batch);
          slot.written = writer.write(batch);
          if (req.onProgress) {
            const now = Date.now();
            if (now - lastReport > 250) {
              lastReport = now;
              req.onProgress(total, size);
            }
          }
        }
        if (got.done) break;
        if (req.signal?.aborted) throw _stopped(req, total);
      }
      await writer.finish();
    } finally {
      await writer?.settle();
      // Give the buffers back now rather than at some later GC: what runs next (signature
      // checks, staging) then reuses the memory instead of adding to the peak.
      for (const slot of ring) freeBuffer(slot.buf);
    }
    if (req.signal?.aborted) throw _stopped(req, total);
    if (size >= 0 && total < size) {
      const why = interruptionOf(obj.body);
      throw new DownloadError(
        why
          ? `${why.message}: stopped after ${total} of ${size} bytes; the next attempt resumes`
          : `${
            req.store.describe(req.key)
          }: download cut short after ${total} of ${size} bytes; the next attempt resumes`,
        { kind: "unavailable", ...(why ? { cause: why } : {}) },
      );
    }
    req.onProgress?.(total, size);
    const digest = hash.digest("hex");
    if (digest !== req.sha256) {
      await Deno.remove(path).catch(() => {});
      throw new DownloadError(
        `${req.store.describe(req.key)}: sha256 mismatch: expected ${req.sha256}, got ${digest}`,
        { kind: "integrity" },
      );
    }
    return { size: total, fetched };
  } catch (e) {
    if (e instanceof DownloadError && e.kind !== "unavailable") {
      await Deno.remove(path).catch(() => {});
    }
    if (e instanceof DownloadError) throw e;
    if (req.signal?.aborted) throw _stopped(req, total);
    if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable) throw e;
    throw new DownloadError(
      `${req.store.describe(req.key)}: download failed: ${
        (e as Error).message
      }; the next attempt resumes`,
      { kind: "unavailable", cause: e },
    );
  } finally {
    req.signal?.removeEventListener("abort", onAbort);
    obj.close();
  }
}

/** The download was stopped because the agent is stopping (transient: the partial stays). */
function _stopped(req: DownloadRequest, bytes: number): DownloadError {
  return new DownloadError(
    `${
      req.store.describe(req.key)
    }: stopped after ${bytes} bytes because the agent is stopping; the next start resumes it`,
    { kind: "unavailable" },
  );
}
