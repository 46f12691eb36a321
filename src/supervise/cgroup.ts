/**
 * Cgroup v2 containment of add-ons (SPEC 13): the agent finds its own cgroup
 * through `/proc/self/cgroup` (the `0::/path` line) and `/proc/self/mountinfo`
 * (the `cgroup2` mount), and, when it may write there, gives every sidecar and
 * helper a child cgroup `addon-<addon_id>`. Stopping an add-on ends everything
 * in that cgroup, so a process that called `setsid` or double-forked cannot
 * survive: SIGTERM to every member, then `cgroup.kill` (Linux ≥ 5.14; older
 * kernels: SIGKILL to each pid in `cgroup.procs` until it is empty).
 *
 * Where the add-on cgroups live (the "container"):
 * - the agent's own cgroup when it is not the hierarchy's root (a systemd unit
 *   with `Delegate=yes`); the agent first moves itself into the leaf
 *   `<own>/agent`, as the v2 "no internal processes" rule requires before
 *   controllers can be enabled for the children;
 * - an agent already in `<container>/agent` (restarted in its leaf) keeps
 *   using `<container>`;
 * - an agent in the root cgroup (no delegation, a container, a test) uses
 *   `/addon-agent-<hash of its runtime root>`, so two agents on one host never
 *   share an add-on cgroup.
 *
 * Limits (`resources`) are written to `memory.max`, `cpu.max` and `pids.max`
 * when the controller is enabled for the add-on cgroup; otherwise they are
 * reported as not enforced, naming the missing controller.
 *
 * @example Contain an add-on and end it
 * ```ts
 * const tree = await openCgroupTree("/var/lib/addon-agent");
 * if (tree) {
 *   const cg = await tree.prepare("net-probe", { memory_max_bytes: 64 << 20 });
 *   // spawn through a wrapper that writes its pid to cg.procsFile, then execs
 *   await cg.end(10_000);
 * }
 * ```
 *
 * @module
 */

import type { Resources } from "../protocol/mod.ts";
import { log } from "../common/mod.ts";
import { readProcText } from "./proc_fs.ts";
import { sysExists, sysMkdir, sysReadText, sysRmdir, sysSubdirs, sysWriteText } from "./sys_fs.ts";

/** Why a cgroup could not be prepared or ended. */
export class CgroupError extends Error {
  /** Make the error; `cause` is the underlying failure. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CgroupError";
  }
}

/** Where the agent's own cgroup v2 is. */
export interface OwnCgroup {
  /** Mount point of the cgroup2 hierarchy. */
  mount: string;
  /** The agent's cgroup path inside the hierarchy (`/` for its root). */
  path: string;
}

/** Memory and CPU use of one add-on cgroup. */
export interface CgroupUsage {
  /** `memory.current`, when the memory controller is enabled. */
  memory_bytes?: number;
  /** `usage_usec` of `cpu.stat` in seconds (always there in v2). */
  cpu_seconds?: number;
}

/** A limit that could not be applied, and why (SPEC 13 "not enforced"). */
export interface NotEnforced {
  resource: keyof Resources;
  reason: string;
}

/** Parse `/proc/self/cgroup` and `/proc/self/mountinfo` texts into the own cgroup v2, or null. */
export function parseOwnCgroup(cgroupText: string, mountinfoText: string): OwnCgroup | null {
  const line = cgroupText.split("\n").find((l) => l.startsWith("0::"));
  if (!line) return null;
  const path = line.slice(3).trim() || "/";
  for (const m of mountinfoText.split("\n")) {
    const sep = m.indexOf(" - ");
    if (sep < 0) continue;
    const fstype = m.slice(sep + 3).split(" ")[0];
    if (fstype !== "cgroup2") continue;
    const f = m.slice(0, sep).split(" ");
    const root = _unescape(f[3] ?? "");
    const mount = _unescape(f[4] ?? "");
    if (!mount.startsWith("/")) continue;
    // A namespaced mount shows its root; the own path is relative to it.
    if (root !== "/" && !(path === root || path.startsWith(root + "/"))) continue;
    const rel = root === "/" ? path : path.slice(root.length) || "/";
    return { mount, path: rel };
  }
  return null;
}

/** The agent's own cgroup v2, or null when there is none (pure v1, no /proc). */
export function findOwnCgroup(): OwnCgroup | null {
  try {
    return parseOwnCgroup(
      readProcText("/proc/self/cgroup"),
      readProcText("/proc/self/mountinfo"),
    );
  } catch {
    return null;
  }
}

/** The add-on cgroups of one agent. */
export class CgroupTree {
  /** `container` is the absolute directory that holds the `addon-<id>` cgroups. */
  constructor(readonly container: string, readonly controllers: ReadonlySet<string>) {}

  /** Absolute directory of the cgroup of `addonId`. */
  dir(addonId: string): string {
    return `${this.container}/addon-${addonId}`;
  }

