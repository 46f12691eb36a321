/**
 * The status report an agent POSTs (SPEC 4), as the reference control plane
 * decodes it: an object whose `addons` is an array of objects with a string
 * `addon_id`, whose `agent_id` (when given) is the agent of the URL, and
 * whose known fields have their types. Unknown fields are kept (agents add
 * fields before every control plane knows them). Errors name the field path.
 *
 * @example
 * ```ts
 * import { decodeStatusReport } from "./status_report.ts";
 * const report = decodeStatusReport({ agent_id: "edge-01", addons: [] }, "edge-01");
 * ```
 *
 * @module
 */

import {
  DecodeError,
  isObject,
  joinPath,
  type Json,
  type JsonObject,
  typeName,
} from "../protocol/mod.ts";

const STRINGS = ["config_version", "reported_at", "error"] as const;
const ENTRY_STRINGS = ["version", "desired_version", "state", "message", "since"] as const;
const ENTRY_COUNTS = ["pid", "restarts"] as const;

function _optType(
  o: JsonObject,
  key: string,
  path: string,
  ok: (v: Json) => boolean,
  want: string,
): void {
  const v = o[key];
  if (v === undefined || v === null || ok(v)) return;
  throw new DecodeError(joinPath(path, key), `must be ${want}, got ${typeName(v)}`);
}

const _isString = (v: Json) => typeof v === "string";
const _isCount = (v: Json) => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;

/**
 * Decode a report posted for `agentId`; returns it as received.
 *
 * @throws {DecodeError} naming the field path of the first problem
 */
export function decodeStatusReport(value: Json, agentId: string): JsonObject {
  if (!isObject(value)) {
    throw new DecodeError("", `the report must be a JSON object, got ${typeName(value)}`);
  }
  if (value.agent_id !== undefined && value.agent_id !== agentId) {
    throw new DecodeError(
      "agent_id",
      `${JSON.stringify(value.agent_id)} does not match the URL's ${JSON.stringify(agentId)}`,
    );
  }
  for (const k of STRINGS) _optType(value, k, "", _isString, "a string");
  const addons = value.addons;
  if (!Array.isArray(addons)) {
    throw new DecodeError("addons", `must be an array, got ${typeName(addons)}`);
  }
  addons.forEach((e, i) => {
    const path = joinPath("addons", i);
    if (!isObject(e)) throw new DecodeError(path, `must be an object, got ${typeName(e)}`);
    if (typeof e.addon_id !== "string") {
      throw new DecodeError(
        joinPath(path, "addon_id"),
        `must be a string, got ${typeName(e.addon_id)}`,
      );
    }
    for (const k of ENTRY_STRINGS) _optType(e, k, path, _isString, "a string");
    for (const k of ENTRY_COUNTS) _optType(e, k, path, _isCount, "a whole number ≥ 0");
    const p = e.progress;
    if (p !== undefined && p !== null) {
      if (!isObject(p)) {
        throw new DecodeError(joinPath(path, "progress"), `must be an object, got ${typeName(p)}`);
      }
      for (const k of ["bytes", "total_bytes"]) {
        _optType(p, k, joinPath(path, "progress"), _isCount, "a whole number ≥ 0");
      }
    }
  });
  return value;
}
