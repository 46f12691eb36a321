/**
 * Where assignments come from (SPEC 4, 7 and 14): the control-plane, file,
 * NATS KV and S3 sources behind one {@linkcode Source} contract, the local
 * override, and the one desired state the daemon and `sync` both use.
 *
 * @example Poll once and make the desired state
 * ```ts
 * import { desiredState, openSource, readOverrideText } from "./mod.ts";
 * import { loadConfig } from "../config/mod.ts";
 * import { hostPlatform } from "../protocol/mod.ts";
 * const cfg = await loadConfig("/etc/addon-agent/agent.json");
 * const source = await openSource(cfg, hostPlatform());
 * const r = await source.poll(); // throws SourceError (its kind says why)
 * if (r.kind === "document") {
 *   const path = `${cfg.config_dir}/addons.local.json`;
 *   const override = await readOverrideText(path, cfg.limits.max_document_bytes);
 *   const desired = desiredState(r.json, override, path, hostPlatform());
 *   console.log(desired.entries.length);
 * }
 * source.close();
 * ```
 *
 * @module
 */

export * from "./desired_state.ts";
export * from "./override.ts";
export * from "./source.ts";
export * from "./types.ts";
export * from "./nats.ts";
