/**
 * One delivery pass (`addon-agent sync`): read the document, merge the local
 * override, and deliver, verify, stage and switch `current` for every
 * enabled pushed add-on. No supervision.
 *
 * @example
 * ```ts
 * import { loadConfig } from "../config/mod.ts";
 * import { openRuntimeRoot } from "../runtime/mod.ts";
 * const cfg = await loadConfig("/etc/addon-agent/agent.json");
 * const root = await openRuntimeRoot(cfg.runtime_root);
 * const report = await syncOnce(cfg, root);
 * Deno.exit(report.ok ? 0 : 1);
 * ```
 *
 * @module
 */

import {
  type Assignment,
  DecodeError,
  hostPlatform,
  type Platform,
  supervisionName,
} from "../protocol/mod.ts";
import type { AgentConfig } from "../config/mod.ts";
import { deliver, type DeliveryContext, deliveryContext } from "../delivery/mod.ts";
import {
  activate,
  addonState,
  collectVersions,
  loadState,
  type RuntimeRoot,
  saveState,
  StagedVerifier,
} from "../runtime/mod.ts";
import { log, UntrustedFileError } from "../common/mod.ts";
import { desiredState, openSource, OVERRIDE_FILE, readOverrideText } from "../source/mod.ts";
import { healStaged, hostBinaryLabel } from "./launch.ts";
import { checkHostBinary } from "./host_binaries.ts";

/** What happened to one entry. */
export interface SyncResult {
  addon_id: string | null;
  version: string | null;
  outcome: "current" | "host_binary" | "disabled" | "skipped" | "refused" | "failed";
  message: string;
  sha256?: string;
  fetched_bytes?: number;
}

/** The outcome of a whole pass; `ok` is false when `sync` must exit 1. */
export interface SyncReport {
  config_version: string | null;
  document_error: string | null;
  results: SyncResult[];
  ok: boolean;
}

const CONCURRENCY = 4;

/** What a caller may watch during a pass (live progress at a terminal, SPEC 16). */
export interface SyncObserver {
  /** Bytes of one add-on's artifact arrived (called a few times a second at most). */
  onProgress?(addonId: string, version: string, bytes: number, total: number): void;
  /** One add-on's delivery ended with `result`. */
  onResult?(result: SyncResult): void;
}

/** The {@linkcode UntrustedFileError} that caused `e`, however deeply wrapped, or null. */
function _untrusted(e: unknown): UntrustedFileError | null {
  for (let c = e, depth = 0; c instanceof Error && depth < 10; c = c.cause, depth++) {
    if (c instanceof UntrustedFileError) return c;
  }
  return null;
}

