/**
 * Run the daemon (`addon-agent run`) as a real subprocess in tests, and the
 * small tools that go with it: polling for a condition with a bounded wait,
 * reading `state.json`, and finding add-on processes that outlived a test.
 *
 * - {@linkcode startAgent}: spawn `deno run -A main.ts run --config PATH`,
 *   collect its stderr log lines, stop it with a signal or `kill -9` it.
 * - {@linkcode waitFor}: poll a condition every 100 ms until it gives a
 *   value, or fail naming what was awaited and the last value seen.
 * - {@linkcode readAgentState}: `<runtime_root>/state.json`, or null.
 * - {@linkcode markedProcesses} / {@linkcode killMarked}: add-on processes
 *   whose command line carries a marker (give every test's add-ons a unique
 *   marker in their `args`, and check in `finally` that none is left).
 *
 * Every test that starts an agent must stop it in `finally` (`stop()` is
 * idempotent and safe on an agent that already exited), then check that no
 * add-on process survived.
 *
 * @example
 * ```ts
 * const marker = newMarker();
 * const agent = startAgent(cfgPath);
 * try {
 *   const st = await waitFor(async () => {
 *     const s = await readAgentState(root);
 *     return s?.addons["net-probe"]?.state === "running" ? s : null;
 *   }, { timeoutMs: 30_000, what: "net-probe running", context: agent.tail });
 *   // …
 * } finally {
 *   assertEquals(await agent.stop(), 0);
 *   assertEquals(await killMarked(marker), []); // nothing survived
 * }
 * ```
 *
 * @module
 */

import type { AgentState } from "../src/runtime/state.ts";
import { MAIN_TS, S3_ENV } from "./_helpers.ts";

/** One parsed JSON log line of the agent (`{ts, level, msg, ...fields}`). */
export interface LogLine {
  ts: string;
  level: "debug" | "info" | "warn" | "error";
  msg: string;
  addon_id?: string;
  [field: string]: unknown;
}

/** Options of {@linkcode startAgent}. */
export interface StartAgentOptions {
  /** Extra command-line flags after `run --config PATH` (e.g. `["--log-level", "debug"]`). */
  extraArgs?: string[];
  /** How long `stop()` waits for the agent to exit before it SIGKILLs it and throws (default 30 s). */
  stopTimeoutMs?: number;
}

/** A daemon running as a subprocess. */
export interface AgentProcess {
  /** The Deno child process. */
  readonly child: Deno.ChildProcess;
  /** Its pid. */
  readonly pid: number;
  /** Its stderr lines so far (one JSON log object a line, unless `--log-format text`). */
  lines(): string[];
  /** The stderr lines that parse as JSON log objects, in order. */
  logs(): LogLine[];
  /** Its stdout so far. */
  stdout(): string;
  /** The last `n` stderr lines joined, for failure messages (default 40). */
  tail(n?: number): string;
  /** The exit status once the process exited, else null. */
  exitStatus(): Deno.CommandStatus | null;
  /** Throw (with the log tail) when the agent has exited: use inside {@linkcode waitFor} conditions. */
  assertAlive(): void;
  /**
   * Send `signal` (default SIGTERM) and wait for the exit; returns the exit
   * code. Idempotent: an agent that already exited just returns its code.
   * After `stopTimeoutMs` the agent is SIGKILLed and this throws.
   */
  stop(signal?: Deno.Signal): Promise<number>;
  /** `kill -9` the agent and wait for it to be gone (its add-ons are left running, as after a crash). */
  kill9(): Promise<void>;
}

/**
 * Start `addon-agent run --config configPath` with every permission and the
 * s3rver credentials ({@linkcode S3_ENV}) plus `env` in its environment.
 * stdout and stderr are read continuously (so the agent never blocks on a
 * full pipe) and kept in memory.
 */
