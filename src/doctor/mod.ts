/**
 * `addon-agent doctor` and `addon-agent diagnostics` (SPEC 16): what is wrong
 * on a host, and everything support needs without the secrets.
 *
 * @example Print the checklist
 * ```ts
 * import { formatCheck, runDoctor } from "./mod.ts";
 * for (const c of await runDoctor("/etc/addon-agent/agent.json")) console.log(formatCheck(c));
 * ```
 *
 * @module
 */

export * from "./check.ts";
export * from "./checks.ts";
export * from "./cgroup.ts";
export * from "./diagnostics.ts";
export * from "./listing.ts";
export * from "./redact.ts";
