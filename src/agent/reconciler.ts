/**
 * The reconciler: desired assignments against what actually runs. It starts
 * new add-ons, stops removed or disabled ones, restarts an add-on only when
 * its assignment really changed (binary digest, args, env, config,
 * capabilities, supervision, schedule), keeps the last known good running
 * when a new assignment cannot be delivered (`fallback`), and rolls back a
 * new version that crash-loops (SPEC 8). A change to one add-on never
 * touches another: each add-on has its own slot and its own queue.
 *
 * @example
 * ```ts
 * const rec = new Reconciler(deps);
 * await rec.apply(entries);   // a new desired state
 * await rec.tick();           // the slow timer: retries, drift
 * await rec.stopAll();        // SIGTERM
 * ```
 *
 * @module
 */

import { type Assignment, type Entry, type Platform, supervisionName } from "../protocol/mod.ts";
import {
  applyFileCapabilities,
  createRunner,
  type DEFAULT_TIMING,
  endLeftoverGroup,
  groupLeadersWithEnv,
  type Launch,
  type Runner,
  type RunnerDeps,
} from "../supervise/mod.ts";
import type { AgentConfig } from "../config/mod.ts";
import { deliver, type DeliveryContext, DeliveryError } from "../delivery/mod.ts";
import {
  activate,
  type AddonState,
  type AddonStateName,
  type AgentState,
  collectPartials,
  collectVersions,
  emptyAddonState,
  ensureRealDir,
  type LastGood,
  type Layout,
  readLastGood,
  removeIfExists,
  removeLastGood,
  rollBack,
  writeFileAtomic,
  writeLastGood,
} from "../runtime/mod.ts";
import { log, sha256Hex } from "../common/mod.ts";

/** Rollback and retry timing (SPEC 6 and 8). */
export interface ResilienceTiming {
  /** Exits within `crashWindowMs` of activation that roll a new version back. */
  crashLoopExits: number;
  crashWindowMs: number;
  /** How long a handshake-speaking add-on has to print its handshake. */
  handshakeTimeoutMs: number;
  retryInitialMs: number;
  retryMaxMs: number;
}

/** The timing SPEC 6 and 8 fix. */
export const DEFAULT_RESILIENCE: ResilienceTiming = {
  crashLoopExits: 5,
  crashWindowMs: 5 * 60_000,
  handshakeTimeoutMs: 60_000,
  retryInitialMs: 30_000,
  retryMaxMs: 60 * 60_000,
};

/** What the reconciler needs. */
export interface ReconcilerDeps {
  cfg: AgentConfig;
  layout: Layout;
  delivery: DeliveryContext;
  platform: Platform;
  state: AgentState;
  runner: Omit<RunnerDeps, "helperDone">;
  resilience?: ResilienceTiming;
  sidecarTiming?: typeof DEFAULT_TIMING;
  /** Something in `state` changed (persist it, report it). */
  onChange(addonId: string): void;
}

/**
 * The fields whose change makes an add-on restart, as a sha256 (hex): it is
 * kept in `state.json` and shown in status, so it must not carry env, args
 * or config values.
 */
export function fingerprint(a: Assignment): string {
  return sha256Hex(JSON.stringify([
    a.version,
    a.delivery,
    supervisionName(a),
    a.artifact?.sha256 ?? a.binary_path ?? null,
    a.binary_name,
    a.artifact?.bundle?.entrypoint ?? null,
    a.args,
    a.env,
    a.config,
    a.capabilities,
    a.schedule ?? null,
    a.timeout_s ?? null,
  ]));
}

interface _Running {
  assignment: Assignment;
  fp: string;
  runner: Runner;
  /** Running the last known good instead of the desired assignment. */
  fallback: boolean;
  handshake: boolean;
}

interface _Probation {
  version: string;
  sha256: string;
  activatedAt: number;
  exits: number[];
  prevLastGood: LastGood | null;
  needsHandshake: boolean;
  timer?: ReturnType<typeof setTimeout>;
}

