/**
 * Rendering of the systemd units of `systemd_service` and `systemd_timer`
 * add-ons (pure: no I/O). Values are escaped for systemd's unit file syntax
 * (quoting, C escapes, `%` specifiers, `$` variables); values that cannot be
 * represented (newlines and other control characters, invalid environment
 * names, unknown capabilities, relative paths) are refused with an Error
 * rather than written into a unit in some altered form.
 *
 * Hardening of every unit: `NoNewPrivileges=yes`, `ProtectSystem=strict`,
 * `ProtectHome=yes`, `PrivateTmp=yes`, `ReadWritePaths=` the add-on's data
 * directory (which must exist before the unit starts, or systemd refuses to
 * start it), and `CapabilityBoundingSet=` exactly the add-on's `capabilities`
 * (empty when none), also raised as `AmbientCapabilities=`; numeric `User=`
 * and `Group=` when the add-on has its own uid, and `MemoryMax=`,
 * `CPUQuota=`, `TasksMax=` from its `resources` (SPEC 13). Ambient
 * capabilities survive `execve` under `NoNewPrivileges` (that flag only stops
 * gaining privileges through setuid bits and file capabilities), so the two
 * are used together.
 *
 * @example Render a service and its name
 * ```ts
 * const spec: UnitSpec = {
 *   addon_id: "net-probe", version: "1.4.2", kind: "service",
 *   exec_path: "/var/lib/addon-agent/addons/net-probe/versions/1.4.2/net-probe",
 *   args: ["--interval", "10s"], env: { PROBE_MODE: "fast" }, capabilities: ["CAP_NET_RAW"],
 *   data_dir: "/var/lib/addon-agent/addons/net-probe/data",
 *   config_file: "/var/lib/addon-agent/addons/net-probe/config.json",
 * };
 * const { service } = unitNames(spec.addon_id); // "addon-agent-net-probe.service"
 * const text = renderService(spec);
 * ```
 *
 * @module
 */

import { isSafeSegment, parseSchedule, type Resources } from "../protocol/mod.ts";

/** What the units of one `systemd_service` / `systemd_timer` add-on are made from. */
export interface UnitSpec {
  addon_id: string;
  version: string;
  /** Absolute path of the executable. */
  exec_path: string;
  args: string[];
  env: Record<string, string>;
  /** Absolute path of the add-on's writable directory (`ReadWritePaths=`, `ADDON_DATA_DIR`). */
  data_dir: string;
  /** Absolute path of the add-on's `config.json` (`ADDON_CONFIG_FILE`). */
  config_file: string;
  /** Capability names such as `CAP_NET_RAW`. */
  capabilities: string[];
  /** `service`: a long-running, restarted service; `timer`: a oneshot service run by a timer. */
  kind: "service" | "timer";
  /** systemd calendar expression (see `calendar.ts`); required for kind `timer`. */
  schedule?: string;
  /** Numeric `User=` and `Group=` (SPEC 13); absent: systemd's default (root). */
  uid?: number;
  gid?: number;
  /** `MemoryMax=`, `CPUQuota=`, `TasksMax=` (SPEC 13). */
  resources?: Resources;
  /**
   * sha256 (lowercase hex) the bytes at `exec_path` must have: every start, systemd's own
   * restarts included, checks them first (`ExecStartPre=`), so changed bytes never run (SPEC 8).
   */
  exec_sha256?: string;
}

/**
 * The command that exits 0 only when the file at `path` has sha256 `sha256` (`sha256sum
 * --check`), as argv: `ExecStartPre=` of a unit whose executable the agent staged.
 *
 * @example
 * ```ts
 * const argv = sha256CheckCommand("/var/lib/addon-agent/addons/p/versions/1.0.0/p", "ab".repeat(32));
 * console.log(argv[0]); // /bin/sh
 * ```
 */