export function startAgent(
  configPath: string,
  env: Record<string, string> = {},
  opts: StartAgentOptions = {},
): AgentProcess {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      MAIN_TS,
      "run",
      "--config",
      configPath,
      ...(opts.extraArgs ?? []),
    ],
    env: { ...S3_ENV, ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const errLines: string[] = [];
  const parsed: LogLine[] = [];
  let out = "";
  let status: Deno.CommandStatus | null = null;
  const statusP = child.status.then((s) => {
    status = s;
    return s;
  });
  const stderrDone = _readLines(child.stderr, (line) => {
    errLines.push(line);
    if (line.startsWith("{")) {
      try {
        const v = JSON.parse(line);
        if (v !== null && typeof v === "object" && typeof v.msg === "string") parsed.push(v);
      } catch { /* not a JSON log line */ }
    }
  });
  const stdoutDone = (async () => {
    const dec = new TextDecoder();
    for await (const chunk of child.stdout) out += dec.decode(chunk, { stream: true });
    out += dec.decode();
  })();
  const streamsDone = Promise.all([stderrDone, stdoutDone]).then(() => {}, () => {});
  const tail = (n = 40) => errLines.slice(-n).join("\n");
  const stopTimeoutMs = opts.stopTimeoutMs ?? 30_000;

  const finished = async (): Promise<Deno.CommandStatus> => {
    const s = await statusP;
    await streamsDone;
    return s;
  };

  return {
    child,
    pid: child.pid,
    lines: () => [...errLines],
    logs: () => [...parsed],
    stdout: () => out,
    tail,
    exitStatus: () => status,
    assertAlive: () => {
      if (status !== null) {
        throw new Error(
          `the agent (pid ${child.pid}) exited with code ${status.code}; its last log lines:\n${tail()}`,
        );
      }
    },
    stop: async (signal: Deno.Signal = "SIGTERM") => {
      if (status === null) {
        try {
          child.kill(signal);
        } catch { /* exited meanwhile */ }
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timedOut = new Promise<null>((resolve) => {
        timer = setTimeout(() => resolve(null), stopTimeoutMs);
      });
      const s = await Promise.race([finished(), timedOut]);
      clearTimeout(timer);
      if (s === null) {
        try {
          child.kill("SIGKILL");
        } catch { /* exited meanwhile */ }
        await finished();
        throw new Error(
          `the agent (pid ${child.pid}) did not exit within ${stopTimeoutMs} ms of ${signal}; ` +
            `it was killed. Its last log lines:\n${tail()}`,
        );
      }
      return s.code;
    },
    kill9: async () => {
      if (status === null) {
        try {
          child.kill("SIGKILL");
        } catch { /* exited meanwhile */ }
      }
      await finished();
    },
  };
}

async function _readLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  const dec = new TextDecoder();
  let buf = "";
  for await (const chunk of stream) {
    buf += dec.decode(chunk, { stream: true });
    let i: number;
    while ((i = buf.indexOf("\n")) >= 0) {
      onLine(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  }
  buf += dec.decode();
  if (buf !== "") onLine(buf);
}

/** Options of {@linkcode waitFor}. */
export interface WaitForOptions {
  /** Give up after this long. */
  timeoutMs: number;
  /** What is awaited, for the failure message ("net-probe running 2.0.0"). */
  what: string;
  /** Time between attempts (default 100 ms). */
  intervalMs?: number;
  /** More text for the failure message, computed at the time of failure (e.g. `agent.tail`). */
  context?: () => string;
}

/**
 * Call `fn` every `intervalMs` (100 ms) until it returns a value that is not
 * `null`, `undefined` or `false`, and return that value. On timeout, throw
 * an error naming `what`, the last value `fn` returned and `context()`.
 * An exception from `fn` fails at once (use it for "the agent died"); catch
 * inside `fn` what is expected to fail for a while.
 */
export async function waitFor<T>(
  fn: () => Promise<T | null | undefined | false> | T | null | undefined | false,
  opts: WaitForOptions,
): Promise<T> {
  const interval = opts.intervalMs ?? 100;
  const deadline = performance.now() + opts.timeoutMs;
  let last: unknown = undefined;
  for (;;) {
    const v = await fn();
    if (v !== null && v !== undefined && v !== false) return v as T;
    last = v;
    if (performance.now() >= deadline) break;
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
  let shown: string;
  try {
    shown = JSON.stringify(last) ?? String(last);
  } catch {
    shown = String(last);
  }
  const ctx = opts.context ? `\n--- context ---\n${opts.context()}` : "";
  throw new Error(
    `timed out after ${opts.timeoutMs} ms waiting for ${opts.what}; last value: ${shown}${ctx}`,
  );
}

/** `<root>/state.json` parsed, or null when it is missing or does not parse (yet). */
export async function readAgentState(root: string): Promise<AgentState | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(`${root}/state.json`);
  } catch {
    return null;
  }
  try {
    return JSON.parse(text) as AgentState;
  } catch {
    return null;
  }
}

/** A unique marker to put into add-on `args`, so its processes can be found in `/proc/<pid>/cmdline`. */
export function newMarker(prefix = "addon-test"): string {
  return `${prefix}-${crypto.randomUUID()}`;
}

/** Whether `pid` is a live process (not a zombie). */
export function pidAlive(pid: number): boolean {
  let stat: string;
  try {
    stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return false;
  }
  // "pid (comm) S …": the state follows the last ')'.
  const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
  return state !== "Z" && state !== "X" && state !== "";
}

/** Live processes (not zombies, not this one) whose command line contains `marker`. */
export function markedProcesses(marker: string): { pid: number; cmdline: string }[] {
  const out: { pid: number; cmdline: string }[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const pid = Number(e.name);
    if (pid === Deno.pid) continue;
    let cmdline: string;
    try {
      cmdline = Deno.readTextFileSync(`/proc/${pid}/cmdline`).replaceAll("\0", " ").trim();
    } catch {
      continue; // gone meanwhile
    }
    if (cmdline.includes(marker) && pidAlive(pid)) out.push({ pid, cmdline });
  }
  return out;
}

/**
 * SIGKILL every live process carrying `marker` (by pid, one by one) and
 * return what was found, so a test can `assertEquals(await killMarked(m), [])`
 * in `finally` and still leave nothing behind when it fails.
 */
export async function killMarked(marker: string): Promise<{ pid: number; cmdline: string }[]> {
  const found = markedProcesses(marker);
  for (const p of found) {
    try {
      Deno.kill(p.pid, "SIGKILL");
    } catch { /* gone meanwhile */ }
  }
  if (found.length > 0) {
    await waitFor(() => found.every((p) => !pidAlive(p.pid)), {
      timeoutMs: 5_000,
      what: `marked processes ${found.map((p) => p.pid).join(", ")} to die`,
    }).catch(() => {});
  }
  return found;
}

/**
 * Stop `agent` with SIGTERM and kill every process still carrying `marker`; returns what went
 * wrong (a non-zero exit, a stop that failed, survivors), for teardowns that must run every step.
 */
export async function stopAndSweep(
  agent: AgentProcess | undefined,
  marker: string,
): Promise<string[]> {
  const problems: string[] = [];
  if (agent) {
    try {
      const code = await agent.stop();
      if (code !== 0) problems.push(`the agent exited with ${code} on SIGTERM:\n${agent.tail()}`);
    } catch (e) {
      problems.push((e as Error).message);
    }
  }
  const left = await killMarked(marker);
  if (left.length > 0) {
    problems.push(`add-on processes survived the agent: ${JSON.stringify(left)}`);
  }
  return problems;
}

/** Sleep `ms` (for letting polls pass; assert on outcomes, not on timing). */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
