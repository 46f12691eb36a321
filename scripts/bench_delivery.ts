/**
 * Benchmark of artifact delivery (`addon-agent sync`) against what an
 * operator would script instead, on the same objects, side by side.
 *
 * s3rver runs in a process of its own (`scripts/_s3rver_process.ts`); random
 * artifacts (default 256 MiB and 1 GiB, written and uploaded in streaming
 * fashion) are signed and published to it and to a filesystem store. For
 * each size these runs alternate, repeated, and the best time of each is
 * compared (the best, because other work on a shared machine only ever adds):
 *
 * - `sync` from S3 (a fresh runtime root each run), under `/usr/bin/time`
 *   for its peak RSS;
 * - `curl URL | tee FILE | openssl dgst -sha256`, then `sync` of FILE from
 *   a filesystem store (the operator's download, then the agent's stage);
 * - `curl -o /dev/null URL` (the floor);
 * - `sync` from the filesystem store;
 * - `cp FILE COPY && openssl dgst -sha256 COPY`.
 *
 * A 1 KiB artifact, synced the same way, shows the fixed cost of a `sync`
 * (process start, module loading, the S3 client, staging) that every ratio
 * carries. Every timed run starts after `sync(1)`, so none pays for the write-back
 * of the files an earlier one left dirty.
 *
 * Targets: (a) S3 sync ÷ operator ≤ 1.0, (b) S3 sync ÷ curl ≤ 1.3,
 * (c) filesystem sync ÷ cp+openssl ≤ 1.0, (d) peak RSS of sync ≤ 96 MiB.
 *
 * @example Run it for 64 MiB and 256 MiB objects
 * ```sh
 * deno run -A scripts/bench_delivery.ts 64 256
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import { hostPlatform, platformString } from "../src/protocol/platform.ts";
import { generateKey, signStatement } from "../src/protocol/signature.ts";
import { S3_ENV, writeAssignments, writeConfig } from "./_agent_files.ts";

const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const MAIN_TS = `${REPO}/main.ts`;
const S3RVER_TS = `${REPO}/scripts/_s3rver_process.ts`;
const GNU_TIME = "/usr/bin/time";
const MIB = 1 << 20;

/** The goals the numbers are held against. */
const TARGETS = { operator: 1.0, floor: 1.3, filesystem: 1.0, rssMiB: 96 } as const;

/** Options of {@linkcode benchDelivery}. */
export interface BenchDeliveryOptions {
  /** Artifact sizes in MiB (default `[256, 1024]`). */
  sizesMiB?: number[];
  /** Rounds per size; the best time of each measurement is reported (default 3). */
  rounds?: number;
  /** Also list every sample. */
  verbose?: boolean;
}

interface _Run {
  ms: number;
  rssKiB: number | null;
}

interface _SizeResult {
  mib: number;
  s3Sync: number[];
  opFetch: number[];
  opSync: number[];
  opTotal: number[];
  curl: number[];
  fsSync: number[];
  cpHash: number[];
  s3RssKiB: number[];
  fsRssKiB: number[];
}

/** The fixed cost: `sync` of a 1 KiB artifact (process start, imports, S3 client, staging). */
interface _FixedResult {
  s3Sync: number[];
  fsSync: number[];
  s3RssKiB: number[];
  fsRssKiB: number[];
}

interface _S3Process {
  port: number;
  stop(): Promise<void>;
}

/** What every run of one size shares. */
interface _Ctx {
  dir: string;
  rounds: number;
  port: number;
  key: { secret: Uint8Array; publicBase64: string };
  haveTime: boolean;
}

/** An artifact in both stores, signed, and a way to `sync` it into a fresh runtime root. */
interface _Published {
  objectKey: string;
  storeFile: string;
  url: string;
  sha256: string;
  /** `sync` the artifact from `store` (the S3 store when omitted) into a fresh runtime root. */
  sync(store?: Record<string, unknown>): Promise<_Run>;
  /** A fresh empty directory below the bench's temp dir. */
  runDir(): Promise<string>;
  /** Remove the artifact from both stores. */
  remove(): Promise<void>;
}

