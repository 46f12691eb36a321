/**
 * Process groups for add-ons (Linux): start a command as the leader of its own
 * session and process group, forward its stdout/stderr line by line, and end
 * the whole group — grandchildren included — with SIGTERM, then SIGKILL after
 * a grace period. Group ids come with an identity (boot id + start time of the
 * leader) so that a group recorded by an earlier agent run is only ended while
 * it is still the same group, never an unrelated one after pid reuse.
 *
 * Notes:
 * - `Deno.Command` with `detached: true` calls `setsid()` in the child before
 *   `exec`, so the child is a session and process-group leader:
 *   `pgid == sid == pid`. `spawnGroup` checks this and throws if it ever does
 *   not hold.
 * - Membership is read from `/proc/<pid>/stat`; zombies are not members.
 * - Identity is `"<boot_id>:<starttime>"`: `/proc/sys/kernel/random/boot_id`
 *   and field 22 of the leader's `/proc/<pid>/stat` (clock ticks since boot).
 *   A group matches while its leader is that process (alive or a zombie). The
 *   kernel does not reuse pid P while group P has members, so when the leader
 *   is gone the remaining members match if they are all in session P and no
 *   older than the leader. Residual risk: group P ended completely, P was
 *   reused by a new session leader that then exited leaving children — /proc
 *   cannot tell that apart. A different boot never matches.
 * - Output is forwarded line by line through `line_splitter.ts` (at most
 *   `maxLineBytes` held per stream).
 * - Processes that leave the group (`setsid`, `setpgid`) escape it; only
 *   cgroups could follow them. If such a process keeps the output pipes open,
 *   `stopGroup` closes the readers after a short drain time.
 * - Zombies of grandchildren orphaned by the leader's death belong to pid 1
 *   (or a subreaper): the agent reaps its own children only, so run it under
 *   an init that reaps (systemd, tini).
 *
 * @example Run an add-on, forward its lines, stop it
 * ```ts
 * import { log } from "../common/mod.ts";
 * const proc = spawnGroup({
 *   cmd: "/var/lib/addon-agent/addons/net-probe/current/net-probe",
 *   args: ["--port", "0"],
 *   env: { ADDON_ID: "net-probe" },
 *   onLine: (stream, line) => log.info(line, { addon_id: "net-probe", stream }),
 * });
 * // record { pgid: proc.pgid, identity: proc.identity } in state.json
 * const { killed } = await stopGroup(proc); // SIGTERM, SIGKILL after 10 s
 * ```
 *
 * @example End a group left over from an agent that was killed
 * ```ts
 * declare const recorded: { pgid: number; identity: string }; // from state.json
 * const ended = await endLeftoverGroup(recorded.pgid, recorded.identity);
 * ```
 *
 * @module
 */

import { log } from "../common/mod.ts";
import { DEFAULT_MAX_LINE_BYTES, LineSplitter, pumpLines } from "./line_splitter.ts";
import { allProcStats, bootId, type ProcStat, procStat, uptimeTicks } from "./proc_fs.ts";

/** Which output stream a forwarded line came from. */
export type StreamName = "stdout" | "stderr";

/** Default time between SIGTERM and SIGKILL (10 s). */
export const DEFAULT_GRACE_MS = 10_000;

/** How long to wait for stragglers after SIGKILL before giving up with a warning. */
const _KILL_WAIT_MS = 5_000;
/** How long output may take to reach EOF once the group is gone. */
const _OUTPUT_DRAIN_MS = 1_000;
/** What `spawnGroup` starts and how its output is forwarded. */
export interface SpawnGroupOptions {
  /** Executable (path, or name looked up in PATH). */
  cmd: string;
  /** Arguments after the executable. */
  args: string[];
  /** Environment variables to set (added to the agent's unless `clearEnv`). */
  env: Record<string, string>;
  /** Start from an empty environment, `env` only. */
  clearEnv?: boolean;
  /** Working directory of the child. */
  cwd?: string;
  /** Called once per line, in order per stream; the newline (and a `\r` before it) is removed. */
  onLine: (stream: StreamName, line: string) => void;
  /** Longest line in bytes; longer lines are cut and end with `TRUNCATION_MARKER`. */
  maxLineBytes?: number;
}

