/**
 * One add-on's slot in the reconciler: its own queue (a change to one add-on never waits for
 * or touches another), the runner of what runs, delivery retries, the fallback to the last
 * known good, probation and rollback of a new version, removal. It sees the rest of the agent
 * only through {@linkcode SlotContext}.
 *
 * @example
 * ```ts
 * import { Slot, type SlotContext } from "./slot.ts";
 * import type { Assignment } from "../protocol/mod.ts";
 * declare const ctx: SlotContext;
 * declare const a: Assignment;
 * await new Slot("net-probe", ctx).enqueueDesired(a);
 * ```
 *
 * @module
 */

import { type Assignment, assignmentKey, supervisionName } from "../protocol/mod.ts";
import type { Launch, Runner } from "../supervise/mod.ts";
import {
  type AddonState,
  addonState,
  type AddonStateName,
  clearProcess,
  collectVersions,
  readLastGood,
  removeAddonFiles,
  setAddonState,
  writeLastGood,
} from "../runtime/mod.ts";
import { log } from "../common/mod.ts";
import { InFlight } from "./in_flight.ts";
import { DeliveryError } from "../delivery/mod.ts";
import { fingerprint, prepareLaunch } from "./launch.ts";
import { forgetRefused, Probation, refusedVersion } from "./probation.ts";
import { DeliveryRetries, retryPace } from "./retry.ts";
import type { SlotContext } from "./slot_context.ts";
import { runnerEvents, type RunningAddon, type SlotEventsHost } from "./slot_events.ts";

export type { SlotContext } from "./slot_context.ts";

/** One add-on: its queue, what runs, retries, probation. */
export class Slot {
  /** The assignment the source (or the override) wants, or null when removed. */
  desired: Assignment | null = null;
  readonly #inFlight = new InFlight();
  #running: RunningAddon | null = null;
  #queue: Promise<void> = Promise.resolve();
  readonly #retries: DeliveryRetries;
  #probation: Probation | null = null;
  readonly #events: SlotEventsHost;

