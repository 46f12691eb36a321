/**
 * Shared test fixtures: temp dirs, a real S3 server (s3rver), publishing
 * signed artifacts, agent configs, running the agent (or any deno script) as
 * a subprocess, and small file and port helpers.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { hostPlatform, platformString } from "../src/protocol/platform.ts";
import {
  encodeBase64,
  generateKey,
  type KeyPair,
  signStatement,
} from "../src/protocol/signature.ts";
import { S3_ENV } from "../scripts/_agent_files.ts";
import type { Clock, TimerHandle } from "../src/common/mod.ts";

export { S3_ENV, writeAssignments, writeConfig } from "../scripts/_agent_files.ts";

/** Absolute path of the repository's `main.ts`. */
export const MAIN_TS = new URL("../main.ts", import.meta.url).pathname;
/** Absolute path of the repository root. */
export const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** Run `fn` with a fresh temp dir (mode 0755) that is removed afterwards. */
export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "addon-agent-test-" });
  await Deno.chmod(dir, 0o755);
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** A running s3rver with one bucket. */
export interface S3Fixture {
  endpoint: string;
  bucket: string;
  put(key: string, body: Uint8Array | string): Promise<void>;
  stop(): Promise<void>;
}

/** Start s3rver on 127.0.0.1:0 with a temp directory and a bucket `addons`. */
export async function startS3(dir: string, port = 0): Promise<S3Fixture> {
  const { default: S3rver } = await import("s3rver");
  const { PutObjectCommand, S3Client } = await import("@aws-sdk/client-s3");
  await Deno.mkdir(`${dir}/s3data`, { recursive: true });
  const server = new S3rver({
    port,
    address: "127.0.0.1",
    silent: true,
    directory: `${dir}/s3data`,
    configureBuckets: [{ name: "addons" }],
  });
  const info = await server.run() as { port: number };
  const endpoint = `http://127.0.0.1:${info.port}`;
  const client = new S3Client({
    endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" },
  });
  return {
    endpoint,
    bucket: "addons",
    put: async (key, body) => {
      await client.send(new PutObjectCommand({ Bucket: "addons", Key: key, Body: body }));
    },
    stop: async () => {
      client.destroy();
      await server.close();
    },
  };
}

/**
 * `agent.json` keys for the store `s3` (path-style, at its endpoint) and a
 * trust root of `key` that requires signatures.
 */
export function s3SignedStore(s3: S3Fixture, key: KeyPair): Record<string, unknown> {
  return {
    object_store: {
      kind: "s3",
      bucket: s3.bucket,
      endpoint: s3.endpoint,
      force_path_style: true,
    },
    trust: { public_keys: [key.publicBase64], require_signature: true },
  };
}

/** sha256 hex of bytes. */
export function sha256Hex(b: Uint8Array | string): string {
  return createHash("sha256").update(b).digest("hex");
}

/** A new signing key pair. */
export function newKey(): Promise<KeyPair> {
  return generateKey();
}

/** Sign `bytes` as (addonId, version) for this host's platform (or `target`). */
export async function signFor(
  key: KeyPair,
  addonId: string,
  version: string,
  bytes: Uint8Array | string,
  target = platformString(hostPlatform()),
): Promise<{ artifact_sha256: string; artifact_signature: string }> {
  const sha256 = sha256Hex(bytes);
  const artifact_signature = await signStatement(key.secret, {
    addon_id: addonId,
    version,
    target,
    sha256,
  });
  return { artifact_sha256: sha256, artifact_signature };
}

/** Text of a small add-on script that prints its version and sleeps. */
export function scriptAddon(body = 'echo "up $ADDON_ID $ADDON_VERSION"; exec sleep 300'): string {
  return `#!/bin/sh\n${body}\n`;
}

