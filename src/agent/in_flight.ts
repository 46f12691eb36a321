/**
 * The delivery an add-on's slot has under way, so that a changed assignment
 * abandons it at once instead of waiting behind a slow or stalled store
 * (SPEC 12): the download itself stops once no add-on wants its bytes.
 *
 * @example
 * ```ts
 * import { InFlight } from "./in_flight.ts";
 * const inFlight = new InFlight();
 * const d = inFlight.begin("ab12…");
 * inFlight.abandonUnless("cd34…", "2.0.0"); // d.signal is aborted
 * d.end();
 * ```
 *
 * @module
 */

/** One delivery being tracked. */
export interface Tracked {
  /** Aborted when the delivery is no longer wanted. */
  signal: AbortSignal;
  /** Stop tracking it (it finished either way). */
  end(): void;
}

/** At most one delivery per slot, with the sha256 it fetches (null: none). */
export class InFlight {
  #current: { sha256: string | null; abort: AbortController } | null = null;

  /** Track a delivery of `sha256`. */
  begin(sha256: string | null): Tracked {
    const d = { sha256, abort: new AbortController() };
    this.#current = d;
    return {
      signal: d.abort.signal,
      end: () => {
        if (this.#current === d) this.#current = null;
      },
    };
  }

  /** Abandon the delivery under way unless it fetches `sha256`; `why` names what replaced it. */
  abandonUnless(sha256: string | null, why: string): void {
    const d = this.#current;
    if (d && d.sha256 !== sha256) d.abort.abort(new Error(`superseded by ${why}`));
  }
}
