/**
 * The assignments document (SPEC 3): decoded into typed assignments, one
 * verdict per entry, so one bad entry refuses only itself.
 *
 * @example Decode a document
 * ```ts
 * import { parseJson } from "./decode.ts";
 * import { hostPlatform } from "./platform.ts";
 * const text = await Deno.readTextFile("/etc/addon-agent/assignments.json");
 * const doc = decodeDocument(parseJson(text), hostPlatform());
 * for (const e of doc.entries) if (!e.ok) console.log(e.addon_id, e.error);
 * ```
 *
 * @module
 */

import { DecodeError, joinPath, type Json, type JsonObject, ObjectReader } from "./decode.ts";
import { type Platform, platformString } from "./platform.ts";
import { decodeBase64 } from "./signature.ts";
import { checkAbsoluteBinary, checkEnvNames, MAX_TIMEOUT_S } from "./limits.ts";

/** Supervision models the agent runs. */
export const SUPERVISIONS = [
  "agent_sidecar",
  "config_toggle",
  "systemd_service",
  "systemd_timer",
  "ephemeral_helper",
] as const;
/** A supervision model the agent knows. */
export type Supervision = typeof SUPERVISIONS[number];

/** Delivery models. */
export const DELIVERIES = ["pushed_artifact", "os_package"] as const;
/** How an add-on's binary reaches the host. */
export type Delivery = typeof DELIVERIES[number];

/** Artifact formats (SPEC 15): one executable, or a bundle unpacked into a tree. */
export const ARTIFACT_FORMATS = ["binary", "tar.gz", "tar.zst"] as const;
/** How an artifact's bytes are staged. */
export type ArtifactFormat = typeof ARTIFACT_FORMATS[number];
/** The archive formats among {@linkcode ARTIFACT_FORMATS}. */
export type BundleFormat = Exclude<ArtifactFormat, "binary">;

/** A bundle: the archive's format and the file in its tree that runs (SPEC 15). */
export interface Bundle {
  format: BundleFormat;
  /** Relative path inside the bundle, checked by {@linkcode checkBundlePath}. */
  entrypoint: string;
}

/** Where an artifact is and which bytes it must be. */
export interface ArtifactRef {
  object_key: string;
  /** Lowercase hex sha256. */
  sha256: string;
  /** Standard base64 of the 64-byte signature, when signed. */
  signature?: string;
  /** Present for a bundle (`artifact_format` `tar.gz`/`tar.zst`); absent for one executable. */
  bundle?: Bundle;
}

/** Resource limits of one add-on (SPEC 13); each is optional. */
export interface Resources {
  /** `memory.max` / `MemoryMax=`, bytes. */
  memory_max_bytes?: number;
  /** `cpu.max` / `CPUQuota=`, percent of one CPU (200 = two CPUs). */
  cpu_max_percent?: number;
  /** `pids.max` / `TasksMax=`. */
  pids_max?: number;
}

/** One decoded assignment: the agent trusts these types from here on. */
export interface Assignment {
  addon_id: string;
  version: string;
  enabled: boolean;
  /** `null` for `config_toggle`, which ignores delivery. */
  delivery: Delivery | null;
  /** A known model, or the unknown string (reported `unsupported`). */
  supervision: Supervision | { unsupported: string };
  binary_path?: string;
  /** File name of the staged executable (safe segment). */
  binary_name: string;
  args: string[];
  env: Record<string, string>;
  config: JsonObject;
  capabilities: string[];
  artifact?: ArtifactRef;
  target_os?: string;
  target_arch?: string;
  schedule?: string;
  /** Run-to-completion timeout for `ephemeral_helper`, seconds. */
  timeout_s?: number;
  /** Limits written to the add-on's cgroup or unit (SPEC 13). */
  resources?: Resources;
  /** Patched or added by the local override: never recorded as last known good. */
  local?: boolean;
  /**
   * `binary_path` was named by the local override (an operator's file), not by the source:
   * it may name any absolute path; a source's needs `host_binaries` (SPEC 12).
   */
  binary_from_override?: boolean;
  /**
   * `env` was set by the local override: it may hold variables the loader acts on
   * (`LD_PRELOAD`, …), which a source may not pass to a host binary (SPEC 12).
   */
  env_from_override?: boolean;
}

/** The verdict on one entry of a document. */
export type Entry =
  | { ok: true; assignment: Assignment }
  | { ok: false; addon_id?: string; path: string; error: string };

/** A decoded document: refused entries carry their reason. */
export interface AssignmentDocument {
  config_version: string;
  entries: Entry[];
}

