/**
 * The agent's configuration (`agent.json`, SPEC 2 and 14) decoded once, with
 * field paths, and the check that the Deno permission set grants what it
 * names.
 *
 * @example Load the configuration or say what is wrong with it
 * ```ts
 * import { ConfigError, loadConfig } from "./mod.ts";
 * try {
 *   const cfg = await loadConfig("/etc/addon-agent/agent.json");
 *   console.log(cfg.agent_id, cfg.source.kind, cfg.object_store.kind);
 * } catch (e) {
 *   if (e instanceof ConfigError) console.error(e.message); // names the field
 *   else throw e;
 * }
 * ```
 *
 * @module
 */

export * from "./config.ts";
export * from "./isolation.ts";
export * from "./permission_check.ts";
export * from "./fleet.ts";
