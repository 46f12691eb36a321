/**
 * addon-agent: parse the command line and dispatch (SPEC 9 and 16). Nothing
 * else lives here; each command is in `src/commands/`.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";
import { EXIT, exitCodeFor, UsageError } from "./src/commands/common.ts";
import { DEFAULT_CONFIG_PATH } from "./src/config/mod.ts";
import { configureLog, didYouMean, type Level } from "./src/common/mod.ts";
import {
  platformFlag,
  TARGET_FLAGS,
  TARGET_USAGE,
  targetOptions,
} from "./src/commands/target_flags.ts";

type Values = Record<string, string | boolean | undefined>;

/** A flag: its type, its argument's name (string flags) and one line of help. */
interface Flag {
  type: "string" | "boolean";
  arg?: string;
  help: string;
  short?: string;
}

const COMMON: Record<string, Flag> = {
  "log-format": {
    type: "string",
    arg: "json|text",
    help: "log format (default: text at a terminal, json otherwise)",
  },
  "log-level": { type: "string", arg: "LEVEL", help: "debug, info, warn or error (default info)" },
  help: { type: "boolean", short: "h", help: "show this help" },
};
const CONFIG: Record<string, Flag> = {
  config: { type: "string", arg: "PATH", help: `agent configuration (${DEFAULT_CONFIG_PATH})` },
};
const STATEMENT: Record<string, Flag> = {
  "addon-id": { type: "string", arg: "ID", help: "the add-on's id" },
  version: { type: "string", arg: "V", help: "the add-on's version" },
  os: { type: "string", arg: "OS", help: "linux or darwin" },
  arch: { type: "string", arg: "ARCH", help: "amd64 or arm64" },
};
const JSON_FLAG: Record<string, Flag> = {
  json: { type: "boolean", help: "print JSON for machines instead of text" },
};

interface Command {
  /** One line: what the command is for. */
  summary: string;
  usage: string;
  flags: Record<string, Flag>;
  positionals?: number;
  run: (v: Values, pos: string[]) => Promise<number>;
}

function _need(v: Values, name: string): string {
  const x = v[name];
  if (typeof x !== "string" || x === "") throw new UsageError(`--${name} is required`);
  return x;
}

function _config(v: Values): string {
  if (v.config === "") throw new UsageError("--config needs a PATH (an empty one names no file)");
  return typeof v.config === "string" ? v.config : DEFAULT_CONFIG_PATH;
}

function _statement(v: Values, pos: string[]) {
  if (pos.length !== 1) throw new UsageError("give exactly one FILE");
  return {
    addonId: _need(v, "addon-id"),
    version: _need(v, "version"),
    os: _need(v, "os"),
    arch: _need(v, "arch"),
    file: pos[0]!,
  };
}

function _opt(v: Values, name: string): string | undefined {
  const x = v[name];
  return typeof x === "string" && x !== "" ? x : undefined;
}