export function sha256CheckCommand(path: string, sha256: string): string[] {
  if (!/^[0-9a-f]{64}$/.test(sha256)) throw new Error("exec_sha256 is not 64 lowercase hex digits");
  const quoted = `'${_absPath(path, "exec_path").replaceAll("'", `'\\''`)}'`;
  return [
    "/bin/sh",
    "-c",
    `printf '%s  %s\\n' ${sha256} ${quoted} | exec sha256sum --check --status --strict -`,
  ];
}

/** A {@linkcode UnitSpec} for a timer: it has a schedule. */
export type TimerSpec = UnitSpec & { schedule: string };

/** Names of the unit files of one add-on. */
export interface UnitNames {
  service: string;
  timer: string;
}

/** Prefix of every unit the agent writes; files with it in the unit directory are the agent's. */
export const UNIT_PREFIX = "addon-agent-";

/** Capabilities systemd knows (Linux 5.9+); an unknown name would be silently dropped by systemd. */
export const KNOWN_CAPABILITIES: ReadonlySet<string> = new Set([
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_DAC_READ_SEARCH",
  "CAP_FOWNER",
  "CAP_FSETID",
  "CAP_KILL",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETPCAP",
  "CAP_LINUX_IMMUTABLE",
  "CAP_NET_BIND_SERVICE",
  "CAP_NET_BROADCAST",
  "CAP_NET_ADMIN",
  "CAP_NET_RAW",
  "CAP_IPC_LOCK",
  "CAP_IPC_OWNER",
  "CAP_SYS_MODULE",
  "CAP_SYS_RAWIO",
  "CAP_SYS_CHROOT",
  "CAP_SYS_PTRACE",
  "CAP_SYS_PACCT",
  "CAP_SYS_ADMIN",
  "CAP_SYS_BOOT",
  "CAP_SYS_NICE",
  "CAP_SYS_RESOURCE",
  "CAP_SYS_TIME",
  "CAP_SYS_TTY_CONFIG",
  "CAP_MKNOD",
  "CAP_LEASE",
  "CAP_AUDIT_WRITE",
  "CAP_AUDIT_CONTROL",
  "CAP_SETFCAP",
  "CAP_MAC_OVERRIDE",
  "CAP_MAC_ADMIN",
  "CAP_SYSLOG",
  "CAP_WAKE_ALARM",
  "CAP_BLOCK_SUSPEND",
  "CAP_AUDIT_READ",
  "CAP_PERFMON",
  "CAP_BPF",
  "CAP_CHECKPOINT_RESTORE",
]);

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const BARE_WORD = /^[A-Za-z0-9_.\/:=,+@-]+$/;
// Control characters other than TAB cannot be written (TAB is written as \t).
// deno-lint-ignore no-control-regex
const FORBIDDEN = /[\x00-\x08\x0a-\x1f\x7f]/;
const UNIT_NAME_MAX = 255;
const HEADER = "# Written by addon-agent, which rewrites or removes this file: do not edit.";

/** The unit file names of an add-on; characters not allowed in unit names are `\xNN`-escaped. */
export function unitNames(addonId: string): UnitNames {
  if (!isSafeSegment(addonId)) {
    throw new Error(`addon_id ${JSON.stringify(addonId)} is not a safe name for a unit`);
  }
  const escaped = addonId.replace(
    /[^A-Za-z0-9:_.-]/g,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`,
  );
  const base = UNIT_PREFIX + escaped;
  if (base.length + ".service".length > UNIT_NAME_MAX) {
    throw new Error(`addon_id ${JSON.stringify(addonId)} makes a unit name longer than 255`);
  }
  return { service: `${base}.service`, timer: `${base}.timer` };
}

/** Render the `.service` unit: `Restart=on-failure` for kind `service`, `Type=oneshot` for `timer`. */
export function renderService(spec: UnitSpec): string {
  unitNames(spec.addon_id); // validates addon_id
  if (spec.kind !== "service" && spec.kind !== "timer") {
    throw new Error(`unknown unit kind ${JSON.stringify(spec.kind)}`);
  }
  if (!isSafeSegment(spec.version)) {
    throw new Error(`version ${JSON.stringify(spec.version)} is not a safe name`);
  }
  const exec = _absPath(spec.exec_path, "exec_path");
  const dataDir = _absPath(spec.data_dir, "data_dir");
  const configFile = _absPath(spec.config_file, "config_file");
  const caps = _capabilities(spec.capabilities);
  const execStart = [exec, ...spec.args.map((a, i) => _value(a, `args[${i}]`))]
    .map((w) => _execWord(w))
    .join(" ");
  const agentEnv: [string, string][] = [
    ["ADDON_ID", spec.addon_id],
    ["ADDON_VERSION", spec.version],
    ["ADDON_CONFIG_FILE", configFile],
    ["ADDON_DATA_DIR", dataDir],
  ];
  const env: [string, string][] = [];
  for (const k of Object.keys(spec.env).sort()) {
    if (!ENV_NAME.test(k)) {
      throw new Error(
        `env name ${JSON.stringify(k)} is not valid (must match ${ENV_NAME.source})`,
      );
    }
    const v = _value(spec.env[k] ?? "", `env.${k}`);
    // The agent's ADDON_* values win over an add-on env entry of the same name (SPEC 10).
    if (!agentEnv.some(([name]) => name === k)) env.push([k, v]);
  }
  env.push(...agentEnv);
  const lines = [
    HEADER,
    "[Unit]",
    `Description=addon-agent add-on ${spec.addon_id} ${spec.version}`,
    "After=network.target",
    "",
    "[Service]",
    ...(spec.kind === "timer" ? ["Type=oneshot"] : [
      "Type=simple",
      "Restart=on-failure",
      "RestartSec=5s",
    ]),
    ...(spec.exec_sha256 !== undefined
      ? [`ExecStartPre=${sha256CheckCommand(exec, spec.exec_sha256).map(_execWord).join(" ")}`]
      : []),
    `ExecStart=${execStart}`,
    ...env.map(([k, v]) => `Environment=${_quote(`${k}=${v}`)}`),
    `SyslogIdentifier=${spec.addon_id}`,
    "TimeoutStopSec=10s",
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    `ReadWritePaths=${_quote(dataDir)}`,
    `CapabilityBoundingSet=${caps.join(" ")}`,
    ...(caps.length ? [`AmbientCapabilities=${caps.join(" ")}`] : []),
    ..._identity(spec),
    ..._resources(spec.resources),
  ];
  // A timer-driven service is started by its timer only: no [Install] section.
  if (spec.kind === "service") lines.push("", "[Install]", "WantedBy=multi-user.target");
  return lines.join("\n") + "\n";
}

