/**
 * The `agent_sidecar` process manager: keeps one add-on process running in
 * its own process group, restarting it with exponential backoff (1 s doubling
 * to 60 s, reset after 60 s of healthy uptime), ending whatever is left of
 * the group before each restart, and reporting readiness (2 s up, or a
 * go-plugin handshake line).
 *
 * @example Run and stop a sidecar
 * ```ts
 * declare const spec: LaunchSpec;
 * const sc = new Sidecar(spec, (e) => console.log(e));
 * sc.start();
 * // …
 * await sc.stop();
 * ```
 *
 * @module
 */

import { log, WakeableSleep } from "../common/mod.ts";
import { type GroupProcess, spawnGroup, stopGroup } from "./process_group.ts";
import { confinedCommand, type Confinement } from "./confine.ts";
import type { Containment } from "./uid_containment.ts";

/** What to launch. */
export interface LaunchSpec {
  addon_id: string;
  version: string;
  /** Absolute path of the executable. */
  binary: string;
  args: string[];
  /** The whole environment added for the add-on (its `env` plus `ADDON_*`). */
  env: Record<string, string>;
  cwd?: string;
  /** User, capabilities and cgroup to run under (SPEC 13); absent: as the agent. */
  confine?: Confinement;
  /**
   * What ends every process of the add-on, escaped ones too: its cgroup (whose `procsFile` is in
   * `confine`) or, without one, its exclusive uid. Stop ends everything in it.
   */
  cgroup?: Containment | null;
  /** Whether the agent may shrink the bounding set (holds `CAP_SETPCAP`). */
  bounding?: boolean;
  /**
   * Called before every spawn (a start and each restart): a throw stops that
   * spawn, reported like a failed spawn (the agent re-checks staged bytes
   * here, SPEC 8).
   */
  preflight?: () => Promise<void>;
}

/**
 * The executable, arguments and (whole) environment to spawn for `spec`:
 * confined when it says so, and then the add-on's variables reach no
 * process that still runs as root.
 */
export function launchCommand(
  spec: LaunchSpec,
): { cmd: string; args: string[]; env: Record<string, string> } {
  if (!spec.confine) return { cmd: spec.binary, args: spec.args, env: spec.env };
  return confinedCommand(spec.confine, spec.binary, spec.args, spec.bounding ?? true, spec.env);
}

/**
 * End a spawned add-on: SIGTERM to its cgroup (escaped processes too) and
 * group, SIGKILL to the group after `graceMs`, then `cgroup.kill` for
 * whatever is left in the cgroup.
 */
export async function stopContained(
  proc: GroupProcess,
  cgroup: Containment | null | undefined,
  graceMs: number,
): Promise<void> {
  const t0 = performance.now();
  cgroup?.signal("SIGTERM");
  await stopGroup(proc, graceMs);
  if (cgroup) await cgroup.end(Math.max(0, graceMs - (performance.now() - t0)));
}

/** Timing of restarts and readiness. */
export interface SidecarTiming {
  backoffInitialMs: number;
  backoffMaxMs: number;
  /** Uptime after which the backoff starts again from the initial delay. */
  resetAfterMs: number;
  /** Uptime after which an add-on without a handshake counts as running. */
  readyAfterMs: number;
  /** Time between SIGTERM and SIGKILL on stop. */
  graceMs: number;
}

/** The timing SPEC 8 and 10 fix. */
export const DEFAULT_TIMING: SidecarTiming = {
  backoffInitialMs: 1_000,
  backoffMaxMs: 60_000,
  resetAfterMs: 60_000,
  readyAfterMs: 2_000,
  graceMs: 10_000,
};

/** What happened to a sidecar. */
export type SidecarEvent =
  | { type: "started"; pid: number; pgid: number; identity: string }
  | { type: "running"; pid: number; address?: string }
  | {
    type: "exited";
    code: number;
    signal: string | null;
    uptimeMs: number;
    restartInMs: number;
  }
  | { type: "spawn_failed"; error: string; restartInMs: number }
  | { type: "stopped" };

const HANDSHAKE = /^\d+\|\d+\|(tcp|unix)\|([^|]+)\|(grpc|netrpc)\s*$/;

/** Whether `line` is a go-plugin handshake; returns its address. */
export function parseHandshake(line: string): string | null {
  const m = HANDSHAKE.exec(line);
  return m ? m[2]! : null;
}

