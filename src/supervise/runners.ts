/**
 * The supervision models behind one small interface: `agent_sidecar`,
 * `config_toggle`, `ephemeral_helper`, `systemd_service` and
 * `systemd_timer`. The reconciler starts and stops runners; runners report
 * what happens through {@linkcode RunnerEvents}.
 *
 * @example Start a sidecar runner
 * ```ts
 * declare const launch: Launch;
 * declare const events: RunnerEvents;
 * declare const deps: RunnerDeps;
 * const r = createRunner(launch, events, deps);
 * await r.start();
 * // …
 * await r.stop(false);
 * ```
 *
 * @module
 */

import { type Assignment, parseSchedule } from "../protocol/mod.ts";
import { DEFAULT_HELPER_TIMEOUT_MS, HelperSchedule, runHelper } from "./helper_job.ts";
import { DEFAULT_TIMING, type LaunchSpec, Sidecar, type SidecarTiming } from "./sidecar.ts";
import type { SystemdUnits } from "./systemctl.ts";

/** What a runner tells the reconciler. */
export interface RunnerEvents {
  /** A process started (sidecars and helpers). */
  started(pid: number, pgid: number, identity: string): void;
  /** The add-on is up (2 s, a handshake, a toggle acknowledged, a unit enabled). */
  running(address?: string): void;
  /** A sidecar's process exited and will be restarted after `restartInMs`. */
  exited(code: number, signal: string | null, restartInMs: number, error?: string): void;
  /** A helper run finished. */
  completed(ok: boolean, message: string, code: number): void;
  /** The runner cannot run the add-on at all. */
  failed(reason: string): void;
}

/**
 * Runs one add-on under one supervision model.
 *
 * Contract: `start` is called at most once; `stop` is idempotent and, when it
 * resolves, nothing of the add-on runs any more (no process, no enabled unit
 * for `systemd_*` when `remove` is true).
 */
export interface Runner {
  /** Start the add-on as its model says. */
  start(): Promise<void>;
  /** Stop it; `remove` also deletes what the runner installed (systemd units). */
  stop(remove: boolean): Promise<void>;
  /** Current pid, if a process runs. */
  readonly pid: number | null;
  /** Restarts so far (sidecars). */
  readonly restarts: number;
  /** Never restart sooner than `ms` (sidecars). */
  setMinimumBackoff(ms: number): void;
}

/** What runners need from the agent. */
export interface RunnerDeps {
  units: SystemdUnits;
  timing?: SidecarTiming;
  /** Whether a helper already completed for this (version, config) fingerprint. */
  helperDone(fingerprint: string): boolean;
}

/** Launch details plus the paths a unit needs. */
export interface Launch extends LaunchSpec {
  assignment: Assignment;
  fingerprint: string;
  dataDir: string;
  configFile: string;
}

class _SidecarRunner implements Runner {
  readonly #sc: Sidecar;
  #pid: number | null = null;
  constructor(launch: Launch, ev: RunnerEvents, timing: SidecarTiming) {
    this.#sc = new Sidecar(launch, (e) => {
      switch (e.type) {
        case "started":
          this.#pid = e.pid;
          ev.started(e.pid, e.pgid, e.identity);
          break;
        case "running":
          ev.running(e.address);
          break;
        case "exited":
          this.#pid = null;
          ev.exited(e.code, e.signal, e.restartInMs);
          break;
        case "spawn_failed":
          ev.exited(-1, null, e.restartInMs, e.error);
          break;
        case "stopped":
          this.#pid = null;
      }
    }, timing);
  }
  get pid(): number | null {
    return this.#pid;
  }
  get restarts(): number {
    return this.#sc.restarts;
  }
  setMinimumBackoff(ms: number): void {
    this.#sc.setMinimumBackoff(ms);
  }
  start(): Promise<void> {
    this.#sc.start();
    return Promise.resolve();
  }
  stop(): Promise<void> {
    return this.#sc.stop();
  }
}

class _ToggleRunner implements Runner {
  readonly pid = null;
  readonly restarts = 0;
  constructor(readonly ev: RunnerEvents) {}
  setMinimumBackoff(): void {}
  start(): Promise<void> {
    this.ev.running();
    return Promise.resolve();
  }
  stop(): Promise<void> {
    return Promise.resolve();
  }
}