/** Reconciles desired add-ons against what runs. */
export class Reconciler {
  readonly #slots = new Map<string, _Slot>();
  #pushed: ReadonlyMap<string, string> = new Map();
  /** The `version:sha256` the source assigns to `id`, if any. */
  pushedKey(id: string): string | undefined {
    return this.#pushed.get(id);
  }
  /** Stopping: start nothing new. */
  stopping = false;

  /** Make a reconciler over `deps.state`. */
  constructor(readonly deps: ReconcilerDeps) {}

  /** End process groups a killed agent left behind (recorded in `state.json`). */
  async endLeftovers(): Promise<void> {
    for (const s of Object.values(this.deps.state.addons)) {
      if (s.pgid !== null && s.pgid_identity !== null) {
        if (await endLeftoverGroup(s.pgid, s.pgid_identity, 5_000)) {
          log.info("ended a process group left by an earlier agent", {
            addon_id: s.addon_id,
            pgid: s.pgid,
          });
        }
      }
      s.pid = null;
      s.pgid = null;
      s.pgid_identity = null;
    }
    // Add-ons started just before a kill -9, before their group ids reached state.json.
    const marker = `ADDON_DATA_DIR=${this.deps.layout.addons}/`;
    for (const g of groupLeadersWithEnv(marker)) {
      if (await endLeftoverGroup(g.pgid, g.identity, 5_000)) {
        log.info("ended an add-on process group an earlier agent left unrecorded", {
          pgid: g.pgid,
        });
      }
    }
  }

  /**
   * Apply a new desired state: one verdict per entry; add-ons not named are removed.
   * `pushed` names the (version, sha256) the source itself assigns per add-on, so a
   * rolled-back version stays refused while the source assigns it, even under an override.
   */
  async apply(entries: Entry[], pushed: ReadonlyMap<string, string> = new Map()): Promise<void> {
    this.#pushed = pushed;
    const named = new Set<string>();
    const work: Promise<void>[] = [];
    for (const e of entries) {
      if (e.ok) {
        named.add(e.assignment.addon_id);
        work.push(this.#slot(e.assignment.addon_id).enqueueDesired(e.assignment));
      } else if (e.addon_id !== undefined) {
        // A refused entry keeps its add-on as it was.
        named.add(e.addon_id);
        work.push(this.#slot(e.addon_id).enqueueRefused(e.error));
      } else {
        log.error("assignment refused", { error: e.error });
      }
    }
    for (const [id, slot] of this.#slots) {
      if (!named.has(id)) work.push(slot.enqueueRemoved());
    }
    for (const id of Object.keys(this.deps.state.addons)) {
      if (!named.has(id) && !this.#slots.has(id)) work.push(this.#slot(id).enqueueRemoved());
    }
    await Promise.all(work);
    await this.#collectPartials();
  }

  /** The slow timer: retry deliveries whose backoff is over. */
  async tick(): Promise<void> {
    await Promise.all([...this.#slots.values()].map((s) => s.enqueueRetry()));
  }

  /** Stop every add-on (SIGTERM to each group, SIGKILL after the grace). */
  async stopAll(): Promise<void> {
    this.stopping = true;
    this.deps.delivery.downloads.abortAll();
    await Promise.all([...this.#slots.values()].map((s) => s.stopForShutdown()));
  }

  /** The sha256 digests any desired add-on still wants (for partial clean-up). */
  wantedDigests(): Set<string> {
    const out = new Set<string>();
    for (const s of this.#slots.values()) {
      const sha = s.desired?.artifact?.sha256;
      if (sha) out.add(sha);
    }
    for (const sha of this.deps.delivery.downloads.active()) out.add(sha);
    return out;
  }

  async #collectPartials(): Promise<void> {
    try {
      await collectPartials(this.deps.layout, this.wantedDigests());
    } catch (e) {
      log.warn("could not clean partial downloads", { error: e as Error });
    }
  }

  #slot(id: string): _Slot {
    let s = this.#slots.get(id);
    if (!s) {
      s = new _Slot(id, this);
      this.#slots.set(id, s);
    }
    return s;
  }

  /** Forget a removed add-on's slot. */
  dropSlot(id: string): void {
    this.#slots.delete(id);
  }
}

class _Slot {
  desired: Assignment | null = null;
  running: _Running | null = null;
  #queue: Promise<void> = Promise.resolve();
  #retry = new Map<string, { attempt: number; nextAt: number }>();
  #probation: _Probation | null = null;

  constructor(readonly id: string, readonly rec: Reconciler) {}

  get #deps(): ReconcilerDeps {
    return this.rec.deps;
  }

  get st(): AddonState {
    const all = this.#deps.state.addons;
    let s = Object.hasOwn(all, this.id) ? all[this.id] : undefined;
    if (!s) {
      s = emptyAddonState(this.id);
      all[this.id] = s;
    }
    return s;
  }

  #set(state: AddonStateName, message: string, extra: Partial<AddonState> = {}): void {
    const s = this.st;
    const changed = s.state !== state || s.message !== message;
    if (s.state !== state && (state === "running" || state === "fallback")) {
      s.since = new Date().toISOString();
    }
    s.state = state;
    s.message = message;
    Object.assign(s, extra);
    if (state !== "downloading") delete s.progress;
    if (changed) {
      const level = state === "failed" || state === "rolled_back" ? "error" : "info";
      log[level](`state ${state}${message ? `: ${message}` : ""}`, { addon_id: this.id, state });
    }
    this.#deps.onChange(this.id);
  }

  #enqueue(fn: () => Promise<void>): Promise<void> {
    const next = this.#queue.then(fn).catch((e) => {
      log.error("reconcile failed", { addon_id: this.id, error: e as Error });
      this.#set("failed", (e as Error).message);
    });
    this.#queue = next;
    return next;
  }

