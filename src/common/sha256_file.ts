/**
 * Streaming sha256 of a file (publishing, release checksums), and of bytes in
 * memory (fingerprints that must not show what they were made of).
 *
 * @example
 * ```ts
 * console.log(await sha256File("dist/addon-agent-x86_64-unknown-linux-gnu"));
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";

/**
 * Stream a file through sha256 (1 MiB at a time, so memory does not grow with the file);
 * returns lowercase hex. It follows a link at `path`: for files someone else may plant links
 * at, open with `openNoFollow` and hash the handle instead.
 *
 * @throws {Deno.errors.NotFound} when nothing is at `path`, or another I/O error from reading.
 *
 * @example
 * ```ts
 * const sha = await sha256File("/srv/artifacts/net-probe/1.4.2/linux-amd64/net-probe");
 * console.log(sha.length); // 64
 * ```
 */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  const f = await Deno.open(path, { read: true });
  try {
    const buf = new Uint8Array(1 << 20);
    for (;;) {
      const n = await f.read(buf);
      if (n === null) break;
      hash.update(buf.subarray(0, n));
    }
  } finally {
    f.close();
  }
  return hash.digest("hex");
}

/**
 * sha256 of `data` (a string is hashed as UTF-8); returns lowercase hex.
 *
 * @example
 * ```ts
 * sha256Hex("abc"); // "ba7816bf…"
 * ```
 */
export function sha256Hex(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}
