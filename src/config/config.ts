/**
 * Agent configuration (`agent.json`, SPEC 2): decoded once into typed values.
 *
 * @example Load a config
 * ```ts
 * const cfg = await loadConfig("/etc/addon-agent/agent.json");
 * console.log(cfg.runtime_root);
 * ```
 *
 * @module
 */

import {
  decodeBase64,
  DecodeError,
  isLoopbackHost,
  noNul,
  ObjectReader,
  parseJson,
  trustKeyProblem,
} from "../protocol/mod.ts";
import { decodeIsolation, type IsolationConfig, runsAsRoot } from "./isolation.ts";
import {
  decodeNats,
  decodeNatsSource,
  decodeNatsStore,
  decodeS3Source,
  type NatsConfig,
  type NatsSourceConfig,
  type NatsStoreConfig,
  type S3SourceConfig,
} from "./fleet.ts";
import { readTrustedFile, UntrustedFileError } from "../common/mod.ts";

/** Where assignments come from. */
export type SourceConfig =
  | {
    kind: "control_plane";
    url: string;
    poll_interval_s: number;
    token_file?: string;
    ca_file?: string;
    cert_file?: string;
    key_file?: string;
  }
  | { kind: "file"; path: string; poll_interval_s: number }
  | NatsSourceConfig
  | S3SourceConfig;

/** Where artifacts are stored. */
export type ObjectStoreConfig =
  | {
    kind: "s3";
    bucket: string;
    region: string;
    endpoint?: string;
    force_path_style: boolean;
    prefix: string;
  }
  | { kind: "filesystem"; root: string }
  | NatsStoreConfig;

/** The decoded `agent.json`. */
export interface AgentConfig {
  /** Path of the file this came from. */
  file: string;
  agent_id: string;
  runtime_root: string;
  config_dir: string;
  source: SourceConfig;
  object_store: ObjectStoreConfig;
  trust: { public_keys: string[]; require_signature: boolean };
  limits: {
    max_artifact_bytes: number;
    keep_versions: number;
    /** Largest document, override or catalog read (SPEC 12). */
    max_document_bytes: number;
    /** Free space kept beyond an object's size (SPEC 8); absent: 5 % of the filesystem, at most 64 MiB. */
    free_space_margin_bytes?: number;
    /** Bytes a bundle may unpack to, counted while writing (SPEC 15). */
    max_unpacked_bytes: number;
  };
  status?: { listen: string };
  /** The shared NATS connection (SPEC 14); required by `nats` sources and stores. */
  nats?: NatsConfig;
  /**
   * Host binaries an assignment source may name (SPEC 12): exact paths, or `dir/*` for the
   * files directly in `dir`. Empty by default: a source names no host binary.
   */
  host_binaries: { allow: string[] };
  /** Directory for `systemd_*` unit files (an extension of SPEC 2). */
  systemd: { unit_dir: string };
  /** Limits on every request to a store or source (SPEC 12). */
  timeouts: Timeouts;
  /** Users, cgroups and allowed capabilities of add-ons (SPEC 13). */
  isolation: IsolationConfig;
}

/** `timeouts` (SPEC 12): seconds until response headers, and without a byte of a body. */
export interface Timeouts {
  connect_s: number;
  idle_s: number;
}

/** The `timeouts` a config without the key gets. */
export const DEFAULT_TIMEOUTS: Timeouts = { connect_s: 10, idle_s: 60 };

/** Default `limits.max_unpacked_bytes`: 1 GiB (SPEC 15). */
export const DEFAULT_MAX_UNPACKED_BYTES = 1024 ** 3;
/** Default `limits.max_document_bytes`: 8 MiB (SPEC 12). */
export const DEFAULT_MAX_DOCUMENT_BYTES = 8 * 1024 * 1024;
/** Range of `source.poll_interval_s` (SPEC 12): a second to a day. */
export const POLL_INTERVAL_RANGE = { min: 1, max: 86400 } as const;

/** Default location of the agent configuration. */
export const DEFAULT_CONFIG_PATH = "/etc/addon-agent/agent.json";

export { isLoopbackHost } from "../protocol/mod.ts";

/** The port of a `URL` (or its scheme's default) must be 1–65535 (SPEC 12). */
function _checkUrlPort(url: URL, at: string): void {
  if (url.port === "0") throw new DecodeError(at, "port must be 1–65535, got 0");
}

function _dirname(path: string): string {
  const i = path.lastIndexOf("/");
  if (i < 0) return ".";
  return i === 0 ? "/" : path.slice(0, i);
}

