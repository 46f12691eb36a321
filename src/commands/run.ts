/**
 * `addon-agent run` (being built).
 *
 * @module
 */

import { UsageError } from "./common.ts";

/** Not available yet in this build. */
export function runCommand(_opts: unknown): Promise<number> {
  return Promise.reject(new UsageError("addon-agent run is not available in this build yet"));
}
