/**
 * What the commands share: exit codes, and turning errors into them.
 *
 * @module
 */

import { type AgentConfig, ConfigError, loadCheckedConfig } from "../config/mod.ts";
import { log, UntrustedFileError } from "../common/mod.ts";
import { openRuntimeRoot, type RuntimeRoot, RuntimeRootError } from "../runtime/mod.ts";

/** Exit codes (SPEC 9). */
export const EXIT = { ok: 0, failure: 1, usage: 2 } as const;

/** Bad usage (a flag, an argument): the CLI exits 2 with this message. */
export class UsageError extends Error {
  /** Make a usage error naming the flag or argument; keeps the `cause`. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "UsageError";
  }
}

/** Load the config, or throw {@linkcode ConfigError}. */
export function configFrom(path: string): Promise<AgentConfig> {
  return loadCheckedConfig(path);
}

/** Open the runtime root; a refused root (owner, mode) is a configuration error. */
export async function rootFrom(cfg: AgentConfig): Promise<RuntimeRoot> {
  try {
    return await openRuntimeRoot(cfg.runtime_root);
  } catch (e) {
    if (e instanceof RuntimeRootError && e.kind === "refused") {
      throw new ConfigError(`${cfg.file}: runtime_root: ${e.message}`, { cause: e });
    }
    throw e;
  }
}

/** Map an error thrown by a command to an exit code, logging it. */
export function exitCodeFor(e: unknown): number {
  // A trusted file others could write is bad configuration, wherever it was read (SPEC 12).
  if (e instanceof UsageError || e instanceof ConfigError || e instanceof UntrustedFileError) {
    log.error(e.message);
    return EXIT.usage;
  }
  if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
    log.error(`not permitted: ${(e as Error).message}`);
    return EXIT.failure;
  }
  log.error((e as Error)?.message ?? String(e));
  return EXIT.failure;
}
