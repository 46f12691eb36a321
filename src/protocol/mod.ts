/**
 * The wire formats every other room speaks: JSON decoding with field paths,
 * the assignments document, the shared name and size limits, hosts,
 * platforms, signatures and calendar schedules.
 *
 * @example Decode a document; a refused entry says why by field path
 * ```ts
 * import { decodeDocument, hostPlatform, parseJson } from "./mod.ts";
 * const doc = decodeDocument(parseJson('{"config_version":"7","addons":[]}'), hostPlatform());
 * for (const e of doc.entries) if (!e.ok) console.log(e.addon_id, e.error);
 * ```
 *
 * @module
 */

export * from "./assignment.ts";
export * from "./calendar.ts";
export * from "./decode.ts";
export * from "./hosts.ts";
export * from "./json_syntax.ts";
export * from "./limits.ts";
export * from "./platform.ts";
export * from "./signature.ts";
