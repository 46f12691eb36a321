/**
 * The local override `<config_dir>/addons.local.json` (SPEC 7): an operator
 * patches pushed assignments field by field, disables them, or appends
 * local-only add-ons. A malformed file is treated as absent, with a warning,
 * so a bad local edit never breaks pushed delivery.
 *
 * @example Merge the override into a pushed document
 * ```ts
 * import type { Json } from "../protocol/mod.ts";
 * declare const pushedJson: Json; // the document the source delivered
 * const entries = await readOverride("/etc/addon-agent/addons.local.json", 8 << 20);
 * const merged = applyOverride(pushedJson, entries);
 * ```
 *
 * @module
 */

import {
  type DecodeError,
  type Entry,
  isObject,
  type Json,
  type JsonObject,
  parseJson,
} from "../protocol/mod.ts";
import { log, readTrustedFile } from "../common/mod.ts";

/** File name of the local override inside `config_dir`. */
export const OVERRIDE_FILE = "addons.local.json";

/** Why an override file is not used. */
function _malformed(path: string, reason: string): null {
  log.warn("local override is malformed and ignored (treated as absent)", { path, reason });
  return null;
}

/**
 * The override's text; null when the file is missing, or (with a warning) unreadable, larger
 * than `maxBytes`, or writable by someone other than root or the agent (SPEC 12: whoever can
 * write it can make root run any command, so such a file is treated as absent). Never throws.
 *
 * @example
 * ```ts
 * const text = await readOverrideText("/etc/addon-agent/addons.local.json", 8 << 20);
 * if (text === null) console.log("no override in effect");
 * ```
 */
export async function readOverrideText(path: string, maxBytes: number): Promise<string | null> {
  try {
    return await readTrustedFile(path, { what: "the local override", maxBytes });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    log.warn("local override is ignored (treated as absent)", {
      path,
      reason: (e as Error).message,
    });
    return null;
  }
}

/**
 * Read the override's entries; null when the file is missing, refused or malformed (warned).
 * Never throws: a broken override must never stop the agent, it is treated as absent.
 */
export async function readOverride(path: string, maxBytes: number): Promise<JsonObject[] | null> {
  const text = await readOverrideText(path, maxBytes);
  return text === null ? null : parseOverride(text, path);
}

/**
 * Decode the override's text (read from `path`, named in warnings); null when it is malformed
 * (not JSON, no `addons` array, an entry without `addon_id`, an id twice), with a warning that
 * names the field. Never throws.
 *
 * @example
 * ```ts
 * const entries = parseOverride('{"addons":[{"addon_id":"net-probe","enabled":false}]}', "x");
 * console.log(entries?.length); // 1
 * ```
 */
export function parseOverride(text: string, path: string): JsonObject[] | null {
  let value: unknown;
  try {
    value = parseJson(text);
  } catch (e) {
    return _malformed(path, (e as DecodeError).reason);
  }
  if (!isObject(value) || !Array.isArray(value.addons)) {
    return _malformed(path, 'must be {"addons": [ ... ]}');
  }
  const seen = new Set<string>();
  const entries: JsonObject[] = [];
  for (const [i, e] of value.addons.entries()) {
    if (!isObject(e) || typeof e.addon_id !== "string") {
      return _malformed(path, `addons[${i}] must be an object with a string addon_id`);
    }
    if (seen.has(e.addon_id)) {
      return _malformed(path, `addons[${i}].addon_id: duplicate ${JSON.stringify(e.addon_id)}`);
    }
    seen.add(e.addon_id);
    entries.push(e);
  }
  return entries;
}

/** Patch a pushed document with override entries; the result is decoded like any document. */
export function applyOverride(pushed: Json, override: JsonObject[] | null): Json {
  if (!override || override.length === 0) return pushed;
  if (!isObject(pushed) || !Array.isArray(pushed.addons)) return pushed;
  const addons: Json[] = [...pushed.addons];
  for (const entry of override) {
    const i = addons.findIndex((a) => isObject(a) && a.addon_id === entry.addon_id);
    if (i >= 0) addons[i] = { ...(addons[i] as JsonObject), ...entry };
    else addons.push({ enabled: true, ...entry });
  }
  return { ...pushed, addons };
}

/**
 * Mark the decoded entries the override patched or added as `local`, those whose
 * `binary_path` the override named as `binary_from_override` (SPEC 12: an operator may
 * name any host binary, a source only what `host_binaries` allows) and those whose `env`
 * it set as `env_from_override` (loader variables for a host binary). Returns `entries`.
 *
 * @example
 * ```ts
 * import { decodeDocument, hostPlatform } from "../protocol/mod.ts";
 * import { markOverridden } from "./override.ts";
 * const override = [{ addon_id: "nft", binary_path: "/usr/sbin/nft" }];
 * const doc = decodeDocument({ addons: [] }, hostPlatform());
 * markOverridden(doc.entries, override);
 * ```
 */
export function markOverridden(entries: Entry[], override: JsonObject[] | null): Entry[] {
  const local = new Map((override ?? []).map((o) => [o.addon_id as string, o]));
  for (const e of entries) {
    const o = e.ok ? local.get(e.assignment.addon_id) : undefined;
    if (!e.ok || o === undefined) continue;
    e.assignment.local = true;
    if (o.binary_path !== undefined) e.assignment.binary_from_override = true;
    if (o.env !== undefined) e.assignment.env_from_override = true;
  }
  return entries;
}