class _HelperRunner implements Runner {
  #pid: number | null = null;
  readonly restarts = 0;
  readonly #abort = new AbortController();
  #schedule: HelperSchedule | null = null;
  #once: Promise<void> | null = null;
  constructor(readonly launch: Launch, readonly ev: RunnerEvents, readonly deps: RunnerDeps) {}
  get pid(): number | null {
    return this.#pid;
  }
  setMinimumBackoff(): void {}
  async #runOnce(): Promise<void> {
    const a = this.launch.assignment;
    const r = await runHelper(this.launch, {
      timeoutMs: (a.timeout_s ?? DEFAULT_HELPER_TIMEOUT_MS / 1000) * 1000,
      signal: this.#abort.signal,
      onStart: (pid, pgid, identity) => {
        this.#pid = pid;
        this.ev.started(pid, pgid, identity);
      },
    });
    this.#pid = null;
    if (this.#abort.signal.aborted) return;
    const tail = r.tail.slice(-5).join(" | ");
    if (r.error) this.ev.completed(false, `could not start: ${r.error}`, r.code);
    else if (r.timedOut) {
      this.ev.completed(
        false,
        `timed out after ${a.timeout_s ?? 600} s and was killed; output: ${tail}`,
        r.code,
      );
    } else if (r.code === 0) this.ev.completed(true, `exited 0; output: ${tail}`, 0);
    else this.ev.completed(false, `exited with code ${r.code}; output: ${tail}`, r.code);
  }
  start(): Promise<void> {
    const a = this.launch.assignment;
    if (a.schedule !== undefined) {
      let schedule;
      try {
        schedule = parseSchedule(a.schedule);
      } catch (e) {
        this.ev.failed((e as Error).message);
        return Promise.resolve();
      }
      this.#schedule = new HelperSchedule(a.addon_id, schedule, () => this.#runOnce());
      this.#schedule.start();
      this.ev.completed(true, `scheduled (${a.schedule}); waiting for its first run`, 0);
      return Promise.resolve();
    }
    if (this.deps.helperDone(this.launch.fingerprint)) {
      this.ev.completed(true, "already completed for this version and config", 0);
      return Promise.resolve();
    }
    this.#once = this.#runOnce();
    return Promise.resolve();
  }
  async stop(): Promise<void> {
    this.#abort.abort();
    await this.#schedule?.stop();
    await this.#once;
  }
}

class _SystemdRunner implements Runner {
  readonly pid = null;
  readonly restarts = 0;
  constructor(readonly launch: Launch, readonly ev: RunnerEvents, readonly units: SystemdUnits) {}
  setMinimumBackoff(): void {}
  async start(): Promise<void> {
    const a = this.launch.assignment;
    try {
      await this.units.install({
        addon_id: a.addon_id,
        version: a.version,
        exec_path: this.launch.binary,
        // A staged single executable is checked at every start systemd makes (SPEC 8).
        ...(a.artifact && a.artifact.bundle === undefined && this.launch.binary !== a.binary_path
          ? { exec_sha256: a.artifact.sha256 }
          : {}),
        args: a.args,
        env: a.env,
        data_dir: this.launch.dataDir,
        config_file: this.launch.configFile,
        capabilities: a.capabilities,
        kind: a.supervision === "systemd_timer" ? "timer" : "service",
        ...(a.schedule !== undefined ? { schedule: a.schedule } : {}),
        ...(a.resources !== undefined ? { resources: a.resources } : {}),
        ...(this.launch.confine?.uid != null
          ? {
            uid: this.launch.confine.uid,
            gid: this.launch.confine.gid ?? this.launch.confine.uid,
          }
          : {}),
      });
      this.ev.running();
    } catch (e) {
      this.ev.failed(`systemd: ${(e as Error).message}`);
    }
  }
  async stop(remove: boolean): Promise<void> {
    if (remove) await this.units.remove(this.launch.assignment.addon_id);
  }
}

/** Build the runner for the launch's supervision model. */
export function createRunner(launch: Launch, ev: RunnerEvents, deps: RunnerDeps): Runner {
  switch (launch.assignment.supervision) {
    case "agent_sidecar":
      return new _SidecarRunner(launch, ev, deps.timing ?? DEFAULT_TIMING);
    case "config_toggle":
      return new _ToggleRunner(ev);
    case "ephemeral_helper":
      return new _HelperRunner(launch, ev, deps);
    case "systemd_service":
    case "systemd_timer":
      return new _SystemdRunner(launch, ev, deps.units);
    default:
      throw new Error(`no runner for ${JSON.stringify(launch.assignment.supervision)}`);
  }
}
