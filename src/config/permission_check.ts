/**
 * Startup self-check: before any work, ask Deno (`Deno.permissions.query`,
 * which never prompts) whether this build's permission set covers every host
 * and path the configuration names, and refuse to start (exit 2) with one
 * message per thing that is not granted, naming the host or path, the config
 * field, and the build setting to change (`permissions.agent.*` in
 * `deno.json`, which `deno run -P=agent` and `deno compile -P=agent` read).
 *
 * What is checked:
 *
 * - net: the control plane (`source.url` host:port), the NATS servers
 *   (`nats.servers`), the S3 source and store (the host
 *   the AWS SDK will contact: `endpoint`, or `s3.<region>.amazonaws.com`,
 *   with the bucket in front for virtual-hosted addressing), the status
 *   listener (`status.listen`);
 * - read: the config file, `config_dir`, the token/CA/certificate/key files
 *   (also those of `nats`),
 *   a file source, a filesystem store root, the runtime root;
 * - write: the runtime root and the systemd unit directory;
 * - run (unscoped: add-ons, `setcap`, `systemctl`, signalling process
 *   groups) and the `sys` calls the agent makes (`uid`, `statfs`, and
 *   `osRelease` for the AWS SDK).
 *
 * @example Load a configuration and refuse to start when the build does not cover it
 * ```ts
 * import { loadCheckedConfig } from "./permission_check.ts";
 * // throws PermissionError (a ConfigError: the CLI exits 2) listing what is missing
 * const cfg = await loadCheckedConfig("/etc/addon-agent/agent.json");
 * ```
 *
 * @module
 */

import { type AgentConfig, ConfigError, loadConfig, type ObjectStoreConfig } from "./config.ts";
import { NATS_FILE_FIELDS } from "./fleet.ts";

/** Where the permission set lives, as messages name it. */
export const PERMISSION_SETTING = "permissions.agent";

/**
 * One or more permissions this build lacks; a {@linkcode ConfigError}, so the
 * CLI's `exitCodeFor` logs the message and exits 2.
 */
export class PermissionError extends ConfigError {
  /** Make the error from the messages {@linkcode checkPermissions} returned. */
  constructor(readonly problems: string[]) {
    super(
      problems.length === 1
        ? problems[0]!
        : `this build's permissions do not cover the configuration:\n  ${problems.join("\n  ")}`,
    );
    this.name = "PermissionError";
  }
}

/** One permission the configuration needs, and which config fields ask for it. */
export interface PermissionNeed {
  /** The Deno permission: `net`, `read`, `write`, `run` or `sys`. */
  kind: "net" | "read" | "write" | "run" | "sys";
  /** `host:port`, an absolute path, a sys call name, or "" for unscoped `run`. */
  value: string;
  /** The config fields (or agent features) that need it, for the message. */
  fields: string[];
}

type _S3 = Pick<
  Extract<ObjectStoreConfig, { kind: "s3" }>,
  "bucket" | "region" | "endpoint" | "force_path_style"
>;

function _isIp(host: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(host) || host.startsWith("[");
}

/** The AWS SDK's rule for virtual-hosted bucket addressing (`isVirtualHostableS3Bucket(b, false)`). */
function _virtualHostable(bucket: string): boolean {
  return bucket.length >= 3 && bucket.length <= 63 &&
    /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(bucket) && !_isIp(bucket);
}

/**
 * The `host:port` the AWS SDK connects to for this store (what Deno's net
 * permission is checked against): `endpoint`'s host, or
 * `s3.<region>.amazonaws.com` (`.com.cn` in China), prefixed with the bucket
 * for virtual-hosted addressing (no `force_path_style`, a DNS-compatible
 * bucket without dots, not an IP endpoint).
 */
export function s3Host(store: _S3): string {
  let hostname: string;
  let port: string;
  if (store.endpoint !== undefined) {
    const u = new URL(store.endpoint);
    hostname = u.hostname;
    port = u.port || (u.protocol === "https:" ? "443" : "80");
  } else {
    hostname = `s3.${store.region}.${
      store.region.startsWith("cn-") ? "amazonaws.com.cn" : "amazonaws.com"
    }`;
    port = "443";
  }
  const virtual = !store.force_path_style && !_isIp(hostname) && _virtualHostable(store.bucket);
  return `${virtual ? `${store.bucket}.` : ""}${hostname}:${port}`;
}

/** The `host:port` of a NATS server URL (`nats://` or `tls://`, port 4222 by default). */
export function natsHost(url: string): string {
  const u = new URL(url);
  return `${u.hostname}:${u.port || "4222"}`;
}

function _urlHost(url: string): string {
  const u = new URL(url);
  return `${u.hostname}:${u.port || (u.protocol === "https:" ? "443" : "80")}`;
}

