/**
 * Unpacking a verified bundle (SPEC 15) into a fresh private directory,
 * entry by entry: the archive streams through the decompressor and a tar
 * parser (never buffered whole), {@linkcode BundleIndex} decides what each
 * entry may be, and only then is it written — files created new (`O_EXCL`),
 * bytes counted as they are written (a header's size is not trusted), modes
 * kept within 0755. Finally the entrypoint is checked and the tree is flushed
 * to disk, so the caller can rename it into `versions/<version>/`.
 *
 * A {@linkcode BundleEntryError} is a refusal of the archive's content (the
 * same bytes will always be refused); any other error is the host's (a full
 * disk, say) and a retry may succeed.
 *
 * @example Unpack a verified archive
 * ```ts
 * import { unpackBundle } from "./unpack.ts";
 * const dir = await Deno.makeTempDir();
 * const out = await unpackBundle("/var/lib/addon-agent/tmp/ab12….partial", dir, {
 *   format: "tar.gz",
 *   entrypoint: "bin/net-probe",
 *   maxBytes: 1024 ** 3,
 * });
 * console.log(out.files, out.bytes, out.entrypoint_sha256);
 * ```
 *
 * @module
 */

import zlib from "node:zlib";
import { createTarDecoder, type ParsedTarEntry } from "modern-tar";
import type { BundleFormat } from "../protocol/mod.ts";
import { makeSymlink } from "../runtime/mod.ts";
import { sha256File } from "../common/mod.ts";
import {
  type Admitted,
  BundleEntryError,
  BundleIndex,
  MAX_BUNDLE_ENTRIES,
} from "./bundle_index.ts";

/** Tar's own bytes (headers, padding, long names) allowed beyond `maxBytes` of content. */
export const TAR_OVERHEAD_BYTES = 64 << 20;

const CHUNK = 64 << 10;

/**
 * Largest zstd window the agent decodes: 2^23 = 8 MiB, what `zstd` levels 1–19 (and `tar
 * --zstd`) use. A frame's header picks its window, and the decoder holds all of it: a 10 KB
 * archive asking for zstd's default limit of 128 MiB (`--long`) took the agent past 200 MiB.
 */
export const ZSTD_WINDOW_LOG_MAX = 23;

/** How to unpack one bundle. */
export interface UnpackOptions {
  format: BundleFormat;
  /** Relative path of the file that runs; must be a regular file of the bundle. */
  entrypoint: string;
  /** Content bytes the tree may hold (`limits.max_unpacked_bytes`). */
  maxBytes: number;
  /** Entries the archive may have (default {@linkcode MAX_BUNDLE_ENTRIES}). */
  maxEntries?: number;
  /** Tar bytes beyond `maxBytes` (headers, padding; default {@linkcode TAR_OVERHEAD_BYTES}). */
  tarOverheadBytes?: number;
}

/** What an unpacked bundle holds. */
export interface Unpacked {
  /** Entries in the archive. */
  entries: number;
  /** Regular files (hard links included). */
  files: number;
  /** Content bytes written. */
  bytes: number;
  /** sha256 of the entrypoint's bytes (for re-checks of the staged tree). */
  entrypoint_sha256: string;
}

/**
 * The archive's tar stream: the file read through a `node:zlib` decompressor
 * (gzip or zstd), handed on as a web stream that holds at most one chunk, so
 * a bomb cannot fill memory faster than the tree is written; more than
 * `maxTarBytes` of tar refuses the archive.
 */