  enqueueDesired(a: Assignment): Promise<void> {
    return this.#enqueue(async () => {
      this.desired = a;
      await this.#reconcile(false);
    });
  }

  enqueueRefused(reason: string): Promise<void> {
    return this.#enqueue(() => {
      const s = this.st;
      if (this.running) {
        log.error("assignment refused; the add-on keeps running as it was", {
          addon_id: this.id,
          error: reason,
        });
        s.message =
          `assignment refused (${reason}); still running ${this.running.assignment.version}`;
        this.#deps.onChange(this.id);
      } else {
        this.#set("failed", `assignment refused: ${reason}`);
      }
      return Promise.resolve();
    });
  }

  enqueueRetry(): Promise<void> {
    return this.#enqueue(async () => {
      if (this.desired) await this.#reconcile(true);
    });
  }

  enqueueRemoved(): Promise<void> {
    return this.#enqueue(async () => {
      this.desired = null;
      await this.#stopRunning(true);
      this.#endProbation();
      const layout = this.#deps.layout;
      await removeLastGood(layout, this.id);
      await removeIfExists(layout.current(this.id));
      await removeIfExists(layout.previous(this.id));
      await removeIfExists(layout.versionsDir(this.id));
      await removeIfExists(layout.configFile(this.id));
      delete this.#deps.state.addons[this.id];
      this.rec.dropSlot(this.id);
      log.info("assignment removed; add-on stopped and its files removed (data/ kept)", {
        addon_id: this.id,
      });
      this.#deps.onChange(this.id);
    });
  }

  async stopForShutdown(): Promise<void> {
    await this.#queue;
    this.#endProbation();
    if (this.running) {
      await this.running.runner.stop(false);
      const s = this.st;
      s.pid = null;
      s.pgid = null;
      s.pgid_identity = null;
      if (s.state === "running" || s.state === "starting" || s.state === "fallback") {
        s.message = "agent stopped";
      }
      this.#deps.onChange(this.id);
    }
  }

  async #stopRunning(remove: boolean): Promise<void> {
    const r = this.running;
    if (!r) return;
    this.running = null;
    await r.runner.stop(remove);
    const s = this.st;
    s.pid = null;
    s.pgid = null;
    s.pgid_identity = null;
    delete s.address;
  }

  #endProbation(): void {
    if (this.#probation?.timer !== undefined) clearTimeout(this.#probation.timer);
    this.#probation = null;
  }

  #retryKey(a: Assignment): string {
    return `${a.version}:${a.artifact?.sha256 ?? ""}`;
  }

  #failedVersion(a: Assignment) {
    return this.st.failed_versions.find((f) =>
      f.version === a.version && f.sha256 === (a.artifact?.sha256 ?? "")
    );
  }

  async #reconcile(isRetry: boolean): Promise<void> {
    const a = this.desired;
    if (!a || this.rec.stopping) return;
    const s = this.st;
    s.desired_version = a.version;
    s.supervision = supervisionName(a);
    // Forget rolled-back versions that are no longer assigned (by the source or the override).
    const pushedKey = this.rec.pushedKey(this.id);
    s.failed_versions = s.failed_versions.filter((f) =>
      (f.version === a.version && f.sha256 === (a.artifact?.sha256 ?? "")) ||
      `${f.version}:${f.sha256}` === pushedKey
    );
    if (!a.enabled) {
      if (this.running) await this.#stopRunning(isSystemd(a));
      this.#endProbation();
      this.#set("disabled", "enabled is false; staged files are kept");
      return;
    }
    if (typeof a.supervision !== "string") {
      if (this.running) await this.#stopRunning(true);
      this.#set(
        "unsupported",
        `supervision ${JSON.stringify(a.supervision.unsupported)} is not supported by this agent`,
      );
      return;
    }
    const fp = fingerprint(a);
    if (this.running && !this.running.fallback && this.running.fp === fp) return;
    const failed = this.#failedVersion(a);
    if (failed) {
      if (!this.running || !this.running.fallback) {
        await this.#runLastGood("rolled_back", `rolled back: ${failed.reason}`);
      }
      return;
    }
    const key = this.#retryKey(a);
    const retry = this.#retry.get(key);
    if (retry && Date.now() < retry.nextAt) return;
    if (isRetry && !retry && this.running?.fp === fp) return;

    let launch: Launch;
    try {
      launch = await this.#prepare(a);
    } catch (e) {
      await this.#deliveryFailed(a, e as Error);
      return;
    }
    this.#retry.delete(key);
    await this.#activateAndStart(a, launch);
  }

  async #deliveryFailed(a: Assignment, e: Error): Promise<void> {
    if (this.rec.stopping) return; // a download cut short by the stop: nothing to fall back to
    const key = this.#retryKey(a);
    const prev = this.#retry.get(key);
    const attempt = (prev?.attempt ?? 0) + 1;
    const t = this.#deps.resilience ?? DEFAULT_RESILIENCE;
    const delay = Math.min(t.retryInitialMs * 2 ** (attempt - 1), t.retryMaxMs);
    this.#retry.set(key, { attempt, nextAt: Date.now() + delay });
    const reason = `${a.version} could not be delivered: ${e.message} (retry in ${
      Math.round(delay / 1000)
    } s)`;
    log.error("delivery failed", {
      addon_id: a.addon_id,
      version: a.version,
      error: e.message,
      retry_in_s: Math.round(delay / 1000),
    });
    if (this.running) {
      // Keep running exactly as before.
      this.running.fallback = true;
      this.#set("fallback", reason);
      return;
    }
    await this.#runLastGood("fallback", reason);
  }

  /** Run `last-good.json` (after a reboot, a failed delivery, a rollback); else `failed`. */
  async #runLastGood(state: "fallback" | "rolled_back", reason: string): Promise<void> {
    if (this.rec.stopping) return;
    const lg = await readLastGood(this.#deps.layout, this.id, this.#deps.platform);
    const desired = this.desired;
    if (
      !lg ||
      (desired && fingerprint(lg.assignment) === fingerprint(desired) && state === "fallback")
    ) {
      this.#set("failed", reason);
      return;
    }
    let launch: Launch;
    try {
      launch = await this.#prepare(lg.assignment);
    } catch (e) {
      this.#set(
        "failed",
        `${reason}; the last good ${lg.assignment.version} cannot run either: ${
          (e as Error).message
        }`,
      );
      return;
    }
    await this.#stopRunning(false);
    this.#start(lg.assignment, launch, true, lg.handshake);
    this.#set(state, reason, { version: lg.assignment.version });
  }

  /** Deliver, grant capabilities and write config.json: everything before a start. */
  async #prepare(a: Assignment): Promise<Launch> {
    const layout = this.#deps.layout;
    let binary = "";
    let staged = false;
    if (a.supervision !== "config_toggle") {
      if (a.delivery === "os_package") {
        binary = await _checkExecutable(a.binary_path ?? "");
      } else {
        const t0 = Date.now();
        const d = await deliver(
          {
            ...this.#deps.delivery,
            onPhase: (_id, phase) => this.#set(phase, `${phase} ${a.version}`),
            onProgress: (id, bytes, total) => {
              this.st.progress = { bytes, total_bytes: total };
              this.#deps.onChange(id);
            },
          },
          a,
        );
        binary = d.binary;
        staged = d.source !== "host_binary";
        if (d.source === "downloaded") {
          this.st.last_delivery = {
            at: new Date().toISOString(),
            duration_ms: Date.now() - t0,
            bytes: d.fetched,
          };
        }
      }
      if (a.capabilities.length > 0 && a.supervision === "agent_sidecar") {
        if (!staged) {
          throw new DeliveryError(
            `capabilities ${
              a.capabilities.join(", ")
            } can only be granted to a binary the agent staged, not to ${binary}`,
            { kind: "refused" },
          );
        }
        await applyFileCapabilities(binary, a.capabilities);
      }
    }
    await ensureRealDir(layout.addonDir(a.addon_id));
    await ensureRealDir(layout.dataDir(a.addon_id), 0o750);
    // The add-on's config may hold secrets: never world-readable (SPEC 12).
    await writeFileAtomic(
      layout.configFile(a.addon_id),
      JSON.stringify(a.config, null, 2) + "\n",
      0o640,
    );
    return {
      assignment: a,
      fingerprint: fingerprint(a),
      addon_id: a.addon_id,
      version: a.version,
      binary,
      args: a.args,
      env: {
        ...baseEnvironment(),
        ...a.env,
        ADDON_ID: a.addon_id,
        ADDON_VERSION: a.version,
        ADDON_CONFIG_FILE: layout.configFile(a.addon_id),
        ADDON_DATA_DIR: layout.dataDir(a.addon_id),
      },
      cwd: layout.dataDir(a.addon_id),
      dataDir: layout.dataDir(a.addon_id),
      configFile: layout.configFile(a.addon_id),
    };
  }

  async #activateAndStart(a: Assignment, launch: Launch): Promise<void> {
    if (this.rec.stopping) return;
    const layout = this.#deps.layout;
    const lg = await readLastGood(layout, this.id, this.#deps.platform);
    let changed = false;
    if (a.delivery === "pushed_artifact" && a.artifact) {
      changed = (await activate(layout, a.addon_id, a.version)).changed;
    }
    const old = this.running;
    await this.#stopRunning(old !== null && isSystemd(old.assignment) && !isSystemd(a));
    this.#endProbation();
    const isNewVersion = a.artifact !== undefined && !a.local &&
      lg?.assignment.version !== a.version;
    if (isNewVersion) {
      const t = this.#deps.resilience ?? DEFAULT_RESILIENCE;
      this.#probation = {
        version: a.version,
        sha256: a.artifact!.sha256,
        activatedAt: Date.now(),
        exits: [],
        prevLastGood: lg,
        needsHandshake: lg?.handshake ?? false,
      };
      if (lg?.handshake && a.supervision === "agent_sidecar") {
        const p = this.#probation;
        p.timer = setTimeout(() => {
          if (this.#probation === p && !this.running?.handshake) {
            this.#enqueue(() =>
              this.#rollBack(`no go-plugin handshake within ${t.handshakeTimeoutMs / 1000} s`)
            );
          }
        }, t.handshakeTimeoutMs);
      }
    }
    this.#set("starting", "", { version: a.version });
    this.#start(a, launch, false, false);
    if (changed) await this.#collect();
  }

  async #collect(): Promise<void> {
    try {
      await collectVersions(this.#deps.layout, this.id, this.#deps.cfg.limits.keep_versions);
    } catch (e) {
      log.warn("garbage collection failed", { addon_id: this.id, error: e as Error });
    }
  }

  #start(a: Assignment, launch: Launch, fallback: boolean, handshake: boolean): void {
    const running: _Running = {
      assignment: a,
      fp: launch.fingerprint,
      runner: undefined as unknown as Runner,
      fallback,
      handshake,
    };
    const deps: RunnerDeps = {
      ...this.#deps.runner,
      helperDone: (fp) => this.st.helper_fingerprint === fp,
    };
    this.st.restarts = 0;
    running.runner = createRunner(launch, {
      started: (pid, pgid, identity) => {
        if (this.running !== running) return;
        const s = this.st;
        s.pid = pid;
        s.pgid = pgid;
        s.pgid_identity = identity;
        this.#deps.onChange(this.id);
      },
      running: (address) => {
        if (this.running !== running) return;
        if (address !== undefined) {
          running.handshake = true;
          this.st.address = address;
        } else if (this.#probation?.needsHandshake && !running.fallback) {
          return; // wait for the handshake
        }
        this.#onRunning(running);
      },
      exited: (code, signal, restartInMs, error) => {
        if (this.running !== running) return;
        const s = this.st;
        s.pid = null;
        delete s.address;
        s.restarts = running.runner.restarts + 1;
        const why = error ?? (signal ? `killed by ${signal}` : `exited with code ${code}`);
        log.warn("add-on exited; restarting", {
          addon_id: this.id,
          code,
          signal,
          restart_in_ms: restartInMs,
        });
        const p = this.#probation;
        if (p && !running.fallback) {
          const now = Date.now();
          const t = this.#deps.resilience ?? DEFAULT_RESILIENCE;
          if (now - p.activatedAt <= t.crashWindowMs) {
            p.exits.push(now);
            if (p.exits.length >= t.crashLoopExits) {
              this.#enqueue(() =>
                this.#rollBack(
                  `${p.exits.length} exits within ${
                    Math.round((now - p.activatedAt) / 1000)
                  } s of activation (last: ${why})`,
                )
              );
              return;
            }
          }
        }
        if (s.state !== "failed" && s.state !== "fallback" && s.state !== "rolled_back") {
          this.#set("starting", `${why}; restarting in ${Math.round(restartInMs / 1000)} s`);
        } else {
          this.#deps.onChange(this.id);
        }
      },
      completed: (ok, message, code) => {
        if (this.running !== running) return;
        this.#set(ok ? "completed" : "failed", message, {
          exit_code: code,
          pid: null,
          pgid: null,
          pgid_identity: null,
          ...(ok && a.schedule === undefined ? { helper_fingerprint: launch.fingerprint } : {}),
        });
        if (ok && !running.fallback && !a.local) {
          writeLastGood(this.#deps.layout, a, { handshake: false }).catch(() => {});
        }
      },
      failed: (reason) => {
        if (this.running !== running) return;
        this.#set("failed", reason);
      },
    }, deps);
    this.running = running;
    running.runner.start().catch((e) => this.#set("failed", (e as Error).message));
  }

  #onRunning(running: _Running): void {
    const a = running.assignment;
    if (running.fallback) {
      if (this.st.state === "starting") this.#set("fallback", this.st.message);
      this.#deps.onChange(this.id);
      return;
    }
    const s = this.st;
    if (s.state !== "running" && s.state !== "failed") {
      this.#set("running", a.supervision === "config_toggle" ? "acknowledged" : "", {
        // Names only: toggle values may be secrets and the status is readable by more people.
        ...(a.supervision === "config_toggle" ? { toggles: Object.keys(a.config).sort() } : {}),
      });
    } else if (s.state === "failed") {
      this.#deps.onChange(this.id);
      return;
    }
    if (a.local) return; // an override is never the last known good
    writeLastGood(this.#deps.layout, a, { handshake: running.handshake }).catch((e) =>
      log.error("could not write last-good.json", { addon_id: this.id, error: e as Error })
    );
  }

  async #rollBack(reason: string): Promise<void> {
    const p = this.#probation;
    const a = this.desired;
    if (!p || !a) return;
    this.#endProbation();
    const layout = this.#deps.layout;
    if (!p.prevLastGood) {
      this.running?.runner.setMinimumBackoff(
        (this.#deps.sidecarTiming ?? { backoffMaxMs: 60_000 }).backoffMaxMs,
      );
      this.#set(
        "failed",
        `${a.version}: ${reason}; nothing to roll back to, restarting at the longest backoff`,
      );
      return;
    }
    await this.#stopRunning(false);
    this.st.failed_versions = [
      ...this.st.failed_versions.filter((f) => !(f.version === p.version && f.sha256 === p.sha256)),
      { version: p.version, sha256: p.sha256, reason },
    ];
    const back = await rollBack(layout, this.id);
    await writeLastGood(layout, p.prevLastGood.assignment, { handshake: p.prevLastGood.handshake });
    log.error("rolled back", { addon_id: this.id, from: p.version, to: back, reason });
    await this.#runLastGood(
      "rolled_back",
      `${p.version} rolled back to ${p.prevLastGood.assignment.version}: ${reason}`,
    );
  }
}

