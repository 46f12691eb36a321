/**
 * Whether add-ons of this configuration get their own cgroup (SPEC 13), with
 * the supervise room's own discovery: `/proc/self/cgroup` and
 * `/proc/self/mountinfo` (never a fixed path), the container directory the
 * agent would use for the runtime root, and the same probe the agent makes.
 * Reads and probes work under the agent's permission set too (through `cat`,
 * `mkdir` and `rmdir` where Deno does not grant `/proc` or `/sys`).
 *
 * Doctor runs in its own cgroup (a login session's, say), not in the agent
 * unit's: the line says which cgroup it looked from.
 *
 * @example
 * ```ts
 * import { cgroupDelegation } from "./cgroup.ts";
 * const line = await cgroupDelegation({
 *   runtime_root: "/var/lib/addon-agent",
 *   isolation: {
 *     users: "per_addon",
 *     uid_range: [61000, 61999],
 *     cgroup: "auto",
 *     allowed_capabilities: [],
 *   },
 * });
 * console.log(line.title);
 * ```
 *
 * @module
 */

import type { AgentConfig } from "../config/mod.ts";
import { findOwnCgroup, inspectCgroupContainer, type OwnCgroup } from "../supervise/mod.ts";
import type { Check } from "./check.ts";

/** The controllers whose limits `resources` asks for (SPEC 13). */
const LIMIT_CONTROLLERS = ["memory", "cpu", "pids"] as const;

/**
 * A doctor line: add-ons get a cgroup (✔), or why not and that process
 * groups are used instead (–).
 */
export async function cgroupDelegation(
  cfg: Pick<AgentConfig, "runtime_root" | "isolation">,
  own: OwnCgroup | null = findOwnCgroup(),
): Promise<Check> {
  if (cfg.isolation.cgroup === "off") {
    return {
      status: "na",
      title: 'isolation.cgroup is "off": add-ons are contained by process groups',
    };
  }
  if (own === null) {
    return {
      status: "na",
      title: "no cgroup v2 for this process: add-ons are contained by process groups",
    };
  }
  const from = `(seen from cgroup ${own.path})`;
  let found;
  try {
    found = await inspectCgroupContainer(cfg.runtime_root, own);
  } catch (e) {
    return {
      status: "na",
      title: `cgroup v2 is not writable ${from}: ${(e as Error).message}; add-ons are ` +
        "contained by process groups (Delegate=yes in the unit enables cgroups)",
    };
  }
  const { container, offered } = found;
  const missing = LIMIT_CONTROLLERS.filter((c) => !offered.includes(c));
  const limits = missing.length === 0
    ? "memory, cpu and pids limits are enforced"
    : `resources limits are reported as not enforced (no ${missing.join(", ")} controller)`;
  return {
    status: "ok",
    title: `cgroup v2 is writable ${from}: add-ons get their own cgroup in ${container}; ${limits}`,
  };
}