const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;
const SHA256 = /^[0-9a-fA-F]{64}$/;
const CAPABILITY = /^CAP_[A-Z_]+$/;

/** The longest path inside a bundle (and symlink target) the agent takes, in bytes. */
export const MAX_BUNDLE_PATH_BYTES = 1024;

/** The name every staged version keeps for its record; a bundle may not use it at its top. */
export const ARTIFACT_RECORD = "artifact.json";

/**
 * Why `path` is not a safe relative path inside a bundle, or null when it is:
 * no leading `/`, no empty, `.` or `..` segment, no NUL, at most
 * {@linkcode MAX_BUNDLE_PATH_BYTES} bytes and 255 bytes a segment (so that the
 * path below any runtime root stays within what Linux takes).
 *
 * @example
 * ```ts
 * checkBundlePath("bin/net-probe"); // null
 * checkBundlePath("../etc/passwd"); // 'has a ".." segment'
 * ```
 */
export function checkBundlePath(path: string): string | null {
  if (path === "") return "is empty";
  if (path.includes("\0")) return "contains a NUL character";
  if (path.startsWith("/")) return "is absolute";
  if (new TextEncoder().encode(path).length > MAX_BUNDLE_PATH_BYTES) {
    return `is longer than ${MAX_BUNDLE_PATH_BYTES} bytes`;
  }
  const segments = path.split("/");
  if (segments.includes("..")) return 'has a ".." segment';
  if (segments.includes(".")) return 'has a "." segment';
  if (segments.includes("")) return "has an empty segment (a doubled or trailing /)";
  if (segments.some((seg) => new TextEncoder().encode(seg).length > 255)) {
    return "has a segment longer than 255 bytes";
  }
  return null;
}

/** Whether `s` may be used as one path segment (SPEC 3). */
export function isSafeSegment(s: string): boolean {
  return SEGMENT.test(s) && s !== "." && s !== "..";
}

/** Decode a whole document; throws {@linkcode DecodeError} only when the whole document is refused. */
export function decodeDocument(value: Json, platform: Platform): AssignmentDocument {
  const r = ObjectReader.of(value, "");
  const config_version = r.optString("config_version", true) ?? "";
  const raw = r.raw("addons");
  if (!Array.isArray(raw)) throw new DecodeError("addons", "must be an array");
  const seen = new Map<string, number>();
  raw.forEach((item, i) => {
    const id = (item as { addon_id?: unknown } | null)?.addon_id;
    if (typeof id !== "string") return;
    const first = seen.get(id);
    if (first !== undefined) {
      throw new DecodeError(
        `addons[${i}].addon_id`,
        `duplicate addon_id ${JSON.stringify(id)} (also addons[${first}]); the document is refused`,
      );
    }
    seen.set(id, i);
  });
  const entries = raw.map((item, i) => decodeEntry(item, joinPath("addons", i), platform));
  return { config_version, entries };
}

/** Decode one entry; a bad entry becomes `{ok: false}` with its reason. */
export function decodeEntry(value: Json, path: string, platform: Platform): Entry {
  const id = (value as { addon_id?: unknown } | null)?.addon_id;
  try {
    return { ok: true, assignment: decodeAssignment(value, path, platform) };
  } catch (e) {
    if (!(e instanceof DecodeError)) throw e;
    return {
      ok: false,
      addon_id: typeof id === "string" && isSafeSegment(id) ? id : undefined,
      path: e.path,
      error: e.message,
    };
  }
}

function _segment(r: ObjectReader, key: string): string {
  const v = r.string(key);
  if (!isSafeSegment(v)) {
    throw new DecodeError(
      r.at(key),
      `${JSON.stringify(v)} is not a safe name (must match ${SEGMENT.source})`,
    );
  }
  return v;
}

/** `artifact_format` and `entrypoint` (SPEC 15): a bundle, or undefined for one executable. */
function _bundle(r: ObjectReader): Bundle | undefined {
  const format = r.has("artifact_format") ? r.oneOf("artifact_format", ARTIFACT_FORMATS) : "binary";
  const entrypoint = r.optString("entrypoint");
  if (format === "binary") {
    if (entrypoint !== undefined) {
      throw new DecodeError(
        r.at("entrypoint"),
        'is only for bundles; set artifact_format to "tar.gz" or "tar.zst", or drop entrypoint',
      );
    }
    return undefined;
  }
  if (entrypoint === undefined) {
    throw new DecodeError(
      r.at("entrypoint"),
      `is required for artifact_format ${JSON.stringify(format)}: the path in the bundle to run`,
    );
  }
  const why = checkBundlePath(entrypoint);
  if (why !== null) {
    throw new DecodeError(
      r.at("entrypoint"),
      `${
        JSON.stringify(entrypoint)
      } ${why}; give a relative path inside the bundle like bin/net-probe`,
    );
  }
  if (entrypoint === ARTIFACT_RECORD) {
    throw new DecodeError(r.at("entrypoint"), `${ARTIFACT_RECORD} is the agent's own record`);
  }
  return { format, entrypoint };
}

