/**
 * "Did you mean" for people at a terminal (SPEC 16): the closest known word
 * to a mistyped command, flag or configuration key.
 *
 * @example Suggest a configuration key
 * ```ts
 * import { didYouMean, suggest } from "./suggest.ts";
 * suggest("limts", ["limits", "trust"]); // "limits"
 * didYouMean("snyc", ["sync", "status"]); // " (did you mean sync?)"
 * ```
 *
 * @module
 */

import { distance } from "fastest-levenshtein";

/** The largest edit distance that still earns a suggestion. */
export const MAX_SUGGESTION_DISTANCE = 2;

/**
 * The candidate closest to `word` by edit distance, when that distance is at
 * most {@linkcode MAX_SUGGESTION_DISTANCE} (ties: the first candidate);
 * `undefined` otherwise. Pure and total: any strings in, no throw.
 */
export function suggest(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = MAX_SUGGESTION_DISTANCE + 1;
  for (const c of candidates) {
    if (c === word) continue;
    const d = distance(word, c);
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best;
}

/** `" (did you mean X?)"` for the closest candidate, or `""` when none is close. */
export function didYouMean(word: string, candidates: Iterable<string>): string {
  const s = suggest(word, candidates);
  return s === undefined ? "" : ` (did you mean ${s}?)`;
}
