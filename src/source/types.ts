/**
 * What every assignment source is: the {@linkcode Source} contract, its poll
 * answer and {@linkcode SourceError}. The implementations (`source.ts`,
 * `nats.ts`, `s3.ts`) import this file, never each other, so the lazily
 * loaded NATS and S3 sources form no import cycle with the factory.
 *
 * @example A source that always has the same document
 * ```ts
 * const fixed: Source = {
 *   describe: "fixed",
 *   intervalS: 30,
 *   poll: () => Promise.resolve({ kind: "document", json: { config_version: "1", addons: [] } }),
 *   report: () => Promise.resolve(),
 *   close: () => {},
 * };
 * const r: PollResult = await fixed.poll();
 * console.log(r.kind);
 * ```
 *
 * @module
 */

import { KindedError } from "../common/mod.ts";

import type { Json } from "../protocol/mod.ts";

/** The answer to one poll. */
export type PollResult =
  | { kind: "document"; json: Json; etag?: string }
  | { kind: "not_modified" };

/** A status report as SPEC 4 sends it. */
export type StatusReport = Record<string, unknown>;

/**
 * Where assignments come from.
 *
 * Contract: `poll` throws {@linkcode SourceError} on failures (network,
 * HTTP status, unreadable file, invalid JSON) and never returns a stale
 * document as new; `report` never throws for a failing endpoint beyond its
 * returned promise rejecting with a {@linkcode SourceError}.
 */
export interface Source {
  /** Where this source reads from, for messages. */
  readonly describe: string;
  /** Seconds between polls. */
  readonly intervalS: number;
  /**
   * Fetch the document, or learn it is unchanged since the last answer.
   * `signal` ends a poll that waits on the network at once (the agent is stopping).
   *
   * @throws {SourceError} when no document could be had (its `kind` says why).
   */
  poll(signal?: AbortSignal): Promise<PollResult>;
  /**
   * Send a status report (a no-op for sources without a status endpoint);
   * `signal` as for `poll`.
   *
   * @throws {SourceError} when the endpoint could not be reached or refused the report.
   */
  report(body: StatusReport, signal?: AbortSignal): Promise<void>;
  /**
   * Push sources (NATS) call `onUpdate` when a new document is there or the
   * connection came back; the daemon then polls at once instead of waiting
   * out its interval. Polling sources leave this out.
   */
  watch?(onUpdate: () => void): void;
  /** Release connections. */
  close(): void;
}

/**
 * Why the source gave no document:
 * - `unavailable`: the control plane or the file could not be reached or read (network,
 *   timeout, a missing file); the next poll may succeed.
 * - `refused`: the control plane answered, but not with the document (an HTTP error status,
 *   a rejected token), or a credential file is empty; someone must fix the server or the
 *   credentials.
 * - `invalid`: the answer is not a JSON document.
 */
export type SourceErrorKind = "unavailable" | "refused" | "invalid";

/**
 * A failure to get the document or to send a report, with a reason a person can act on.
 *
 * @example Log what kind of failure a poll met
 * ```ts
 * const e = new SourceError("control plane https://cp answered HTTP 401", { kind: "refused" });
 * console.log(e.kind, e.message);
 * ```
 */
export class SourceError extends KindedError<SourceErrorKind> {
  override readonly name = "SourceError";
}
