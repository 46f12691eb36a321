/**
 * The daemon (`addon-agent run`): poll the source (interval ±20 % jitter,
 * exponential backoff to 5 minutes on errors; a push source such as NATS
 * wakes the loop at once when a new document arrives), merge the local override,
 * hand the desired state to the reconciler, persist `state.json`, report
 * status to the control plane (coalesced on change, at least every 10
 * polls), and stop every add-on gracefully on SIGTERM.
 *
 * @example
 * ```ts
 * import { loadConfig } from "../config/mod.ts";
 * import { openRuntimeRoot } from "../runtime/mod.ts";
 * const cfg = await loadConfig("/etc/addon-agent/agent.json");
 * const root = await openRuntimeRoot(cfg.runtime_root);
 * const d = await Daemon.create(cfg, root);
 * await d.run(); // until d.stop()
 * ```
 *
 * @module
 */

import { DecodeError, hostPlatform, type Platform } from "../protocol/mod.ts";
import type { AgentConfig } from "../config/mod.ts";
import { type DeliveryContext, deliveryContext, storeDeliverer } from "../delivery/mod.ts";
import { log, WakeableSleep } from "../common/mod.ts";
import {
  acceptDocument,
  type DesiredState,
  desiredState,
  openSource,
  OVERRIDE_FILE,
  readOverrideText,
  type Source,
  type SourceDocument,
  SourceError,
} from "../source/mod.ts";
import { Reconciler, runnersFor } from "./reconciler.ts";
import { AddonIsolation } from "./isolation.ts";
import type { ResilienceTiming } from "./probation.ts";
import {
  type AgentState,
  loadState,
  repairLinks,
  type RuntimeRoot,
  saveState,
} from "../runtime/mod.ts";
import { commandSystemctl, type SidecarTiming, SystemdUnits } from "../supervise/mod.ts";
import {
  buildStatus,
  startStatusServer,
  type StatusDocument,
  StatusReporter,
  type StatusServer,
} from "../status/mod.ts";

/** Longest wait between polls after errors (SPEC 4). */
export const MAX_POLL_BACKOFF_MS = 5 * 60_000;
const RECONCILE_TICK_MS = 30_000;
/** Longest wait between attempts to write `state.json` after failures. */
const MAX_SAVE_BACKOFF_MS = 30_000;

/** Knobs for tests and benchmarks; production uses the defaults. */
export interface DaemonOptions {
  platform?: Platform;
  sidecarTiming?: SidecarTiming;
  resilience?: ResilienceTiming;
  /** `systemctl` binary (looked up on PATH). */
  systemctl?: string;
}

/** The running agent. */
export class Daemon {
  readonly #cfg: AgentConfig;
  readonly #root: RuntimeRoot;
  readonly #state: AgentState;
  readonly #source: Source;
  readonly #rec: Reconciler;
  readonly #platform: Platform;
  readonly #started = Date.now();
  #stopping = false;
  /** Aborted by `stop()`: ends a poll or report that waits on the network. */
  readonly #halt = new AbortController();
  readonly #pause = new WakeableSleep();
  #saveTimer: ReturnType<typeof setTimeout> | null = null;
  readonly #reporter: StatusReporter;
  #polls = 0;
  #lastApplied: string | null = null;
  #lastOverrideText: string | null = null;
  #server: StatusServer | null = null;
  #applying: Promise<void> = Promise.resolve();
  /** The source's document last accepted, decoded. */
  #accepted: SourceDocument | null = null;
  #lastError: string | null = null;
  /** Why `state.json` cannot be written now, or null. */
  #stateError: string | null = null;
  #saveFailures = 0;
  readonly #units: SystemdUnits;
  /** A push source said a new document is there: poll again without waiting. */
  #pushed = false;

