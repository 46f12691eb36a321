/**
 * The batched I/O of a download (see `download.ts`): reading a body into
 * 1 MiB buffers (straight in for a byte stream, copied for other bodies) and
 * writing them in order off the reading path, with a background fdatasync
 * every 32 MiB so the final fsync has little left to do.
 *
 * @example Copy a body to a file, batch by batch
 * ```ts
 * declare const body: AsyncIterable<Uint8Array>;
 * declare const file: Deno.FsFile;
 * const fill = bodyFiller(body);
 * const writer = new BatchWriter(file, null);
 * let buf: Uint8Array = new Uint8Array(BATCH);
 * try {
 *   for (;;) {
 *     const got = await fill(buf, BATCH);
 *     buf = got.buf;
 *     await writer.write(buf.slice(0, got.n));
 *     if (got.done) break;
 *   }
 *   await writer.finish(); // on disk now
 * } finally {
 *   await writer.settle();
 *   freeBuffer(buf);
 * }
 * ```
 *
 * @module
 */

/** Bytes read, hashed and written at a time. */
export const BATCH = 1 << 20;
/** Start a background fdatasync after this many bytes, so the final fsync finds little to do. */
export const SYNC_EVERY = 32 << 20;

/** Write all of `b` to `f` (a write may take part of it). */
async function _writeAll(f: Deno.FsFile, b: Uint8Array): Promise<void> {
  let off = 0;
  while (off < b.length) off += await f.write(b.subarray(off));
}

/** Fill `buf` with up to `want` bytes; `buf` may come back as a new view (BYOB reads transfer it). */
export type Fill = (
  buf: Uint8Array,
  want: number,
) => Promise<{ buf: Uint8Array; n: number; done: boolean }>;

/** Read `body` straight into our buffers when it is a byte stream, else copy its chunks. */
export function bodyFiller(body: AsyncIterable<Uint8Array>): Fill {
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

function _byobFill(reader: ReadableStreamBYOBReader): Fill {
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

function _iterFill(body: AsyncIterable<Uint8Array>): Fill {
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
export class BatchWriter {
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
export function freeBuffer(b: Uint8Array): void {
  const ab = b.buffer;
  if (ab instanceof ArrayBuffer && !ab.detached) ab.transfer(0);
}
