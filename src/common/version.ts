/**
 * The agent's own version.
 *
 * @module
 */

/** Version of this build of the agent. */
export const AGENT_VERSION = "0.1.0";

/** `version`, Deno version and target, as `addon-agent version` prints them. */
export function versionInfo(): { version: string; deno: string; target: string } {
  return { version: AGENT_VERSION, deno: Deno.version.deno, target: Deno.build.target };
}
