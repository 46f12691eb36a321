/**
 * Streaming sha256 of a file (publishing, release checksums).
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
