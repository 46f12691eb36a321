/**
 * Ending an add-on by its uid where there is no cgroup (SPEC 13,
 * `"containment": "process_group"` with `users: per_addon`): the uid is the
 * add-on's alone (the agent never hands out a uid that someone else has), so
 * every process running as it belongs to the add-on, also one that called
 * `setsid` or double-forked out of its process group.
 *
 * Signals go out as `kill(-1, sig)` from a shell that `setpriv` runs as that
 * uid: the kernel delivers them to every process of the uid in one pass, so a
 * process that forks meanwhile cannot outrun it. Members are found in the
 * `State:`/`Uid:` lines of `/proc/<pid>/status` (zombies are not members).
 *
 * @example End everything an add-on running as 61000 started
 * ```ts
 * const c = new UidContainment("net-probe", 61000);
 * await c.end(10_000); // SIGTERM to all, SIGKILL to what is left after 10 s
 * ```
 *
 * @module
 */

import { log } from "../common/mod.ts";
import { setprivPath } from "./confine.ts";

/** What ends every process of an add-on: its cgroup, or its exclusive uid. */
export interface Containment {
  /** Send `signal` to every member; returns how many were signalled (an estimate for a uid). */
  signal(signal: Deno.Signal): number;
  /** SIGTERM to every member, SIGKILL after `graceMs`; true when none is left. */
  end(graceMs: number): Promise<boolean>;
}

/** Every process of one add-on's exclusive uid. */
export class UidContainment implements Containment {
  /** Contain add-on `addonId`, whose processes (and only they) run as `uid`. */
  constructor(readonly addonId: string, readonly uid: number) {
    if (!Number.isInteger(uid) || uid < 1) throw new RangeError(`uid ${uid} is not an add-on uid`);
  }

  /** Pids running as the uid (real, effective, saved or filesystem), zombies left out. */
  members(): number[] {
    let text = "";
    try {
      const o = new Deno.Command("/bin/sh", {
        args: ["-c", 'grep -s -H -E "^(State|Uid):" /proc/[0-9]*/status; exit 0'],
        stdin: "null",
        stdout: "piped",
        stderr: "null",
        clearEnv: true,
        env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL: "C" },
      }).outputSync();
      text = new TextDecoder().decode(o.stdout);
    } catch {
      return [];
    }
    const out: number[] = [];
    let zombie = false;
    for (const line of text.split("\n")) {
      const m = /^\/proc\/(\d+)\/status:(State|Uid):\s*(.*)$/.exec(line);
      if (!m) continue;
      if (m[2] === "State") {
        zombie = /^[ZX]/.test(m[3]!);
        continue;
      }
      const pid = Number(m[1]);
      if (!zombie && pid !== Deno.pid && m[3]!.split(/\s+/).map(Number).includes(this.uid)) {
        out.push(pid);
      }
    }
    return out;
  }

  /** `kill(-1, signal)` as the uid: every process of it at once. */
  signal(signal: Deno.Signal): number {
    const n = this.members().length;
    if (n === 0) return 0;
    const setpriv = setprivPath();
    if (setpriv === null) return 0;
    try {
      new Deno.Command(setpriv, {
        args: [
          "--reuid",
          String(this.uid),
          "--regid",
          String(this.uid),
          "--clear-groups",
          "--",
          "/bin/sh",
          "-c",
          'kill -s "$1" -- -1',
          "addon-agent-kill",
          signal.replace(/^SIG/, ""),
        ],
        stdin: "null",
        stdout: "null",
        stderr: "null",
        clearEnv: true,
        env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
      }).outputSync();
    } catch {
      return 0;
    }
    return n;
  }

  /** SIGTERM (and SIGCONT), then SIGKILL after `graceMs`; true when no process of the uid is left. */
  async end(graceMs: number): Promise<boolean> {
    if (this.signal("SIGTERM") === 0) return true;
    this.signal("SIGCONT");
    const deadline = performance.now() + graceMs;
    let interval = 10;
    while (this.members().length > 0) {
      if (performance.now() >= deadline) {
        const killDeadline = performance.now() + 5_000;
        while (this.signal("SIGKILL") > 0) {
          if (performance.now() >= killDeadline) {
            log.warn("processes of the add-on's uid are left after SIGKILL", {
              addon_id: this.addonId,
              uid: this.uid,
            });
            return false;
          }
          await new Promise((r) => setTimeout(r, 20));
        }
        return true;
      }
      await new Promise((r) => setTimeout(r, Math.min(interval, deadline - performance.now())));
      interval = Math.min(interval * 2, 100);
    }
    return true;
  }
}