  readonly #isolation: AddonIsolation;
  private constructor(
    cfg: AgentConfig,
    root: RuntimeRoot,
    state: AgentState,
    source: Source,
    delivery: DeliveryContext,
    platform: Platform,
    opts: DaemonOptions,
    isolation: AddonIsolation,
  ) {
    this.#cfg = cfg;
    this.#isolation = isolation;
    this.#root = root;
    this.#state = state;
    this.#source = source;
    this.#platform = platform;
    const units = new SystemdUnits(cfg.systemd.unit_dir, commandSystemctl(opts.systemctl));
    this.#rec = new Reconciler({
      cfg,
      layout: root,
      deliverer: storeDeliverer(delivery),
      platform,
      state,
      runners: runnersFor({
        units,
        ...(opts.sidecarTiming ? { timing: opts.sidecarTiming } : {}),
      }),
      ...(opts.resilience ? { resilience: opts.resilience } : {}),
      ...(opts.sidecarTiming ? { sidecarTiming: opts.sidecarTiming } : {}),
      isolation,
      onChange: () => this.#changed(),
    });
    this.#units = units;
    this.#reporter = new StatusReporter({
      enabled: () => cfg.source.kind !== "file" && !this.#stopping,
      status: () => this.status(),
      about: () => ({
        agent_id: cfg.agent_id,
        config_version: state.config_version,
        error: this.#lastError || this.#stateError
          ? [this.#lastError, this.#stateError].filter((x) => x !== null).join("; ")
          : null,
      }),
      send: (body) => source.report(body, this.#halt.signal),
    });
  }

  /** Prepare the daemon: state, source, store, reconciler. */
  static async create(
    cfg: AgentConfig,
    root: RuntimeRoot,
    opts: DaemonOptions = {},
  ): Promise<Daemon> {
    const platform = opts.platform ?? hostPlatform();
    const state = await loadState(root);
    state.agent_id = cfg.agent_id;
    const source = await openSource(cfg, platform);
    const delivery = await deliveryContext(cfg, root, platform);
    const isolation = await AddonIsolation.open(cfg, root, state);
    return new Daemon(cfg, root, state, source, delivery, platform, opts, isolation);
  }

  /** The status document of this agent now. */
  async status(): Promise<StatusDocument> {
    this.#isolation.refreshUsage();
    const doc = await buildStatus(this.#root, this.#state);
    return this.#stateError === null ? doc : { ...doc, error: this.#stateError };
  }

  /** Seconds since the daemon started. */
  get uptimeSeconds(): number {
    return (Date.now() - this.#started) / 1000;
  }

  /** Run until {@linkcode Daemon.stop}: leftovers, persisted desired state, then the poll loop. */
  async run(): Promise<void> {
    if (this.#cfg.status) {
      this.#server = startStatusServer(this.#cfg.status.listen, this);
    }
    await this.#rec.endLeftovers();
    await this.#repairLinks();
    await this.#units.sweepTemps().catch((e) =>
      log.warn("could not sweep the unit directory", { error: e as Error })
    );
    await this.#trySave();
    // Before the source answers, run what was last desired (a host reboots into its add-ons).
    if (this.#state.pushed !== null) {
      log.info("starting the add-ons last desired, before the source answers");
      try {
        this.#accepted = acceptDocument(this.#state.pushed, this.#platform);
      } catch (e) {
        if (!(e instanceof DecodeError)) throw e;
        log.warn("the persisted document no longer decodes; waiting for the source", {
          error: e.message,
        });
      }
      await this.#applyMerged(false);
    }
    this.#source.watch?.(() => {
      this.#pushed = true;
      this.#pause.wake();
    });
    const tick = setInterval(() => {
      if (!this.#stopping) this.#rec.tick().catch(() => {});
    }, RECONCILE_TICK_MS);
    let backoffMs = 0;
    try {
      while (!this.#stopping) {
        let ok = true;
        this.#pushed = false;
        try {
          await this.#pollOnce();
          backoffMs = 0;
        } catch (e) {
          if (this.#stopping) break;
          ok = false;
          const first = backoffMs === 0;
          backoffMs = Math.min(
            backoffMs === 0 ? this.#source.intervalS * 1000 : backoffMs * 2,
            MAX_POLL_BACKOFF_MS,
          );
          this.#lastError = (e as Error).message;
          log[first ? "error" : "warn"]("poll failed; add-ons keep running", {
            error: e as Error,
            ...(e instanceof SourceError ? { kind: e.kind } : {}),
            retry_in_s: Math.round(backoffMs / 1000),
          });
        }
        // One line a poll at debug level: tests count polls with it instead of sleeping.
        log.debug("poll done", { ok, polls: this.#polls });
        this.#reporter.pollEnded();
        const wait = ok ? this.#source.intervalS * 1000 * (0.8 + Math.random() * 0.4) : backoffMs;
        if (!this.#pushed) await this.#pause.sleep(wait);
      }
    } finally {
      clearInterval(tick);
    }
    await this.#shutdown();
  }

  async #pollOnce(): Promise<void> {
    this.#polls++;
    this.#reporter.pollStarted();
    const r = await this.#source.poll(this.#halt.signal);
    if (r.kind === "document") {
      let accepted: SourceDocument;
      try {
        accepted = acceptDocument(r.json, this.#platform);
      } catch (e) {
        if (!(e instanceof DecodeError)) throw e;
        this.#lastError = `document refused: ${e.message}`;
        log.error("assignments document refused; keeping the current desired state", {
          error: e.message,
        });
        this.#reporter.dirty();
        return;
      }
      this.#lastError = null;
      // What runs at the next start, before the source answers.
      this.#state.pushed = r.json;
      this.#accepted = accepted;
      await this.#applyMerged(true);
    } else {
      await this.#applyMerged(false);
    }
  }

  /** Merge the override into the last accepted document; reconcile when the result changed. */
  async #applyMerged(newDocument: boolean): Promise<void> {
    const path = `${this.#cfg.config_dir}/${OVERRIDE_FILE}`;
    const overrideText = await readOverrideText(path, this.#cfg.limits.max_document_bytes);
    if (!newDocument && overrideText === this.#lastOverrideText && this.#lastApplied !== null) {
      return;
    }
    this.#lastOverrideText = overrideText;
    if (this.#accepted === null) return;
    let desired: DesiredState;
    try {
      desired = desiredState(this.#accepted, overrideText, path, this.#platform);
    } catch (e) {
      if (!(e instanceof DecodeError)) throw e;
      log.error("the merged document is refused; keeping the current desired state", {
        error: e.message,
      });
      return;
    }
    const key = desired.key;
    if (key === this.#lastApplied) return;
    this.#state.config_version = desired.config_version;
    this.#lastApplied = key;
    // Not awaited: a long download must not stop polling, override re-reads or reports.
    // Each add-on's own queue keeps its work in order; shutdown waits for it.
    this.#applying = this.#rec.apply(desired.entries, desired.pushedKeys).then(() =>
      this.#changed()
    );
    this.#changed();
  }

  #changed(): void {
    this.#scheduleSave(100);
    this.#reporter.changed();
  }

  /** `current`/`previous` links that point nowhere are repaired from the state (SPEC 8). */
  async #repairLinks(): Promise<void> {
    for (const s of Object.values(this.#state.addons)) {
      try {
        const done = await repairLinks(this.#root, s.addon_id, s.version);
        if (done.length) {
          log.warn("repaired links that pointed nowhere", { addon_id: s.addon_id, done });
        }
      } catch (e) {
        log.warn("could not repair links", { addon_id: s.addon_id, error: e as Error });
      }
    }
  }

  #scheduleSave(delayMs: number): void {
    if (this.#saveTimer !== null || this.#stopping) return;
    this.#saveTimer = setTimeout(() => {
      this.#saveTimer = null;
      this.#trySave();
    }, delayMs);
  }

  /**
   * Write `state.json`; when that fails (a full disk, a read-only remount)
   * try again with backoff (1 s doubling to 30 s) while the add-ons keep
   * running and `/status` and the reports show the live state (SPEC 8).
   */
  async #trySave(): Promise<void> {
    try {
      await saveState(this.#root, this.#state);
      if (this.#stateError !== null) {
        log.info("state.json is written again", { after_failures: this.#saveFailures });
        this.#stateError = null;
        this.#saveFailures = 0;
        this.#reporter.urgent();
      }
    } catch (e) {
      this.#saveFailures++;
      const wait = Math.min(1000 * 2 ** (this.#saveFailures - 1), MAX_SAVE_BACKOFF_MS);
      const first = this.#stateError === null;
      this.#stateError = `state.json cannot be written: ${(e as Error).message}`;
      log[first ? "error" : "warn"]("could not write state.json; add-ons keep running", {
        error: e as Error,
        retry_in_s: wait / 1000,
      });
      if (first) this.#reporter.urgent();
      this.#scheduleSave(wait);
    }
  }

  /** Ask the daemon to stop: add-ons get SIGTERM (SIGKILL after 10 s), then `run` returns. */
  stop(): void {
    this.#stopping = true;
    this.#halt.abort();
    this.#pause.wake();
  }

  async #shutdown(): Promise<void> {
    log.info("stopping: ending every add-on");
    await this.#rec.stopAll();
    await this.#applying;
    if (this.#saveTimer !== null) clearTimeout(this.#saveTimer);
    await this.#reporter.close();
    this.#saveTimer = null;
    await this.#trySave();
    if (this.#saveTimer !== null) clearTimeout(this.#saveTimer);
    await this.#server?.close();
    this.#source.close();
    log.info("stopped");
  }
}