/** Decode one entry into an {@linkcode Assignment}, throwing on the first problem. */
export function decodeAssignment(value: Json, path: string, platform: Platform): Assignment {
  const r = ObjectReader.of(value, path);
  const addon_id = _segment(r, "addon_id");
  const version = _segment(r, "version");
  const enabled = r.optBool("enabled") ?? true;
  const supervisionRaw = r.string("supervision");
  const supervision: Assignment["supervision"] =
    (SUPERVISIONS as readonly string[]).includes(supervisionRaw)
      ? supervisionRaw as Supervision
      : { unsupported: supervisionRaw };
  const isToggle = supervision === "config_toggle";
  const delivery = isToggle ? null : r.oneOf("delivery", DELIVERIES);
  const binaryRaw = isToggle ? undefined : r.optString("binary_path");
  const binary_path = binaryRaw === undefined
    ? undefined
    : checkAbsoluteBinary(binaryRaw, r.at("binary_path"));
  const args = r.optStringArray("args") ?? [];
  const env = checkEnvNames(r.optStringRecord("env") ?? {}, r.at("env"));
  const config = r.optJsonObject("config") ?? {};
  const capabilities = r.optStringArray("capabilities") ?? [];
  capabilities.forEach((c, i) => {
    if (!CAPABILITY.test(c)) {
      throw new DecodeError(
        joinPath(r.at("capabilities"), i),
        `${JSON.stringify(c)} is not a capability name like CAP_NET_RAW`,
      );
    }
  });
  // Artifact fields mean something only for pushed artifacts; elsewhere they are ignored.
  const pushed = delivery === "pushed_artifact";
  const key = pushed ? r.optString("artifact_object_key") : undefined;
  const sha = pushed ? r.optString("artifact_sha256") : undefined;
  const sig = pushed ? r.optString("artifact_signature") : undefined;
  const bundle = pushed ? _bundle(r) : undefined;
  if (!pushed) {
    r.raw("artifact_format");
    r.raw("entrypoint");
    r.raw("delivery");
    r.raw("binary_path");
    r.raw("artifact_object_key");
    r.raw("artifact_sha256");
    r.raw("artifact_signature");
  }
  if ((key === undefined) !== (sha === undefined)) {
    throw new DecodeError(
      key === undefined ? r.at("artifact_object_key") : r.at("artifact_sha256"),
      "artifact_object_key and artifact_sha256 must be given together",
    );
  }
  if (sha !== undefined && !SHA256.test(sha)) {
    throw new DecodeError(r.at("artifact_sha256"), "must be 64 hex characters");
  }
  if (sig !== undefined && decodeBase64(sig)?.length !== 64) {
    throw new DecodeError(
      r.at("artifact_signature"),
      "must be canonical standard base64 of exactly 64 bytes",
    );
  }
  if (sig !== undefined && key === undefined) {
    throw new DecodeError(
      r.at("artifact_signature"),
      "is given without artifact_object_key and artifact_sha256; a signature must sign an artifact",
    );
  }
  if (key !== undefined && (key.split("/").includes("..") || key.includes("\0"))) {
    throw new DecodeError(
      r.at("artifact_object_key"),
      `${JSON.stringify(key)} may not contain ".."`,
    );
  }
  const target_os = r.optString("target_os");
  const target_arch = r.optString("target_arch");
  if (
    (target_os !== undefined && target_os !== platform.os) ||
    (target_arch !== undefined && target_arch !== platform.arch)
  ) {
    throw new DecodeError(
      r.at(target_os !== undefined && target_os !== platform.os ? "target_os" : "target_arch"),
      `built for ${target_os ?? platform.os}/${target_arch ?? platform.arch}, this host is ${
        platformString(platform)
      }`,
    );
  }
  const schedule = r.optString("schedule");
  const timeout_s = r.optNumber("timeout_s", { min: 1, max: MAX_TIMEOUT_S, integer: true });
  const resources = _resources(r.optObject("resources"));
  if (delivery === "os_package" && binary_path === undefined) {
    throw new DecodeError(r.at("binary_path"), "is required for os_package delivery");
  }
  if (supervision === "systemd_timer" && schedule === undefined) {
    throw new DecodeError(r.at("schedule"), "is required for systemd_timer");
  }
  const base = binary_path?.split("/").pop() ?? "";
  const binary_name = isSafeSegment(base) ? base : addon_id;
  if (pushed && binary_name === ARTIFACT_RECORD) {
    // Staged beside the record, the binary and artifact.json would overwrite each other.
    throw new DecodeError(
      r.at(base === binary_name ? "binary_path" : "addon_id"),
      `the staged binary would be named ${ARTIFACT_RECORD}, the agent's own record; name it otherwise`,
    );
  }
  const assignment: Assignment = {
    addon_id,
    version,
    enabled,
    delivery,
    supervision,
    binary_name,
    args,
    env,
    config,
    capabilities,
  };
  if (binary_path !== undefined) assignment.binary_path = binary_path;
  if (key !== undefined && sha !== undefined) {
    assignment.artifact = { object_key: key, sha256: sha.toLowerCase() };
    if (sig !== undefined) assignment.artifact.signature = sig;
    if (bundle !== undefined) assignment.artifact.bundle = bundle;
  }
  if (target_os !== undefined) assignment.target_os = target_os;
  if (target_arch !== undefined) assignment.target_arch = target_arch;
  if (schedule !== undefined) assignment.schedule = schedule;
  if (timeout_s !== undefined) assignment.timeout_s = timeout_s;
  if (resources !== undefined) assignment.resources = resources;
  return assignment;
}