/** Write `bytes` to `<dir>/store/<key>` (a filesystem object store), creating its directories. */
export async function publishFs(
  dir: string,
  key: string,
  bytes: Uint8Array | string,
): Promise<void> {
  const path = `${dir}/store/${key}`;
  await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  if (typeof bytes === "string") await Deno.writeTextFile(path, bytes);
  else await Deno.writeFile(path, bytes);
}

/** The outcome of running the agent once. */
export interface AgentRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** How {@linkcode runDeno} runs deno: environment, whether only that environment, directory. */
export interface RunDenoOptions {
  /** Variables set for the child (over ours, unless `clearEnv`). */
  env?: Record<string, string>;
  /** Give the child only `env`. */
  clearEnv?: boolean;
  /** Working directory of the child. */
  cwd?: string;
}

/** Run `deno <args>` to completion with stdin closed; its exit code and decoded output. */
export async function runDeno(args: string[], opts: RunDenoOptions = {}): Promise<AgentRun> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    ...(opts.env ? { env: opts.env } : {}),
    ...(opts.clearEnv ? { clearEnv: true } : {}),
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Run `addon-agent <args>` as a subprocess with every permission. */
export function runAgent(
  args: string[],
  env: Record<string, string> = {},
): Promise<AgentRun> {
  return runDeno(["run", "-A", "--quiet", MAIN_TS, ...args], { env: { ...S3_ENV, ...env } });
}

/** Parse the `--json` output of `sync`. */
export function syncJson(run: AgentRun): {
  ok: boolean;
  document_error: string | null;
  results: {
    addon_id: string | null;
    version: string | null;
    outcome: string;
    message: string;
    fetched_bytes?: number;
  }[];
} {
  try {
    return JSON.parse(run.stdout);
  } catch {
    throw new Error(`sync printed no JSON (exit ${run.code}):\n${run.stdout}\n${run.stderr}`);
  }
}

/** Every file path below `dir` (relative), for "nothing was written" checks. */
export async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(d: string, rel: string): Promise<void> {
    for await (const e of Deno.readDir(d)) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      out.push(r);
      if (e.isDirectory) await walk(`${d}/${e.name}`, r);
    }
  }
  await walk(dir, "");
  return out.sort();
}

/** Whether anything (a symlink included) is at `path`. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** The non-empty lines of the file at `path`; none when it does not exist (yet). */
export async function fileLines(path: string): Promise<string[]> {
  try {
    return (await Deno.readTextFile(path)).split("\n").filter((l) => l !== "");
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
}

/** A port on 127.0.0.1 that nothing listens on (bound, then released). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Bytes of a base64 public key, for building trust roots in configs. */
export function publicKeyB64(key: KeyPair): string {
  return key.publicBase64;
}

/** Random bytes of length `n` (in 64 KiB pieces, as getRandomValues requires). */
export function randomBytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(b.subarray(i, Math.min(n, i + 65536)));
  return b;
}

export { encodeBase64 };

/** Time that moves only when the test says so; timers fire in order as it moves. */
export class FakeClock implements Clock {
  /** The time now, ms since the epoch. */
  t: number;
  /** Armed timers by handle: when they fire and what they call. */
  readonly timers = new Map<number, { at: number; fn: () => void }>();
  #next = 1;
  /** A clock that reads `start` until it is moved. */
  constructor(start = Date.parse("2026-01-01T00:00:00Z")) {
    this.t = start;
  }
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): TimerHandle {
    const id = this.#next++;
    this.timers.set(id, { at: this.t + ms, fn });
    return id;
  }
  clearTimeout(h: TimerHandle): void {
    this.timers.delete(h as number);
  }
  /** Move time to `to`, firing due timers in order (each sees its own due time as now). */
  advanceTo(to: number): void {
    for (;;) {
      const due = [...this.timers.entries()].filter(([, x]) => x.at <= to)
        .sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.t = due[1].at;
      due[1].fn();
    }
    this.t = to;
  }
  /** Move time forward by `ms`, firing due timers in order. */
  advance(ms: number): void {
    this.advanceTo(this.t + ms);
  }
}
