/**
 * The agent itself: the daemon, one-shot sync and the reconciler that drives
 * delivery and supervision per add-on. Everything below it is given to it
 * (source, deliverer, runners, clock), so the reconciler is tested alone.
 *
 * @example Run the daemon until SIGTERM
 * ```ts
 * import { Daemon } from "./mod.ts";
 * import { loadConfig } from "../config/mod.ts";
 * import { openRuntimeRoot } from "../runtime/mod.ts";
 * const cfg = await loadConfig("/etc/addon-agent/agent.json");
 * const daemon = await Daemon.create(cfg, await openRuntimeRoot(cfg.runtime_root));
 * Deno.addSignalListener("SIGTERM", () => daemon.stop());
 * await daemon.run(); // returns once every add-on has stopped
 * ```
 *
 * @module
 */

export * from "./daemon.ts";
export * from "./launch.ts";
export * from "./probation.ts";
export * from "./reconciler.ts";
export * from "./sync.ts";