const COMMANDS: Record<string, Command> = {
  run: {
    summary: "the daemon: poll, deliver, supervise and report until SIGTERM",
    usage: "run [--config PATH]",
    flags: CONFIG,
    run: async (v) => (await import("./src/commands/run.ts")).runCommand({ config: _config(v) }),
  },
  sync: {
    summary: "one delivery pass: fetch, verify, stage and switch current, no supervision",
    usage: "sync [--config PATH] [--json]",
    flags: { ...CONFIG, ...JSON_FLAG },
    run: async (v) =>
      (await import("./src/commands/sync.ts")).syncCommand({
        config: _config(v),
        json: v.json === true,
      }),
  },
  status: {
    summary: "what is staged, current, running or failed, and why",
    usage: "status [--config PATH | --runtime-root DIR] [--json]",
    flags: {
      ...CONFIG,
      "runtime-root": { type: "string", arg: "DIR", help: "read this runtime root directly" },
      ...JSON_FLAG,
    },
    run: async (v) => {
      if (v.config !== undefined && v["runtime-root"] !== undefined) {
        throw new UsageError("give --config or --runtime-root, not both");
      }
      const rr = v["runtime-root"];
      return (await import("./src/commands/status.ts")).statusCommand({
        ...(typeof rr === "string" ? { runtimeRoot: rr } : { config: _config(v) }),
        json: v.json === true,
      });
    },
  },
  doctor: {
    summary: "check this host's configuration, runtime root, keys, source and store",
    usage: "doctor [--config PATH]",
    flags: CONFIG,
    run: async (v) =>
      (await import("./src/commands/doctor.ts")).doctorCommand({ config: _config(v) }),
  },
  diagnostics: {
    summary: "write one archive for a support ticket, every secret redacted",
    usage: "diagnostics --out FILE.tar.gz [--config PATH]",
    flags: {
      ...CONFIG,
      out: { type: "string", arg: "FILE", help: "where to write the archive (- for stdout)" },
    },
    run: async (v) =>
      (await import("./src/commands/diagnostics.ts")).diagnosticsCommand({
        config: _config(v),
        out: _need(v, "out"),
      }),
  },
  keygen: {
    summary: "make a signing key pair (signing.key, signing.pub)",
    usage: "keygen --out DIR",
    flags: { out: { type: "string", arg: "DIR", help: "directory to write the key pair to" } },
    run: async (v) =>
      (await import("./src/commands/keys.ts")).keygenCommand({ out: _need(v, "out") }),
  },
  sign: {
    summary: "sign an artifact; prints artifact_sha256 and artifact_signature",
    usage: "sign --key FILE --addon-id ID --version V --os OS --arch ARCH FILE",
    flags: { ...STATEMENT, key: { type: "string", arg: "FILE", help: "the signing.key file" } },
    positionals: 1,
    run: async (v, pos) =>
      (await import("./src/commands/keys.ts")).signCommand({
        ..._statement(v, pos),
        key: _need(v, "key"),
      }),
  },
  verify: {
    summary: "check an artifact's signature (exit 0 valid, 1 not)",
    usage:
      "verify --public-key B64 --addon-id ID --version V --os OS --arch ARCH --signature SIG FILE",
    flags: {
      ...STATEMENT,
      "public-key": { type: "string", arg: "B64", help: "the publisher's public key (base64)" },
      signature: { type: "string", arg: "SIG", help: "the artifact_signature (base64)" },
    },
    positionals: 1,
    run: async (v, pos) =>
      (await import("./src/commands/keys.ts")).verifyCommand({
        ..._statement(v, pos),
        publicKey: _need(v, "public-key"),
        signature: _need(v, "signature"),
      }),
  },
  "control-plane": {
    summary: "the reference control plane: serve documents from a catalog, or publish them",
    usage: "control-plane --catalog FILE [--listen ADDR [--token-file FILE] | " +
      "--publish nats://HOST:PORT/BUCKET|" +
      `s3://BUCKET/PREFIX [--platform OS/ARCH] [--once] [--status-bucket B] ${TARGET_USAGE}]`,
    flags: {
      catalog: { type: "string", arg: "FILE", help: "the catalog (docs/catalog.md)" },
      listen: { type: "string", arg: "ADDR", help: "address to listen on (127.0.0.1:8480)" },
      "token-file": {
        type: "string",
        arg: "FILE",
        help: "require Authorization: Bearer <its content>; needed off loopback",
      },
      publish: {
        type: "string",
        arg: "URL",
        help: "write each agent's document to NATS KV or S3 instead of serving HTTP",
      },
      platform: {
        type: "string",
        arg: "OS/ARCH",
        help: "published documents' platform (linux/amd64)",
      },
      once: { type: "boolean", help: "publish once and exit instead of following the catalog" },
      "status-bucket": {
        type: "string",
        arg: "B",
        help: "NATS: the status KV bucket to create for the agents (addon-status)",
      },
      ...TARGET_FLAGS,
    },
    run: async (v) => {
      if (typeof v.publish === "string") {
        if (v.listen !== undefined) throw new UsageError("give --listen or --publish, not both");
        return (await import("./src/commands/publish.ts")).controlPlanePublish({
          catalog: _need(v, "catalog"),
          publish: v.publish,
          platform: platformFlag(v),
          target: targetOptions(v),
          once: v.once === true,
        });
      }
      return (await import("./src/commands/control_plane.ts")).controlPlaneCommand({
        catalog: _need(v, "catalog"),
        listen: typeof v.listen === "string" ? v.listen : "127.0.0.1:8480",
        ...(typeof v["token-file"] === "string" ? { tokenFile: v["token-file"] } : {}),
      });
    },
  },
  publish: {
    summary: "upload an artifact to a NATS object store or S3",
    usage:
      `publish --store nats://HOST:PORT/BUCKET|s3://BUCKET/PREFIX --key K ${TARGET_USAGE} FILE`,
    flags: {
      store: { type: "string", arg: "URL", help: "nats://HOST:PORT/BUCKET or s3://BUCKET/PREFIX" },
      key: { type: "string", arg: "K", help: "the object key (artifact_object_key)" },
      ...TARGET_FLAGS,
    },
    positionals: 1,
    run: async (v, pos) => {
      if (pos.length !== 1) throw new UsageError("give exactly one FILE");
      return (await import("./src/commands/publish.ts")).publishCommand({
        store: _need(v, "store"),
        key: _need(v, "key"),
        file: pos[0]!,
        target: targetOptions(v),
      });
    },
  },
  "nats-permissions": {
    summary: "print the nats-server permissions block of one agent",
    usage: "nats-permissions (--agent-id ID | --accounts FLEET) [--bucket B] [--status-bucket B] " +
      "[--artifact-bucket B] [--inbox-prefix P] [--json]",
    flags: {
      "agent-id": { type: "string", arg: "ID", help: "the agent's agent_id" },
      accounts: {
        type: "string",
        arg: "FLEET",
        help: "instead: the exports of the buckets' account FLEET and the agents' imports",
      },
      bucket: { type: "string", arg: "B", help: "assignments KV bucket (addon-assignments)" },
      "status-bucket": { type: "string", arg: "B", help: "status KV bucket (addon-status)" },
      "artifact-bucket": { type: "string", arg: "B", help: "object store (addon-artifacts)" },
      "inbox-prefix": { type: "string", arg: "P", help: "the agent's nats.inbox_prefix" },
      ...JSON_FLAG,
    },
    run: async (v) => {
      const o = (k: string) => _opt(v, k);
      return (await import("./src/commands/nats_permissions.ts")).natsPermissionsCommand({
        ...(o("agent-id") !== undefined ? { agentId: o("agent-id")! } : {}),
        ...(o("accounts") !== undefined ? { accounts: o("accounts")! } : {}),
        ...(o("bucket") ? { bucket: o("bucket")! } : {}),
        ...(o("status-bucket") ? { statusBucket: o("status-bucket")! } : {}),
        ...(o("artifact-bucket") ? { artifactBucket: o("artifact-bucket")! } : {}),
        ...(o("inbox-prefix") ? { inboxPrefix: o("inbox-prefix")! } : {}),
        json: v.json === true,
      });
    },
  },
  dev: {
    summary: "a local store, control plane and example add-on, end to end",
    usage: "dev [--for SECONDS] [--nats]",
    flags: {
      for: { type: "string", arg: "SECONDS", help: "stop after this many seconds" },
      nats: { type: "boolean", help: "run it on a local nats-server (KV and object store)" },
    },
    run: async (v) => {
      let seconds: number | undefined;
      if (v.for !== undefined) {
        seconds = Number(v.for);
        if (!Number.isFinite(seconds) || seconds <= 0) {
          throw new UsageError(
            `--for must be a positive number of seconds, got ${JSON.stringify(v.for)}`,
          );
        }
      }
      return (await import("./src/commands/dev.ts")).devCommand({
        forSeconds: seconds,
        nats: v.nats === true,
      });
    },
  },
  version: {
    summary: "print the version, Deno version and target",
    usage: "version",
    flags: {},
    run: async () => {
      const { versionInfo } = await import("./src/common/mod.ts");
      const i = versionInfo();
      console.log(`addon-agent ${i.version} (deno ${i.deno}, ${i.target})`);
      return EXIT.ok;
    },
  },
};

