/**
 * `ephemeral_helper` runs: one run to completion in its own process group,
 * with a timeout (the whole group is killed when it overruns), the tail of
 * its output kept for status, and a scheduler that never starts a second run
 * of one helper while the first is going.
 *
 * @example Run a helper once
 * ```ts
 * import type { LaunchSpec } from "./sidecar.ts";
 * declare const spec: LaunchSpec;
 * const r = await runHelper(spec, { timeoutMs: 600_000 });
 * console.log(r.code, r.tail.join("\n"));
 * ```
 *
 * @module
 */

import { nextRun, type Schedule } from "../protocol/mod.ts";
import { log } from "../common/mod.ts";
import { spawnGroup } from "./process_group.ts";
import { launchCommand, type LaunchSpec, stopContained } from "./sidecar.ts";

/** Default timeout of one helper run (10 minutes). */
export const DEFAULT_HELPER_TIMEOUT_MS = 10 * 60_000;
const TAIL_LINES = 20;

/** The outcome of one run. */
export interface HelperResult {
  /** Exit code (-1 when it could not start). */
  code: number;
  signal: string | null;
  timedOut: boolean;
  /** The last lines it printed (stdout and stderr interleaved). */
  tail: string[];
  error?: string;
}

/** Run `spec` to completion; kill its group after `timeoutMs`. */
export async function runHelper(
  spec: LaunchSpec,
  opts: {
    timeoutMs: number;
    graceMs?: number;
    /** Ends the run's process group when aborted (the agent is stopping). */
    signal?: AbortSignal;
    onStart?: (pid: number, pgid: number, identity: string) => void;
  },
): Promise<HelperResult> {
  const tail: string[] = [];
  let proc;
  try {
    await spec.preflight?.();
    const { cmd, args, env } = launchCommand(spec);
    proc = spawnGroup({
      cmd,
      args,
      env,
      clearEnv: true,
      ...(spec.cwd ? { cwd: spec.cwd } : {}),
      onLine: (stream, line) => {
        log.info(line, { addon_id: spec.addon_id, stream });
        tail.push(line);
        if (tail.length > TAIL_LINES) tail.shift();
      },
    });
  } catch (e) {
    return { code: -1, signal: null, timedOut: false, tail, error: (e as Error).message };
  }
  opts.onStart?.(proc.pid, proc.pgid, proc.identity);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    log.warn("helper overran its timeout; killing its process group", {
      addon_id: spec.addon_id,
      timeout_ms: opts.timeoutMs,
    });
    stopContained(proc, spec.cgroup, opts.graceMs ?? 5_000).catch(() => {});
  }, opts.timeoutMs);
  const onAbort = () => stopContained(proc, spec.cgroup, opts.graceMs ?? 5_000).catch(() => {});
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  if (opts.signal?.aborted) onAbort();
  const status = await proc.status;
  clearTimeout(timer);
  opts.signal?.removeEventListener("abort", onAbort);
  await stopContained(proc, spec.cgroup, opts.graceMs ?? 5_000);
  return { code: status.code, signal: status.signal, timedOut, tail };
}

/**
 * Runs a helper on a schedule.
 *
 * Contract: at most one run at a time; a run that is due while the previous
 * one is still going is skipped (logged); `stop` ends a running run's group
 * and the timer.
 */
export class HelperSchedule {
  #timer: ReturnType<typeof setTimeout> | undefined;
  #running: Promise<void> | null = null;
  #stopped = false;

  /** Schedule `run` at the times `schedule` names. */
  constructor(
    readonly addonId: string,
    readonly schedule: Schedule,
    readonly run: () => Promise<void>,
  ) {}

  /** Arm the timer for the next due time. */
  start(): void {
    if (this.#stopped) return;
    const next = nextRun(this.schedule, new Date());
    const wait = Math.max(0, next.getTime() - Date.now());
    this.#timer = setTimeout(() => this.#fire(), wait);
  }

  #fire(): void {
    if (this.#stopped) return;
    if (this.#running) {
      log.warn("helper still running at its next scheduled time; this run is skipped", {
        addon_id: this.addonId,
      });
    } else {
      this.#running = this.run().finally(() => {
        this.#running = null;
      });
    }
    this.start();
  }

  /** Whether a run is going now. */
  get busy(): boolean {
    return this.#running !== null;
  }

  /** Stop scheduling; waits for a running run (which the caller ends). */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
  }
}