  /** Create (or reuse) the add-on's cgroup and write its limits. */
  // deno-lint-ignore require-await -- async so that every failure is a rejection, never a throw
  async prepare(addonId: string, resources?: Resources): Promise<AddonCgroup> {
    const dir = this.dir(addonId);
    try {
      sysMkdir(dir);
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) {
        throw new CgroupError(`cannot create cgroup ${dir}: ${(e as Error).message}`, { cause: e });
      }
    }
    const cg = new AddonCgroup(addonId, dir);
    cg.notEnforced = this.#limits(dir, resources ?? {});
    return cg;
  }

  #limits(dir: string, r: Resources): NotEnforced[] {
    const out: NotEnforced[] = [];
    const want: [keyof Resources, string, string, string][] = [
      ["memory_max_bytes", "memory", "memory.max", String(r.memory_max_bytes ?? "max")],
      [
        "cpu_max_percent",
        "cpu",
        "cpu.max",
        r.cpu_max_percent === undefined ? "max 100000" : `${r.cpu_max_percent * 1000} 100000`,
      ],
      ["pids_max", "pids", "pids.max", String(r.pids_max ?? "max")],
    ];
    for (const [key, controller, file, value] of want) {
      const asked = r[key] !== undefined;
      if (!this.controllers.has(controller)) {
        if (asked) out.push({ resource: key, reason: `not enforced: no ${controller} controller` });
        continue;
      }
      try {
        sysWriteText(`${dir}/${file}`, value);
      } catch (e) {
        if (asked) {
          out.push({
            resource: key,
            reason: `not enforced: writing ${file} failed: ${(e as Error).message}`,
          });
        }
      }
    }
    return out;
  }

  /** Add-on cgroups left by an earlier agent run (by add-on id). */
  leftovers(): string[] {
    return sysSubdirs(this.container).filter((n) => n.startsWith("addon-")).map((n) => n.slice(6));
  }

  /** Remove the container when it is empty and was made for this runtime root (best effort). */
  close(): void {
    if (!/\/addon-agent-[0-9a-f]{8}$/.test(this.container)) return;
    try {
      sysRmdir(this.container);
    } catch {
      // add-on cgroups are still there
    }
  }
}

/** The cgroup of one add-on. */
export class AddonCgroup {
  /** Limits asked for that could not be applied. */
  notEnforced: NotEnforced[] = [];
  /** Wrap the cgroup directory `dir` of `addonId`. */
  constructor(readonly addonId: string, readonly dir: string) {}

  /** The file a process writes its pid to in order to join. */
  get procsFile(): string {
    return `${this.dir}/cgroup.procs`;
  }

  /** Pids in the cgroup (zombies are not listed by the kernel). */
  members(): number[] {
    try {
      return sysReadText(this.procsFile).split("\n").filter((l) => l !== "").map(Number);
    } catch {
      return [];
    }
  }

  /** Whether no process is left in the cgroup. */
  empty(): boolean {
    return this.members().length === 0;
  }

  /** Send `signal` to every member; returns how many were signalled. */
  signal(signal: Deno.Signal): number {
    let n = 0;
    for (const pid of this.members()) {
      if (pid <= 1 || pid === Deno.pid) continue;
      try {
        Deno.kill(pid, signal);
        n++;
      } catch {
        // gone meanwhile
      }
    }
    return n;
  }

  /** SIGKILL everything: `cgroup.kill`, else each member until none is left. */
  async kill(waitMs = 5_000): Promise<boolean> {
    try {
      if (!sysExists(`${this.dir}/cgroup.kill`)) throw new Error("no cgroup.kill");
      sysWriteText(`${this.dir}/cgroup.kill`, "1");
    } catch {
      this.signal("SIGKILL"); // kernel < 5.14
    }
    const deadline = performance.now() + waitMs;
    let interval = 5;
    while (!this.empty()) {
      if (performance.now() >= deadline) return false;
      this.signal("SIGKILL"); // forked meanwhile (no cgroup.kill)
      await new Promise((r) => setTimeout(r, interval));
      interval = Math.min(interval * 2, 100);
    }
    return true;
  }

  /**
   * End everything in the cgroup: SIGTERM (and SIGCONT) to every member, wait
   * up to `graceMs` for it to empty, then `kill`. True when it is empty.
   */
  async end(graceMs: number): Promise<boolean> {
    if (this.empty()) return true;
    this.signal("SIGTERM");
    this.signal("SIGCONT");
    const deadline = performance.now() + graceMs;
    let interval = 5;
    while (!this.empty()) {
      const left = deadline - performance.now();
      if (left <= 0) {
        const ok = await this.kill();
        if (!ok) {
          log.warn("add-on cgroup still has members after SIGKILL", { addon_id: this.addonId });
        }
        return ok;
      }
      await new Promise((r) => setTimeout(r, Math.min(interval, left)));
      interval = Math.min(interval * 2, 100);
    }
    return true;
  }