export function tarStream(
  archive: string,
  format: BundleFormat,
  maxTarBytes = Infinity,
): ReadableStream<Uint8Array> {
  const z = format === "tar.gz"
    ? zlib.createGunzip({ chunkSize: CHUNK })
    : zlib.createZstdDecompress({
      chunkSize: CHUNK,
      params: { [zlib.constants.ZSTD_d_windowLogMax]: ZSTD_WINDOW_LOG_MAX },
    });
  let done = false;
  let total = 0;
  const stop = () => {
    done = true;
    z.destroy();
  };
  _feed(archive, z, () => done);
  return new ReadableStream<Uint8Array>({
    start(c) {
      z.pause();
      z.on("data", (chunk: Uint8Array) => {
        if (done) return;
        total += chunk.byteLength;
        if (total > maxTarBytes) {
          c.error(
            new BundleEntryError(
              null,
              `expands to more than ${maxTarBytes} bytes of tar (limits.max_unpacked_bytes plus room for tar's own headers)`,
            ),
          );
          stop();
          return;
        }
        c.enqueue(chunk);
        if ((c.desiredSize ?? 0) <= 0) z.pause();
      });
      z.once("end", () => {
        if (!done) c.close();
        done = true;
      });
      z.once("error", (e) => {
        if (!done) c.error(e);
        stop();
      });
    },
    pull() {
      z.resume();
    },
    cancel() {
      stop();
    },
  }, new CountQueuingStrategy({ highWaterMark: 1 }));
}

/**
 * Write the archive's bytes into `z` from two reused buffers: a buffer is read into again only
 * once `z` has consumed it, so reading allocates nothing per chunk. A destroyed `z` (a refusal
 * stopped reading) ends the feeding at once: the callback of a write `z` was still holding is
 * never called, and waiting for it kept the archive open for the life of the process (a
 * deleted archive's disk space and one descriptor per refused bundle).
 */
async function _feed(
  archive: string,
  z: ReturnType<typeof zlib.createGunzip>,
  stopped: () => boolean,
): Promise<void> {
  let f: Deno.FsFile | null = null;
  const closed = new Promise<void>((resolve) => z.once("close", () => resolve()));
  try {
    f = await Deno.open(archive, { read: true });
    const bufs = [new Uint8Array(CHUNK), new Uint8Array(CHUNK)];
    for (let i = 0; !stopped() && !z.destroyed; i++) {
      const b = bufs[i % 2]!;
      const n = await f.read(b);
      if (n === null) {
        z.end();
        return;
      }
      await Promise.race([
        closed,
        new Promise<void>((resolve, reject) =>
          z.write(b.subarray(0, n), (e) => e ? reject(e) : resolve())
        ),
      ]);
    }
  } catch (e) {
    if (!stopped()) z.destroy(e as Error);
  } finally {
    f?.close();
  }
}