function _absolute(r: ObjectReader, key: string, value: string): string {
  if (!value.startsWith("/")) {
    throw new DecodeError(r.at(key), `must be an absolute path, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** Decode a parsed `agent.json` found at `file`; throws {@linkcode DecodeError} naming the field. */
export function decodeConfig(value: unknown, file: string): AgentConfig {
  try {
    return _decode(value, file);
  } catch (e) {
    if (e instanceof DecodeError) throw e.inFile(file);
    throw e;
  }
}

function _decode(value: unknown, file: string): AgentConfig {
  const r = ObjectReader.of(value, "");
  const agent_id = r.string("agent_id");
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(agent_id)) {
    throw new DecodeError("agent_id", "must be letters, digits, '.', '_' or '-'");
  }
  const runtime_root = _absolute(
    r,
    "runtime_root",
    r.optString("runtime_root") ?? "/var/lib/addon-agent",
  ).replace(/(.)\/+$/, "$1");
  const configDirRaw = r.optString("config_dir");
  let config_dir: string;
  if (configDirRaw !== undefined) {
    config_dir = _absolute(r, "config_dir", configDirRaw);
  } else {
    const dir = _dirname(file);
    config_dir = dir.startsWith("/") ? dir : dir === "." ? Deno.cwd() : `${Deno.cwd()}/${dir}`;
  }

  const s = r.object("source");
  const kind = s.oneOf("kind", ["control_plane", "file", "nats", "s3"] as const);
  let source: SourceConfig;
  if (kind === "nats") {
    source = decodeNatsSource(s);
  } else if (kind === "s3") {
    source = decodeS3Source(s, agent_id);
  } else if (kind === "control_plane") {
    const url = s.string("url");
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new DecodeError(s.at("url"), `${JSON.stringify(url)} is not a URL`);
    }
    _checkUrlPort(parsed, s.at("url"));
    if (parsed.protocol !== "https:") {
      if (!(parsed.protocol === "http:" && isLoopbackHost(parsed.hostname))) {
        throw new DecodeError(
          s.at("url"),
          "must be https:// (http:// is allowed only for loopback hosts)",
        );
      }
    }
    source = {
      kind,
      url: url.replace(/\/+$/, ""),
      poll_interval_s: s.optNumber("poll_interval_s", POLL_INTERVAL_RANGE) ?? 30,
    };
    for (const k of ["token_file", "ca_file", "cert_file", "key_file"] as const) {
      const v = s.optString(k);
      if (v !== undefined) source[k] = v.startsWith("/") ? v : `${config_dir}/${v}`;
    }
    if ((source.cert_file === undefined) !== (source.key_file === undefined)) {
      throw new DecodeError(s.at("cert_file"), "cert_file and key_file must be given together");
    }
  } else {
    const path = s.string("path");
    source = {
      kind,
      path: path.startsWith("/") ? path : `${config_dir}/${path}`,
      poll_interval_s: s.optNumber("poll_interval_s", POLL_INTERVAL_RANGE) ?? 5,
    };
  }
  s.done();

  const o = r.object("object_store");
  const okind = o.oneOf("kind", ["s3", "filesystem", "nats"] as const);
  let object_store: ObjectStoreConfig;
  if (okind === "nats") {
    object_store = decodeNatsStore(o);
  } else if (okind === "s3") {
    const endpoint = o.optString("endpoint");
    if (endpoint !== undefined) {
      let parsed: URL;
      try {
        parsed = new URL(endpoint);
      } catch {
        throw new DecodeError(o.at("endpoint"), `${JSON.stringify(endpoint)} is not a URL`);
      }
      _checkUrlPort(parsed, o.at("endpoint"));
    }
    object_store = {
      kind: okind,
      bucket: o.string("bucket"),
      region: o.optString("region") ?? "us-east-1",
      force_path_style: o.optBool("force_path_style") ?? false,
      prefix: o.optString("prefix", true) ?? "",
    };
    if (endpoint !== undefined) object_store.endpoint = endpoint;
  } else {
    const root = o.string("root");
    object_store = {
      kind: okind,
      root: root.startsWith("/") ? root : `${config_dir}/${root}`,
    };
  }
  o.done();

  const t = r.optObject("trust");
  const public_keys = t?.optStringArray("public_keys") ?? [];
  public_keys.forEach((k, i) => {
    const raw = decodeBase64(k);
    if (raw?.length !== 32) {
      throw new DecodeError(
        `trust.public_keys[${i}]`,
        "must be canonical standard base64 of a raw 32-byte ed25519 key",
      );
    }
    const problem = trustKeyProblem(raw);
    if (problem !== null) throw new DecodeError(`trust.public_keys[${i}]`, problem);
  });
  const trust = { public_keys, require_signature: t?.optBool("require_signature") ?? false };
  t?.done();

  const l = r.optObject("limits");
  const limits = {
    max_artifact_bytes: l?.optNumber("max_artifact_bytes", { min: 1, integer: true }) ??
      268435456,
    keep_versions: l?.optNumber("keep_versions", { min: 2, integer: true }) ?? 3,
    max_unpacked_bytes: l?.optNumber("max_unpacked_bytes", { min: 1, integer: true }) ??
      DEFAULT_MAX_UNPACKED_BYTES,
    max_document_bytes: l?.optNumber("max_document_bytes", { min: 1024, integer: true }) ??
      DEFAULT_MAX_DOCUMENT_BYTES,
  } as AgentConfig["limits"];
  const margin = l?.optNumber("free_space_margin_bytes", { min: 0, integer: true });
  if (margin !== undefined) limits.free_space_margin_bytes = margin;
  l?.done();

  const st = r.optObject("status");
  let status: AgentConfig["status"];
  if (st) {
    const listen = st.string("listen");
    const m = /^(.*):(\d{1,5})$/.exec(listen);
    if (!m || !isLoopbackHost(m[1]!)) {
      throw new DecodeError(
        st.at("listen"),
        `must be a loopback address with a port, like 127.0.0.1:7420, got ${
          JSON.stringify(listen)
        }`,
      );
    }
    // Port 0 lets the kernel choose (the agent logs the address it bound); tests use it.
    const port = Number(m[2]);
    if (port > 65535) {
      throw new DecodeError(st.at("listen"), `port must be 1–65535 (or 0 for any), got ${port}`);
    }
    status = { listen };
    st.done();
  }

  const nr = r.optObject("nats");
  const nats = nr ? decodeNats(nr, config_dir, agent_id) : undefined;
  for (const [field, k] of [["source", source.kind], ["object_store", object_store.kind]]) {
    if (k === "nats" && !nats) {
      throw new DecodeError("nats", `is required when ${field}.kind is "nats"`);
    }
  }
  const hb = r.optObject("host_binaries");
  const host_binaries = {
    allow: (hb?.optStringArray("allow") ?? []).map((p, i) =>
      _allowEntry(p, `host_binaries.allow[${i}]`)
    ),
  };
  hb?.done();

  const sd = r.optObject("systemd");
  const systemd = {
    unit_dir: _absolute(
      sd ?? r,
      "unit_dir",
      sd?.optString("unit_dir") ?? "/etc/systemd/system",
    ),
  };
  sd?.done();

  const to = r.optObject("timeouts");
  const timeouts: Timeouts = {
    connect_s: to?.optNumber("connect_s", { min: 1, max: 3600 }) ?? DEFAULT_TIMEOUTS.connect_s,
    idle_s: to?.optNumber("idle_s", { min: 1, max: 3600 }) ?? DEFAULT_TIMEOUTS.idle_s,
  };
  to?.done();
  const isolation = decodeIsolation(r.optObject("isolation"), runsAsRoot());
  r.done();

  const cfg: AgentConfig = {
    file,
    agent_id,
    runtime_root,
    config_dir,
    source,
    object_store,
    trust,
    limits,
    systemd,
    timeouts,
    isolation,
    host_binaries,
  };
  if (status) cfg.status = status;
  if (nats) cfg.nats = nats;
  return cfg;
}

/** One `host_binaries.allow` entry: an absolute, normal path, or such a directory with `/*`. */
function _allowEntry(entry: string, at: string): string {
  const path = entry.endsWith("/*") ? entry.slice(0, -2) : entry;
  const normal = path.startsWith("/") && path.length > 1 && !path.endsWith("/") &&
    !path.includes("*") &&
    !path.split("/").slice(1).some((s) => s === "" || s === "." || s === "..");
  if (!normal) {
    throw new DecodeError(
      at,
      `must be an absolute path like /usr/sbin/nft, or a directory like /opt/vendor/bin/* (no other wildcard, no "." or ".."), got ${
        JSON.stringify(noNul(entry, at))
      }`,
    );
  }
  return entry;
}

/**
 * An error that means bad configuration: the CLI exits 2.
 *
 * @example Keep what caused it
 * ```ts
 * const e = new ConfigError("/etc/addon-agent/agent.json: cannot read the configuration", {
 *   cause: new Deno.errors.NotFound("no such file"),
 * });
 * console.log(e.message, e.cause);
 * ```
 */
export class ConfigError extends Error {
  /** Make a configuration error with a message naming the file and field; keeps the `cause`. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "ConfigError";
  }
}

/**
 * Read and decode the config file at `path`; errors name the file and field. The file must
 * be one the agent may trust (SPEC 12: owned by root or the agent, not group- or
 * world-writable) and at most {@linkcode DEFAULT_MAX_DOCUMENT_BYTES}.
 *
 * @throws {ConfigError} when the file cannot be read, may not be trusted or does not decode
 * (the CLI exits 2).
 */
export async function loadConfig(path: string): Promise<AgentConfig> {
  let text: string;
  try {
    text = await readTrustedFile(path, {
      what: "the configuration",
      maxBytes: DEFAULT_MAX_DOCUMENT_BYTES,
    });
  } catch (e) {
    if (e instanceof UntrustedFileError) throw new ConfigError(e.message, { cause: e });
    throw new ConfigError(`${path}: cannot read the configuration: ${(e as Error).message}`, {
      cause: e,
    });
  }
  try {
    return decodeConfig(parseJson(text, path), path);
  } catch (e) {
    if (e instanceof DecodeError) throw new ConfigError(e.message, { cause: e });
    throw e;
  }
}
