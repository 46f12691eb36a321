/**
 * `deno task compile`: one executable per platform in `dist/`, compiled with
 * the agent's permission set (`deno compile -P=agent`), a `SHA256SUMS` file
 * over every executable in `dist/`, and, with a release key, a
 * `SHA256SUMS.sig.json` holding an `addon-agent sign` signature of each.
 *
 * - Targets: `x86_64-unknown-linux-gnu`, `aarch64-unknown-linux-gnu`,
 *   `x86_64-apple-darwin`, `aarch64-apple-darwin`; `--target T` (repeatable,
 *   or comma-separated) picks some.
 * - `deno compile` embeds the program into `denort`, the Deno runtime for the
 *   target, which it downloads once per Deno version and target (then caches
 *   in `DENO_DIR`). Offline, give it with `DENORT_BIN=/path/to/denort` (read
 *   by `deno compile` itself): it is one runtime, so exactly one `--target`
 *   goes with it. When the runtime cannot be obtained the build stops with a
 *   message saying which target and how to provide it (exit 1).
 * - Signatures use the statement of SPEC 5 with `addon_id` `addon-agent`, the
 *   agent's version and the target's `os/arch` (`linux/amd64`, …), so
 *   `addon-agent verify` checks a release binary like any add-on.
 *
 * @example Build all targets, signed; or one target offline
 * ```sh
 * deno task compile --release-key ./keys/signing.key
 * DENORT_BIN=$HOME/denort/denort deno task compile --target x86_64-unknown-linux-gnu
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { sha256File } from "../src/common/sha256_file.ts";
import { decodeSecretKey, publicKeyOf, signStatement } from "../src/protocol/signature.ts";
import { AGENT_VERSION } from "../src/common/version.ts";

/** The targets this build knows, with the agent's names for their platform. */
export const TARGETS = {
  "x86_64-unknown-linux-gnu": { os: "linux", arch: "amd64" },
  "aarch64-unknown-linux-gnu": { os: "linux", arch: "arm64" },
  "x86_64-apple-darwin": { os: "darwin", arch: "amd64" },
  "aarch64-apple-darwin": { os: "darwin", arch: "arm64" },
} as const;

/** A target triple `deno compile --target` accepts. */
export type Target = keyof typeof TARGETS;

/** The signature file's name in the output directory. */
export const SIGNATURES_FILE = "SHA256SUMS.sig.json";

const PREFIX = "addon-agent-";
const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** A build failure whose message is the whole explanation (printed as is; exit `code`). */
export class BuildError extends Error {
  /** Make the error with a message for the person running the build; `code` 2 is bad usage. */
  constructor(message: string, readonly code: 1 | 2 = 1) {
    super(message);
    this.name = "BuildError";
  }
}

/** The executable's file name for `target`: `addon-agent-<target>`. */
export function binaryName(target: Target): string {
  return `${PREFIX}${target}`;
}

/** The target a file name `addon-agent-<target>` was built for, or null. */
export function targetOf(name: string): Target | null {
  const t = name.startsWith(PREFIX) ? name.slice(PREFIX.length) : "";
  return Object.hasOwn(TARGETS, t) ? t as Target : null;
}

/** One signed release file in `SHA256SUMS.sig.json`. */
export interface SignedFile {
  file: string;
  os: string;
  arch: string;
  artifact_sha256: string;
  artifact_signature: string;
}

/** The content of `SHA256SUMS.sig.json`. */
export interface ReleaseSignatures {
  /** Always `addon-agent/artifact/v1`: the statement each signature is over (SPEC 5). */
  statement: "addon-agent/artifact/v1";
  addon_id: "addon-agent";
  version: string;
  /** Base64 of the raw 32-byte public key that verifies every signature. */
  public_key: string;
  files: SignedFile[];
}

/**
 * Write `dir/SHA256SUMS` (`sha256sum` format, sorted by name) over `files`
 * (names in `dir`), and with `releaseKey` (a 32-byte ed25519 seed) sign each
 * file as `addon-agent` at {@linkcode AGENT_VERSION} for its target into
 * `dir/SHA256SUMS.sig.json`; a stale signature file is removed without a key.
 */