  /** Memory and CPU use, from `memory.current` and `cpu.stat`. */
  usage(): CgroupUsage {
    const out: CgroupUsage = {};
    try {
      const v = Number(sysReadText(`${this.dir}/memory.current`).trim());
      if (Number.isFinite(v)) out.memory_bytes = v;
    } catch { /* no memory controller */ }
    try {
      const m = /^usage_usec (\d+)$/m.exec(sysReadText(`${this.dir}/cpu.stat`));
      if (m) out.cpu_seconds = Number(m[1]) / 1e6;
    } catch { /* gone */ }
    return out;
  }

  /** Remove the (empty) cgroup directory; false when it could not be removed. */
  remove(): boolean {
    if (!sysExists(this.dir)) return true;
    try {
      sysRmdir(this.dir);
      return true;
    } catch {
      return false;
    }
  }
}

/** Where the add-on cgroups of an agent go (see the module's "container"). */
export interface CgroupContainer {
  /** Absolute directory that holds (or will hold) the `addon-<id>` cgroups. */
  container: string;
  /** Whether the agent first moves itself into `<container>/agent`. */
  moveSelf: boolean;
}

/**
 * The container of the add-on cgroups of the agent of `runtimeRoot` running
 * in `own`: decided without touching the hierarchy, so `doctor` reports the
 * very directory the agent would use.
 */
export async function addonCgroupContainer(
  runtimeRoot: string,
  own: OwnCgroup,
): Promise<CgroupContainer> {
  const base = own.mount.replace(/\/+$/, "");
  if (own.path === "/") {
    return { container: `${base}/addon-agent-${await _hash8(runtimeRoot)}`, moveSelf: false };
  }
  if (own.path.endsWith("/agent")) {
    return { container: base + own.path.slice(0, -"/agent".length), moveSelf: false };
  }
  return { container: base + own.path, moveSelf: true };
}

/**
 * Check that child cgroups can be created in `dir` (an existing cgroup
 * directory) by creating and removing one named `addon-agent-probe-<pid>`.
 *
 * @throws {Error} with the reason when they cannot
 */
export function probeCgroupDir(dir: string): void {
  const probe = `${dir}/addon-agent-probe-${Deno.pid}`;
  sysMkdir(probe);
  sysRmdir(probe);
}

/**
 * What the agent of `runtimeRoot` in `own` would find, without changing the
 * hierarchy (for `doctor`): its container, the directory probed (the
 * container, or its parent when the agent would still create it) and the
 * controllers offered there.
 *
 * @throws {Error} when no child cgroup can be created there
 */
export async function inspectCgroupContainer(
  runtimeRoot: string,
  own: OwnCgroup,
): Promise<{ container: string; probed: string; offered: string[] }> {
  const { container } = await addonCgroupContainer(runtimeRoot, own);
  const probed = sysExists(container) ? container : container.replace(/\/[^/]+$/, "") || "/";
  probeCgroupDir(probed);
  return { container, probed, offered: offeredControllers(probed) };
}

/** The controllers `dir` offers its children (`cgroup.controllers`); empty when unreadable. */
export function offeredControllers(dir: string): string[] {
  try {
    return sysReadText(`${dir}/cgroup.controllers`).trim().split(/\s+/).filter((c) => c !== "");
  } catch {
    return [];
  }
}

/**
 * Open the add-on cgroup container for the agent of `runtimeRoot`, or null
 * (with the reason logged) when there is no writable cgroup v2.
 */
export async function openCgroupTree(
  runtimeRoot: string,
  own: OwnCgroup | null = findOwnCgroup(),
): Promise<CgroupTree | null> {
  if (!own) {
    log.info("no cgroup v2 for this agent; add-ons are contained by process groups");
    return null;
  }
  const { container, moveSelf } = await addonCgroupContainer(runtimeRoot, own);
  try {
    if (!sysExists(container)) sysMkdir(container);
    if (moveSelf) {
      if (!sysExists(`${container}/agent`)) sysMkdir(`${container}/agent`);
      // Every thread of the agent moves with its pid (cgroup.procs).
      sysWriteText(`${container}/agent/cgroup.procs`, String(Deno.pid));
    }
    // Probe: a cgroup we cannot create children in is not ours to use.
    probeCgroupDir(container);
  } catch (e) {
    log.info("the agent's cgroup is not writable; add-ons are contained by process groups", {
      cgroup: container,
      error: (e as Error).message,
    });
    return null;
  }
  const controllers = _enableControllers(container);
  return new CgroupTree(container, controllers);
}

/** Enable memory, cpu and pids for the children where offered; the set now enabled. */
function _enableControllers(container: string): Set<string> {
  const offered = offeredControllers(container);
  for (const c of ["memory", "cpu", "pids"]) {
    if (!offered.includes(c)) continue;
    try {
      sysWriteText(`${container}/cgroup.subtree_control`, `+${c}`);
    } catch (e) {
      log.warn("could not enable a cgroup controller for add-ons", {
        controller: c,
        error: (e as Error).message,
      });
    }
  }
  try {
    const on = sysReadText(`${container}/cgroup.subtree_control`).trim();
    return new Set(on ? on.split(/\s+/) : []);
  } catch {
    return new Set();
  }
}

async function _hash8(s: string): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s)));
  return [...d.slice(0, 4)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
function _unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
}
