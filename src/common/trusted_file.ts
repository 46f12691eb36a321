/**
 * Files the agent trusts (SPEC 12): `agent.json`, `token_file`, the TLS and
 * key files, the `file` source's document and the local override. Whoever
 * can write one of them can make root run a command, so each is read only
 * when the file itself — the one opened, not a name looked up again — is
 * owned by root or the agent's own user and is not group- or world-writable.
 *
 * @example Read the token
 * ```ts
 * import { readTrustedFile } from "./trusted_file.ts";
 * const token = await readTrustedFile("/etc/addon-agent/token", {
 *   what: "token_file",
 *   maxBytes: 1 << 20,
 * });
 * ```
 *
 * @module
 */

import { readOpenFileBounded } from "./bounded_read.ts";

/** A trusted file that someone other than root or the agent could have written. */
export class UntrustedFileError extends Error {
  /** Make the error naming the file, what it is and why it is refused. */
  constructor(readonly path: string, readonly what: string, reason: string) {
    super(
      `${what} ${path} ${reason}; refusing to trust it (chown root and chmod go-w to fix)`,
    );
    this.name = "UntrustedFileError";
  }
}

/** The agent's own uid, or null where the platform has none. */
function _myUid(): number | null {
  try {
    return Deno.uid();
  } catch {
    return null;
  }
}

/**
 * Why a file with this `stat` may not be trusted, or null when it may: owned by root or by
 * `uid` (the agent), and neither group- nor world-writable.
 *
 * @example
 * ```ts
 * import { untrustedReason } from "./trusted_file.ts";
 * untrustedReason({ mode: 0o100666, uid: 0 } as Deno.FileInfo, 0); // "is group- or world-writable (mode 666)"
 * ```
 */
export function untrustedReason(st: Deno.FileInfo, uid: number | null = _myUid()): string | null {
  if (st.mode !== null && (st.mode & 0o022) !== 0) {
    return `is group- or world-writable (mode ${(st.mode & 0o777).toString(8)})`;
  }
  if (st.uid !== null && st.uid !== 0 && st.uid !== uid) {
    return `is owned by uid ${st.uid}, not by root or the agent's user`;
  }
  return null;
}

/**
 * Open `path`, check the opened file's owner and mode (throws {@linkcode UntrustedFileError}),
 * and read it as text of at most `maxBytes` (throws `TooLargeError`). Other errors
 * (`NotFound`, …) are thrown as `Deno.open` throws them.
 */
export async function readTrustedFile(
  path: string,
  opts: { what: string; maxBytes: number },
): Promise<string> {
  const f = await Deno.open(path, { read: true });
  try {
    const reason = untrustedReason(await f.stat());
    if (reason !== null) throw new UntrustedFileError(path, opts.what, reason);
    return await readOpenFileBounded(f, opts.maxBytes, path);
  } finally {
    f.close();
  }
}
