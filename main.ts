/**
 * addon-agent: parse the command line and dispatch (SPEC 9). Nothing else
 * lives here; each command is in `src/commands/`.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";
import { EXIT, exitCodeFor, UsageError } from "./src/commands/common.ts";
import { DEFAULT_CONFIG_PATH } from "./src/config/config.ts";
import { configureLog, type Level } from "./src/common/log.ts";

type Options = NonNullable<ParseArgsConfig["options"]>;
type Values = Record<string, string | boolean | undefined>;

const COMMON: Options = {
  "log-format": { type: "string" },
  "log-level": { type: "string" },
  help: { type: "boolean", short: "h" },
};
const CONFIG: Options = { config: { type: "string" } };
const STATEMENT: Options = {
  "addon-id": { type: "string" },
  version: { type: "string" },
  os: { type: "string" },
  arch: { type: "string" },
};

interface Command {
  usage: string;
  options: Options;
  positionals?: number;
  run: (v: Values, pos: string[]) => Promise<number>;
}

function _need(v: Values, name: string): string {
  const x = v[name];
  if (typeof x !== "string" || x === "") throw new UsageError(`--${name} is required`);
  return x;
}

function _config(v: Values): string {
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

const COMMANDS: Record<string, Command> = {
  run: {
    usage: "run [--config PATH]",
    options: CONFIG,
    run: async (v) => (await import("./src/commands/run.ts")).runCommand({ config: _config(v) }),
  },
  sync: {
    usage: "sync [--config PATH] [--json]",
    options: { ...CONFIG, json: { type: "boolean" } },
    run: async (v) =>
      (await import("./src/commands/sync.ts")).syncCommand({
        config: _config(v),
        json: v.json === true,
      }),
  },
  status: {
    usage: "status [--config PATH | --runtime-root DIR] [--json]",
    options: { ...CONFIG, "runtime-root": { type: "string" }, json: { type: "boolean" } },
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
  keygen: {
    usage: "keygen --out DIR",
    options: { out: { type: "string" } },
    run: async (v) =>
      (await import("./src/commands/keys.ts")).keygenCommand({ out: _need(v, "out") }),
  },
  sign: {
    usage: "sign --key FILE --addon-id ID --version V --os OS --arch ARCH FILE",
    options: { ...STATEMENT, key: { type: "string" } },
    positionals: 1,
    run: async (v, pos) =>
      (await import("./src/commands/keys.ts")).signCommand({
        ..._statement(v, pos),
        key: _need(v, "key"),
      }),
  },
  verify: {
    usage:
      "verify --public-key B64 --addon-id ID --version V --os OS --arch ARCH --signature SIG FILE",
    options: { ...STATEMENT, "public-key": { type: "string" }, signature: { type: "string" } },
    positionals: 1,
    run: async (v, pos) =>
      (await import("./src/commands/keys.ts")).verifyCommand({
        ..._statement(v, pos),
        publicKey: _need(v, "public-key"),
        signature: _need(v, "signature"),
      }),
  },
  "control-plane": {
    usage: "control-plane --catalog FILE [--listen ADDR]",
    options: { catalog: { type: "string" }, listen: { type: "string" } },
    run: async (v) =>
      (await import("./src/commands/control_plane.ts")).controlPlaneCommand({
        catalog: _need(v, "catalog"),
        listen: typeof v.listen === "string" ? v.listen : "127.0.0.1:8480",
      }),
  },
  dev: {
    usage: "dev [--for SECONDS]",
    options: { for: { type: "string" } },
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
      return (await import("./src/commands/dev.ts")).devCommand({ forSeconds: seconds });
    },
  },
  version: {
    usage: "version",
    options: {},
    run: async () => {
      const { versionInfo } = await import("./src/common/version.ts");
      const i = versionInfo();
      console.log(`addon-agent ${i.version} (deno ${i.deno}, ${i.target})`);
      return EXIT.ok;
    },
  },
};

function _usage(): string {
  return [
    "usage: addon-agent <command> [flags]   (--log-format json|text, --log-level debug|info|warn|error)",
    ...Object.values(COMMANDS).map((c) => `  addon-agent ${c.usage}`),
  ].join("\n");
}

/** Parse `args`, run the command, and return its exit code. */
export async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined || name === "help" || name === "--help" || name === "-h") {
    console.log(_usage());
    return name === undefined ? EXIT.usage : EXIT.ok;
  }
  const cmd = COMMANDS[name];
  try {
    if (!cmd) throw new UsageError(`unknown command ${JSON.stringify(name)}\n${_usage()}`);
    let parsed;
    try {
      parsed = parseArgs({
        args: rest,
        options: { ...COMMON, ...cmd.options },
        allowPositionals: true,
        strict: true,
      });
    } catch (e) {
      throw new UsageError(`${(e as Error).message}\nusage: addon-agent ${cmd.usage}`);
    }
    const v = parsed.values as Values;
    if (v.help) {
      console.log(`usage: addon-agent ${cmd.usage}`);
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
      throw new UsageError(
        `unexpected argument ${
          JSON.stringify(parsed.positionals[0])
        }\nusage: addon-agent ${cmd.usage}`,
      );
    }
    return await cmd.run(v, parsed.positionals);
  } catch (e) {
    return exitCodeFor(e);
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