export async function writeChecksums(
  dir: string,
  files: string[],
  releaseKey?: Uint8Array,
): Promise<{ sums: string; signatures: ReleaseSignatures | null }> {
  const names = [...new Set(files)].sort();
  const digests = new Map<string, string>();
  for (const name of names) {
    if (name.includes("/")) throw new BuildError(`${name}: give file names inside ${dir}`);
    digests.set(name, await sha256File(`${dir}/${name}`));
  }
  const sums = names.map((n) => `${digests.get(n)}  ${n}\n`).join("");
  await Deno.writeTextFile(`${dir}/SHA256SUMS`, sums);
  if (!releaseKey) {
    await Deno.remove(`${dir}/${SIGNATURES_FILE}`).catch(() => {});
    return { sums, signatures: null };
  }
  const signed: SignedFile[] = [];
  for (const name of names) {
    const target = targetOf(name);
    if (target === null) {
      throw new BuildError(
        `${dir}/${name}: cannot sign a file whose name is not ${PREFIX}<target> (targets: ${
          Object.keys(TARGETS).join(", ")
        })`,
      );
    }
    const { os, arch } = TARGETS[target];
    const sha256 = digests.get(name)!;
    signed.push({
      file: name,
      os,
      arch,
      artifact_sha256: sha256,
      artifact_signature: await signStatement(releaseKey, {
        addon_id: "addon-agent",
        version: AGENT_VERSION,
        target: `${os}/${arch}`,
        sha256,
      }),
    });
  }
  const signatures: ReleaseSignatures = {
    statement: "addon-agent/artifact/v1",
    addon_id: "addon-agent",
    version: AGENT_VERSION,
    public_key: await publicKeyOf(releaseKey),
    files: signed,
  };
  await Deno.writeTextFile(`${dir}/${SIGNATURES_FILE}`, JSON.stringify(signatures, null, 2) + "\n");
  return { sums, signatures };
}

/** What the command line asks for. */
export interface BuildOptions {
  targets: Target[];
  out: string;
  releaseKey?: string;
}

const USAGE = "usage: deno task compile [--target T]... [--release-key FILE] [--out DIR]";

/** Parse the build's flags; throws {@linkcode BuildError} naming a bad flag or target. */
export function parseBuildArgs(args: string[]): BuildOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        target: { type: "string", multiple: true },
        "release-key": { type: "string" },
        out: { type: "string" },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (e) {
    throw new BuildError(`${(e as Error).message}\n${USAGE}`, 2);
  }
  const v = parsed.values;
  const wanted = (v.target ?? []).flatMap((t) => t.split(",")).map((t) => t.trim()).filter((t) =>
    t
  );
  for (const t of wanted) {
    if (!Object.hasOwn(TARGETS, t)) {
      throw new BuildError(
        `--target ${JSON.stringify(t)} is not one of ${Object.keys(TARGETS).join(", ")}`,
        2,
      );
    }
  }
  const targets = wanted.length > 0
    ? [...new Set(wanted)] as Target[]
    : Object.keys(TARGETS) as Target[];
  return {
    targets,
    out: v.out ?? `${REPO}/dist`,
    ...(v["release-key"] !== undefined ? { releaseKey: v["release-key"] } : {}),
  };
}

