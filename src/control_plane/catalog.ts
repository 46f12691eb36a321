/**
 * The reference control plane's catalog: packages (with one artifact per
 * `os/arch`) and which agents run them, decoded once with field paths, and
 * turned into the SPEC 3 assignments document an agent is served.
 *
 * The format is documented in `docs/catalog.md`.
 *
 * @example Serve one agent its document
 * ```ts
 * const catalog = parseCatalog(await Deno.readTextFile("catalog.json"), "catalog.json");
 * const doc = documentFor(catalog, "edge-01", "linux", "amd64");
 * console.log(doc.config_version, doc.addons.length);
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import {
  ARCHES,
  ARTIFACT_FORMATS,
  ARTIFACT_RECORD,
  type Bundle,
  checkAbsoluteBinary,
  checkBundlePath,
  checkEnvNames,
  decodeBase64,
  DecodeError,
  DELIVERIES,
  isObject,
  isSafeSegment,
  joinPath,
  type Json,
  type JsonObject,
  MAX_TIMEOUT_S,
  ObjectReader,
  OSES,
  parseJson,
  SUPERVISIONS,
  typeName,
} from "../protocol/mod.ts";

/** One build of a package for one `os/arch`; a reference is emitted only with both key and sha256. */
export interface CatalogArtifact {
  object_key?: string;
  /** Lowercase hex sha256. */
  sha256?: string;
  /** Standard base64 of the 64-byte ed25519 signature. */
  signature?: string;
  /** A bundle's archive format and entrypoint (SPEC 15); absent for one executable. */
  bundle?: Bundle;
}

/** The fields of a package that an assignment item may override (all of them). */
export interface CatalogFields {
  version: string;
  enabled: boolean;
  /** Absent only for `config_toggle`. */
  delivery?: string;
  supervision: string;
  binary_path?: string;
  args: string[];
  env: Record<string, string>;
  config: JsonObject;
  capabilities: string[];
  schedule?: string;
  timeout_s?: number;
  /** Builds keyed `os/arch`, e.g. `linux/amd64`. */
  artifacts: Map<string, CatalogArtifact>;
}

/** One resolved assignment: a package with an item's overrides applied. */
export interface CatalogEntry extends CatalogFields {
  addon_id: string;
}

/** A decoded catalog: packages, and the resolved list of every agent plus the default list. */
export interface Catalog {
  packages: Map<string, CatalogEntry>;
  /** What agents not named under `assignments.agents` run. */
  defaultAssignments: CatalogEntry[];
  /** Per-agent lists, keyed by agent id. */
  agents: Map<string, CatalogEntry[]>;
}

/** The SPEC 3 document served to one agent. */
export interface AssignmentsDocument {
  config_version: string;
  addons: JsonObject[];
}

const SHA256 = /^[0-9a-fA-F]{64}$/;
const CAPABILITY = /^CAP_[A-Z_]+$/;
const FIELD_KEYS = [
  "version",
  "enabled",
  "delivery",
  "supervision",
  "binary_path",
  "args",
  "env",
  "config",
  "capabilities",
  "schedule",
  "timeout_s",
  "artifacts",
] as const;

/** Parse and decode catalog text; errors are {@linkcode DecodeError}s naming `file` and the field path. */
export function parseCatalog(text: string, file?: string): Catalog {
  try {
    return decodeCatalog(parseJson(text));
  } catch (e) {
    if (e instanceof DecodeError && file !== undefined) throw e.inFile(file);
    throw e;
  }
}

/** Decode a parsed catalog, refusing unknown keys; throws a {@linkcode DecodeError} with the field path. */
export function decodeCatalog(value: Json): Catalog {
  const r = ObjectReader.of(value, "");
  const pr = r.object("packages");
  const packages = new Map<string, CatalogEntry>();
  for (const name of Object.keys(r.raw("packages") as JsonObject)) {
    const path = pr.at(name);
    if (!isSafeSegment(name)) {
      throw new DecodeError(path, `${JSON.stringify(name)} is not a safe add-on id`);
    }
    const fr = ObjectReader.of(pr.raw(name), path);
    const fields = _readFields(fr, true) as CatalogFields;
    fr.done();
    const entry: CatalogEntry = { addon_id: name, ...fields };
    _checkEntry(entry, path);
    packages.set(name, entry);
  }
  pr.done();

  const ar = r.optObject("assignments");
  let defaultAssignments: CatalogEntry[] = [];
  const agents = new Map<string, CatalogEntry[]>();
  if (ar) {
    if (ar.has("default")) {
      defaultAssignments = _readList(ar.raw("default"), ar.at("default"), packages);
    } else {
      ar.raw("default");
    }
    const gr = ar.optObject("agents");
    if (gr) {
      for (const id of Object.keys(ar.raw("agents") as JsonObject)) {
        const path = gr.at(id);
        if (!isSafeSegment(id)) {
          throw new DecodeError(path, `${JSON.stringify(id)} is not a valid agent id`);
        }
        agents.set(id, _readList(gr.raw(id), path, packages));
      }
      gr.done();
    }
    ar.done();
  }
  r.done();
  return { packages, defaultAssignments, agents };
}

