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

/** Stream a file through sha256; returns lowercase hex. */
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
