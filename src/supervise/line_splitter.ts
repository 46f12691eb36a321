/**
 * Splitting an add-on's output into log lines with bounded memory: lines are
 * split on bytes (`\n` never occurs inside UTF-8) and decoded per line; at
 * most `maxBytes` are held per stream. A longer line is cut at a character
 * boundary, ends with {@linkcode TRUNCATION_MARKER}, and the rest of it up to
 * the next newline is dropped.
 *
 * @example Forward a stream's lines, 16 KiB at most each
 * ```ts
 * const lines: string[] = [];
 * const splitter = new LineSplitter(DEFAULT_MAX_LINE_BYTES, (line) => lines.push(line));
 * splitter.push(new TextEncoder().encode("one\ntw"));
 * splitter.push(new TextEncoder().encode("o\n"));
 * splitter.end();
 * console.log(lines); // ["one", "two"]
 * ```
 *
 * @module
 */

/** Longest forwarded line in bytes unless `maxLineBytes` says otherwise (16 KiB). */
export const DEFAULT_MAX_LINE_BYTES = 16 * 1024;

/** Appended to a line cut at `maxLineBytes`; the rest of that line is dropped. */
export const TRUNCATION_MARKER = " …[truncated]";

/** Splits a byte stream into lines of at most `maxBytes` bytes with bounded memory. */
export class LineSplitter {
  #buf: Uint8Array;
  #len = 0;
  #dropping = false; // inside an overlong line that was already emitted
  #decoder = new TextDecoder(); // replaces invalid UTF-8, never throws
  #emit: (line: string) => void;

  /** Make a splitter that calls `emit` for every complete (or cut) line. */
  constructor(maxBytes: number, emit: (line: string) => void) {
    this.#buf = new Uint8Array(maxBytes);
    this.#emit = emit;
  }

  /** Feed a chunk; complete lines are emitted at once. */
  push(chunk: Uint8Array): void {
    let pos = 0;
    while (pos < chunk.length) {
      const nl = chunk.indexOf(0x0a, pos);
      const end = nl === -1 ? chunk.length : nl;
      if (!this.#dropping) this._append(chunk.subarray(pos, end));
      if (nl === -1) return;
      if (this.#dropping) this.#dropping = false;
      else this._flush(false);
      pos = nl + 1;
    }
  }

  /** End of stream: emit a last line that had no newline. */
  end(): void {
    if (this.#len > 0 && !this.#dropping) this._flush(false);
    this.#dropping = false;
    this.#len = 0;
  }

  /** Add part of a line; on overflow emit the cut line and drop until the newline. */
  private _append(seg: Uint8Array): void {
    const room = this.#buf.length - this.#len;
    if (seg.length <= room) {
      this.#buf.set(seg, this.#len);
      this.#len += seg.length;
      return;
    }
    this.#buf.set(seg.subarray(0, room), this.#len);
    this.#len = this.#buf.length;
    this._flush(true);
    this.#dropping = true;
  }

  /** Emit the pending line (cut at a character boundary when `truncated`). */
  private _flush(truncated: boolean): void {
    let n = this.#len;
    if (truncated) n = _utf8Cut(this.#buf, n);
    else if (n > 0 && this.#buf[n - 1] === 0x0d) n--;
    const line = this.#decoder.decode(this.#buf.subarray(0, n));
    this.#len = 0;
    this.#emit(truncated ? line + TRUNCATION_MARKER : line);
  }
}

/** Where to cut `buf[0..n)` so that no UTF-8 sequence is split. */
function _utf8Cut(buf: Uint8Array, n: number): number {
  let i = n - 1;
  while (i > 0 && n - i < 4 && ((buf[i] ?? 0) & 0xc0) === 0x80) i--;
  const lead = buf[i] ?? 0;
  const need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  return i + need > n ? i : n;
}

/**
 * Read `reader` to the end into `splitter`; a failed or cancelled stream ends it too (what
 * arrived is forwarded). Never rejects.
 */
export async function pumpLines(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  splitter: LineSplitter,
): Promise<void> {
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      splitter.push(value);
    }
  } catch {
    // The stream failed or was cancelled: forward what arrived.
  } finally {
    splitter.end();
  }
}
