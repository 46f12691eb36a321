/**
 * `addon-agent control-plane`: the reference control plane, until Ctrl-C.
 *
 * @module
 */

import { startControlPlane } from "../control_plane/mod.ts";
import { DecodeError } from "../protocol/mod.ts";
import { EXIT, UsageError } from "./common.ts";

/** Serve `catalog` on `listen` until SIGINT or SIGTERM. */
export async function controlPlaneCommand(
  opts: { catalog: string; listen: string },
): Promise<number> {
  let cp;
  try {
    cp = await startControlPlane({ catalogPath: opts.catalog, listen: opts.listen });
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
