/**
 * `addon-agent dev` (being built).
 *
 * @module
 */

import { UsageError } from "./common.ts";

/** Not available yet in this build. */
export function devCommand(_opts: unknown): Promise<number> {
  return Promise.reject(new UsageError("addon-agent dev is not available in this build yet"));
}