/** Variables an add-on inherits from the agent; nothing else (no credentials) is passed on. */
export const INHERITED_ENV = ["PATH", "LANG", "LC_ALL", "TZ"] as const;
const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** The environment every add-on starts from (then its own `env`, then `ADDON_*`). */
export function baseEnvironment(): Record<string, string> {
  const out: Record<string, string> = { PATH: DEFAULT_PATH };
  for (const k of INHERITED_ENV) {
    try {
      const v = Deno.env.get(k);
      if (v !== undefined) out[k] = v;
    } catch {
      // not allowed by the permission set: keep the default
    }
  }
  return out;
}

function isSystemd(a: Assignment): boolean {
  return a.supervision === "systemd_service" || a.supervision === "systemd_timer";
}

async function _checkExecutable(path: string): Promise<string> {
  if (!path.startsWith("/")) {
    throw new DeliveryError(`binary_path ${JSON.stringify(path)} must be an absolute path`, {
      kind: "refused",
    });
  }
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) {
      throw new DeliveryError(
        `binary_path ${path} is outside what this build may read; add it to permissions.agent.read in deno.json and rebuild`,
        { kind: "refused", cause: e },
      );
    }
    throw new DeliveryError(`binary_path ${path} does not exist`, { kind: "refused", cause: e });
  }
  if (!st.isFile || st.mode === null || (st.mode & 0o111) === 0) {
    throw new DeliveryError(`binary_path ${path} is not an executable file`, { kind: "refused" });
  }
  return path;
}
