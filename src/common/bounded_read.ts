/**
 * Reading text with a size limit counted while reading (SPEC 12): documents,
 * override files, catalogs and request bodies stop at `maxBytes` + 1 and are
 * refused, however the sender declared or padded them — a stream of spaces
 * costs the reader at most `maxBytes` of memory.
 *
 * @example Read a file of at most 8 MiB
 * ```ts
 * const text = await readFileBounded("/etc/addon-agent/addons.local.json", 8 << 20);
 * ```
 *
 * @module
 */

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