/** The assignments document (SPEC 3) for `agentId` on `os`/`arch`; pure and deterministic. */
export function documentFor(
  catalog: Catalog,
  agentId: string,
  os: string,
  arch: string,
): AssignmentsDocument {
  const list = catalog.agents.get(agentId) ?? catalog.defaultAssignments;
  const addons = list.map((e) => _emit(e, os, arch));
  return { config_version: configVersion(addons), addons };
}

/** The `config_version` of a list of emitted entries: 32 hex chars of sha256 over its canonical JSON. */
export function configVersion(addons: readonly JsonObject[]): string {
  return createHash("sha256").update(canonicalJson(addons as Json)).digest("hex").slice(0, 32);
}

/** JSON with object keys sorted at every level, so equal values always give equal text. */
export function canonicalJson(value: Json): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (isObject(value)) {
    const keys = Object.keys(value).sort();
    return `{${
      keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k] as Json)}`).join(",")
    }}`;
  }
  return JSON.stringify(value);
}

function _emit(e: CatalogEntry, os: string, arch: string): JsonObject {
  const out: JsonObject = {
    addon_id: e.addon_id,
    version: e.version,
    enabled: e.enabled,
  };
  if (e.delivery !== undefined) out.delivery = e.delivery;
  out.supervision = e.supervision;
  if (e.binary_path !== undefined) out.binary_path = e.binary_path;
  out.args = e.args;
  out.env = e.env;
  out.config = e.config;
  out.capabilities = e.capabilities;
  const art = e.artifacts.get(`${os}/${arch}`);
  if (
    e.delivery === "pushed_artifact" && e.supervision !== "config_toggle" &&
    art?.object_key !== undefined && art.sha256 !== undefined
  ) {
    out.artifact_object_key = art.object_key;
    out.artifact_sha256 = art.sha256;
    if (art.signature !== undefined) out.artifact_signature = art.signature;
    if (art.bundle) {
      out.artifact_format = art.bundle.format;
      out.entrypoint = art.bundle.entrypoint;
    }
    out.target_os = os;
    out.target_arch = arch;
  }
  if (e.schedule !== undefined) out.schedule = e.schedule;
  if (e.timeout_s !== undefined) out.timeout_s = e.timeout_s;
  return out;
}

/** Read the package fields of `r`; with `complete`, required ones must be there and defaults apply. */
function _readFields(r: ObjectReader, complete: boolean): Partial<CatalogFields> {
  const f: Partial<CatalogFields> = {};
  const version = complete ? r.string("version") : r.optString("version");
  if (version !== undefined) {
    if (!isSafeSegment(version)) {
      throw new DecodeError(r.at("version"), `${JSON.stringify(version)} is not a safe version`);
    }
    f.version = version;
  }
  const enabled = r.optBool("enabled");
  if (enabled !== undefined || complete) f.enabled = enabled ?? true;
  if (r.has("delivery")) f.delivery = r.oneOf("delivery", DELIVERIES);
  else r.raw("delivery");
  if (complete || r.has("supervision")) f.supervision = r.oneOf("supervision", SUPERVISIONS);
  else r.raw("supervision");
  const binary_path = r.optString("binary_path");
  if (binary_path !== undefined) {
    f.binary_path = checkAbsoluteBinary(binary_path, r.at("binary_path"));
  }
  const args = r.optStringArray("args");
  if (args !== undefined || complete) f.args = args ?? [];
  const env = r.optStringRecord("env");
  if (env !== undefined) checkEnvNames(env, r.at("env"));
  if (env !== undefined || complete) f.env = env ?? {};
  const config = r.optJsonObject("config");
  if (config !== undefined || complete) f.config = config ?? {};
  const capabilities = r.optStringArray("capabilities");
  capabilities?.forEach((c, i) => {
    if (!CAPABILITY.test(c)) {
      throw new DecodeError(
        joinPath(r.at("capabilities"), i),
        `${JSON.stringify(c)} is not a capability name like CAP_NET_RAW`,
      );
    }
  });
  if (capabilities !== undefined || complete) f.capabilities = capabilities ?? [];
  const schedule = r.optString("schedule");
  if (schedule !== undefined) f.schedule = schedule;
  const timeout_s = r.optNumber("timeout_s", { min: 1, max: MAX_TIMEOUT_S, integer: true });
  if (timeout_s !== undefined) f.timeout_s = timeout_s;
  const artifacts = _readArtifacts(r);
  if (artifacts !== undefined || complete) f.artifacts = artifacts ?? new Map();
  return f;
}

function _readArtifacts(r: ObjectReader): Map<string, CatalogArtifact> | undefined {
  const ar = r.optObject("artifacts");
  if (!ar) return undefined;
  const out = new Map<string, CatalogArtifact>();
  for (const target of Object.keys(r.raw("artifacts") as JsonObject)) {
    const path = ar.at(target);
    const [os, arch, ...rest] = target.split("/");
    if (
      rest.length > 0 || !(OSES as readonly string[]).includes(os ?? "") ||
      !(ARCHES as readonly string[]).includes(arch ?? "")
    ) {
      throw new DecodeError(
        path,
        `must be keyed os/arch with os one of ${OSES.join(", ")} and arch one of ${
          ARCHES.join(", ")
        }`,
      );
    }
    const a = ObjectReader.of(ar.raw(target), path);
    const art: CatalogArtifact = {};
    const key = a.optString("object_key");
    if (key !== undefined) {
      if (key.split("/").includes("..") || key.includes("\0")) {
        throw new DecodeError(a.at("object_key"), `${JSON.stringify(key)} may not contain ".."`);
      }
      art.object_key = key;
    }
    const sha = a.optString("sha256");
    if (sha !== undefined) {
      if (!SHA256.test(sha)) throw new DecodeError(a.at("sha256"), "must be 64 hex characters");
      art.sha256 = sha.toLowerCase();
    }
    const sig = a.optString("signature");
    if (sig !== undefined) {
      if (decodeBase64(sig)?.length !== 64) {
        throw new DecodeError(
          a.at("signature"),
          "must be canonical standard base64 of exactly 64 bytes",
        );
      }
      art.signature = sig;
    }
    const bundle = _readBundle(a);
    if (bundle) art.bundle = bundle;
    a.done();
    out.set(target, art);
  }
  ar.done();
  return out;
}

/** Requirements that depend on more than one field, checked on a complete entry. */
function _checkEntry(e: CatalogEntry, path: string): void {
  if (e.supervision !== "config_toggle" && e.delivery === undefined) {
    throw new DecodeError(joinPath(path, "delivery"), "is required (except for config_toggle)");
  }
  if (e.delivery === "os_package" && e.binary_path === undefined) {
    throw new DecodeError(joinPath(path, "binary_path"), "is required for os_package delivery");
  }
  if (e.supervision === "systemd_timer" && e.schedule === undefined) {
    throw new DecodeError(joinPath(path, "schedule"), "is required for systemd_timer");
  }
}

function _readList(
  value: Json | undefined,
  path: string,
  packages: Map<string, CatalogEntry>,
): CatalogEntry[] {
  if (!Array.isArray(value)) {
    throw new DecodeError(path, `must be an array of package names, got ${typeName(value)}`);
  }
  const seen = new Map<string, number>();
  return value.map((item, i) => {
    const itemPath = joinPath(path, i);
    const entry = _readItem(item, itemPath, packages);
    const first = seen.get(entry.addon_id);
    if (first !== undefined) {
      throw new DecodeError(
        itemPath,
        `${JSON.stringify(entry.addon_id)} is assigned twice (also ${joinPath(path, first)})`,
      );
    }
    seen.set(entry.addon_id, i);
    return entry;
  });
}

function _readItem(item: Json, path: string, packages: Map<string, CatalogEntry>): CatalogEntry {
  if (typeof item === "string") return _package(item, path, packages);
  if (!isObject(item)) {
    throw new DecodeError(
      path,
      `must be a package name or an object with "addon_id", got ${typeName(item)}`,
    );
  }
  const r = ObjectReader.of(item, path);
  const pkg = _package(r.string("addon_id"), r.at("addon_id"), packages);
  const overrides = _readFields(r, false);
  r.done();
  if (
    overrides.version !== undefined && overrides.version !== pkg.version &&
    overrides.artifacts === undefined && pkg.artifacts.size > 0
  ) {
    throw new DecodeError(
      r.at("artifacts"),
      `is required when the version is overridden (the package's artifacts are builds of ${pkg.version})`,
    );
  }
  const defined = Object.fromEntries(
    FIELD_KEYS.filter((k) => overrides[k] !== undefined).map((k) => [k, overrides[k]]),
  );
  const entry: CatalogEntry = { ...pkg, ...defined };
  _checkEntry(entry, path);
  return entry;
}

function _package(name: string, path: string, packages: Map<string, CatalogEntry>): CatalogEntry {
  const pkg = packages.get(name);
  if (!pkg) throw new DecodeError(path, `unknown package ${JSON.stringify(name)}`);
  return pkg;
}

/** `format` and `entrypoint` of one build: a bundle (SPEC 15), or undefined for one executable. */
function _readBundle(a: ObjectReader): Bundle | undefined {
  const format = a.has("format") ? a.oneOf("format", ARTIFACT_FORMATS) : "binary";
  const entrypoint = a.optString("entrypoint");
  if (format === "binary") {
    if (entrypoint !== undefined) {
      throw new DecodeError(
        a.at("entrypoint"),
        'is only for bundles (format "tar.gz" or "tar.zst")',
      );
    }
    return undefined;
  }
  if (entrypoint === undefined) {
    throw new DecodeError(a.at("entrypoint"), `is required for format ${JSON.stringify(format)}`);
  }
  const why = entrypoint === ARTIFACT_RECORD
    ? `is the agent's own record`
    : checkBundlePath(entrypoint);
  if (why !== null) {
    throw new DecodeError(a.at("entrypoint"), `${JSON.stringify(entrypoint)} ${why}`);
  }
  return { format, entrypoint };
}
