/**
 * `addon-agent run`: the daemon until SIGTERM or SIGINT (exit 0).
 *
 * @module
 */

import { Daemon } from "../agent/mod.ts";
import { log } from "../common/mod.ts";
import { configFrom, EXIT, rootFrom } from "./common.ts";

/** Run the daemon; returns 0 after a graceful stop. */
export async function runCommand(opts: { config: string }): Promise<number> {
  const cfg = await configFrom(opts.config);
  const root = await rootFrom(cfg);
  try {
    const daemon = await Daemon.create(cfg, root);
    const stop = () => {
      log.info("signal received; stopping");
      daemon.stop();
    };
    Deno.addSignalListener("SIGTERM", stop);
    Deno.addSignalListener("SIGINT", stop);
    log.info("agent started", { agent_id: cfg.agent_id, runtime_root: cfg.runtime_root });
    await daemon.run();
    Deno.removeSignalListener("SIGTERM", stop);
    Deno.removeSignalListener("SIGINT", stop);
    return EXIT.ok;
  } finally {
    root.release();
  }
}