  /** A slot for add-on `id`. */
  constructor(readonly id: string, readonly ctx: SlotContext) {
    this.#retries = new DeliveryRetries(ctx.clock, ctx.resilience);
    this.#events = {
      id,
      ctx,
      get st() {
        return addonState(ctx.state, id);
      },
      probation: () => this.#probation,
      isCurrent: (r) => this.#running === r,
      set: (state, message, extra) => this.#set(state, message, extra),
      rollBackLater: (reason) => void this.#enqueue(() => this.#rollBack(reason)),
    };
  }

  /** The add-on's entry in the agent state (created when missing). */
  get st(): AddonState {
    return addonState(this.ctx.state, this.id);
  }

  #set(state: AddonStateName, message: string, extra: Partial<AddonState> = {}): void {
    if (setAddonState(this.st, state, message, this.ctx.clock.now(), extra)) {
      const level = state === "failed" || state === "rolled_back" ? "error" : "info";
      log[level](`state ${state}${message ? `: ${message}` : ""}`, { addon_id: this.id, state });
    }
    this.ctx.onChange(this.id);
  }

  #enqueue(fn: () => Promise<void>): Promise<void> {
    const next = this.#queue.then(fn).catch((e) => {
      log.error("reconcile failed", { addon_id: this.id, error: e as Error });
      this.#set("failed", (e as Error).message);
    });
    this.#queue = next;
    return next;
  }

  /** The work queued so far; resolves when it is done (it never rejects). */
  idle(): Promise<void> {
    return this.#queue;
  }

  /** Reconcile towards `a`. */
  enqueueDesired(a: Assignment): Promise<void> {
    this.#inFlight.abandonUnless(a.enabled ? a.artifact?.sha256 ?? null : null, a.version);
    return this.#enqueue(async () => {
      this.desired = a;
      await this.#reconcile(false);
    });
  }

  /** The source's entry for this add-on was refused: it keeps running as it was. */
  enqueueRefused(reason: string): Promise<void> {
    return this.#enqueue(() => {
      const s = this.st;
      if (this.#running) {
        log.error("assignment refused; the add-on keeps running as it was", {
          addon_id: this.id,
          error: reason,
        });
        s.message =
          `assignment refused (${reason}); still running ${this.#running.assignment.version}`;
        this.ctx.onChange(this.id);
      } else {
        this.#set("failed", `assignment refused: ${reason}`);
      }
      return Promise.resolve();
    });
  }

  /** Retry a delivery whose backoff is over. */
  enqueueRetry(): Promise<void> {
    return this.#enqueue(async () => {
      if (this.desired) await this.#reconcile(true);
    });
  }

  /** The add-on is no longer assigned: stop it and remove its files (not `data/`). */
  enqueueRemoved(): Promise<void> {
    this.#inFlight.abandonUnless(null, "its removal");
    return this.#enqueue(async () => {
      this.desired = null;
      this.#retries.clear();
      await this.#stopRunning(true);
      this.#endProbation();
      await removeAddonFiles(this.ctx.layout, this.id);
      delete this.ctx.state.addons[this.id];
      this.ctx.removed(this.id);
      log.info("assignment removed; add-on stopped and its files removed (data/ kept)", {
        addon_id: this.id,
      });
      this.ctx.onChange(this.id);
    });
  }

  /** After the queue drains: stop what runs (SIGTERM, SIGKILL after the grace). */
  async stopForShutdown(): Promise<void> {
    this.#retries.clear();
    await this.#queue;
    this.#endProbation();
    if (this.#running) {
      await this.#running.runner.stop(false);
      const s = this.st;
      clearProcess(s);
      if (s.state === "running" || s.state === "starting" || s.state === "fallback") {
        s.message = "agent stopped";
      }
      this.ctx.onChange(this.id);
    }
  }

  async #stopRunning(remove: boolean): Promise<void> {
    const r = this.#running;
    if (!r) return;
    this.#running = null;
    await r.runner.stop(remove);
    clearProcess(this.st);
    delete this.st.address;
  }

  #endProbation(): void {
    this.#probation?.end();
    this.#probation = null;
  }

  async #reconcile(isRetry: boolean): Promise<void> {
    const a = this.desired;
    if (!a || this.ctx.stopping) return;
    const s = this.st;
    s.desired_version = a.version;
    s.supervision = supervisionName(a);
    // Forget rolled-back versions that are no longer assigned (by the source or the override).
    const key = assignmentKey(a);
    forgetRefused(s, [key, this.ctx.pushedKey(this.id)]);
    if (!a.enabled) {
      if (this.#running) await this.#stopRunning(isSystemd(a));
      this.#endProbation();
      this.#set("disabled", "enabled is false; staged files are kept");
      return;
    }
    if (typeof a.supervision !== "string") {
      if (this.#running) await this.#stopRunning(true);
      this.#set(
        "unsupported",
        `supervision ${JSON.stringify(a.supervision.unsupported)} is not supported by this agent`,
      );
      return;
    }
    const fp = fingerprint(a);
    if (this.#running && !this.#running.fallback && this.#running.fp === fp) return;
    const failed = refusedVersion(s, key);
    if (failed) {
      if (!this.#running || !this.#running.fallback) {
        await this.#runLastGood("rolled_back", `rolled back: ${failed.reason}`);
      }
      return;
    }
    if (this.#retries.waiting(key)) return;
    if (isRetry && !this.#retries.has(key) && this.#running?.fp === fp) return;

    let launch: Launch;
    const tracked = this.#inFlight.begin(a.artifact?.sha256 ?? null);
    try {
      launch = await this.#prepare(a, tracked.signal);
    } catch (e) {
      if (!tracked.signal.aborted) return await this.#deliveryFailed(a, e as Error);
      // Not a failure of `a`: a newer assignment is queued right behind it.
      log.info("delivery abandoned for a newer assignment", {
        addon_id: this.id,
        version: a.version,
      });
      if (this.#running && !this.#running.fallback) this.#set("running", "");
      return;
    } finally {
      tracked.end();
    }
    this.#retries.succeeded(key);
    await this.#activateAndStart(a, launch);
  }

  async #deliveryFailed(a: Assignment, e: Error): Promise<void> {
    if (this.ctx.stopping) return; // a download cut short by the stop: nothing to fall back to
    // The retry comes when its backoff is due (SPEC 8), not at the next periodic tick.
    const delay = this.#retries.failed(
      assignmentKey(a),
      () => void this.enqueueRetry(),
      retryPace(e),
    );
    const reason = `${a.version} could not be delivered: ${e.message} (retry in ${
      Math.round(delay / 1000)
    } s)`;
    log.error("delivery failed", {
      addon_id: a.addon_id,
      version: a.version,
      error: e.message,
      ...(e instanceof DeliveryError ? { kind: e.kind } : {}),
      retry_in_s: Math.round(delay / 1000),
    });
    if (this.#running) {
      // Keep running exactly as before.
      this.#running.fallback = true;
      this.#set("fallback", reason);
      return;
    }
    await this.#runLastGood("fallback", reason);
  }

  /** Run `last-good.json` (after a reboot, a failed delivery, a rollback); else `failed`. */
  async #runLastGood(state: "fallback" | "rolled_back", reason: string): Promise<void> {
    if (this.ctx.stopping) return;
    const lg = await readLastGood(this.ctx.layout, this.id, this.ctx.platform);
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
      if (this.ctx.stopping) return; // not placed because the agent stops: nothing failed
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

  /** Everything before a start (see {@linkcode prepareLaunch}), reported in this add-on's state. */
  #prepare(a: Assignment, signal?: AbortSignal): Promise<Launch> {
    return prepareLaunch(this.ctx, a, {
      ...(signal ? { signal } : {}),
      onPhase: (_id, phase) => this.#set(phase, `${phase} ${a.version}`),
      onProgress: (id, bytes, total) => {
        this.st.progress = { bytes, total_bytes: total };
        this.ctx.onChange(id);
      },
      onDownloaded: (d) => {
        this.st.last_delivery = d;
      },
      onDamaged: (e) => void this.#enqueue(() => this.#healRunning(a, e.message)),
    });
  }

  /** What runs was found damaged before a restart: prepare it again (refetch, SPEC 8). */
  async #healRunning(a: Assignment, why: string): Promise<void> {
    const r = this.#running;
    if (!r || r.assignment !== a || this.ctx.stopping) return;
    if (r.fallback) return await this.#runLastGood("fallback", why);
    r.fp = ""; // no longer what is desired: reconcile prepares it again
    await this.#reconcile(false);
  }

  async #activateAndStart(a: Assignment, launch: Launch): Promise<void> {
    if (this.ctx.stopping) return;
    const layout = this.ctx.layout;
    const lg = await readLastGood(layout, this.id, this.ctx.platform);
    let changed = false;
    if (a.delivery === "pushed_artifact" && a.artifact) {
      changed = (await this.ctx.deliverer.activate(a.addon_id, a.version)).changed;
    }
    const old = this.#running;
    await this.#stopRunning(old !== null && isSystemd(old.assignment) && !isSystemd(a));
    this.#endProbation();
    const p = Probation.begin(a, lg, this.ctx.clock, this.ctx.resilience);
    this.#probation = p;
    if (p?.needsHandshake && a.supervision === "agent_sidecar") {
      p.awaitHandshake((reason) => {
        if (this.#probation === p && !this.#running?.handshake) {
          this.#enqueue(() => this.#rollBack(reason));
        }
      });
    }
    this.#set("starting", "", { version: a.version });
    this.#start(a, launch, false, false);
    if (!changed) return;
    await collectVersions(this.ctx.layout, this.id, this.ctx.keepVersions).catch((e) =>
      log.warn("garbage collection failed", { addon_id: this.id, error: e as Error })
    );
  }

  #start(a: Assignment, launch: Launch, fallback: boolean, handshake: boolean): void {
    const running: RunningAddon = {
      assignment: a,
      fp: launch.fingerprint,
      runner: undefined as unknown as Runner,
      fallback,
      handshake,
    };
    this.st.restarts = 0;
    running.runner = this.ctx.createRunner(
      launch,
      runnerEvents(this.#events, running, launch),
      (fp) => this.st.helper_fingerprint === fp,
    );
    this.#running = running;
    running.runner.start().catch((e) => this.#set("failed", (e as Error).message));
  }

  async #rollBack(reason: string): Promise<void> {
    const p = this.#probation;
    const a = this.desired;
    if (!p || !a) return;
    this.#endProbation();
    const layout = this.ctx.layout;
    if (!p.prevLastGood) {
      this.#running?.runner.setMinimumBackoff(this.ctx.backoffMaxMs);
      this.#set(
        "failed",
        `${a.version}: ${reason}; nothing to roll back to, restarting at the longest backoff`,
      );
      return;
    }
    await this.#stopRunning(false);
    p.refuse(this.st, reason);
    const back = await this.ctx.deliverer.rollBack(this.id);
    await writeLastGood(layout, p.prevLastGood.assignment, { handshake: p.prevLastGood.handshake });
    log.error("rolled back", { addon_id: this.id, from: p.version, to: back, reason });
    await this.#runLastGood(
      "rolled_back",
      `${p.version} rolled back to ${p.prevLastGood.assignment.version}: ${reason}`,
    );
  }
}

function isSystemd(a: Assignment): boolean {
  return a.supervision === "systemd_service" || a.supervision === "systemd_timer";
}