/** Run the delivery benchmark and return printable result lines. */
export async function benchDelivery(opts: BenchDeliveryOptions = {}): Promise<string[]> {
  const sizes = opts.sizesMiB ?? [256, 1024];
  const rounds = opts.rounds ?? 3;
  const dir = await Deno.makeTempDir({ prefix: "bench-delivery-" });
  await Deno.chmod(dir, 0o755);
  const haveTime = await _exists(GNU_TIME);
  let s3: _S3Process | null = null;
  try {
    s3 = await _startS3rver(`${dir}/s3data`);
    const ctx: _Ctx = { dir, rounds, port: s3.port, key: await generateKey(), haveTime };
    const fixed = await _benchFixed(ctx);
    const results: _SizeResult[] = [];
    for (const mib of sizes) results.push(await _benchSize(ctx, mib));
    const lines = _report(fixed, results, rounds, haveTime);
    if (opts.verbose) lines.push("", ..._samples(results));
    return lines;
  } finally {
    await s3?.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Write, upload and sign an artifact of `bytes` random bytes named `name`. */
async function _publish(ctx: _Ctx, name: string, bytes: number): Promise<_Published> {
  const objectKey = `bench/${name}/artifact`;
  const store = `${ctx.dir}/store`;
  const storeFile = `${store}/${objectKey}`;
  await Deno.mkdir(`${store}/bench/${name}`, { recursive: true });
  const sha256 = await _writeRandomFile(storeFile, bytes);
  const url = `http://127.0.0.1:${ctx.port}/addons/${objectKey}`;
  await _sh(`curl -sSf -o /dev/null -T ${_q(storeFile)} ${_q(url)}`);
  const version = `1.0.0-${name}`;
  const assignment = {
    addon_id: "bench",
    version,
    delivery: "pushed_artifact",
    supervision: "agent_sidecar",
    binary_path: "/usr/lib/bench/bench",
    artifact_object_key: objectKey,
    artifact_sha256: sha256,
    artifact_signature: await signStatement(ctx.key.secret, {
      addon_id: "bench",
      version,
      target: platformString(hostPlatform()),
      sha256,
    }),
  };
  const common = {
    trust: { public_keys: [ctx.key.publicBase64], require_signature: true },
    limits: { max_artifact_bytes: bytes + MIB },
  };
  const s3Store = {
    kind: "s3",
    bucket: "addons",
    region: "us-east-1",
    endpoint: `http://127.0.0.1:${ctx.port}`,
    force_path_style: true,
  };
  let n = 0;
  const runDir = async (): Promise<string> => {
    const d = `${ctx.dir}/run-${name}-${n++}`;
    await Deno.mkdir(d, { mode: 0o755 });
    await Deno.chmod(d, 0o755);
    return d;
  };
  return {
    objectKey,
    storeFile,
    url,
    sha256,
    runDir,
    sync: async (storeCfg = s3Store) => {
      const d = await runDir();
      try {
        const cfg = await writeConfig(d, { object_store: storeCfg, ...common });
        await writeAssignments(d, [assignment], "bench");
        await _settle();
        return await _runSync(cfg, ctx.haveTime);
      } finally {
        await Deno.remove(d, { recursive: true });
      }
    },
    remove: async () => {
      await Deno.remove(storeFile);
      await Deno.remove(`${ctx.dir}/s3data/addons/bench/${name}`, { recursive: true }).catch(
        () => {},
      );
    },
  };
}

async function _benchFixed(ctx: _Ctx): Promise<_FixedResult> {
  const a = await _publish(ctx, "1KiB", 1024);
  const r: _FixedResult = { s3Sync: [], fsSync: [], s3RssKiB: [], fsRssKiB: [] };
  for (let round = 0; round < ctx.rounds; round++) {
    const s3 = await a.sync();
    r.s3Sync.push(s3.ms);
    if (s3.rssKiB !== null) r.s3RssKiB.push(s3.rssKiB);
    const fs = await a.sync({ kind: "filesystem", root: `${ctx.dir}/store` });
    r.fsSync.push(fs.ms);
    if (fs.rssKiB !== null) r.fsRssKiB.push(fs.rssKiB);
  }
  await a.remove();
  return r;
}

async function _benchSize(ctx: _Ctx, mib: number): Promise<_SizeResult> {
  const a = await _publish(ctx, `${mib}MiB`, mib * MIB);
  const r: _SizeResult = {
    mib,
    s3Sync: [],
    opFetch: [],
    opSync: [],
    opTotal: [],
    curl: [],
    fsSync: [],
    cpHash: [],
    s3RssKiB: [],
    fsRssKiB: [],
  };
  for (let round = 0; round < ctx.rounds; round++) {
    // 1. sync from S3
    const s3Run = await a.sync();
    r.s3Sync.push(s3Run.ms);
    if (s3Run.rssKiB !== null) r.s3RssKiB.push(s3Run.rssKiB);

    // 2. the operator: curl | tee FILE | openssl, then sync FILE from a filesystem store
    const op = await a.runDir();
    try {
      const opFile = `${op}/store/${a.objectKey}`;
      await Deno.mkdir(opFile.slice(0, opFile.lastIndexOf("/")), { recursive: true });
      await _settle();
      const fetch = await _timed(
        `set -o pipefail; curl -sSf ${_q(a.url)} | tee ${_q(opFile)} | openssl dgst -sha256`,
      );
      if (!fetch.out.includes(a.sha256)) throw new Error(`curl|tee|openssl printed ${fetch.out}`);
      const opSync = await a.sync({ kind: "filesystem", root: `${op}/store` });
      r.opFetch.push(fetch.ms);
      r.opSync.push(opSync.ms);
      r.opTotal.push(fetch.ms + opSync.ms);
    } finally {
      await Deno.remove(op, { recursive: true });
    }

    // 3. the floor: curl -o /dev/null
    await _settle();
    r.curl.push((await _timed(`curl -sSf -o /dev/null ${_q(a.url)}`)).ms);

    // 4. sync from the filesystem store
    const fsRun = await a.sync({ kind: "filesystem", root: `${ctx.dir}/store` });
    r.fsSync.push(fsRun.ms);
    if (fsRun.rssKiB !== null) r.fsRssKiB.push(fsRun.rssKiB);

    // 5. cp + openssl dgst
    const cp = await a.runDir();
    try {
      const copy = `${cp}/artifact`;
      await _settle();
      const t = await _timed(
        `cp ${_q(a.storeFile)} ${_q(copy)} && openssl dgst -sha256 ${_q(copy)}`,
      );
      if (!t.out.includes(a.sha256)) throw new Error(`cp+openssl printed ${t.out}`);
      r.cpHash.push(t.ms);
    } finally {
      await Deno.remove(cp, { recursive: true });
    }
  }
  await a.remove();
  return r;
}

/** Flush every dirty page first, so no run pays for the write-back of the one before. */
async function _settle(): Promise<void> {
  await _sh("sync");
}

/** Write `bytes` random bytes to `path` 1 MiB at a time; returns their sha256. */
async function _writeRandomFile(path: string, bytes: number): Promise<string> {
  const hash = createHash("sha256");
  const buf = new Uint8Array(MIB);
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    for (let done = 0; done < bytes;) {
      const n = Math.min(MIB, bytes - done);
      const b = buf.subarray(0, n);
      for (let i = 0; i < n; i += 65536) {
        crypto.getRandomValues(b.subarray(i, Math.min(n, i + 65536)));
      }
      hash.update(b);
      for (let off = 0; off < n;) off += await f.write(b.subarray(off));
      done += n;
    }
  } finally {
    f.close();
  }
  return hash.digest("hex");
}

/** Run `sync --json` for `cfg`; wall time, and peak RSS through GNU time or /proc polling. */
async function _runSync(cfg: string, haveTime: boolean, denoFlags: string[] = []): Promise<_Run> {
  const agentArgs = [
    "run",
    "-A",
    "--quiet",
    ...denoFlags,
    MAIN_TS,
    "sync",
    "--config",
    cfg,
    "--json",
  ];
  const rssFile = `${cfg}.rss`;
  const [cmd, args] = haveTime
    ? [GNU_TIME, ["-f", "%M", "-o", rssFile, Deno.execPath(), ...agentArgs]]
    : [Deno.execPath(), agentArgs];
  const started = performance.now();
  const child = new Deno.Command(cmd, {
    args,
    cwd: REPO,
    env: S3_ENV,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const poll = haveTime ? null : _pollHwm(child.pid);
  const out = await child.output();
  const ms = performance.now() - started;
  const polled = poll ? await poll.stop() : null;
  const stdout = new TextDecoder().decode(out.stdout);
  let ok = false;
  try {
    ok = (JSON.parse(stdout) as { ok: boolean }).ok;
  } catch { /* reported below */ }
  if (out.code !== 0 || !ok) {
    throw new Error(
      `sync failed (exit ${out.code}):\n${stdout}\n${new TextDecoder().decode(out.stderr)}`,
    );
  }
  const rssKiB = haveTime ? Number((await Deno.readTextFile(rssFile)).trim()) : polled;
  return { ms, rssKiB: Number.isFinite(rssKiB) ? rssKiB : null };
}

/** Poll VmHWM of `pid` every 10 ms until stopped; the last value read. */
function _pollHwm(pid: number): { stop(): Promise<number | null> } {
  let last: number | null = null;
  let running = true;
  const loop = (async () => {
    while (running) {
      try {
        const m = /VmHWM:\s+(\d+) kB/.exec(await Deno.readTextFile(`/proc/${pid}/status`));
        if (m) last = Number(m[1]);
      } catch {
        return;
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return last;
    },
  };
}

/** Run a shell pipeline (bash, for pipefail); wall time and stdout. */
async function _timed(script: string): Promise<{ ms: number; out: string }> {
  const started = performance.now();
  const out = await _sh(script);
  return { ms: performance.now() - started, out };
}

async function _sh(script: string): Promise<string> {
  const out = await new Deno.Command("bash", {
    args: ["-c", script],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  if (out.code !== 0) {
    throw new Error(`${script} failed (exit ${out.code}): ${dec.decode(out.stderr)}`);
  }
  return dec.decode(out.stdout);
}

function _q(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

async function _exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

/** Start `scripts/_s3rver_process.ts` and wait for the port it prints. */
async function _startS3rver(dataDir: string): Promise<_S3Process> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", S3RVER_TS, dataDir],
    cwd: REPO,
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const deadline = setTimeout(() => child.kill("SIGTERM"), 30_000);
  try {
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`s3rver exited before printing its port: ${text}`);
      text += value;
    }
  } catch (e) {
    clearTimeout(deadline);
    child.stdin.close();
    await child.status;
    throw e;
  }
  clearTimeout(deadline);
  reader.releaseLock();
  child.stdout.cancel().catch(() => {});
  const port = (JSON.parse(text.slice(0, text.indexOf("\n"))) as { port: number }).port;
  return {
    port,
    stop: async () => {
      await child.stdin.close().catch(() => {});
      const timer = setTimeout(() => child.kill("SIGTERM"), 5_000);
      await child.status;
      clearTimeout(timer);
    },
  };
}

function _best(xs: number[]): number {
  return xs.length === 0 ? NaN : Math.min(...xs);
}

function _secs(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`;
}

function _verdict(value: number, target: number): string {
  return value <= target ? "✔" : "✘";
}

function _report(
  fixed: _FixedResult,
  results: _SizeResult[],
  rounds: number,
  haveTime: boolean,
): string[] {
  const lines = [
    `delivery: s3rver in its own process on 127.0.0.1; best of ${rounds} alternating rounds; peak RSS ${
      haveTime ? "from /usr/bin/time" : "from polling VmHWM"
    }`,
    "",
    `  ${"size".padEnd(9)}${"sync s3".padStart(9)}${"curl|tee|openssl + sync file".padStart(32)}${
      "curl -o /dev/null".padStart(19)
    }${"sync fs".padStart(9)}${"cp+openssl".padStart(12)}${"peak RSS s3/fs".padStart(17)}`,
    `  ${"1 KiB".padEnd(9)}${_secs(_best(fixed.s3Sync)).padStart(9)}${"".padStart(32)}${
      "".padStart(19)
    }${_secs(_best(fixed.fsSync)).padStart(9)}${"".padStart(12)}${
      `${_mib(Math.max(...fixed.s3RssKiB))}/${_mib(Math.max(...fixed.fsRssKiB))} MiB`.padStart(17)
    }   ← fixed cost of a sync (start, imports, S3 client, stage)`,
  ];
  for (const r of results) {
    const k = r.opTotal.indexOf(_best(r.opTotal));
    const op = `${_secs(r.opTotal[k] ?? NaN)} (${((r.opFetch[k] ?? NaN) / 1000).toFixed(2)} + ${
      ((r.opSync[k] ?? NaN) / 1000).toFixed(2)
    })`;
    const rss = `${_mib(Math.max(...r.s3RssKiB))}/${_mib(Math.max(...r.fsRssKiB))} MiB`;
    lines.push(
      `  ${`${r.mib} MiB`.padEnd(9)}${_secs(_best(r.s3Sync)).padStart(9)}${op.padStart(32)}${
        _secs(_best(r.curl)).padStart(19)
      }${_secs(_best(r.fsSync)).padStart(9)}${_secs(_best(r.cpHash)).padStart(12)}${
        rss.padStart(17)
      }`,
    );
  }
  lines.push("");
  for (const r of results) {
    const s3 = _best(r.s3Sync);
    const a = s3 / _best(r.opTotal);
    const b = s3 / _best(r.curl);
    const c = _best(r.fsSync) / _best(r.cpHash);
    const rss = Math.max(...r.s3RssKiB, ...r.fsRssKiB) / 1024;
    const size = `${r.mib} MiB`.padEnd(9);
    lines.push(
      `  ${size}(a) sync s3 ÷ curl|tee|openssl + sync file  ${
        a.toFixed(2).padStart(6)
      }   target ≤ ${TARGETS.operator.toFixed(1)}  ${_verdict(a, TARGETS.operator)}`,
      `  ${"".padEnd(9)}(b) sync s3 ÷ curl -o /dev/null            ${
        b.toFixed(2).padStart(6)
      }   target ≤ ${TARGETS.floor.toFixed(1)}  ${_verdict(b, TARGETS.floor)}`,
      `  ${"".padEnd(9)}(c) sync fs ÷ cp + openssl dgst            ${
        c.toFixed(2).padStart(6)
      }   target ≤ ${TARGETS.filesystem.toFixed(1)}  ${_verdict(c, TARGETS.filesystem)}`,
      `  ${"".padEnd(9)}(d) peak RSS of sync (s3, fs)          ${
        `${rss.toFixed(0)} MiB`.padStart(10)
      }   target ≤ ${TARGETS.rssMiB} MiB  ${_verdict(rss, TARGETS.rssMiB)}`,
    );
  }
  return lines;
}

function _samples(results: _SizeResult[]): string[] {
  const lines = ["  samples (s; RSS in MiB):"];
  for (const r of results) {
    const row = (name: string, xs: number[], div: number) =>
      `  ${`${r.mib} MiB`.padEnd(9)}${name.padEnd(20)}${
        xs.map((x) => (x / div).toFixed(2)).join("  ")
      }`;
    lines.push(
      row("sync s3", r.s3Sync, 1000),
      row("curl|tee|openssl", r.opFetch, 1000),
      row("sync file", r.opSync, 1000),
      row("curl -o /dev/null", r.curl, 1000),
      row("sync fs", r.fsSync, 1000),
      row("cp+openssl", r.cpHash, 1000),
      row("RSS s3", r.s3RssKiB, 1024),
      row("RSS fs", r.fsRssKiB, 1024),
    );
  }
  return lines;
}

function _mib(kib: number): string {
  return Number.isFinite(kib) ? (kib / 1024).toFixed(0) : "?";
}

/** Shared with the bundle benchmark (`bench_bundles.ts`). */
export {
  _exists as exists,
  _runSync as runSync,
  _settle as settle,
  _timed as timed,
  _writeRandomFile as writeRandomFile,
  GNU_TIME,
};

if (import.meta.main) {
  const verbose = Deno.args.includes("--verbose");
  const sizes = Deno.args.map(Number).filter((n) => Number.isFinite(n) && n > 0);
  const lines = await benchDelivery({ ...(sizes.length ? { sizesMiB: sizes } : {}), verbose });
  for (const line of lines) console.log(line);
}