/** Render the `.timer` unit that starts the add-on's oneshot service on `spec.schedule`. */
export function renderTimer(spec: TimerSpec): string {
  const { service } = unitNames(spec.addon_id);
  parseSchedule(spec.schedule); // throws for anything outside the supported subset
  return [
    HEADER,
    "[Unit]",
    `Description=addon-agent add-on ${spec.addon_id} ${spec.version} on ${spec.schedule}`,
    "",
    "[Timer]",
    `OnCalendar=${spec.schedule}`,
    `Unit=${service}`,
    "",
    "[Install]",
    "WantedBy=timers.target",
    "",
  ].join("\n");
}

/** Numeric `User=`/`Group=`: no name lookup, no passwd entry needed, no name to spoof. */
function _identity(spec: UnitSpec): string[] {
  const out: string[] = [];
  for (const [key, v] of [["User", spec.uid], ["Group", spec.gid ?? spec.uid]] as const) {
    if (v === undefined) continue;
    if (!Number.isInteger(v) || v < 1 || v > 2 ** 31 - 2) {
      throw new Error(`${key.toLowerCase()} id ${v} is not a valid non-root id`);
    }
    out.push(`${key}=${v}`);
  }
  if (spec.uid !== undefined) out.push("SupplementaryGroups=");
  return out;
}

function _resources(r: Resources | undefined): string[] {
  if (!r) return [];
  const out: string[] = [];
  const int = (v: number, what: string) => {
    if (!Number.isInteger(v) || v < 1) {
      throw new Error(`resources.${what} must be a positive integer`);
    }
    return v;
  };
  if (r.memory_max_bytes !== undefined) {
    out.push(`MemoryMax=${int(r.memory_max_bytes, "memory_max_bytes")}`);
  }
  if (r.cpu_max_percent !== undefined) {
    out.push(`CPUQuota=${int(r.cpu_max_percent, "cpu_max_percent")}%`);
  }
  if (r.pids_max !== undefined) out.push(`TasksMax=${int(r.pids_max, "pids_max")}`);
  return out;
}

function _value(v: string, what: string): string {
  if (typeof v !== "string") throw new Error(`${what} must be a string`);
  if (FORBIDDEN.test(v)) {
    throw new Error(
      `${what} ${JSON.stringify(v)} contains a newline or control character, ` +
        "which a systemd unit cannot carry",
    );
  }
  if (!v.isWellFormed()) throw new Error(`${what} ${JSON.stringify(v)} is not valid Unicode`);
  return v;
}

function _absPath(p: string, what: string): string {
  _value(p, what);
  if (!p.startsWith("/") || p.includes("\t") || p.split("/").some((s) => s === "." || s === "..")) {
    throw new Error(
      `${what} ${JSON.stringify(p)} must be an absolute path without "." or ".." or tabs`,
    );
  }
  return p;
}

function _capabilities(caps: string[]): string[] {
  const out = new Set<string>();
  for (const c of caps) {
    if (!KNOWN_CAPABILITIES.has(c)) {
      throw new Error(`capability ${JSON.stringify(c)} is not a known capability name`);
    }
    out.add(c);
  }
  return [...out].sort();
}

/** Quote for a systemd unit value: C escapes inside double quotes, `%` specifiers doubled. */
function _quote(v: string): string {
  return `"${_escape(v)}"`;
}

function _escape(v: string): string {
  return v.replace(/[\\"\t%]/g, (c) => c === "\t" ? "\\t" : c === "%" ? "%%" : `\\${c}`);
}

/** One word of `ExecStart=`: bare when safe, else quoted; `$` is doubled (no variable expansion). */
function _execWord(w: string): string {
  const escaped = _escape(w).replaceAll("$", () => "$$");
  return BARE_WORD.test(w) ? escaped : `"${escaped}"`;
}
