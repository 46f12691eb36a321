/**
 * The one path from what the source delivered to what should run: the
 * source's document, decoded once, merged with the local override (SPEC 7),
 * decoded again only when the override changed something, with the
 * assignments the override names marked `local` (never a last known good)
 * and the `binary_path`s it names marked as the operator's (SPEC 12),
 * and the (version, sha256) the source itself assigns per add-on (a version
 * rolled back stays refused while the source assigns it, even under an
 * override). The daemon and `sync` both go through it.
 *
 * @example
 * ```ts
 * import { acceptDocument, desiredState } from "./desired_state.ts";
 * import { hostPlatform, type Json } from "../protocol/mod.ts";
 * declare const json: Json; // what the source delivered
 * const source = acceptDocument(json, hostPlatform()); // throws DecodeError when refused
 * const desired = desiredState(source, null, "/etc/addon-agent/addons.local.json", hostPlatform());
 * console.log(desired.config_version, desired.entries.length, desired.pushedKeys);
 * ```
 *
 * @module
 */

import {
  type AssignmentDocument,
  assignmentKey,
  decodeDocument,
  type Entry,
  type Json,
  type Platform,
} from "../protocol/mod.ts";
import { applyOverride, markOverridden, parseOverride } from "./override.ts";

/** A document the source delivered, decoded and accepted. */
export interface SourceDocument {
  /** The document as delivered (persisted as `state.json`'s `pushed`). */
  json: Json;
  /** Its decoded entries. */
  document: AssignmentDocument;
  /** `version:sha256` the source assigns per add-on (see {@linkcode assignmentKey}). */
  pushedKeys: ReadonlyMap<string, string>;
}

/** What should run. */
export interface DesiredState {
  config_version: string;
  /** One verdict per entry of the merged document; the override's assignments are `local`. */
  entries: Entry[];
  /** `version:sha256` the source itself assigns per add-on (the override does not count). */
  pushedKeys: ReadonlyMap<string, string>;
  /**
   * The merged document and which add-ons' `binary_path` the override names (SPEC 12: who
   * named a host binary matters too): two desired states with equal keys need no reconcile.
   */
  key: string;
}

/**
 * Decode the source's document.
 *
 * @throws {DecodeError} when the document is refused as a whole (a field path says where).
 */
export function acceptDocument(json: Json, platform: Platform): SourceDocument {
  const document = decodeDocument(json, platform);
  const pushedKeys = new Map<string, string>();
  for (const e of document.entries) {
    if (e.ok) pushedKeys.set(e.assignment.addon_id, assignmentKey(e.assignment));
  }
  return { json, document, pushedKeys };
}

/**
 * The desired state: `source` (a delivered document, or one already accepted) with the
 * override text read from `overridePath` applied. A malformed override is treated as absent
 * (warned).
 *
 * @throws {DecodeError} when the source's document, or the document the override makes of
 * it, is refused as a whole.
 */
export function desiredState(
  source: SourceDocument | Json,
  overrideText: string | null,
  overridePath: string,
  platform: Platform,
): DesiredState {
  const accepted = _isSourceDocument(source) ? source : acceptDocument(source, platform);
  const override = overrideText === null ? null : parseOverride(overrideText, overridePath);
  const merged = applyOverride(accepted.json, override);
  const key = JSON.stringify([
    merged,
    (override ?? []).filter((o) => o.binary_path !== undefined).map((o) => o.addon_id),
  ]);
  if (merged === accepted.json) {
    return {
      config_version: accepted.document.config_version,
      entries: accepted.document.entries,
      pushedKeys: accepted.pushedKeys,
      key,
    };
  }
  const doc = decodeDocument(merged, platform);
  return {
    config_version: doc.config_version,
    entries: markOverridden(doc.entries, override),
    pushedKeys: accepted.pushedKeys,
    key,
  };
}

function _isSourceDocument(v: SourceDocument | Json): v is SourceDocument {
  return typeof v === "object" && v !== null && !Array.isArray(v) &&
    "document" in v && "pushedKeys" in v && v.pushedKeys instanceof Map;
}
