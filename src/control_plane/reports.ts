/**
 * The last status report of each agent, as the reference control plane keeps
 * it: at most `maxBytes` of report text in all, the reports not renewed for
 * the longest dropped first. Agent ids are whatever a client puts in the URL,
 * so without a bound one client posting 1 MiB reports under fresh ids would
 * grow the server's memory until it dies.
 *
 * @example
 * ```ts
 * import { LastReports } from "./reports.ts";
 * const reports = new LastReports(1 << 20);
 * reports.set("edge-01", { agent_id: "edge-01", addons: [] }, 40);
 * reports.get("edge-01"); // the report
 * ```
 *
 * @module
 */

import { log } from "../common/mod.ts";
import type { JsonObject } from "../protocol/mod.ts";

/** Default bound of all reports kept: 256 MiB of report text (~8,000 agents of 30 KB). */
export const MAX_REPORTS_BYTES = 256 << 20;

/** The last report per agent, within a byte budget. */
export class LastReports {
  #reports = new Map<string, { report: JsonObject; bytes: number }>();
  #bytes = 0;
  #warned = false;

  /** Keep at most `maxBytes` of reports (counted as the size of the text each came in). */
  constructor(readonly maxBytes: number = MAX_REPORTS_BYTES) {}

  /** The last report of `agentId`, if still kept. */
  get(agentId: string): JsonObject | undefined {
    return this.#reports.get(agentId)?.report;
  }

  /** Bytes of all reports kept. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Keep `report` (of `bytes` bytes of text) as the last of `agentId`; drops the oldest over the budget. */
  set(agentId: string, report: JsonObject, bytes: number): void {
    const old = this.#reports.get(agentId);
    if (old) {
      this.#reports.delete(agentId);
      this.#bytes -= old.bytes;
    }
    this.#reports.set(agentId, { report, bytes });
    this.#bytes += bytes;
    for (const [id, r] of this.#reports) {
      if (this.#bytes <= this.maxBytes || id === agentId) break;
      this.#reports.delete(id);
      this.#bytes -= r.bytes;
      if (!this.#warned) {
        this.#warned = true;
        log.warn("status reports exceed their memory budget; the oldest are dropped", {
          max_bytes: this.maxBytes,
        });
      }
    }
  }
}
