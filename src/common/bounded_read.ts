/**
 * Reading text with a size limit counted while reading (SPEC 12): documents,
 * override files, catalogs and request bodies stop at `maxBytes` + 1 and are
 * refused, however the sender declared or padded them — a stream of spaces
 * costs the reader at most `maxBytes` of memory.
 *
 * @example Read a file of at most 8 MiB
 * ```ts
 * import { readFileBounded } from "./bounded_read.ts";
 * const text = await readFileBounded("/etc/addon-agent/addons.local.json", 8 << 20);
 * ```
 *
 * @module
 */

import fs from "node:fs";

/** A document larger than the limit; nothing past the limit was read. */
export class TooLargeError extends Error {
  /** Make the error for `what` (a path or URL) over `limit` bytes. */
  constructor(readonly what: string, readonly limit: number, options?: ErrorOptions) {
    super(`${what} is larger than ${limit} bytes; refused without reading further`, options);
    this.name = "TooLargeError";
  }
}

/** Read an open file to its end as UTF-8 text, refusing more than `maxBytes`. */
export async function readOpenFileBounded(
  file: Deno.FsFile,
  maxBytes: number,
  what: string,
): Promise<string> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const buf = new Uint8Array(Math.min(64 * 1024, maxBytes + 1 - total));
    const n = await file.read(buf);
    if (n === null) break;
    total += n;
    if (total > maxBytes) throw new TooLargeError(what, maxBytes);
    chunks.push(buf.subarray(0, n));
  }
  return _decode(chunks, total);
}

/** Read the file at `path` as UTF-8 text, refusing more than `maxBytes`. */
export async function readFileBounded(path: string, maxBytes: number): Promise<string> {
  const f = await Deno.open(path, { read: true });
  try {
    return await readOpenFileBounded(f, maxBytes, path);
  } finally {
    f.close();
  }
}

/** A file that is not a regular file reached without a symlink; nothing of it was read. */
export class NotRegularFileError extends Error {
  /** Make the error for the file at `path`, saying what it is instead. */
  constructor(readonly path: string, what: string, options?: ErrorOptions) {
    super(`${path} is ${what}; not read`, options);
    this.name = "NotRegularFileError";
  }
}

/**
 * Open `path` for reading in one step that never follows a symlink in its last component and
 * never blocks on a FIFO or a device (`O_NOFOLLOW | O_NONBLOCK`), so what the caller then
 * `stat()`s on the handle is what it reads, whatever is swapped in after an `lstat`. The caller
 * must close the handle and must still check `isFile()` on it.
 *
 * @throws {NotRegularFileError} when `path` is a symlink (`ELOOP`), with the open's error as cause.
 * @throws the open's own error otherwise (`NotFound`-like `ENOENT`, `EACCES`, …).
 *
 * @example Open a file someone else may have planted a link at
 * ```ts
 * const fh = await openNoFollow("/var/lib/addon-agent/tmp/abc.partial");
 * try {
 *   if (!(await fh.stat()).isFile()) throw new Error("not a regular file");
 * } finally {
 *   await fh.close();
 * }
 * ```
 */
export async function openNoFollow(path: string): Promise<fs.promises.FileHandle> {
  try {
    return await fs.promises.open(
      path,
      fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK,
    );
  } catch (e) {
    if ((e as { code?: string }).code === "ELOOP") {
      throw new NotRegularFileError(path, "a symlink", { cause: e });
    }
    throw e;
  }
}

/**
 * Read the regular file at `path` as UTF-8 text, refusing more than `maxBytes`,
 * without following a symlink in its last component and without blocking on
 * a FIFO or a device: for files in a directory someone else may have planted
 * things in (a `last-good.json` linked to the token file reads nothing).
 *
 * @throws {NotRegularFileError} for a symlink, FIFO, device, socket or directory.
 * @throws {TooLargeError} past `maxBytes`.
 *
 * @example Read a staged version's record, never through a link
 * ```ts
 * const text = await readRegularFileBounded("/var/lib/addon-agent/addons/p/versions/1/artifact.json", 1 << 20);
 * ```
 */
export async function readRegularFileBounded(path: string, maxBytes: number): Promise<string> {
  const fh = await openNoFollow(path);
  try {
    const st = await fh.stat();
    if (!st.isFile()) {
      throw new NotRegularFileError(path, st.isDirectory() ? "a directory" : "not a regular file");
    }
    if (st.size > maxBytes) throw new TooLargeError(path, maxBytes);
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      const buf = new Uint8Array(Math.min(64 * 1024, maxBytes + 1 - total));
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > maxBytes) throw new TooLargeError(path, maxBytes);
      chunks.push(buf.subarray(0, bytesRead));
    }
    return _decode(chunks, total);
  } finally {
    await fh.close();
  }
}

/**
 * Read a byte stream (a response or request body) as UTF-8 text, refusing more than
 * `maxBytes`: the stream is cancelled at the first byte past the limit.
 */
export async function readStreamBounded(
  stream: ReadableStream<Uint8Array> | null,
  maxBytes: number,
  what: string,
): Promise<string> {
  if (stream === null) return "";
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > maxBytes) {
      await reader.cancel().catch(() => {});
      throw new TooLargeError(what, maxBytes);
    }
    chunks.push(value);
  }
  return _decode(chunks, total);
}

function _decode(chunks: Uint8Array[], total: number): string {
  const all = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return new TextDecoder().decode(all);
}