/** A running process group started by `spawnGroup`. */
export interface GroupProcess {
  /** Pid of the leader (the process started). */
  readonly pid: number;
  /** Process group id; equal to `pid`. */
  readonly pgid: number;
  /** Identity of the group (see `processIdentity`); record it with `pgid`. */
  readonly identity: string;
  /** Resolves when the leader has exited (and was reaped). */
  readonly status: Promise<Deno.CommandStatus>;
  /** Resolves (never rejects) when stdout and stderr are both drained or closed. */
  readonly output: Promise<void>;
  /** Stop forwarding: cancel both readers (pipes held open by escaped processes), then await `output`. */
  closeOutput(): Promise<void>;
}

/** What `stopGroup` did. */
export interface StopResult {
  /** SIGKILL was needed: the group outlived the grace period. */
  killed: boolean;
  /** Members still alive when giving up (normally empty; stuck in the kernel otherwise). */
  remaining: number[];
}

// ---------------------------------------------------------------------------
// Spawning and line forwarding

/** Start `cmd` as leader of a new session and process group, forwarding its output by lines. */
export function spawnGroup(opts: SpawnGroupOptions): GroupProcess {
  const maxLineBytes = opts.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
  if (!Number.isInteger(maxLineBytes) || maxLineBytes < 1) {
    throw new RangeError(`maxLineBytes must be a positive integer, got ${maxLineBytes}`);
  }
  const notBefore = uptimeTicks();
  const child = new Deno.Command(opts.cmd, {
    args: opts.args,
    env: opts.env,
    clearEnv: opts.clearEnv ?? false,
    cwd: opts.cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    detached: true, // setsid() before exec: pgid == sid == pid
  }).spawn();
  const pid = child.pid;

  const readers = [child.stdout.getReader(), child.stderr.getReader()] as const;
  const deliver = (stream: StreamName) => (line: string) => {
    try {
      opts.onLine(stream, line);
    } catch (error) {
      log.warn("output line handler failed", { pid, stream, error });
    }
  };
  const output = Promise.all([
    pumpLines(readers[0], new LineSplitter(maxLineBytes, deliver("stdout"))),
    pumpLines(readers[1], new LineSplitter(maxLineBytes, deliver("stderr"))),
  ]).then(() => {});

  // Rust's spawn returns after a successful exec, so /proc shows the new
  // session already; the leader may also be gone (and reaped) by now.
  const st = procStat(pid);
  if (st && (st.pgrp !== pid || st.session !== pid)) {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    throw new Error(`child ${pid} is not a process-group leader (pgid ${st.pgrp})`);
  }
  const start = st ? st.starttime : notBefore; // lower bound when already gone
  return {
    pid,
    pgid: pid,
    identity: `${bootId()}:${start}`,
    status: child.status,
    output,
    closeOutput: async () => {
      await Promise.all(readers.map((r) => r.cancel().catch(() => {})));
      await output;
    },
  };
}

// ---------------------------------------------------------------------------
// /proc

/** True for zombie (`Z`) and dead (`X`/`x`) processes. */
function _isDead(st: ProcStat): boolean {
  return st.state === "Z" || st.state === "X" || st.state === "x";
}

/** Live (non-zombie) processes in group `pgid`, with their stat. */
function _memberStats(pgid: number): ProcStat[] {
  const out: ProcStat[] = [];
  for (const st of allProcStats()) if (_isMember(st, pgid)) out.push(st);
  return out;
}

/** Whether `st` is a live member of group `pgid`. */
function _isMember(st: ProcStat | null, pgid: number): st is ProcStat {
  return st !== null && st.pgrp === pgid && !_isDead(st);
}

let _ownPgidCache: number | undefined;
/** The agent's own process group. */
function _ownPgid(): number {
  _ownPgidCache ??= procStat(Deno.pid)?.pgrp ?? -1;
  return _ownPgidCache;
}

/** Live, non-zombie pids whose process group is `pgid` (from /proc). */
export function groupMembers(pgid: number): number[] {
  return _memberStats(pgid).map((st) => st.pid);
}

