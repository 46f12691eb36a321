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
import fs from "node:fs";
import { type ObjectStore, type OpenedObject, StoreError } from "../store/mod.ts";
import type { Layout } from "../runtime/mod.ts";
import { interruptionOf } from "../common/mod.ts";

/** Bytes read, hashed and written at a time. */
const BATCH = 1 << 20;
/** Batches in flight: one filling while the others are being written. */
const RING = 4;
/** Start a background fdatasync after this many bytes, so the final fsync finds little to do. */
const SYNC_EVERY = 32 << 20;
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
export class DownloadError extends Error {
  /** What went wrong, for the caller's retry decision. */
  readonly kind: DownloadErrorKind;
  /** Make a download error of `kind`, keeping the `cause`. */
  constructor(message: string, options: { kind: DownloadErrorKind; cause?: unknown }) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "DownloadError";
    this.kind = options.kind;
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

async function _writeAll(f: Deno.FsFile, b: Uint8Array): Promise<void> {
  let off = 0;
  while (off < b.length) off += await f.write(b.subarray(off));
}

/** Fill `buf` with up to `want` bytes; `buf` may come back as a new view (BYOB reads transfer it). */
type _Fill = (
  buf: Uint8Array,
  want: number,
) => Promise<{ buf: Uint8Array; n: number; done: boolean }>;

/** Read `body` straight into our buffers when it is a byte stream, else copy its chunks. */
function _filler(body: AsyncIterable<Uint8Array>): _Fill {
  if (body instanceof ReadableStream) {
    let reader: ReadableStreamBYOBReader | null = null;
    try {
      reader = body.getReader({ mode: "byob" });
    } catch {
      // not a byte stream: iterate it
    }
    if (reader) return _byobFill(reader);
  }
  return _iterFill(body);
}

function _byobFill(reader: ReadableStreamBYOBReader): _Fill {
  return async (buf, want) => {
    let n = 0;
    while (n < want) {
      // `min`: one read per batch, not one per network chunk (far fewer promises and garbage).
      const { value, done } = await reader.read(new Uint8Array(buf.buffer, n, want - n), {
        min: want - n,
      });
      buf = value ? new Uint8Array(value.buffer) : new Uint8Array(BATCH);
      // At the end the last bytes come with `done`.
      n += value?.byteLength ?? 0;
      if (done) return { buf, n, done: true };
    }
    return { buf, n, done: false };
  };
}

function _iterFill(body: AsyncIterable<Uint8Array>): _Fill {
  const it = body[Symbol.asyncIterator]();
  let rest: Uint8Array = new Uint8Array(0);
  let ended = false;
  return async (buf, want) => {
    let n = 0;
    while (n < want) {
      if (rest.length === 0) {
        if (ended) break;
        const r = await it.next();
        if (r.done) {
          ended = true;
          break;
        }
        rest = r.value;
        continue;
      }
      const k = Math.min(rest.length, want - n);
      buf.set(k === rest.length ? rest : rest.subarray(0, k), n);
      n += k;
      rest = rest.subarray(k);
    }
    return { buf, n, done: ended && rest.length === 0 };
  };
}

/**
 * Writes batches in order, one after the other, off the reading path; every
 * `SYNC_EVERY` bytes it starts an fdatasync through a second handle so the
 * disk works while bytes still arrive. After a failure nothing more is written.
 */
class _Writer {
  #chain: Promise<void> = Promise.resolve();
  #syncing: Promise<void> | null = null;
  #sinceSync = 0;
  #failed: { error: unknown } | null = null;
  #settled = false;

  /** `syncer`: a second handle for background syncs (null: sync through `file`). */
  constructor(readonly file: Deno.FsFile, readonly syncer: Deno.FsFile | null) {}

  /** Queue `b`; resolves once it is written, so its buffer may be reused. */
  write(b: Uint8Array): Promise<void> {
    const done = this.#chain.then(async () => {
      if (this.#failed) throw this.#failed.error;
      await _writeAll(this.file, b);
      this.#sinceSync += b.length;
      if (this.#sinceSync >= SYNC_EVERY && this.#syncing === null) {
        this.#sinceSync = 0;
        this.#syncing = (this.syncer ?? this.file).syncData().then(
          () => {
            this.#syncing = null;
          },
          (e) => {
            this.#failed ??= { error: e };
            this.#syncing = null;
          },
        );
      }
    });
    this.#chain = done.catch((e) => {
      this.#failed ??= { error: e };
    });
    done.catch(() => {});
    return done;
  }

  /** Wait for every write, then fsync: the bytes are on disk when this resolves. */
  async finish(): Promise<void> {
    await this.#chain;
    await this.#syncing;
    if (this.#failed) throw this.#failed.error;
    await this.file.sync();
  }

  /** Wait for writes and syncs still running (never throws) and close the second handle. */
  async settle(): Promise<void> {
    if (this.#settled) return;
    this.#settled = true;
    await this.#chain;
    await this.#syncing;
    this.syncer?.close();
  }
}

/** Release a buffer's memory at once by detaching it (a no-op when a stream holds it). */
function _free(b: Uint8Array): void {
  const ab = b.buffer;
  if (ab instanceof ArrayBuffer && !ab.detached) ab.transfer(0);
}

/**
 * Open the partial at `path` once, never through a link, and hash what it
 * holds: an existing regular file is used only when the handle is the very
 * file `lstat` found (same device and inode, one link); anything else there
 * (a symlink or hard link someone planted, even in a race) is removed and a
 * new file is created exclusively (`O_EXCL`: it fails on anything planted
 * meanwhile). Opening without create or truncate changes nothing, so a link
 * followed by mistake is closed untouched.
 */
async function _openPartial(
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
async function _syncHandle(path: string, file: Deno.FsFile): Promise<Deno.FsFile | null> {
  const f = await Deno.open(path, { read: true });
  const [a, b] = await Promise.all([f.stat(), file.stat()]);
  if (a.dev === b.dev && a.ino === b.ino) return f;
  f.close();
  return null;
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
    partial = await _openPartial(path, hash);
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
    let writer: _Writer | null = null;
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
      writer = new _Writer(file, await _syncHandle(path, file));
      const fill = _filler(obj.body);
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
      for (const slot of ring) _free(slot.buf);
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
