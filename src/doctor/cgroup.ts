/**
 * Whether the agent's own cgroup v2 is delegated to it (SPEC 13), found
 * through `/proc/self/cgroup` and `/proc/self/mountinfo`, never a fixed path.
 *
 * @example
 * ```ts
 * import { cgroupDelegation } from "./cgroup.ts";
 * console.log((await cgroupDelegation()).title);
 * ```
 *
 * @module
 */

import type { Check } from "./check.ts";

/**
 * The cgroup v2 directory this process is in, or null (no cgroup v2 mount).
 * @throws {Deno.errors.NotCapable} when the permission set does not let it read `/proc/self`.
 */
export async function ownCgroupDir(): Promise<string | null> {
  let cgroup: string;
  let mountinfo: string;
  try {
    cgroup = await Deno.readTextFile("/proc/self/cgroup");
    mountinfo = await Deno.readTextFile("/proc/self/mountinfo");
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) throw e;
    return null;
  }
  const rel = cgroup.split("\n").find((l) => l.startsWith("0::"))?.slice(3);
  if (rel === undefined) return null;
  for (const line of mountinfo.split("\n")) {
    const [left, right] = line.split(" - ");
    if (!left || !right || right.split(" ")[0] !== "cgroup2") continue;
    const f = left.split(" ");
    const root = f[3]!;
    const mount = f[4]!;
    if (rel !== root && !rel.startsWith(root === "/" ? "/" : `${root}/`)) continue;
    const below = root === "/" ? rel : rel.slice(root.length);
    return `${mount}${below === "/" ? "" : below}`;
  }
  return null;
}

/** A doctor line: delegated (✔) or not (– : process groups are used instead). */
export async function cgroupDelegation(): Promise<Check> {
  let dir: string | null;
  try {
    dir = await ownCgroupDir();
  } catch (e) {
    return { status: "na", title: `cgroup v2 not checked: ${(e as Error).message}` };
  }
  if (dir === null) {
    return {
      status: "na",
      title: "no cgroup v2 for this process: add-ons are contained by process groups",
    };
  }
  try {
    const probe = `${dir}/addon-doctor-${crypto.randomUUID().slice(0, 8)}`;
    await Deno.mkdir(probe);
    await Deno.remove(probe);
    return { status: "ok", title: `cgroup v2 ${dir} is delegated: add-ons get their own cgroup` };
  } catch {
    return {
      status: "na",
      title: `cgroup v2 ${dir} is not writable: add-ons are contained by process groups ` +
        "(Delegate=yes in the unit enables cgroups)",
    };
  }
}
