/**
 * The SPEC 12 rules for names and numbers of an assignment that the document
 * and the catalog share: variable names of `env`, absolute host binaries,
 * the range of `timeout_s`.
 *
 * @module
 */

import { DecodeError, joinPath } from "./decode.ts";

/** Longest `timeout_s` of an `ephemeral_helper`: 7 days (SPEC 12). */
export const MAX_TIMEOUT_S = 604800;

const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Return `env` when every key is a variable name (SPEC 12); else throw a
 * {@linkcode DecodeError} naming the key (`"A=B"` would become `A=B=c` in the child).
 *
 * @example
 * ```ts
 * import { checkEnvNames } from "./limits.ts";
 * checkEnvNames({ MODE: "fast" }, "addons[0].env"); // { MODE: "fast" }
 * ```
 */
export function checkEnvNames(env: Record<string, string>, path: string): Record<string, string> {
  for (const k of Object.keys(env)) {
    if (!ENV_KEY.test(k)) {
      throw new DecodeError(
        joinPath(path, k),
        `${JSON.stringify(k)} is not a variable name (must match ${ENV_KEY.source})`,
      );
    }
  }
  return env;
}

/**
 * Return `path` when it is absolute (SPEC 12); else throw a {@linkcode DecodeError} at `at`.
 *
 * @example
 * ```ts
 * import { checkAbsoluteBinary } from "./limits.ts";
 * checkAbsoluteBinary("/usr/sbin/nft", "addons[0].binary_path"); // "/usr/sbin/nft"
 * ```
 */
export function checkAbsoluteBinary(path: string, at: string): string {
  if (!path.startsWith("/")) {
    throw new DecodeError(at, `must be an absolute path, got ${JSON.stringify(path)}`);
  }
  return path;
}