/** Unpack `archive` into the empty real directory `dest`; see the module doc for the guarantees. */
export async function unpackBundle(
  archive: string,
  dest: string,
  opts: UnpackOptions,
): Promise<Unpacked> {
  const index = new BundleIndex(opts.maxEntries ?? MAX_BUNDLE_ENTRIES);
  const tarLimit = opts.maxBytes + (opts.tarOverheadBytes ?? TAR_OVERHEAD_BYTES);
  const entries = tarStream(archive, opts.format, tarLimit)
    .pipeThrough(createTarDecoder({ strict: true }));
  const reader = entries.getReader();
  const w = new _TreeWriter(dest, opts);
  try {
    for (;;) {
      const next = await _read(reader, opts.format);
      if (next.done) break;
      const { header, body } = next.value as ParsedTarEntry;
      await w.write(index.admit(header), header.size, body);
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  index.checkSymlinks();
  const entrypoint = index.checkEntrypoint(opts.entrypoint);
  await w.finish(entrypoint);
  return {
    entries: index.entries,
    files: index.files,
    bytes: w.bytes,
    entrypoint_sha256: await sha256File(`${dest}/${entrypoint}`),
  };
}

/** Read from the archive's stream; its failures are refusals of the archive. */
async function _read<T>(
  r: ReadableStreamDefaultReader<T>,
  format: BundleFormat,
): Promise<ReadableStreamReadResult<T>> {
  try {
    return await r.read();
  } catch (e) {
    if (e instanceof BundleEntryError) throw e;
    const msg = (e as Error).message;
    if (format === "tar.zst" && /requires too much memory/.test(msg)) {
      throw new BundleEntryError(
        null,
        `uses a zstd window over ${
          2 ** ZSTD_WINDOW_LOG_MAX >> 20
        } MiB, more than the agent decodes (compress without --long or --ultra)`,
        { cause: e },
      );
    }
    throw new BundleEntryError(null, `is not a valid ${format} archive: ${msg}`, { cause: e });
  }
}

/** Writes admitted entries below `dest`, counting content bytes. */
class _TreeWriter {
  bytes = 0;
  readonly #dirModes = new Map<string, number>();

  constructor(readonly dest: string, readonly opts: UnpackOptions) {}

  async write(a: Admitted, size: number, body: ReadableStream<Uint8Array>): Promise<void> {
    if (a.kind !== "file") await body.cancel();
    if (a.kind === "root") return;
    for (const d of a.mkdirs) {
      await Deno.mkdir(`${this.dest}/${d}`, { mode: 0o700 });
      this.#dirModes.set(d, 0o755);
    }
    const full = `${this.dest}/${a.path}`;
    switch (a.kind) {
      case "directory":
        if (!this.#dirModes.has(a.path)) await Deno.mkdir(full, { mode: 0o700 });
        this.#dirModes.set(a.path, a.mode);
        return;
      case "symlink":
        return await makeSymlink(a.target, full);
      case "hardlink":
        return await Deno.link(`${this.dest}/${a.target}`, full);
      case "file":
        return await this.#file(a.path, full, a.mode, size, body);
    }
  }

  async #file(
    path: string,
    full: string,
    mode: number,
    size: number,
    body: ReadableStream<Uint8Array>,
  ): Promise<void> {
    const max = this.opts.maxBytes;
    const over = () =>
      new BundleEntryError(
        path,
        `takes the bundle past limits.max_unpacked_bytes (${max} bytes)`,
      );
    if (this.bytes + size > max) {
      await body.cancel();
      throw over();
    }
    // Synchronous writes: one small syscall each, without a hop to the blocking pool per chunk.
    const f = Deno.openSync(full, { write: true, createNew: true, mode: 0o600 });
    const r = body.getReader();
    try {
      for (;;) {
        const { done, value } = await _read(r, this.opts.format);
        if (done) break;
        this.bytes += value.byteLength;
        if (this.bytes > max) throw over();
        for (let off = 0; off < value.byteLength;) off += f.writeSync(value.subarray(off));
      }
    } finally {
      f.close();
      await r.cancel().catch(() => {});
    }
    Deno.chmodSync(full, mode);
  }

  /** Directory modes, the entrypoint's 0755, then everything flushed to disk. */
  async finish(entrypoint: string): Promise<void> {
    for (const [d, mode] of this.#dirModes) await Deno.chmod(`${this.dest}/${d}`, mode);
    await Deno.chmod(`${this.dest}/${entrypoint}`, 0o755);
    await syncTree(this.dest);
  }
}

/**
 * Flush a freshly written tree to disk before it is renamed into place: one
 * `sync -f` (syncfs of its filesystem) instead of thousands of fsyncs; where
 * that is unavailable, every file and directory is fsynced.
 */
export async function syncTree(dir: string): Promise<void> {
  const out = await new Deno.Command("sync", {
    args: ["-f", dir],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).output().catch(() => null);
  if (out?.success) return;
  await _fsyncAll(dir);
}

async function _fsyncAll(dir: string): Promise<void> {
  for await (const e of Deno.readDir(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) await _fsyncAll(p);
    else if (e.isFile) {
      const f = await Deno.open(p, { read: true });
      try {
        await f.sync();
      } finally {
        f.close();
      }
    }
  }
  const d = await Deno.open(dir, { read: true });
  try {
    await d.sync();
  } finally {
    d.close();
  }
}
