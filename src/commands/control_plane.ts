/**
 * `addon-agent control-plane`: the reference control plane, until Ctrl-C.
 *
 * @module
 */

import { startControlPlane } from "../control_plane/mod.ts";
import { readTrustedFile } from "../common/mod.ts";
import { DecodeError } from "../protocol/mod.ts";
import { EXIT, UsageError } from "./common.ts";

/** Read `--token-file` (trimmed); a file anyone else could write, or an empty one, is bad usage. */
async function _token(path: string): Promise<string> {
  let text: string;
  try {
    text = await readTrustedFile(path, { what: "--token-file", maxBytes: 64 * 1024 });
  } catch (e) {
    throw new UsageError(`--token-file ${path}: ${(e as Error).message}`, { cause: e });
  }
  const token = text.trim();
  if (token === "") throw new UsageError(`--token-file ${path} is empty`);
  return token;
}

/**
 * Serve `catalog` on `listen` until SIGINT or SIGTERM; with `tokenFile`, every request needs
 * `Authorization: Bearer <token>`, and without it only a loopback `listen` is accepted.
 */
export async function controlPlaneCommand(
  opts: { catalog: string; listen: string; tokenFile?: string },
): Promise<number> {
  const token = opts.tokenFile === undefined ? undefined : await _token(opts.tokenFile);
  let cp;
  try {
    cp = await startControlPlane({
      catalogPath: opts.catalog,
      listen: opts.listen,
      ...(token === undefined ? {} : { token }),
    });
  } catch (e) {
    // A catalog that does not decode or a bad --listen is bad usage: exit 2, naming it.
    if (e instanceof DecodeError) throw new UsageError(e.message, { cause: e });
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.PermissionDenied) {
      throw new UsageError(`--catalog ${opts.catalog}: cannot read it: ${e.message}`, {
        cause: e,
      });
    }
    throw e;
  }
  await new Promise<void>((resolve) => {
    Deno.addSignalListener("SIGINT", resolve);
    Deno.addSignalListener("SIGTERM", resolve);
  });
  await cp.close();
  return EXIT.ok;
}