function _usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length));
  return [
    "usage: addon-agent <command> [flags]",
    "",
    "commands:",
    ...Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(width)}  ${c.summary}`),
    "",
    "Run `addon-agent <command> --help` for a command's flags.",
  ].join("\n");
}

function _commandHelp(cmd: Command): string {
  const flags = Object.entries({ ...cmd.flags, ...COMMON }).map(([n, f]) => {
    const left = `${f.short ? `-${f.short}, ` : ""}--${n}${f.arg ? ` ${f.arg}` : ""}`;
    return [left, f.help] as const;
  });
  const width = Math.max(...flags.map(([l]) => l.length));
  return [
    `usage: addon-agent ${cmd.usage}`,
    "",
    cmd.summary.charAt(0).toUpperCase() + cmd.summary.slice(1) + ".",
    "",
    "flags:",
    ...flags.map(([l, h]) => `  ${l.padEnd(width)}  ${h}`),
  ].join("\n");
}

/** Refuse a `--flag` or `-f` the command does not take, suggesting the closest one. */
function _checkFlags(args: string[], flags: Record<string, Flag>): void {
  const shorts = new Map(
    Object.entries(flags).flatMap(([n, f]) => f.short ? [[f.short, n] as const] : []),
  );
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--") return;
    if (a.startsWith("--")) {
      const name = a.slice(2).split("=")[0]!;
      if (!Object.hasOwn(flags, name)) {
        throw new UsageError(`unknown flag --${name}${didYouMean(name, Object.keys(flags))}`);
      }
      if (flags[name]!.type === "string" && !a.includes("=")) i++; // its value
    } else if (a.startsWith("-") && a.length > 1) {
      for (const c of a.slice(1)) {
        if (!shorts.has(c)) {
          // `-config`: a long flag with one dash.
          const long = Object.hasOwn(flags, a.slice(1)) ? ` (did you mean -${a}?)` : "";
          throw new UsageError(`unknown flag -${c}${long}`);
        }
      }
    }
  }
}

function _usageError(message: string, usage: string): number {
  // Plain text for the person who typed it (SPEC 16), never a JSON log line.
  console.error(`addon-agent: ${message}\n\n${usage}`);
  return EXIT.usage;
}

/** Parse `args`, run the command, and return its exit code. */
export async function main(args: string[]): Promise<number> {
  configureLog({ format: Deno.stderr.isTerminal() ? "text" : "json" });
  const [name, ...rest] = args;
  if (name === "help" || name === "--help" || name === "-h") {
    // `help sync` is `sync --help`, as in git.
    const topic = rest[0];
    if (name === "help" && topic !== undefined && Object.hasOwn(COMMANDS, topic)) {
      console.log(_commandHelp(COMMANDS[topic]!));
      return EXIT.ok;
    }
    if (name === "help" && topic !== undefined) {
      return _usageError(
        `unknown command ${JSON.stringify(topic)}${didYouMean(topic, Object.keys(COMMANDS))}`,
        _usage(),
      );
    }
    console.log(_usage());
    return EXIT.ok;
  }
  if (name === undefined) return _usageError("no command given", _usage());
  if (!Object.hasOwn(COMMANDS, name)) {
    return _usageError(
      `unknown command ${JSON.stringify(name)}${didYouMean(name, Object.keys(COMMANDS))}`,
      _usage(),
    );
  }
  const cmd = COMMANDS[name]!;
  const all = { ...COMMON, ...cmd.flags };
  const usage = `usage: addon-agent ${cmd.usage}\n(addon-agent ${name} --help lists its flags)`;
  try {
    _checkFlags(rest, all);
    let parsed;
    try {
      const options: NonNullable<ParseArgsConfig["options"]> = {};
      for (const [n, f] of Object.entries(all)) {
        options[n] = f.short ? { type: f.type, short: f.short } : { type: f.type };
      }
      parsed = parseArgs({ args: rest, options, allowPositionals: true, strict: true });
    } catch (e) {
      throw new UsageError((e as Error).message, { cause: e });
    }
    const v = parsed.values as Values;
    if (v.help) {
      console.log(_commandHelp(cmd));
      return EXIT.ok;
    }
    const fmt = v["log-format"];
    if (fmt !== undefined && fmt !== "json" && fmt !== "text") {
      throw new UsageError(`--log-format must be json or text, got ${JSON.stringify(fmt)}`);
    }
    const level = v["log-level"];
    if (level !== undefined && !["debug", "info", "warn", "error"].includes(level as string)) {
      throw new UsageError(`--log-level must be debug, info, warn or error`);
    }
    configureLog({
      ...(fmt ? { format: fmt as "json" | "text" } : {}),
      ...(level ? { level: level as Level } : {}),
    });
    if ((cmd.positionals ?? 0) === 0 && parsed.positionals.length > 0) {
      throw new UsageError(`unexpected argument ${JSON.stringify(parsed.positionals[0])}`);
    }
    return await cmd.run(v, parsed.positionals);
  } catch (e) {
    if (e instanceof UsageError) return _usageError(e.message, usage);
    return exitCodeFor(e);
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
