/**
 * Running add-ons (SPEC 8 and 10): runners per supervision kind, sidecars,
 * helpers, process groups and their output lines, `/proc`, cgroups,
 * confinement, file capabilities and systemd units. Runners never fetch.
 *
 * @example Run a command as its own process group and stop all of it
 * ```ts
 * import { spawnGroup, stopGroup } from "./mod.ts";
 * const proc = spawnGroup({ cmd: "/bin/sleep", args: ["60"], env: {}, onLine: console.log });
 * const { killed } = await stopGroup(proc); // SIGTERM, SIGKILL after the grace time
 * console.log(killed);
 * ```
 *
 * @module
 */

export * from "./capabilities.ts";
export * from "./cgroup.ts";
export * from "./confine.ts";
export * from "./helper_job.ts";
export * from "./line_splitter.ts";
export * from "./proc_fs.ts";
export * from "./process_group.ts";
export * from "./runners.ts";
export * from "./sidecar.ts";
export * from "./systemctl.ts";
export * from "./systemd_unit.ts";
export * from "./uid_containment.ts";