function _plain(text: string): string {
  // deno's colours, and its Rust backtrace (not for people running a build)
  // deno-lint-ignore no-control-regex
  const s = text.replace(/\x1b\[[0-9;]*m/g, "");
  const i = s.indexOf("\nStack backtrace:");
  return (i >= 0 ? s.slice(0, i) : s).trim();
}

/** Why `deno compile` failed when the runtime could not be had, or null for other failures. */
export function runtimeProblem(stderr: string): string | null {
  const s = _plain(stderr);
  if (!/denort|base binary|dl\.deno\.land/i.test(s)) return null;
  const lines = s.split("\n").map((l) => l.trim()).filter((l) => l);
  const causes = lines.filter((l) => /^\d+: /.test(l)).map((l) => l.replace(/^\d+: /, ""))
    .filter((l) => !/base binary/i.test(l));
  return causes[0] ?? lines[lines.length - 1] ?? s;
}

/** The one-paragraph message for a target whose runtime could not be obtained. */
export function runtimeMessage(target: Target, why: string, denortBin?: string): string {
  const zip = `denort-${target}.zip`;
  const via = denortBin !== undefined
    ? `DENORT_BIN is set (${denortBin}) but deno compile could not use it (${why}). `
    : `deno compile could not download it (${why}). `;
  return `addon-agent build: cannot build ${target}: the Deno runtime (denort ${Deno.version.deno}) ` +
    `for ${target} is not available. ${via}Provide it in one of two ways: run the build once on ` +
    `a machine that can reach dl.deno.land (deno caches the runtime in DENO_DIR, so later builds ` +
    `of this target work offline), or fetch ${zip} for Deno ${Deno.version.deno} elsewhere, ` +
    `unzip it, and run DENORT_BIN=/path/to/denort deno task compile --target ${target} ` +
    `(DENORT_BIN is one runtime, so give exactly the one target it was built for).`;
}

/** V8 flags the agent runs with (compiled in; `deno task agent` and the benchmarks pass them too). */
export const AGENT_V8_FLAGS = "--max-semi-space-size=1";

/** Compile `target` into `out`; throws {@linkcode BuildError} with the explanation on failure. */
export async function compileTarget(target: Target, out: string): Promise<string> {
  const output = `${out}/${binaryName(target)}`;
  const denortBin = Deno.env.get("DENORT_BIN");
  const res = await new Deno.Command(Deno.execPath(), {
    args: [
      "compile",
      "-P=agent",
      "--no-prompt",
      "--exclude-unused-npm",
      // Young-generation semi-spaces of 1 MiB: the Buffers of node:zlib (bundles, SPEC 15) are
      // collected at once instead of piling up, which keeps a sync's peak RSS under 96 MiB.
      `--v8-flags=${AGENT_V8_FLAGS}`,
      "--target",
      target,
      "--output",
      output,
      `${REPO}/main.ts`,
    ],
    cwd: REPO,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (res.success) return output;
  const stderr = new TextDecoder().decode(res.stderr);
  const why = runtimeProblem(stderr);
  if (why !== null) throw new BuildError(runtimeMessage(target, why, denortBin));
  throw new BuildError(`addon-agent build: deno compile failed for ${target}:\n${_plain(stderr)}`);
}

async function _releaseKey(path: string): Promise<Uint8Array> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new BuildError(`--release-key ${path}: cannot read it: ${(e as Error).message}`, 2);
  }
  try {
    return decodeSecretKey(text, path);
  } catch (e) {
    throw new BuildError(`--release-key ${(e as Error).message}`, 2);
  }
}

async function _executables(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && targetOf(e.name) !== null) out.push(e.name);
  }
  return out.sort();
}

/** Run the build with command-line `args`; returns the exit code (messages on stderr). */
export async function build(args: string[]): Promise<number> {
  try {
    const opts = parseBuildArgs(args);
    const key = opts.releaseKey !== undefined ? await _releaseKey(opts.releaseKey) : undefined;
    const denortBin = Deno.env.get("DENORT_BIN");
    if (denortBin !== undefined) {
      const st = await Deno.stat(denortBin).catch(() => null);
      if (!st?.isFile) {
        throw new BuildError(
          `addon-agent build: DENORT_BIN=${denortBin} is not a file; point it at the denort ` +
            `executable unzipped from denort-<target>.zip for Deno ${Deno.version.deno}, or unset it`,
        );
      }
      if (opts.targets.length !== 1) {
        throw new BuildError(
          `addon-agent build: DENORT_BIN is the runtime of one target; pass that target with ` +
            `--target (one of ${Object.keys(TARGETS).join(", ")})`,
        );
      }
    }
    await Deno.mkdir(opts.out, { recursive: true });
    for (const target of opts.targets) {
      console.error(`compiling ${binaryName(target)} …`);
      await compileTarget(target, opts.out);
    }
    const files = await _executables(opts.out);
    await writeChecksums(opts.out, files, key);
    console.error(
      `wrote ${opts.out}/SHA256SUMS (${files.length} executables)` +
        (key ? ` and ${opts.out}/${SIGNATURES_FILE}` : ""),
    );
    return 0;
  } catch (e) {
    if (e instanceof BuildError) {
      console.error(e.message);
      return e.code;
    }
    throw e;
  }
}

if (import.meta.main) {
  Deno.exit(await build(Deno.args));
}
