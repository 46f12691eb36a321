/**
 * Probation of a newly activated version (SPEC 8): its exits within the
 * crash window of its activation, the go-plugin handshake it owes when the
 * last good version spoke one, the decision to roll it back, and the versions
 * rolled back (refused while they stay assigned).
 *
 * @example
 * ```ts
 * import { DEFAULT_RESILIENCE, Probation } from "./probation.ts";
 * import { SYSTEM_CLOCK } from "../common/mod.ts";
 * const p = new Probation(
 *   { version: "1.1.0", sha256: "ab".repeat(32), prevLastGood: null },
 *   SYSTEM_CLOCK,
 *   DEFAULT_RESILIENCE,
 * );
 * const why = p.exited("exited with code 1"); // null: one exit is no crash loop
 * p.end();
 * ```
 *
 * @module
 */

import { type Assignment, versionKey } from "../protocol/mod.ts";
import type { AddonState, LastGood } from "../runtime/mod.ts";
import type { Clock, TimerHandle } from "../common/mod.ts";

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

/**
 * Whether activating `a` puts it on probation: a new pushed version (not an override,
 * not the version `last-good.json` already records).
 */
export function needsProbation(a: Assignment, lastGood: LastGood | null): boolean {
  return a.artifact !== undefined && !a.local && lastGood?.assignment.version !== a.version;
}

/** One version on probation, from its activation until it is rolled back or replaced. */
export class Probation {
  /** The version on probation and its sha256. */
  readonly version: string;
  readonly sha256: string;
  /** What ran before: the rollback target (null: nothing to roll back to). */
  readonly prevLastGood: LastGood | null;
  /** The last good version spoke the handshake, so this one must too before it counts as running. */
  readonly needsHandshake: boolean;
  readonly activatedAt: number;
  /** When it exited within the crash window. */
  readonly exits: number[] = [];
  #timer: TimerHandle | undefined;

  /** The probation activating `a` starts (see {@linkcode needsProbation}), or null. */
  static begin(
    a: Assignment,
    lastGood: LastGood | null,
    clock: Clock,
    timing: ResilienceTiming,
  ): Probation | null {
    if (!needsProbation(a, lastGood) || a.artifact === undefined) return null;
    return new Probation(
      { version: a.version, sha256: a.artifact.sha256, prevLastGood: lastGood },
      clock,
      timing,
    );
  }

  /** Start the probation of `v` now. */
  constructor(
    v: { version: string; sha256: string; prevLastGood: LastGood | null },
    readonly clock: Clock,
    readonly timing: ResilienceTiming,
  ) {
    this.version = v.version;
    this.sha256 = v.sha256;
    this.prevLastGood = v.prevLastGood;
    this.needsHandshake = v.prevLastGood?.handshake ?? false;
    this.activatedAt = clock.now();
  }

  /**
   * The version exited (`why`): the reason to roll it back when this is the
   * `crashLoopExits`-th exit within `crashWindowMs` of activation, else null.
   */
  exited(why: string): string | null {
    const now = this.clock.now();
    if (now - this.activatedAt > this.timing.crashWindowMs) return null;
    this.exits.push(now);
    if (this.exits.length < this.timing.crashLoopExits) return null;
    return `${this.exits.length} exits within ${
      Math.round((now - this.activatedAt) / 1000)
    } s of activation (last: ${why})`;
  }

  /** Call `onTimeout(reason)` when no handshake came within `handshakeTimeoutMs` (until {@linkcode Probation.end}). */
  awaitHandshake(onTimeout: (reason: string) => void): void {
    this.#timer = this.clock.setTimeout(() => {
      this.#timer = undefined;
      onTimeout(`no go-plugin handshake within ${this.timing.handshakeTimeoutMs / 1000} s`);
    }, this.timing.handshakeTimeoutMs);
  }

  /** End the probation: its timer no longer fires. */
  end(): void {
    if (this.#timer !== undefined) this.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** This version was rolled back for `reason`: refuse it in `s` while it stays assigned. */
  refuse(s: AddonState, reason: string): void {
    const key = versionKey(this.version, this.sha256);
    s.failed_versions = [
      ...s.failed_versions.filter((f) => versionKey(f.version, f.sha256) !== key),
      { version: this.version, sha256: this.sha256, reason },
    ];
  }
}

/** The rolled-back version of `s` with version key `key`, if it is refused. */
export function refusedVersion(
  s: AddonState,
  key: string,
): AddonState["failed_versions"][number] | undefined {
  return s.failed_versions.find((f) => versionKey(f.version, f.sha256) === key);
}

/**
 * Forget the rolled-back versions of `s` no longer assigned: only those whose version key is
 * in `assigned` (what is desired now, what the source itself assigns) stay refused.
 */
export function forgetRefused(s: AddonState, assigned: (string | undefined)[]): void {
  s.failed_versions = s.failed_versions.filter((f) =>
    assigned.includes(versionKey(f.version, f.sha256))
  );
}
