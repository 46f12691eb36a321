/**
 * Time as the agent's timing decisions see it: the wall clock and one-shot
 * timers behind a small interface, so tests can drive crash windows,
 * handshake timeouts and retry backoffs with fake time.
 *
 * @example
 * ```ts
 * import { SYSTEM_CLOCK } from "./clock.ts";
 * const t = SYSTEM_CLOCK.setTimeout(() => console.log("late"), 60_000);
 * SYSTEM_CLOCK.clearTimeout(t);
 * console.log(SYSTEM_CLOCK.now() > 0);
 * ```
 *
 * @module
 */

/** A handle of a timer started by a {@linkcode Clock} (a fake clock may use numbers). */
export type TimerHandle = ReturnType<typeof setTimeout> | number;

/** Milliseconds since the epoch and one-shot timers. */
export interface Clock {
  /** Milliseconds since the epoch (like `Date.now()`). */
  now(): number;
  /** Call `fn` once after `ms` milliseconds. */
  setTimeout(fn: () => void, ms: number): TimerHandle;
  /** Cancel a timer; a handle that already fired or was cancelled is ignored. */
  clearTimeout(handle: TimerHandle): void;
}

/** The real clock: `Date.now()` and the global timers. */
export const SYSTEM_CLOCK: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};
