/**
 * Retry timing of failed deliveries (SPEC 6 and 8): per (version, sha256),
 * 30 s doubling to 1 hour, each delay ±10 % jitter, and a timer that fires
 * when the backoff is due, not at the next periodic tick. The kind of the
 * failure sets the pace ({@linkcode retryPace}): a store that is down is
 * tried again soon, a digest mismatch or a refusal only after the longest
 * delay. The clock and the random source are injected, so the timing is
 * tested without waiting.
 *
 * @example Arm a retry after a failure
 * ```ts
 * const timing = { retryInitialMs: 30_000, retryMaxMs: 3_600_000 };
 * import { SYSTEM_CLOCK } from "../common/mod.ts";
 * const retries = new DeliveryRetries(SYSTEM_CLOCK, timing);
 * const delay = retries.failed("1.4.2:ab12", () => console.log("retry now"));
 * console.log(`retry in ${Math.round(delay / 1000)} s`, retries.waiting("1.4.2:ab12"));
 * retries.clear(); // the add-on was removed or the agent stops
 * ```
 *
 * @module
 */

import type { Clock, TimerHandle } from "../common/mod.ts";
import { DeliveryError } from "../delivery/mod.ts";

/**
 * How soon a failed delivery is tried again:
 * - `soon`: from `retryInitialMs`, doubling (the store, the network or the disk may recover).
 * - `slow`: the longest delay at once (nothing changes by itself: a digest mismatch, a bad
 *   signature, a conflict in the runtime root); still retried, in case the object or the
 *   runtime root is fixed without a new assignment.
 */
export type RetryPace = "soon" | "slow";

/**
 * The pace for a failed delivery: `soon` only for a {@linkcode DeliveryError} of kind
 * `unavailable` and for errors of no known kind (an I/O error while preparing), else `slow`.
 *
 * @example
 * ```ts
 * import { DeliveryError } from "../delivery/mod.ts";
 * retryPace(new DeliveryError("sha256 mismatch", { kind: "integrity" })); // "slow"
 * retryPace(new DeliveryError("store down", { kind: "unavailable" })); // "soon"
 * ```
 */
export function retryPace(e: unknown): RetryPace {
  return e instanceof DeliveryError && e.kind !== "unavailable" ? "slow" : "soon";
}

/** Fraction of each delay that is random, either way (SPEC 8: ±10 %). */
export const RETRY_JITTER = 0.1;

interface _Entry {
  attempt: number;
  dueAt: number;
  timer: TimerHandle | undefined;
}

/** Failed attempts per key and the timers that retry them. */
export class DeliveryRetries {
  readonly #entries = new Map<string, _Entry>();

  /** Back off from `retryInitialMs`, doubling, to at most `retryMaxMs`. */
  constructor(
    readonly clock: Clock,
    readonly timing: { retryInitialMs: number; retryMaxMs: number },
    readonly random: () => number = Math.random,
  ) {}

  /**
   * Record a failed attempt of `key` and, given `onDue`, arm a timer that
   * calls it when the backoff is over (replacing an earlier timer of `key`);
   * returns the delay in ms. At `pace` `slow` the delay is `retryMaxMs` at once.
   */
  failed(key: string, onDue?: () => void, pace: RetryPace = "soon"): number {
    const prev = this.#entries.get(key);
    if (prev) this.#clear(prev);
    const attempt = (prev?.attempt ?? 0) + 1;
    const base = pace === "slow" ? this.timing.retryMaxMs : Math.min(
      this.timing.retryInitialMs * 2 ** (attempt - 1),
      this.timing.retryMaxMs,
    );
    const delay = Math.round(base * (1 - RETRY_JITTER + 2 * RETRY_JITTER * this.random()));
    const entry: _Entry = { attempt, dueAt: this.clock.now() + delay, timer: undefined };
    if (onDue) {
      entry.timer = this.clock.setTimeout(() => {
        if (this.#entries.get(key) !== entry) return;
        entry.dueAt = Math.min(entry.dueAt, this.clock.now()); // a timer a little early is due
        onDue();
      }, delay);
    }
    this.#entries.set(key, entry);
    return delay;
  }

  /** Whether `key` failed and its backoff is not over yet. */
  waiting(key: string): boolean {
    const e = this.#entries.get(key);
    return e !== undefined && this.clock.now() < e.dueAt;
  }

  /** Whether `key` failed before (a retry is armed or due). */
  has(key: string): boolean {
    return this.#entries.has(key);
  }

  /** `key` was delivered: forget its failures and its timer. */
  succeeded(key: string): void {
    const e = this.#entries.get(key);
    if (!e) return;
    this.#clear(e);
    this.#entries.delete(key);
  }

  /** Forget every key and stop every timer (the add-on is removed, the agent stops). */
  clear(): void {
    for (const e of this.#entries.values()) this.#clear(e);
    this.#entries.clear();
  }

  #clear(e: _Entry): void {
    if (e.timer !== undefined) this.clock.clearTimeout(e.timer);
  }
}
