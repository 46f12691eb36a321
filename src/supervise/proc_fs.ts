/**
 * Reading `/proc` under Deno's permission set: Deno grants `/proc` only to
 * `--allow-all`, so when a direct read is refused the agent asks `cat`
 * (it may run programs anyway; nothing is written). Also the parsed
 * `/proc/<pid>/stat` of one or every process, the boot id and the uptime in
 * clock ticks that process identities are made of.
 *
 * @example
 * ```ts
 * const status = readProcText(`/proc/${Deno.pid}/status`);
 * const me = procStat(Deno.pid); // null once the process is gone
 * console.log(me?.pgrp, bootId(), uptimeTicks());
 * ```
 *
 * @module
 */

let _direct: boolean | undefined;

/** Whether Deno lets this process read /proc itself (only under --allow-all). */
export function procDirect(): boolean {
  if (_direct === undefined) {
    try {
      Deno.readTextFileSync("/proc/uptime");
      _direct = true;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotCapable)) throw e;
      _direct = false;
    }
  }
  return _direct;
}

/** A /proc file's text, directly or through `cat`; throws NotFound when it does not exist. */
export function readProcText(path: string): string {
  if (procDirect()) return Deno.readTextFileSync(path);
  const o = new Deno.Command("cat", {
    args: [path],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  })
    .outputSync();
  if (!o.success) throw new Deno.errors.NotFound(path);
  return new TextDecoder().decode(o.stdout);
}

/** Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux). */
const _USER_HZ = 100;

/** The fields of `/proc/<pid>/stat` the agent reads. */
export interface ProcStat {
  pid: number;
  state: string;
  ppid: number;
  pgrp: number;
  session: number;
  starttime: number;
}

/** Parse `/proc/<pid>/stat`, or null when the process does not exist. */
export function procStat(pid: number): ProcStat | null {
  let text: string;
  try {
    text = readProcText(`/proc/${pid}/stat`);
  } catch {
    return null;
  }
  return _parseStat(text);
}

/** Parse a stat line; `comm` (field 2) may hold spaces and parentheses. */
function _parseStat(text: string): ProcStat | null {
  const close = text.lastIndexOf(")");
  if (close < 0) return null;
  const f = text.slice(close + 2).split(" "); // f[0] is field 3 (state)
  const num = (i: number) => Number(f[i]);
  const st = {
    pid: Number(text.slice(0, text.indexOf(" "))),
    state: f[0] ?? "",
    ppid: num(1),
    pgrp: num(2),
    session: num(3),
    starttime: num(19), // field 22
  };
  return Number.isInteger(st.pgrp) && Number.isInteger(st.starttime) ? st : null;
}

/** Every process in /proc (skipping ones that vanish while reading). */
export function* allProcStats(): Generator<ProcStat> {
  if (!procDirect()) {
    const o = new Deno.Command("sh", {
      args: ["-c", "cat /proc/[0-9]*/stat 2>/dev/null"],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).outputSync();
    for (const line of new TextDecoder().decode(o.stdout).split("\n")) {
      const st = line ? _parseStat(line) : null;
      if (st) yield st;
    }
    return;
  }
  for (const e of Deno.readDirSync("/proc")) {
    const c = e.name.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    const st = procStat(Number(e.name));
    if (st) yield st;
  }
}

let _bootIdCache: string | undefined;
/** This boot's id, so identities do not survive a reboot. */
export function bootId(): string {
  _bootIdCache ??= readProcText("/proc/sys/kernel/random/boot_id").trim();
  return _bootIdCache;
}

/** Time since boot in `/proc` clock ticks, rounded down (a lower bound for start times). */
export function uptimeTicks(): number {
  const secs = Number(readProcText("/proc/uptime").split(" ")[0]);
  return Math.max(0, Math.floor(secs * _USER_HZ) - 1);
}
