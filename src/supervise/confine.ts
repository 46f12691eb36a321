/**
 * How an add-on process is confined before its first instruction (SPEC 13):
 * its user and group, its capability sets and, with cgroup containment, its
 * cgroup. Nothing here calls a syscall by hand: the agent starts
 *
 * ```text
 * /bin/sh -c 'echo $$ >"$1" || exit 126; shift; exec "$@"' addon-agent-confine \
 *   <cgroup.procs> setpriv --reuid U --regid G --clear-groups \
 *   --bounding-set -all,+cap_x --inh-caps -all,+cap_x --ambient-caps -all,+cap_x \
 *   [--no-new-privs] -- /bin/sh -c 'NAME=${ADDON_AGENT_ENV_NAME}; export NAME; …; exec "$@"' \
 *   addon-agent-env <binary> <args…>
 * ```
 *
 * The shell joins the cgroup (as the agent, which may write `cgroup.procs`)
 * and then `exec`s util-linux `setpriv`, which drops to the add-on's uid and
 * capabilities and `exec`s (through the shell that restores the environment,
 * below) the add-on: one pid throughout, so the add-on's
 * first instruction already runs inside its cgroup, as its user, with its
 * capabilities only. An add-on without capabilities also gets
 * `no_new_privs`. Without a cgroup the first shell is left out.
 *
 * The add-on's environment (which the control plane chooses) never reaches a
 * process that still runs as root: the shell and `setpriv` see only `PATH`
 * and the add-on's variables renamed `ADDON_AGENT_ENV_<NAME>`, and a second
 * shell, run by `setpriv` as the add-on's user, gives them their names back
 * just before it `exec`s the add-on. Otherwise `LD_PRELOAD`,
 * `LD_DEBUG_OUTPUT`, `GLIBC_TUNABLES` or `GCONV_PATH` of an assignment would
 * act in the dynamic loader of the root-run shell and `setpriv`: code or
 * files of the control plane's choosing, as root.
 *
 * @example Build the command line of a confined add-on
 * ```ts
 * const cmd = confinedCommand(
 *   { uid: 61000, gid: 61000, capabilities: ["CAP_NET_RAW"], procsFile: null },
 *   "/var/lib/addon-agent/addons/p/current/p",
 *   ["--port", "0"],
 *   true,
 *   { LD_PRELOAD: "/tmp/x.so" },
 * );
 * console.log(cmd.cmd, cmd.args.join(" "), cmd.env); // env: { PATH, ADDON_AGENT_ENV_LD_PRELOAD }
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

/** Prefix of the add-on's variables while processes that run as root hold them. */
export const ENV_PREFIX = "ADDON_AGENT_ENV_";
/** `PATH` of the root-run shell and `setpriv` (both are named by absolute path anyway). */
const ROOT_STAGE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin";
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * The command that runs `cmd args` confined by `c`, with the environment
 * `env` for the add-on. `bounding` says whether the agent may shrink the
 * bounding set (it needs `CAP_SETPCAP`); without it the bounding set stays
 * the agent's, and the other sets still hold only the add-on's
 * capabilities. Spawn the returned `cmd args` with exactly the returned
 * `env` (a cleared environment): the add-on then starts with exactly `env`.
 *
 * @throws {Error} when setpriv is missing, or a name in `env` is not `^[A-Za-z_][A-Za-z0-9_]*$`
 */
export function confinedCommand(
  c: Confinement,
  cmd: string,
  args: readonly string[],
  bounding = true,
  env: Readonly<Record<string, string>> = {},
): { cmd: string; args: string[]; env: Record<string, string> } {
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
  sp.push(
    "--",
    "/bin/sh",
    "-c",
    _restoreEnvScript(Object.keys(env)),
    "addon-agent-env",
    cmd,
    ...args,
  );
  const staged: Record<string, string> = { PATH: ROOT_STAGE_PATH };
  for (const [k, v] of Object.entries(env)) staged[ENV_PREFIX + k] = v;
  if (c.procsFile === null) return { cmd: setpriv, args: sp, env: staged };
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
    env: staged,
  };
}

/**
 * The script of the shell that runs as the add-on's user: every variable of
 * `names` gets its value back from `ADDON_AGENT_ENV_<name>` (shortest names
 * first, so a variable that is itself called `ADDON_AGENT_ENV_X` is restored
 * only after `X` read its value), `PATH` is the add-on's or unset, then
 * `exec` of the add-on (`"$@"`). Values never appear in an argument list.
 */
function _restoreEnvScript(names: readonly string[]): string {
  const sorted = [...names].sort((a, b) => a.length - b.length || (a < b ? -1 : 1));
  const out: string[] = [];
  for (const n of sorted) {
    if (!ENV_NAME.test(n)) {
      throw new Error(
        `environment variable name ${JSON.stringify(n)} is not ^[A-Za-z_][A-Za-z0-9_]*$`,
      );
    }
    out.push(`${n}=$\{${ENV_PREFIX}${n}}; export ${n}; unset ${ENV_PREFIX}${n}`);
  }
  if (!names.includes("PATH")) out.push("unset PATH");
  out.push('exec "$@"');
  return out.join("; ");
}
