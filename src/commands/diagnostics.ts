/**
 * `addon-agent diagnostics --out FILE.tar.gz`: the support archive (SPEC 16).
 * `--out -` writes it to stdout (useful where the permission set lets the
 * agent write only below its runtime root).
 *
 * @module
 */

import { diagnosticsArchive } from "../doctor/mod.ts";
import { EXIT, UsageError } from "./common.ts";

/** Build the archive and write it to `out` (0600) or stdout; returns the exit code. */
export async function diagnosticsCommand(opts: { config: string; out: string }): Promise<number> {
  if (opts.out !== "-") {
    const p = await Deno.permissions.query({ name: "write", path: opts.out });
    if (p.state !== "granted") {
      throw new UsageError(
        `--out ${opts.out}: this build may not write there; give a path below the runtime root, or --out - for stdout`,
      );
    }
  }
  const bytes = await diagnosticsArchive(opts.config);
  if (opts.out === "-") {
    await Deno.stdout.write(bytes);
    return EXIT.ok;
  }
  const tmp = `${opts.out}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  await Deno.writeFile(tmp, bytes, { mode: 0o600, createNew: true });
  await Deno.rename(tmp, opts.out);
  console.error(`wrote ${opts.out} (${bytes.length} bytes)`);
  return EXIT.ok;
}