function _resources(r: ObjectReader | undefined): Resources | undefined {
  if (!r) return undefined;
  const out: Resources = {};
  const mem = r.optNumber("memory_max_bytes", {
    min: 4096,
    max: Number.MAX_SAFE_INTEGER, // written in full, never as 1e+300
    integer: true,
  });
  const cpu = r.optNumber("cpu_max_percent", { min: 1, max: 100_000, integer: true });
  const pids = r.optNumber("pids_max", { min: 1, max: 4_194_304, integer: true });
  r.done();
  if (mem !== undefined) out.memory_max_bytes = mem;
  if (cpu !== undefined) out.cpu_max_percent = cpu;
  if (pids !== undefined) out.pids_max = pids;
  return out;
}

/** Name of a supervision model for display (`unsupported` ones keep their string). */
export function supervisionName(a: Assignment): string {
  return typeof a.supervision === "string" ? a.supervision : a.supervision.unsupported;
}

/** Encode an assignment back into the SPEC 3 entry form (for `last-good.json` and `state.json`). */
export function encodeAssignment(a: Assignment): JsonObject {
  const out: JsonObject = {
    addon_id: a.addon_id,
    version: a.version,
    enabled: a.enabled,
    supervision: supervisionName(a),
    args: a.args,
    env: a.env,
    config: a.config,
    capabilities: a.capabilities,
  };
  if (a.delivery !== null) out.delivery = a.delivery;
  if (a.binary_path !== undefined) out.binary_path = a.binary_path;
  if (a.artifact) {
    out.artifact_object_key = a.artifact.object_key;
    out.artifact_sha256 = a.artifact.sha256;
    if (a.artifact.signature !== undefined) out.artifact_signature = a.artifact.signature;
    if (a.artifact.bundle) {
      out.artifact_format = a.artifact.bundle.format;
      out.entrypoint = a.artifact.bundle.entrypoint;
    }
  }
  if (a.target_os !== undefined) out.target_os = a.target_os;
  if (a.target_arch !== undefined) out.target_arch = a.target_arch;
  if (a.schedule !== undefined) out.schedule = a.schedule;
  if (a.timeout_s !== undefined) out.timeout_s = a.timeout_s;
  if (a.resources !== undefined) out.resources = { ...a.resources };
  return out;
}

/**
 * The key of one build of one version: `version:sha256` (`version:` without an artifact).
 * Rolled-back versions, retries and the versions the source assigns are compared by it.
 *
 * @example
 * ```ts
 * import { versionKey } from "./assignment.ts";
 * versionKey("1.2.0", "ab12"); // "1.2.0:ab12"
 * ```
 */
export function versionKey(version: string, sha256: string | undefined): string {
  return `${version}:${sha256 ?? ""}`;
}

/** The {@linkcode versionKey} of what `a` assigns. */
export function assignmentKey(a: Assignment): string {
  return versionKey(a.version, a.artifact?.sha256);
}
