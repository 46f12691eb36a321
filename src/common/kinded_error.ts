/**
 * The base of the agent's named error kinds (SPEC 12's "a reason a person
 * can act on"; issue #8's one error model): a message, a `kind` the caller's
 * policy reads (retry soon, wait, refuse), and the `cause` it wraps.
 *
 * @example A named error with kinds
 * ```ts
 * import { KindedError } from "./kinded_error.ts";
 * class ProbeError extends KindedError<"down" | "refused"> {
 *   override readonly name = "ProbeError";
 * }
 * const e = new ProbeError("probe.example answered 403", { kind: "refused" });
 * if (e.kind === "refused") console.log(`needs a person: ${e.message}`);
 * ```
 *
 * @module
 */

/** An error of one `kind` of `K`, keeping the `cause` it wraps. Subclasses set `name`. */
export class KindedError<K extends string> extends Error {
  /** What went wrong, for the caller's policy. */
  readonly kind: K;
  /** Make an error of `kind`, keeping `cause` (when given) as the standard `cause`. */
  constructor(message: string, options: { kind: K; cause?: unknown }) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.kind = options.kind;
  }
}