/** Whether group `pgid` has at least one live, non-zombie member. */
export function groupAlive(pgid: number): boolean {
  for (const st of allProcStats()) if (_isMember(st, pgid)) return true;
  return false;
}

/** Identity of process `pid` ("<boot_id>:<start time in ticks>"), or null if there is none. */
export function processIdentity(pid: number): string | null {
  const st = procStat(pid);
  return st ? `${bootId()}:${st.starttime}` : null;
}

/**
 * Process-group leaders whose environment holds an entry starting with `entryPrefix`
 * (for example `ADDON_DATA_DIR=/var/lib/addon-agent/addons/`): how the agent finds its
 * add-ons after a `kill -9` that came before their group ids were recorded.
 */
export function groupLeadersWithEnv(entryPrefix: string): { pgid: number; identity: string }[] {
  const sh = new Deno.Command("sh", {
    args: [
      "-c",
      'grep -l -s -z -F -e "$1" /proc/[0-9]*/environ 2>/dev/null; true',
      "sh",
      entryPrefix,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).outputSync();
  const found: { pgid: number; identity: string }[] = [];
  for (const line of new TextDecoder().decode(sh.stdout).split("\n")) {
    const pid = Number(/^\/proc\/(\d+)\/environ$/.exec(line)?.[1]);
    if (!pid || pid === Deno.pid) continue;
    const st = procStat(pid);
    if (!st || st.pgrp !== pid || st.state === "Z") continue;
    found.push({ pgid: pid, identity: `${bootId()}:${st.starttime}` });
  }
  return found;
}

/** Whether group `pgid` is still the group recorded with `identity` (and not one after pid reuse). */
export function groupMatches(pgid: number, identity: string): boolean {
  const colon = identity.lastIndexOf(":");
  const start = Number(identity.slice(colon + 1));
  if (colon < 1 || !Number.isInteger(start) || identity.slice(0, colon) !== bootId()) {
    return false;
  }
  const leader = procStat(pgid);
  if (leader) {
    // While group P exists the kernel does not hand out pid P again, so a
    // process P with another start time means our group is gone.
    return leader.starttime === start && leader.pgrp === pgid;
  }
  // Leader gone: the members that are left must belong to session P and be
  // no older than the leader was.
  const members = _memberStats(pgid);
  return members.length > 0 &&
    members.every((st) => st.session === pgid && st.starttime >= start);
}

// ---------------------------------------------------------------------------
// Signals and stopping

/**
 * Send `signal` to every process in group `pgid`; false when there is no such group (ESRCH).
 * It does not check the group's identity: callers that did not start the group themselves
 * check {@linkcode groupMatches} first.
 *
 * @throws {RangeError} for a pgid that is no real group (≤ 1, not a whole number) or the
 * agent's own group: a wrong number must never signal every process or the agent.
 * @throws {Deno.errors.PermissionDenied} when the group is someone's the agent may not signal (EPERM).
 *
 * @example
 * ```ts
 * declare const pgid: number;
 * if (!signalGroup(pgid, "SIGTERM")) console.log("already gone");
 * ```
 */
export function signalGroup(pgid: number, signal: Deno.Signal): boolean {
  if (!Number.isInteger(pgid) || pgid <= 1) {
    throw new RangeError(`refusing to signal process group ${pgid}`);
  }
  if (pgid === _ownPgid()) throw new RangeError(`refusing to signal the agent's own group ${pgid}`);
  try {
    Deno.kill(-pgid, signal);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false; // ESRCH
    throw e;
  }
}

/**
 * SIGTERM the group (and SIGCONT, for a stopped one), SIGKILL it after `graceMs`, wait until
 * the leader is reaped and the group is empty; then its output is drained (or, when an
 * escaped process holds the pipes, closed). Also ends what is left of a group whose leader
 * exited by itself. Idempotent: a group already gone resolves at once with `killed: false`.
 * A group whose members no longer match `proc.identity` (pid reuse) is never signalled.
 * Never rejects for a process that will not die: it resolves with `remaining` non-empty
 * (a process stuck in the kernel) after a few seconds of SIGKILLs.
 *
 * @example
 * ```ts
 * declare const proc: GroupProcess;
 * const { killed, remaining } = await stopGroup(proc, 10_000);
 * if (remaining.length) console.log(`still alive: ${remaining.join(" ")}`);
 * ```
 */
export async function stopGroup(
  proc: GroupProcess,
  graceMs: number = DEFAULT_GRACE_MS,
): Promise<StopResult> {
  const result = await _endGroup(proc.pgid, proc.identity, graceMs);
  if (result.remaining.length === 0) {
    await proc.status; // the group is empty, so the leader is dead: prompt
    if (!(await _within(proc.output, _OUTPUT_DRAIN_MS))) {
      log.warn("output still open after the group ended; closing it", { pid: proc.pid });
      await proc.closeOutput();
    }
  }
  return result;
}

/**
 * End a group recorded by an earlier agent run (SIGTERM, SIGKILL after `graceMs`) if it still
 * matches `identity`; true if it ended one. A group that is gone, is the agent's own, or now
 * belongs to someone else (pid reuse, another boot) is left alone and gives false. Never
 * throws for a group that vanishes meanwhile.
 *
 * @example At start, for each pgid recorded in `state.json`
 * ```ts
 * declare const recorded: { pgid: number; pgid_identity: string };
 * if (await endLeftoverGroup(recorded.pgid, recorded.pgid_identity)) console.log("ended");
 * ```
 */
export async function endLeftoverGroup(
  pgid: number,
  identity: string,
  graceMs: number = DEFAULT_GRACE_MS,
): Promise<boolean> {
  if (!Number.isInteger(pgid) || pgid <= 1 || pgid === _ownPgid()) return false;
  if (!groupAlive(pgid)) return false;
  if (!groupMatches(pgid, identity)) {
    log.info("recorded process group belongs to someone else now; left alone", { pgid });
    return false;
  }
  const result = await _endGroup(pgid, identity, graceMs);
  log.info("ended process group left over from an earlier run", { pgid, killed: result.killed });
  return true;
}

/** SIGTERM (+SIGCONT), wait up to `graceMs`, then SIGKILL until the group is empty. */
async function _endGroup(pgid: number, identity: string, graceMs: number): Promise<StopResult> {
  const empty = _emptyCheck(pgid);
  if (empty()) return { killed: false, remaining: [] };
  if (!groupMatches(pgid, identity)) {
    const remaining = groupMembers(pgid);
    log.warn("process group does not match its identity; not signalled", { pgid, remaining });
    return { killed: false, remaining };
  }
  signalGroup(pgid, "SIGTERM");
  signalGroup(pgid, "SIGCONT"); // a stopped process acts on SIGTERM only once continued
  if (await _waitFor(empty, graceMs)) return { killed: false, remaining: [] };

  const deadline = performance.now() + _KILL_WAIT_MS;
  while (!empty() && groupMatches(pgid, identity)) {
    signalGroup(pgid, "SIGKILL"); // repeated in case something forked meanwhile
    if (await _waitFor(empty, Math.min(500, deadline - performance.now()))) break;
    if (performance.now() >= deadline) {
      const remaining = groupMembers(pgid);
      log.warn("process group still has members after SIGKILL", { pgid, remaining });
      return { killed: true, remaining };
    }
  }
  return { killed: true, remaining: empty() ? [] : groupMembers(pgid) };
}

/**
 * A cheap "is group `pgid` empty?" for polling: re-reads the stat of the
 * members seen last; scans all of /proc only when none of them is left
 * (to catch processes forked meanwhile).
 */
function _emptyCheck(pgid: number): () => boolean {
  let known: number[] = [];
  return () => {
    known = known.filter((pid) => _isMember(procStat(pid), pgid));
    if (known.length === 0) known = groupMembers(pgid);
    return known.length === 0;
  };
}

/** Poll `cond` (5 ms, doubling to 100 ms) until true or `timeoutMs` passed; returns the last result. */
async function _waitFor(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  let interval = 5;
  for (;;) {
    if (cond()) return true;
    const left = deadline - performance.now();
    if (left <= 0) return false;
    await new Promise((resolve) => setTimeout(resolve, Math.min(interval, left)));
    interval = Math.min(interval * 2, 100);
  }
}

/** Whether `p` settles within `ms` (the timer is always cleared). */
async function _within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([p.then(() => true, () => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
