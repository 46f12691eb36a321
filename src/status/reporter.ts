/**
 * Status reports to the control plane (SPEC 4): coalesced after changes
 * (half a second), at once when something the control plane must hear
 * happens, and at least every 10 polls even when nothing changed. One
 * report at a time; a report that fails leaves the status dirty, so the
 * next poll tries again. Reporting never holds up delivery.
 *
 * @example
 * ```ts
 * import { StatusReporter } from "./reporter.ts";
 * import type { StatusDocument } from "./status.ts";
 * declare const status: () => Promise<StatusDocument>;
 * const reporter = new StatusReporter({
 *   enabled: () => true,
 *   status,
 *   about: () => ({ agent_id: "host-1", config_version: "v7", error: null }),
 *   send: async (body) => console.log(JSON.stringify(body)),
 * });
 * reporter.changed(); // reported within 500 ms
 * await reporter.close();
 * ```
 *
 * @module
 */

import { log } from "../common/mod.ts";
import type { StatusDocument } from "./status.ts";

/** Status reports are sent at least every this many polls. */
export const REPORT_EVERY_POLLS = 10;
/** Changes within this many ms go into one report. */
const COALESCE_MS = 500;

/** One add-on in a report. */
export interface ReportedAddon {
  addon_id: string;
  version: string | null;
  desired_version: string | null;
  state: string;
  message: string;
  pid: number | null;
  restarts: number;
  since: string | null;
  progress: { bytes: number; total_bytes: number } | null;
}

/** The body of a status report. */
export interface StatusReportBody {
  [key: string]: unknown;
  agent_id: string;
  config_version: string | null;
  reported_at: string;
  addons: ReportedAddon[];
  /** Why the agent keeps an older desired state or cannot persist it, when it does. */
  error?: string;
}

/** What a reporter reads and where it sends. */
export interface ReporterDeps {
  /** Whether reports go anywhere now (not for a file source, not while stopping). */
  enabled(): boolean;
  /** The status document now. */
  status(): Promise<StatusDocument>;
  /** Who reports, for which desired state, and the error to show (null: none). */
  about(): { agent_id: string; config_version: string | null; error: string | null };
  /** Send one report; a rejection leaves the status dirty. */
  send(body: StatusReportBody): Promise<void>;
}

/** Sends status reports for one agent. */
export class StatusReporter {
  #dirty = false;
  #polls = 0;
  #lastReportPoll = 0;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #reporting: Promise<void> = Promise.resolve();

  /** A reporter over `deps`. */
  constructor(readonly deps: ReporterDeps) {}

  /** Something changed: report it with whatever else changes within half a second. */
  changed(): void {
    this.#dirty = true;
    this.#schedule(COALESCE_MS);
  }

  /** Something changed that the control plane must hear now. */
  urgent(): void {
    this.#dirty = true;
    this.#schedule(0);
  }

  /** Something changed that goes out with the report after this poll. */
  dirty(): void {
    this.#dirty = true;
  }

  /** A poll begins (reports count polls). */
  pollStarted(): void {
    this.#polls++;
  }

  /** A poll ended: report now when something changed or 10 polls went by without a report. */
  pollEnded(): void {
    if (this.#dirty || this.#polls - this.#lastReportPoll >= REPORT_EVERY_POLLS) this.#schedule(0);
  }

  /** Send nothing more; resolves when the report under way (if any) is done. */
  async close(): Promise<void> {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    await this.#reporting;
  }

  #schedule(delayMs: number): void {
    if (!this.deps.enabled()) return;
    if (this.#timer !== null) {
      if (delayMs > 0) return;
      clearTimeout(this.#timer);
    }
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#reporting = this.#reporting.then(() => this.#report());
    }, delayMs);
  }

  async #report(): Promise<void> {
    this.#dirty = false;
    this.#lastReportPoll = this.#polls;
    const doc = await this.deps.status();
    const about = this.deps.about();
    const body: StatusReportBody = {
      agent_id: about.agent_id,
      config_version: about.config_version,
      reported_at: new Date().toISOString(),
      addons: doc.addons.map((a) => ({
        addon_id: a.addon_id,
        version: a.version,
        desired_version: a.desired_version,
        state: a.state,
        message: a.message,
        pid: a.pid,
        restarts: a.restarts,
        since: a.since,
        progress: a.progress ?? null,
      })),
      ...(about.error !== null ? { error: about.error } : {}),
    };
    try {
      await this.deps.send(body);
    } catch (e) {
      this.#dirty = true;
      log.warn("status report failed; delivery goes on", { error: e as Error });
    }
  }
}