/** Run one delivery pass against the configured source and store. */
export async function syncOnce(
  cfg: AgentConfig,
  root: RuntimeRoot,
  platform: Platform = hostPlatform(),
  observer: SyncObserver = {},
): Promise<SyncReport> {
  const source = await openSource(cfg, platform);
  let json;
  try {
    const r = await source.poll();
    if (r.kind !== "document") {
      throw new Error("the source answered 'not modified' to a first poll");
    }
    json = r.json;
  } catch (e) {
    // A credential others could write is bad configuration (exit 2), not a document problem.
    const untrusted = _untrusted(e);
    if (untrusted) throw untrusted;
    return { config_version: null, document_error: (e as Error).message, results: [], ok: false };
  } finally {
    source.close();
  }
  const overridePath = `${cfg.config_dir}/${OVERRIDE_FILE}`;
  let doc;
  try {
    doc = desiredState(
      json,
      await readOverrideText(overridePath, cfg.limits.max_document_bytes),
      overridePath,
      platform,
    );
  } catch (e) {
    if (!(e instanceof DecodeError)) throw e;
    return { config_version: null, document_error: e.message, results: [], ok: false };
  }
  const ctx = await deliveryContext(cfg, root, platform);
  const results: SyncResult[] = [];
  const work: Assignment[] = [];
  for (const e of doc.entries) {
    if (!e.ok) {
      results.push({
        addon_id: e.addon_id ?? null,
        version: null,
        outcome: "refused",
        message: e.error,
      });
      log.error("assignment refused", { addon_id: e.addon_id, error: e.error });
      continue;
    }
    const a = e.assignment;
    if (!a.enabled) {
      results.push({
        addon_id: a.addon_id,
        version: a.version,
        outcome: "disabled",
        message: "enabled is false",
      });
    } else if (a.delivery !== "pushed_artifact" || typeof a.supervision !== "string") {
      results.push({
        addon_id: a.addon_id,
        version: a.version,
        outcome: "skipped",
        message: typeof a.supervision !== "string"
          ? `supervision ${JSON.stringify(supervisionName(a))} is unsupported`
          : `nothing to fetch (${a.delivery ?? "config_toggle"})`,
      });
    } else {
      work.push(a);
    }
  }
  const versions = new Map(work.map((a) => [a.addon_id, a.version]));
  ctx.onProgress = (id, bytes, total) =>
    observer.onProgress?.(id, versions.get(id) ?? "?", bytes, total);
  const queue = [...work];
  const runOne = async (): Promise<void> => {
    for (let a = queue.shift(); a; a = queue.shift()) {
      const r = await _syncOne(ctx, a, cfg);
      observer.onResult?.(r);
      results.push(r);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, runOne));

  const state = await loadState(root);
  state.agent_id = cfg.agent_id;
  state.config_version = doc.config_version;
  for (const r of results) {
    if (!r.addon_id) continue;
    const s = addonState(state, r.addon_id);
    s.desired_version = r.version;
    if (r.outcome === "current" || r.outcome === "host_binary") {
      s.state = "staged";
      s.version = r.version;
      s.message = r.message;
    } else if (r.outcome === "disabled") {
      s.state = "disabled";
      s.message = r.message;
    } else if (r.outcome === "refused" || r.outcome === "failed") {
      s.state = "failed";
      s.message = r.message;
    }
  }
  await saveState(root, state);
  const ok = results.every((r) => r.outcome !== "refused" && r.outcome !== "failed");
  return { config_version: doc.config_version, document_error: null, results, ok };
}

async function _syncOne(
  ctx: DeliveryContext,
  a: Assignment,
  cfg: AgentConfig,
): Promise<SyncResult> {
  const started = Date.now();
  let damage: string | null = null;
  try {
    // Self-healing (SPEC 8): a damaged staged version is moved away and fetched again.
    if (a.artifact) damage = await healStaged(ctx.layout, new StagedVerifier(), a);
    const d = await deliver(ctx, a);
    if (d.source === "host_binary") {
      await checkHostBinary(d.binary, hostBinaryLabel(ctx.platform), {
        allow: cfg.host_binaries.allow,
        fromOverride: a.binary_from_override === true,
        env: a.env,
        envFromOverride: a.env_from_override === true,
      });
      return {
        addon_id: a.addon_id,
        version: a.version,
        outcome: "host_binary",
        message: `no artifact for this platform; the host binary ${d.binary} is used`,
      };
    }
    const sw = await activate(ctx.layout, a.addon_id, a.version);
    if (sw.changed) await collectVersions(ctx.layout, a.addon_id, cfg.limits.keep_versions);
    const r: SyncResult = {
      addon_id: a.addon_id,
      version: a.version,
      outcome: "current",
      message: damage !== null
        ? `fetched again (${damage})`
        : sw.changed
        ? "staged and current"
        : "already current",
      fetched_bytes: d.fetched,
    };
    if (d.sha256) r.sha256 = d.sha256;
    log.info(r.message, { addon_id: a.addon_id, version: a.version, ms: Date.now() - started });
    return r;
  } catch (e) {
    log.error("delivery failed", { addon_id: a.addon_id, version: a.version, error: e as Error });
    return {
      addon_id: a.addon_id,
      version: a.version,
      outcome: "failed",
      message: damage === null ? (e as Error).message : `${damage}; ${(e as Error).message}`,
    };
  }
}