/** Every permission `cfg` needs, each with the config fields that name it. */
export function permissionNeeds(cfg: AgentConfig): PermissionNeed[] {
  const needs = new Map<string, PermissionNeed>();
  const add = (kind: PermissionNeed["kind"], value: string, field: string) => {
    const key = `${kind}\0${value}`;
    const n = needs.get(key);
    if (n) {
      if (!n.fields.includes(field)) n.fields.push(field);
    } else {
      needs.set(key, { kind, value, fields: [field] });
    }
  };
  const src = cfg.source;
  if (src.kind === "control_plane") {
    add("net", _urlHost(src.url), "source.url");
    for (const k of ["token_file", "ca_file", "cert_file", "key_file"] as const) {
      const p = src[k];
      if (p !== undefined) add("read", p, `source.${k}`);
    }
  } else if (src.kind === "file") {
    add("read", src.path, "source.path");
  } else if (src.kind === "s3") {
    add("net", s3Host(src), src.endpoint !== undefined ? "source.endpoint" : "source.region");
    add("sys", "osRelease", "source (the AWS SDK)");
  }
  const store = cfg.object_store;
  if (store.kind === "s3") {
    add(
      "net",
      s3Host(store),
      store.endpoint !== undefined ? "object_store.endpoint" : "object_store.region",
    );
    add("sys", "osRelease", "object_store (the AWS SDK)");
  } else if (store.kind === "filesystem") {
    add("read", store.root, "object_store.root");
  }
  if (cfg.nats) {
    cfg.nats.servers.forEach((url, i) => add("net", natsHost(url), `nats.servers[${i}]`));
    for (const k of NATS_FILE_FIELDS) {
      const p = cfg.nats[k];
      if (p !== undefined) add("read", p, `nats.${k}`);
    }
  }
  if (cfg.status) add("net", cfg.status.listen, "status.listen");
  add("read", cfg.file, "the configuration file");
  add("read", cfg.config_dir, "config_dir");
  add("read", cfg.runtime_root, "runtime_root");
  add("write", cfg.runtime_root, "runtime_root");
  add("write", cfg.systemd.unit_dir, "systemd.unit_dir");
  add("run", "", "add-ons, setcap, systemctl");
  add("sys", "uid", "runtime_root (owner check)");
  add("sys", "statfs", "runtime_root (free-space check)");
  return [...needs.values()];
}

function _descriptor(n: PermissionNeed): Deno.PermissionDescriptor {
  switch (n.kind) {
    case "net":
      return { name: "net", host: n.value };
    case "read":
      return { name: "read", path: n.value };
    case "write":
      return { name: "write", path: n.value };
    case "run":
      return { name: "run" };
    case "sys":
      return { name: "sys", kind: n.value as Deno.SysPermissionDescriptor["kind"] };
  }
}

/** The message for a need this build does not grant: what, why, and the setting to change. */
export function permissionMessage(n: PermissionNeed, file?: string): string {
  const where = file !== undefined && n.kind !== "run" && n.kind !== "sys" ? ` in ${file}` : "";
  const why = `(${n.fields.join(", ")}${where})`;
  const fix = (v: string) =>
    `add ${JSON.stringify(v)} to ${PERMISSION_SETTING}.${n.kind} in deno.json and rebuild`;
  switch (n.kind) {
    case "net":
      return `net: ${n.value} ${why} is not allowed by this build; ${fix(n.value)}`;
    case "read":
      return `read: ${n.value} ${why} is not readable by this build; ${fix(n.value)}`;
    case "write":
      return `write: ${n.value} ${why} is not writable by this build; ${fix(n.value)}`;
    case "run":
      return `run: this build may not start programs ${why}; set ${PERMISSION_SETTING}.run to true in deno.json and rebuild`;
    case "sys":
      return `sys: ${n.value} ${why} is not allowed by this build; ${fix(n.value)}`;
  }
}

/** Query (never prompt) every permission `cfg` needs; one message per one not granted, [] when all are. */
export async function checkPermissions(cfg: AgentConfig): Promise<string[]> {
  const out: string[] = [];
  for (const n of permissionNeeds(cfg)) {
    let state: Deno.PermissionState;
    try {
      state = (await Deno.permissions.query(_descriptor(n))).state;
    } catch {
      state = "denied";
    }
    if (state !== "granted") out.push(permissionMessage(n, cfg.file));
  }
  return out;
}

/** Throw {@linkcode PermissionError} (the CLI exits 2) unless this build grants everything `cfg` needs. */
export async function assertPermissions(cfg: AgentConfig): Promise<void> {
  const problems = await checkPermissions(cfg);
  if (problems.length > 0) throw new PermissionError(problems);
}

/**
 * Check the config file is readable, load it, and {@linkcode assertPermissions}: what
 * `configFrom` should call.
 *
 * @throws {ConfigError} when the file cannot be read or does not decode, and its subclass
 * {@linkcode PermissionError} when this build's permission set does not cover it.
 */
export async function loadCheckedConfig(path: string): Promise<AgentConfig> {
  const { state } = await Deno.permissions.query({ name: "read", path });
  if (state !== "granted") {
    throw new PermissionError([
      permissionMessage({ kind: "read", value: path, fields: ["--config"] }),
    ]);
  }
  const cfg = await loadConfig(path);
  await assertPermissions(cfg);
  return cfg;
}