/**
 * Keeps one add-on process alive.
 *
 * Contract: after `start`, a process runs (or is waiting out its backoff)
 * until `stop` resolves; `stop` is idempotent and leaves no process of the
 * group behind. Events arrive in order through `onEvent`.
 */
export class Sidecar {
  #proc: GroupProcess | null = null;
  #stopping = false;
  #loop: Promise<void> | null = null;
  readonly #pause = new WakeableSleep();
  #backoffMs: number;
  #minBackoffMs = 0;
  /** Number of restarts since `start`. */
  restarts = 0;
  /** go-plugin address from the handshake, if any. */
  address: string | null = null;

  /** Prepare a sidecar for `spec`; nothing runs until `start`. */
  constructor(
    readonly spec: LaunchSpec,
    readonly onEvent: (e: SidecarEvent) => void,
    readonly timing: SidecarTiming = DEFAULT_TIMING,
  ) {
    this.#backoffMs = timing.backoffInitialMs;
  }

  /** The running process, if any. */
  get process(): GroupProcess | null {
    return this.#proc;
  }

  /** Never restart sooner than `ms` (a failed add-on restarts at the longest backoff). */
  setMinimumBackoff(ms: number): void {
    this.#minBackoffMs = ms;
  }

  /** Start the process and keep it running. */
  start(): void {
    if (this.#loop) return;
    this.#loop = this.#run();
  }

  /** Stop the process group (SIGTERM, SIGKILL after the grace) and stop restarting. */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#pause.wake();
    const proc = this.#proc;
    if (proc) await stopContained(proc, this.spec.cgroup, this.timing.graceMs);
    await this.#loop;
    // A process that escaped the group outlives its leader; the cgroup still holds it.
    await this.spec.cgroup?.end(this.timing.graceMs);
  }

  async #run(): Promise<void> {
    const id = this.spec.addon_id;
    while (!this.#stopping) {
      let proc: GroupProcess;
      const startedAt = Date.now();
      let ready = false;
      const timer: { ready?: ReturnType<typeof setTimeout> } = {};
      try {
        await this.spec.preflight?.();
        if (this.#stopping) break;
        const { cmd, args, env } = launchCommand(this.spec);
        proc = spawnGroup({
          cmd,
          args,
          env,
          clearEnv: true,
          ...(this.spec.cwd ? { cwd: this.spec.cwd } : {}),
          onLine: (stream, line) => {
            log.info(line, { addon_id: id, stream });
            if (!ready && stream === "stdout") {
              const address = parseHandshake(line);
              if (address !== null) {
                ready = true;
                clearTimeout(timer.ready);
                this.address = address;
                this.onEvent({ type: "running", pid: proc.pid, address });
              }
            }
          },
        });
      } catch (e) {
        const wait = this.#nextDelay(0);
        this.onEvent({ type: "spawn_failed", error: (e as Error).message, restartInMs: wait });
        await this.#pause.sleep(wait);
        continue;
      }
      this.#proc = proc;
      this.onEvent({ type: "started", pid: proc.pid, pgid: proc.pgid, identity: proc.identity });
      timer.ready = setTimeout(() => {
        if (!ready && !this.#stopping) {
          ready = true;
          this.onEvent({ type: "running", pid: proc.pid });
        }
      }, this.timing.readyAfterMs);
      const status = await proc.status;
      clearTimeout(timer.ready);
      await stopGroup(proc, Math.min(this.timing.graceMs, 2_000));
      if (!this.#stopping) await this.spec.cgroup?.end(Math.min(this.timing.graceMs, 2_000));
      this.#proc = null;
      if (this.#stopping) break;
      const uptimeMs = Date.now() - startedAt;
      const wait = this.#nextDelay(uptimeMs);
      this.onEvent({
        type: "exited",
        code: status.code,
        signal: status.signal,
        uptimeMs,
        restartInMs: wait,
      });
      await this.#pause.sleep(wait);
      if (!this.#stopping) this.restarts++;
    }
    this.onEvent({ type: "stopped" });
  }

  #nextDelay(uptimeMs: number): number {
    if (uptimeMs >= this.timing.resetAfterMs) this.#backoffMs = this.timing.backoffInitialMs;
    const wait = Math.max(this.#backoffMs, this.#minBackoffMs);
    this.#backoffMs = Math.min(this.#backoffMs * 2, this.timing.backoffMaxMs);
    return wait;
  }
}
