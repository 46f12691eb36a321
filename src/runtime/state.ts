/**
 * `state.json` (SPEC 6): the desired and actual state of every add-on,
 * written atomically, read back after a restart.
 *
 * @example Load, change, save
 * ```ts
 * import { Layout } from "./runtime_root.ts";
 * const layout = new Layout("/var/lib/addon-agent");
 * const state = await loadState(layout);
 * state.addons["net-probe"] = { ...emptyAddonState("net-probe"), state: "staged" };
 * await saveState(layout, state);
 * ```
 *
 * @module
 */

import { isSafeSegment, type Json, jsonSyntaxError } from "../protocol/mod.ts";
import { writeFileAtomic } from "./fs_atomic.ts";
import { log, sha256Hex } from "../common/mod.ts";
import type { Layout } from "./runtime_root.ts";

/** The states an add-on moves through (SPEC 11), in the order metrics list them. */
export const ADDON_STATE_NAMES = [
  "pending",
  "downloading",
  "verifying",
  "staged",
  "starting",
  "running",
  "stopped",
  "disabled",
  "failed",
  "fallback",
  "rolled_back",
  "unsupported",
  "completed",
] as const;

/** One of {@linkcode ADDON_STATE_NAMES}. */
export type AddonStateName = typeof ADDON_STATE_NAMES[number];

/** What the agent knows about one add-on. */
export interface AddonState {
  addon_id: string;
  state: AddonStateName;
  message: string;
  /** The version that runs (or last ran, or is current after `sync`). */
  version: string | null;
  /** The assigned version. */
  desired_version: string | null;
  supervision: string | null;
  pid: number | null;
  /** Process group of a sidecar or helper, with the identity that guards against pid reuse. */
  pgid: number | null;
  pgid_identity: string | null;
  restarts: number;
  since: string | null;
  /** go-plugin address when the add-on printed a handshake. */
  address?: string;
  /** Exit code of the last run of a helper. */
  exit_code?: number;
  progress?: { bytes: number; total_bytes: number };
  last_delivery?: { at: string; duration_ms: number; bytes: number };
  /** (version, sha256) pairs rolled back and not to be tried again while assigned. */
  failed_versions: { version: string; sha256: string; reason: string }[];
  /** Fingerprint of the (version, config) a run-once helper completed. */
  helper_fingerprint?: string;
  /** Names of the toggle settings of a `config_toggle` add-on (never their values). */
  toggles?: string[];
  /** The uid the add-on runs as (SPEC 13); absent: the agent's own. */
  uid?: number;
  /** What ends all of the add-on's processes on stop (SPEC 13). */
  containment?: "cgroup" | "process_group";
  /** Limits asked for but not applied, with why ("not enforced: no memory controller"). */
  resources_not_enforced?: string[];
  /** Memory in use by the add-on's cgroup (`memory.current`), when known. */
  memory_bytes?: number;
  /** CPU time used by the add-on's cgroup (`cpu.stat`), when known. */
  cpu_seconds?: number;
}

/** The whole of `state.json`. */
export interface AgentState {
  agent_id: string | null;
  config_version: string | null;
  updated_at: string | null;
  /** The assignments document last accepted from the source, run again at start. */
  pushed: Json | null;
  addons: Record<string, AddonState>;
  /** Per-add-on uids (SPEC 13), kept while the add-on's directory exists. */
  uids?: Record<string, number>;
}

/** A fresh, empty agent state. */
export function emptyState(): AgentState {
  return { agent_id: null, config_version: null, updated_at: null, pushed: null, addons: {} };
}

/** A fresh state for one add-on. */
export function emptyAddonState(addonId: string): AddonState {
  return {
    addon_id: addonId,
    state: "pending",
    message: "",
    version: null,
    desired_version: null,
    supervision: null,
    pid: null,
    pgid: null,
    pgid_identity: null,
    restarts: 0,
    since: null,
    failed_versions: [],
  };
}

/**
 * A state written by an older agent, without the values it used to carry:
 * toggle values become their names, a plain-text helper fingerprint its
 * sha256 (which is what the fingerprint is now, so a completed helper stays
 * completed).
 */
