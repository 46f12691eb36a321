/**
 * The agent's configuration (`agent.json`, SPEC 2) and the check that the Deno permission set grants what it names.
 *
 * @module
 */

export * from "./config.ts";
export * from "./isolation.ts";
export * from "./permission_check.ts";
export * from "./fleet.ts";
