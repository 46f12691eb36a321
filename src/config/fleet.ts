/**
 * The fleet parts of `agent.json` (SPEC 14): the top-level `nats`
 * connection, the `nats` and `s3` kinds of `source`, and the `nats` kind of
 * `object_store`. Decoded once here; `config.ts` calls these decoders.
 *
 * @example Decode a `nats` section
 * ```ts
 * import { ObjectReader } from "../protocol/mod.ts";
 * import { decodeNats } from "./fleet.ts";
 * const r = ObjectReader.of({ servers: ["nats://127.0.0.1:4222"] }, "nats");
 * const nats = decodeNats(r, "/etc/addon-agent", "edge-01");
 * console.log(nats.inbox_prefix); // "_INBOX_edge-01"
 * ```
 *
 * @module
 */

import { DecodeError, type ObjectReader } from "../protocol/mod.ts";
import type { NatsConnectionConfig } from "../common/mod.ts";

/**
 * The shared NATS connection (SPEC 14): one per agent, for source, store and status. The
 * connection in `common/` takes it as it is decoded here, so the two cannot drift apart.
 */
export type NatsConfig = NatsConnectionConfig;

/** The `nats` fields that name files (credentials and TLS): absolute once decoded, and read. */
export const NATS_FILE_FIELDS = [
  "nkey_seed_file",
  "password_file",
  "creds_file",
  "ca_file",
  "cert_file",
  "key_file",
] as const;

/** `source` kind `nats`: the document is KV `bucket` key `<agent_id>`. */
export interface NatsSourceConfig {
  kind: "nats";
  bucket: string;
  status_bucket: string;
  resync_interval_s: number;
}

/** `source` kind `s3`: the document is one object, polled with `If-None-Match`. */
export interface S3SourceConfig {
  kind: "s3";
  bucket: string;
  /** The document's key, `{agent_id}` already substituted. */
  key: string;
  /** Where status reports go, `{agent_id}` already substituted. */
  status_key: string;
  poll_interval_s: number;
  region: string;
  endpoint?: string;
  force_path_style: boolean;
}

/** `object_store` kind `nats`: a JetStream object store. */
export interface NatsStoreConfig {
  kind: "nats";
  bucket: string;
}

const _BUCKET = /^[A-Za-z0-9_-]+$/;
const _SUBJECT_TOKENS = /^[^\s.*>]+(\.[^\s.*>]+)*$/;

/**
 * The default inbox prefix of `agent_id`: `_INBOX_<agent_id>` with each `.`
 * written as `~` (a `.` would split the subject, and `_INBOX_edge.>` would
 * then cover agent `edge.01`'s replies).
 */
export function defaultInboxPrefix(agentId: string): string {
  return `_INBOX_${agentId.replaceAll(".", "~")}`;
}

function _file(r: ObjectReader, key: string, configDir: string): string | undefined {
  const v = r.optString(key);
  if (v === undefined) return undefined;
  return v.startsWith("/") ? v : `${configDir}/${v}`;
}

function _bucket(r: ObjectReader, key: string, dflt: string): string {
  const b = r.optString(key) ?? dflt;
  if (!_BUCKET.test(b)) {
    throw new DecodeError(
      r.at(key),
      `must be letters, digits, '_' or '-', got ${JSON.stringify(b)}`,
    );
  }
  return b;
}

