/**
 * How an add-on process is confined before its first instruction (SPEC 13):
 * its user and group, its capability sets and, with cgroup containment, its
 * cgroup. Nothing here calls a syscall by hand: the agent starts
 *
 * ```text
 * /bin/sh -c 'echo $$ >"$1" || exit 126; shift; exec "$@"' addon-agent-confine \
 *   <cgroup.procs> setpriv --reuid U --regid G --clear-groups \
 *   --bounding-set -all,+cap_x --inh-caps -all,+cap_x --ambient-caps -all,+cap_x \
 *   [--no-new-privs] -- <binary> <args…>
 * ```
 *
 * The shell joins the cgroup (as the agent, which may write `cgroup.procs`)
 * and then `exec`s util-linux `setpriv`, which drops to the add-on's uid and
 * capabilities and `exec`s the add-on: one pid throughout, so the add-on's
 * first instruction already runs inside its cgroup, as its user, with its
 * capabilities only. An add-on without capabilities also gets
 * `no_new_privs`. Without a cgroup the shell is left out.
 *
 * @example Build the command line of a confined add-on
 * ```ts
 * const cmd = confinedCommand(
 *   { uid: 61000, gid: 61000, capabilities: ["CAP_NET_RAW"], procsFile: null },
 *   "/var/lib/addon-agent/addons/p/current/p",
 *   ["--port", "0"],
 * );
 * console.log(cmd.cmd, cmd.args.join(" "));
 * ```
 *
 * @module
 */

import { readProcText } from "./proc_fs.ts";

/** What an add-on process is confined to. */
export interface Confinement {
  /** Run as this uid (with `gid`); null: keep the agent's user. */
  uid: number | null;
  gid: number | null;
  /** Exactly the capabilities it keeps (bounding, inheritable, ambient); none → no_new_privs. */
  capabilities: string[];
  /** The `cgroup.procs` file to join before the add-on starts; null: no cgroup. */
  procsFile: string | null;
}

const SETPRIV_DIRS = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"];
const CAP_SETPCAP_BIT = 8n;
let _setpriv: string | null | undefined;

/** Absolute path of `setpriv`, or null when util-linux's setpriv is not installed. */
export function setprivPath(): string | null {
  if (_setpriv !== undefined) return _setpriv;
  _setpriv = null;
  for (const d of SETPRIV_DIRS) {
    try {
      if (Deno.statSync(`${d}/setpriv`).isFile) {
        _setpriv = `${d}/setpriv`;
        break;
      }
    } catch {
      // not there (or not readable under the permission set: try running it)
    }
  }
  if (_setpriv === null) {
    try {
      const o = new Deno.Command("sh", {
        args: ["-c", "command -v setpriv"],
        stdout: "piped",
        stderr: "null",
        stdin: "null",
      }).outputSync();
      const p = new TextDecoder().decode(o.stdout).trim();
      if (o.success && p.startsWith("/")) _setpriv = p;
    } catch {
      // no shell
    }
  }
  return _setpriv;
}

/** Whether this process may shrink a child's bounding set (`CAP_SETPCAP` in its effective set). */
export function holdsSetpcap(): boolean {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readProcText(`/proc/${Deno.pid}/status`));
    return m !== null && ((BigInt(`0x${m[1]}`) >> CAP_SETPCAP_BIT) & 1n) === 1n;
  } catch {
    return false;
  }
}

/** `-all,+cap_net_raw,+cap_bpf` for setpriv (`-all` alone when empty). */
export function setprivCapList(caps: readonly string[]): string {
  return ["-all", ...[...new Set(caps)].sort().map((c) => `+${c.toLowerCase().slice(4)}`)].join(
    ",",
  );
}

/**
 * The command that runs `cmd args` confined by `c`. `bounding` says whether
 * the agent may shrink the bounding set (it needs `CAP_SETPCAP`); without it
 * the bounding set stays the agent's, and the other sets still hold only
 * the add-on's capabilities.
 */
export function confinedCommand(
  c: Confinement,
  cmd: string,
  args: readonly string[],
  bounding = true,
): { cmd: string; args: string[] } {
  const setpriv = setprivPath();
  if (setpriv === null) {
    throw new Error("setpriv is not installed (Debian package util-linux); cannot confine add-ons");
  }
  const caps = setprivCapList(c.capabilities);
  const sp: string[] = [];
  if (c.uid !== null) {
    sp.push("--reuid", String(c.uid), "--regid", String(c.gid ?? c.uid), "--clear-groups");
  }
  if (bounding) sp.push("--bounding-set", caps);
  sp.push("--inh-caps", caps, "--ambient-caps", caps);
  if (c.capabilities.length === 0) sp.push("--no-new-privs");
  sp.push("--", cmd, ...args);
  if (c.procsFile === null) return { cmd: setpriv, args: sp };
  return {
    cmd: "/bin/sh",
    args: [
      "-c",
      'echo $$ >"$1" || exit 126; shift; exec "$@"',
      "addon-agent-confine",
      c.procsFile,
      setpriv,
      ...sp,
    ],
  };
}