function _redacted(a: AddonState): AddonState {
  const t = a.toggles as unknown;
  if (t !== undefined && !Array.isArray(t)) {
    a.toggles = t !== null && typeof t === "object" ? Object.keys(t).sort() : [];
  }
  if (typeof a.helper_fingerprint === "string" && !/^[0-9a-f]{64}$/.test(a.helper_fingerprint)) {
    a.helper_fingerprint = sha256Hex(a.helper_fingerprint);
  }
  return a;
}

/**
 * The state of `addonId` in `state`, added (empty) when missing. An id like `__proto__` is an
 * ordinary key here, never the object's prototype.
 *
 * @example
 * ```ts
 * import { addonState, emptyState } from "./state.ts";
 * const state = emptyState();
 * addonState(state, "net-probe").state = "staged";
 * ```
 */
export function addonState(state: AgentState, addonId: string): AddonState {
  let s = findAddonState(state, addonId);
  if (!s) {
    s = emptyAddonState(addonId);
    state.addons[addonId] = s;
  }
  return s;
}

/** The state of `addonId` in `state`, or undefined (never an inherited property). */
export function findAddonState(state: AgentState, addonId: string): AddonState | undefined {
  return Object.hasOwn(state.addons, addonId) ? state.addons[addonId] : undefined;
}

/**
 * Move `s` to `state` with `message` at `now` (ms since the epoch), then apply `extra`:
 * `since` restarts when it enters `running` or `fallback`, and `progress` lives only while
 * `downloading`. Returns whether the state or the message changed.
 */
export function setAddonState(
  s: AddonState,
  state: AddonStateName,
  message: string,
  now: number,
  extra: Partial<AddonState> = {},
): boolean {
  const changed = s.state !== state || s.message !== message;
  if (s.state !== state && (state === "running" || state === "fallback")) {
    s.since = new Date(now).toISOString();
  }
  s.state = state;
  s.message = message;
  Object.assign(s, extra);
  if (state !== "downloading") delete s.progress;
  return changed;
}

/** Forget the process of an add-on that no longer runs (pid, process group and its identity). */
export function clearProcess(s: AddonState): void {
  s.pid = null;
  s.pgid = null;
  s.pgid_identity = null;
}

/** Read `state.json`; a missing or unreadable file gives an empty state (with a warning). */
export async function loadState(layout: Layout): Promise<AgentState> {
  let text: string;
  try {
    text = await Deno.readTextFile(layout.stateFile);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return emptyState();
    throw e;
  }
  try {
    return _decodeState(
      JSON.parse(text),
      (what) =>
        log.warn("state.json: a value of the wrong shape is left out", {
          path: layout.stateFile,
          field: what,
        }),
    );
  } catch (e) {
    log.warn("state.json is unreadable; starting from an empty state", {
      path: layout.stateFile,
      // JSON.parse's own message would quote the text (env values) around the error.
      error: e instanceof SyntaxError ? jsonSyntaxError(text) : (e as Error).message,
    });
    return emptyState();
  }
}

/** Write `state.json` atomically. */
export async function saveState(layout: Layout, state: AgentState): Promise<void> {
  state.updated_at = new Date().toISOString();
  await writeFileAtomic(layout.stateFile, JSON.stringify(state, null, 2) + "\n", 0o600);
}

type _Obj = Record<string, unknown>;

