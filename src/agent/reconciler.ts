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
 * import { Reconciler, type ReconcilerDeps } from "./reconciler.ts";
 * import type { Entry } from "../protocol/mod.ts";
 * declare const deps: ReconcilerDeps;
 * declare const entries: Entry[];
 * const rec = new Reconciler(deps);
 * await rec.apply(entries);   // a new desired state
 * await rec.tick();           // the slow timer: retries, drift
 * await rec.stopAll();        // SIGTERM
 * ```
 *
 * @module
 */

import type { Entry, Platform } from "../protocol/mod.ts";
import {
  createRunner,
  type DEFAULT_TIMING,
  endLeftoverGroup,
  groupLeadersWithEnv,
  type RunnerDeps,
} from "../supervise/mod.ts";
import type { AgentConfig } from "../config/mod.ts";
import type { Deliverer } from "../delivery/mod.ts";
import {
  type AgentState,
  clearProcess,
  collectPartials,
  type Layout,
  StagedVerifier,
} from "../runtime/mod.ts";
import { type Clock, log, SYSTEM_CLOCK } from "../common/mod.ts";
import { DEFAULT_RESILIENCE, type ResilienceTiming } from "./probation.ts";
import { Slot, type SlotContext } from "./slot.ts";
import type { AddonIsolation } from "./isolation.ts";

/** What the reconciler needs. */
export interface ReconcilerDeps {
  cfg: AgentConfig;
  layout: Layout;
  platform: Platform;
  state: AgentState;
  /** Delivery and the `current` switches: `storeDeliverer(ctx)` in the agent, a fake in tests. */
  deliverer: Deliverer;
  /** Makes the runner of each start: {@linkcode runnersFor} in the agent, a fake in tests. */
  runners: SlotContext["createRunner"];
  /** Time for crash windows, handshake timers and retries (default: the system clock). */
  clock?: Clock;
  resilience?: ResilienceTiming;
  /** Sidecar timing; its `backoffMaxMs` is where a crash loop with no rollback target restarts. */
  sidecarTiming?: typeof DEFAULT_TIMING;
  /** Users, file modes, cgroups and the capability allowlist (SPEC 13); absent: none. */
  isolation?: AddonIsolation;
  /** Something in `state` changed (persist it, report it). */
  onChange(addonId: string): void;
}

/** The real runners ({@linkcode createRunner}) over `deps`. */
export function runnersFor(deps: Omit<RunnerDeps, "helperDone">): SlotContext["createRunner"] {
  return (launch, events, helperDone) => createRunner(launch, events, { ...deps, helperDone });
}

/** Reconciles desired add-ons against what runs. */
export class Reconciler {
  readonly #slots = new Map<string, Slot>();
  #pushed: ReadonlyMap<string, string> = new Map();
  #stopping = false;
  readonly #ctx: SlotContext;

  /** Make a reconciler over `deps.state`. */
  constructor(readonly deps: ReconcilerDeps) {
    const stopping = () => this.#stopping;
    this.#ctx = {
      layout: deps.layout,
      platform: deps.platform,
      state: deps.state,
      deliverer: deps.deliverer,
      clock: deps.clock ?? SYSTEM_CLOCK,
      verifier: new StagedVerifier(),
      resilience: deps.resilience ?? DEFAULT_RESILIENCE,
      backoffMaxMs: (deps.sidecarTiming ?? { backoffMaxMs: 60_000 }).backoffMaxMs,
      keepVersions: deps.cfg.limits.keep_versions,
      hostBinaries: deps.cfg.host_binaries.allow,
      get stopping() {
        return stopping();
      },
      createRunner: deps.runners,
      pushedKey: (id) => this.#pushed.get(id),
      onChange: (id) => deps.onChange(id),
      removed: (id) => {
        this.#slots.delete(id);
        deps.isolation?.release(id).catch((e) =>
          log.warn("could not remove the add-on's cgroup", { addon_id: id, error: e as Error })
        );
      },
    };
    if (deps.isolation) this.#ctx.isolation = deps.isolation;
  }

  /** End process groups a killed agent left behind (recorded in `state.json`). */
  async endLeftovers(): Promise<void> {
    // Everything in an add-on cgroup, setsid'd and double-forked processes too.
    await this.deps.isolation?.endLeftovers();
    for (const s of Object.values(this.deps.state.addons)) {
      if (s.pgid !== null && s.pgid_identity !== null) {
        if (await endLeftoverGroup(s.pgid, s.pgid_identity, 5_000)) {
          log.info("ended a process group left by an earlier agent", {
            addon_id: s.addon_id,
            pgid: s.pgid,
          });
        }
      }
      clearProcess(s);
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
    // A capability outside isolation.allowed_capabilities refuses the entry (SPEC 13).
    entries = this.deps.isolation?.screen(entries) ?? entries;
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
    this.#stopping = true;
    this.deps.isolation?.halt();
    this.deps.deliverer.abortAll();
    await Promise.all([...this.#slots.values()].map((s) => s.stopForShutdown()));
    await this.deps.isolation?.close();
  }

  /**
   * Resolves when every add-on's queue is empty, including work queued while waiting
   * (a rollback a crash loop asked for, a handshake timeout).
   */
  async settled(): Promise<void> {
    for (;;) {
      const queues = [...this.#slots.values()].map((s) => s.idle());
      await Promise.all(queues);
      const now = [...this.#slots.values()].map((s) => s.idle());
      if (now.length === queues.length && now.every((q, i) => q === queues[i])) return;
    }
  }

  /** The sha256 digests any desired add-on still wants (for partial clean-up). */
  wantedDigests(): Set<string> {
    const out = new Set<string>();
    for (const s of this.#slots.values()) {
      const sha = s.desired?.artifact?.sha256;
      if (sha) out.add(sha);
    }
    for (const sha of this.deps.deliverer.downloading()) out.add(sha);
    return out;
  }

  async #collectPartials(): Promise<void> {
    try {
      await collectPartials(this.deps.layout, this.wantedDigests());
    } catch (e) {
      log.warn("could not clean partial downloads", { error: e as Error });
    }
  }

  #slot(id: string): Slot {
    let s = this.#slots.get(id);
    if (!s) {
      s = new Slot(id, this.#ctx);
      this.#slots.set(id, s);
    }
    return s;
  }
}
