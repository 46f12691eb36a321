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

import { type Json, jsonSyntaxError } from "../protocol/mod.ts";
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
    const parsed = JSON.parse(text) as Partial<AgentState>;
    const state = { ...emptyState(), ...parsed };
    for (const [id, a] of Object.entries(state.addons)) {
      state.addons[id] = _redacted({ ...emptyAddonState(id), ...a });
    }
    return state;
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
