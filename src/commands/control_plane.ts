/**
 * `addon-agent control-plane`: the reference control plane, until Ctrl-C.
 *
 * @module
 */

import { startControlPlane } from "../control_plane_server.ts";
import { log } from "../log.ts";
import { EXIT } from "./common.ts";

/** Serve `catalog` on `listen` until SIGINT or SIGTERM. */
export async function controlPlaneCommand(
  opts: { catalog: string; listen: string },
): Promise<number> {
  const cp = await startControlPlane({ catalogPath: opts.catalog, listen: opts.listen });
  log.info("control plane listening", { url: cp.url, catalog: opts.catalog });
  await new Promise<void>((resolve) => {
    Deno.addSignalListener("SIGINT", resolve);
    Deno.addSignalListener("SIGTERM", resolve);
  });
  await cp.close();
  return EXIT.ok;
}