function _isObj(v: unknown): v is _Obj {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/**
 * `state.json` as the agent wrote it, checked field by field: the file is the agent's own, but a
 * crash, a disk or a hand can leave anything there, and its add-on ids and versions become paths.
 * A value of the wrong type (an id or version that is no safe path segment, an array for
 * `addons`) is left out and reported through `dropped` with its field path; a top level that is
 * not an object throws.
 */
function _decodeState(v: unknown, dropped: (field: string) => void): AgentState {
  if (!_isObj(v)) throw new Error("not an object");
  const state = emptyState();
  const str = (x: unknown) => typeof x === "string" ? x : null;
  state.agent_id = str(v.agent_id);
  state.config_version = str(v.config_version);
  state.updated_at = str(v.updated_at);
  state.pushed = (v.pushed ?? null) as Json | null; // decoded by the desired-state path
  if (v.addons !== undefined && !_isObj(v.addons)) dropped("addons");
  for (const [id, a] of Object.entries(_isObj(v.addons) ? v.addons : {})) {
    if (!isSafeSegment(id) || !_isObj(a)) {
      dropped(`addons.${JSON.stringify(id)}`);
      continue;
    }
    state.addons[id] = _redacted(_decodeAddon(id, a, (f) => dropped(`addons.${id}.${f}`)));
  }
  if (_isObj(v.uids)) {
    state.uids = {};
    for (const [id, uid] of Object.entries(v.uids)) {
      if (isSafeSegment(id) && Number.isSafeInteger(uid) && (uid as number) > 0) {
        state.uids[id] = uid as number;
      } else dropped(`uids.${JSON.stringify(id)}`);
    }
  } else if (v.uids !== undefined) dropped("uids");
  return state;
}

const _OPTIONAL_TYPES: Record<string, string> = {
  address: "string",
  exit_code: "number",
  helper_fingerprint: "string",
  uid: "number",
  containment: "string",
  memory_bytes: "number",
  cpu_seconds: "number",
};

function _decodeAddon(id: string, a: _Obj, dropped: (field: string) => void): AddonState {
  const out = emptyAddonState(id);
  const take = <T>(k: string, ok: (x: unknown) => boolean, fallback: T): T => {
    if (a[k] === undefined) return fallback;
    if (ok(a[k])) return a[k] as T;
    dropped(k);
    return fallback;
  };
  const strOrNull = (x: unknown) => x === null || typeof x === "string";
  const segOrNull = (x: unknown) => x === null || (typeof x === "string" && isSafeSegment(x));
  const intOrNull = (x: unknown) => x === null || (Number.isSafeInteger(x) && (x as number) > 0);
  out.state = take(
    "state",
    (x) => (ADDON_STATE_NAMES as readonly unknown[]).includes(x),
    "pending",
  );
  out.message = take("message", (x) => typeof x === "string", "");
  out.version = take("version", segOrNull, null);
  out.desired_version = take("desired_version", segOrNull, null);
  out.supervision = take("supervision", strOrNull, null);
  out.pid = take("pid", intOrNull, null);
  out.pgid = take("pgid", intOrNull, null);
  out.pgid_identity = take("pgid_identity", strOrNull, null);
  out.restarts = take("restarts", (x) => Number.isSafeInteger(x) && (x as number) >= 0, 0);
  out.since = take("since", strOrNull, null);
  out.failed_versions = take(
    "failed_versions",
    (x) =>
      Array.isArray(x) &&
      x.every((f) =>
        _isObj(f) && typeof f.version === "string" && typeof f.sha256 === "string" &&
        typeof f.reason === "string"
      ),
    [],
  );
  const o = out as unknown as _Obj;
  for (const [k, t] of Object.entries(_OPTIONAL_TYPES)) {
    if (a[k] !== undefined) o[k] = take(k, (x) => _typeName(x) === t, undefined);
    if (o[k] === undefined) delete o[k];
  }
  const p = a.progress, d = a.last_delivery;
  if (_isObj(p) && typeof p.bytes === "number" && typeof p.total_bytes === "number") {
    out.progress = { bytes: p.bytes, total_bytes: p.total_bytes };
  } else if (p !== undefined) dropped("progress");
  if (
    _isObj(d) && typeof d.at === "string" && typeof d.duration_ms === "number" &&
    typeof d.bytes === "number"
  ) {
    out.last_delivery = { at: d.at, duration_ms: d.duration_ms, bytes: d.bytes };
  } else if (d !== undefined) dropped("last_delivery");
  if (a.toggles !== undefined) {
    // Arrays of names; an older agent's object of values becomes its names (_redacted).
    out.toggles = Array.isArray(a.toggles)
      ? a.toggles.filter((x): x is string => typeof x === "string")
      : a.toggles as string[];
  }
  if (Array.isArray(a.resources_not_enforced)) {
    out.resources_not_enforced = a.resources_not_enforced.filter((x): x is string =>
      typeof x === "string"
    );
  } else if (a.resources_not_enforced !== undefined) dropped("resources_not_enforced");
  return out;
}

/** `typeof x`, to compare with the names of a table (`deno lint` wants a literal beside `typeof`). */
function _typeName(x: unknown): string {
  return typeof x;
}