/** Whether a NATS server URL's host is loopback. */
function _loopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "");
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** Decode the top-level `nats` object (relative files are below `configDir`). */
export function decodeNats(r: ObjectReader, configDir: string, agentId: string): NatsConfig {
  const servers = r.optStringArray("servers") ?? [];
  if (servers.length === 0) throw new DecodeError(r.at("servers"), "must name at least one server");
  const out: NatsConfig = { servers, inbox_prefix: defaultInboxPrefix(agentId) };
  for (const k of NATS_FILE_FIELDS) {
    const v = _file(r, k, configDir);
    if (v !== undefined) out[k] = v;
  }
  const user = r.optString("user");
  if (user !== undefined) out.user = user;
  const inbox = r.optString("inbox_prefix");
  if (inbox !== undefined) {
    if (!_SUBJECT_TOKENS.test(inbox)) {
      throw new DecodeError(
        r.at("inbox_prefix"),
        `must be a subject without spaces, '*', '>' or empty tokens, got ${JSON.stringify(inbox)}`,
      );
    }
    out.inbox_prefix = inbox;
  }
  r.done();
  servers.forEach((s, i) => {
    let u: URL;
    try {
      u = new URL(s);
    } catch {
      throw new DecodeError(`${r.at("servers")}[${i}]`, `${JSON.stringify(s)} is not a URL`);
    }
    if (u.protocol !== "nats:" && u.protocol !== "tls:") {
      throw new DecodeError(
        `${r.at("servers")}[${i}]`,
        "must be nats://HOST:PORT or tls://HOST:PORT",
      );
    }
    if (u.username || u.password) {
      throw new DecodeError(
        `${r.at("servers")}[${i}]`,
        "must not carry credentials; use user and password_file",
      );
    }
    if (u.protocol === "nats:" && !_loopback(u.hostname) && out.ca_file === undefined) {
      throw new DecodeError(
        `${r.at("servers")}[${i}]`,
        "must be tls:// (or give ca_file): plain nats:// is allowed only for loopback hosts",
      );
    }
  });
  if ((out.user === undefined) !== (out.password_file === undefined)) {
    throw new DecodeError(r.at("user"), "user and password_file must be given together");
  }
  if ((out.cert_file === undefined) !== (out.key_file === undefined)) {
    throw new DecodeError(r.at("cert_file"), "cert_file and key_file must be given together");
  }
  const auths = [out.nkey_seed_file, out.user, out.creds_file].filter((v) => v !== undefined);
  if (auths.length > 1) {
    throw new DecodeError(
      r.path,
      "give one of nkey_seed_file, user + password_file, creds_file (not several)",
    );
  }
  return out;
}

/** Decode `source` of kind `nats` (the `kind` key already read). */
export function decodeNatsSource(s: ObjectReader): NatsSourceConfig {
  return {
    kind: "nats",
    bucket: _bucket(s, "bucket", "addon-assignments"),
    status_bucket: _bucket(s, "status_bucket", "addon-status"),
    resync_interval_s: s.optNumber("resync_interval_s", { min: 1, max: 86400 }) ?? 600,
  };
}

/** Decode `source` of kind `s3` (the `kind` key already read); `{agent_id}` is substituted. */
export function decodeS3Source(s: ObjectReader, agentId: string): S3SourceConfig {
  const key = (name: string, dflt: string) => {
    const v = (s.optString(name) ?? dflt).replaceAll("{agent_id}", agentId);
    if (v.startsWith("/") || v.split("/").some((p) => p === "" || p === "." || p === "..")) {
      throw new DecodeError(s.at(name), `must be a relative key without empty, '.' or '..' parts`);
    }
    return v;
  };
  const out: S3SourceConfig = {
    kind: "s3",
    bucket: s.string("bucket"),
    key: key("key", "assignments/{agent_id}.json"),
    status_key: key("status_key", "status/{agent_id}.json"),
    poll_interval_s: s.optNumber("poll_interval_s", { min: 1, max: 86400 }) ?? 30,
    region: s.optString("region") ?? "us-east-1",
    force_path_style: s.optBool("force_path_style") ?? false,
  };
  const endpoint = s.optString("endpoint");
  if (endpoint !== undefined) {
    let u: URL;
    try {
      u = new URL(endpoint);
    } catch {
      throw new DecodeError(s.at("endpoint"), `${JSON.stringify(endpoint)} is not a URL`);
    }
    // The document carries args, env and config, which no signature covers: no plain HTTP.
    if (u.protocol !== "https:" && !(u.protocol === "http:" && _loopback(u.hostname))) {
      throw new DecodeError(
        s.at("endpoint"),
        "must be https:// (http:// is allowed only for loopback hosts)",
      );
    }
    out.endpoint = endpoint;
  }
  return out;
}

/** Decode `object_store` of kind `nats` (the `kind` key already read). */
export function decodeNatsStore(o: ObjectReader): NatsStoreConfig {
  return { kind: "nats", bucket: _bucket(o, "bucket", "addon-artifacts") };
}
