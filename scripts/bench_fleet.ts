/**
 * `deno task bench fleet`: the NATS fleet figures of issue 11, measured in
 * one run on a local nats-server (`/usr/sbin/nats-server`, its own process):
 *
 * 1. **Push to a fleet**: `BENCH_FLEET_AGENTS` (default 5,000) agents'
 *    `nats` sources (the real `NatsSource`, each on its own connection, all
 *    in this process), one publish that changes every agent's document, and
 *    the time until each agent has it (p50, p99; target p99 ≤ 2 s); the
 *    server's RSS per agent (target ≤ 50 KB). Beside it, what HTTP polling
 *    every 30 s implies for the same fleet: staleness and request rate.
 * 2. **Artifact read**: a `BENCH_FLEET_MIB` (default 1,024) MiB artifact
 *    delivered by `addon-agent sync` from the NATS object store and from
 *    s3rver (its own process): the time ratio NATS ÷ S3 (target ≤ 1.0) and
 *    the agent's peak RSS (target ≤ 96 MiB).
 *
 * @example
 * ```sh
 * deno task bench fleet
 * BENCH_FLEET_AGENTS=1000 BENCH_FLEET_MIB=256 deno task bench fleet
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import { decodeConfig } from "../src/config/mod.ts";
import { NatsSource } from "../src/source/nats.ts";

const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const MAIN_TS = `${REPO}/main.ts`;
const NATS_SERVER = "/usr/sbin/nats-server";
const GNU_TIME = "/usr/bin/time";
const S3_ENV = {
  AWS_ACCESS_KEY_ID: "S3RVER",
  AWS_SECRET_ACCESS_KEY: "S3RVER",
  AWS_EC2_METADATA_DISABLED: "true",
};
const TARGETS = { p99Ms: 2000, rssPerAgentKB: 50, ratio: 1.0, rssMiB: 96 } as const;

function _freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

interface _Server {
  url: string;
  pid: number;
  rssKiB(): Promise<number>;
  stop(): Promise<void>;
}

async function _startNats(dir: string): Promise<_Server> {
  const port = _freePort();
  const child = new Deno.Command(NATS_SERVER, {
    args: ["-js", "-sd", `${dir}/js`, "-a", "127.0.0.1", "-p", String(port)],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch {
      if (Date.now() > deadline) throw new Error("nats-server did not start");
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    url: `nats://127.0.0.1:${port}`,
    pid: child.pid,
    rssKiB: async () =>
      Number(/VmRSS:\s+(\d+)/.exec(await Deno.readTextFile(`/proc/${child.pid}/status`))?.[1]),
    stop: async () => {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

function _pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}

function _verdict(ok: boolean): string {
  return ok ? "ok" : "MISSED";
}

async function _fleet(dir: string, agents: number): Promise<string[]> {
  const server = await _startNats(dir);
  // The real publisher, in a process of its own: a catalog naming every agent, rendered and
  // written by publishCatalog whenever a version is sent to it.
  const publisher = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      `${REPO}/scripts/_fleet_publisher.ts`,
      server.url,
      String(agents),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const toPublisher = publisher.stdin.getWriter();
  const fromPublisher = publisher.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  const publish = async (version: string): Promise<number> => {
    await toPublisher.write(new TextEncoder().encode(`${version}\n`));
    while (!pending.includes("\n")) {
      const { value, done } = await fromPublisher.read();
      if (done) throw new Error("the publisher exited");
      pending += value;
    }
    const line = pending.slice(0, pending.indexOf("\n"));
    pending = pending.slice(pending.indexOf("\n") + 1);
    return Number(line.split(" ")[1]);
  };
  const sources: NatsSource[] = [];
  try {
    await publish("1");
    const rssBefore = await server.rssKiB();
    const got = new Array<number>(agents).fill(NaN);
    let t0 = Infinity;
    const startConnect = performance.now();
    for (let i = 0; i < agents; i += 250) {
      await Promise.all(Array.from({ length: Math.min(250, agents - i) }, async (_, j) => {
        const n = i + j;
        const id = `a${n}`;
        const cfg = decodeConfig({
          agent_id: id,
          source: { kind: "nats", bucket: "fleet" },
          object_store: { kind: "nats" },
          nats: { servers: [server.url] },
        }, `${dir}/agent.json`);
        const source = NatsSource.open(cfg);
        sources.push(source);
        source.watch(() => {
          if (t0 === Infinity) return;
          source.poll().then((r) => {
            if (r.kind === "document" && Number.isNaN(got[n]!)) got[n] = performance.now() - t0;
          }).catch(() => {});
        });
        await source.poll();
      }));
    }
    const connectS = (performance.now() - startConnect) / 1000;
    await new Promise((r) => setTimeout(r, 2000));
    const rssAfter = await server.rssKiB();
    const perAgentKB = ((rssAfter - rssBefore) * 1024) / agents / 1000;

    t0 = performance.now();
    const publishMs = await publish("2");
    const deadline = performance.now() + 30_000;
    while (got.some((x) => Number.isNaN(x)) && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const arrived = got.filter((x) => !Number.isNaN(x));
    const p50 = _pct(arrived, 50);
    const p99 = arrived.length === agents ? _pct(arrived, 99) : Infinity;
    const pollS = 30;
    return [
      `fleet: ${agents} agents (NatsSource each on its own connection, all in this process), nats-server 2.9 on 127.0.0.1`,
      `  connected and read in ${
        connectS.toFixed(1)
      } s; the publisher wrote ${agents} changed documents in ${(publishMs / 1000).toFixed(2)} s`,
      `  time until each agent had its new document (from the publish's start):`,
      `    p50 ${p50.toFixed(0)} ms, p99 ${
        Number.isFinite(p99) ? p99.toFixed(0) : "∞"
      } ms (${arrived.length}/${agents} arrived)   target p99 ≤ ${TARGETS.p99Ms} ms  ${
        _verdict(p99 <= TARGETS.p99Ms)
      }`,
      `    (the publisher runs in its own process; it, the server and the ${agents} clients share this host's 2 cores)`,
      `  server RSS per agent: ${perAgentKB.toFixed(1)} KB (${(rssBefore / 1024).toFixed(0)} → ${
        (rssAfter / 1024).toFixed(0)
      } MiB)   target ≤ ${TARGETS.rssPerAgentKB} KB  ${
        _verdict(perAgentKB <= TARGETS.rssPerAgentKB)
      }`,
      `  the same fleet polling HTTP every ${pollS} s (±20 %): staleness mean ${
        pollS / 2
      } s, p99 ≈ ${(pollS * 0.99).toFixed(0)} s; ${
        (agents / pollS).toFixed(0)
      } requests/s, nearly all "nothing changed"`,
      `  push ÷ polling, p50 staleness: ${(p50 / 1000 / (pollS / 2)).toFixed(4)}`,
    ];
  } finally {
    await Promise.all(sources.map((s) => s.closed()));
    await toPublisher.close().catch(() => {});
    await fromPublisher.cancel().catch(() => {});
    await publisher.status;
    await server.stop();
  }
}

async function _randomFile(path: string, bytes: number): Promise<string> {
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  const hash = createHash("sha256");
  const b = new Uint8Array(4 << 20);
  try {
    for (let done = 0; done < bytes;) {
      const n = Math.min(b.length, bytes - done);
      for (let i = 0; i < n; i += 65536) {
        crypto.getRandomValues(b.subarray(i, Math.min(n, i + 65536)));
      }
      hash.update(b.subarray(0, n));
      for (let off = 0; off < n;) off += await f.write(b.subarray(off, n));
      done += n;
    }
  } finally {
    f.close();
  }
  return hash.digest("hex");
}

async function _run(args: string[], env: Record<string, string> = {}): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", MAIN_TS, ...args],
    env: { ...S3_ENV, ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (out.code !== 0) {
    throw new Error(`${args.join(" ")}: exit ${out.code}\n${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** `sync` of `cfg`: wall time and peak RSS (GNU time). */
async function _sync(cfg: string): Promise<{ ms: number; rssKiB: number }> {
  const rss = `${cfg}.rss`;
  const t = performance.now();
  const out = await new Deno.Command(GNU_TIME, {
    args: [
      "-f",
      "%M",
      "-o",
      rss,
      Deno.execPath(),
      "run",
      "-A",
      "--quiet",
      MAIN_TS,
      "sync",
      "--config",
      cfg,
      "--json",
    ],
    env: S3_ENV,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const ms = performance.now() - t;
  if (out.code !== 0) {
    throw new Error(
      `sync failed: ${new TextDecoder().decode(out.stdout)}${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return { ms, rssKiB: Number((await Deno.readTextFile(rss)).trim()) };
}

async function _startS3rver(dir: string): Promise<{ port: number; stop(): Promise<void> }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", `${REPO}/scripts/_s3rver_process.ts`, dir],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`s3rver exited: ${text}`);
    text += value;
  }
  reader.releaseLock();
  child.stdout.cancel().catch(() => {});
  return {
    port: (JSON.parse(text.slice(0, text.indexOf("\n"))) as { port: number }).port,
    stop: async () => {
      await child.stdin.close().catch(() => {});
      await child.status;
    },
  };
}

async function _artifact(dir: string, mib: number): Promise<string[]> {
  const file = `${dir}/artifact.bin`;
  const sha256 = await _randomFile(file, mib << 20);
  const key = "big/1.0.0/big";
  const doc = JSON.stringify({
    config_version: "v1",
    addons: [{
      addon_id: "big",
      version: "1.0.0",
      delivery: "pushed_artifact",
      supervision: "agent_sidecar",
      artifact_object_key: key,
      artifact_sha256: sha256,
    }],
  });
  await Deno.writeTextFile(`${dir}/assignments.json`, doc);
  const cfg = async (name: string, extra: Record<string, unknown>) => {
    await Deno.mkdir(`${dir}/${name}`, { recursive: true, mode: 0o755 });
    const path = `${dir}/${name}.json`;
    await Deno.writeTextFile(
      path,
      JSON.stringify({
        agent_id: "bench",
        runtime_root: `${dir}/${name}`,
        source: { kind: "file", path: `${dir}/assignments.json` },
        limits: { max_artifact_bytes: (mib + 1) << 20 },
        ...extra,
      }),
    );
    return path;
  };
  const nats = await _startNats(dir);
  const s3 = await _startS3rver(`${dir}/s3`);
  try {
    await _run(["publish", "--store", `${nats.url}/artifacts`, "--key", key, file]);
    const endpoint = `http://127.0.0.1:${s3.port}`;
    await _run([
      "publish",
      "--store",
      "s3://addons/",
      "--key",
      key,
      "--endpoint",
      endpoint,
      "--force-path-style",
      file,
    ]);
    await Deno.remove(file);
    const natsRun = await _sync(
      await cfg("nats-root", {
        object_store: { kind: "nats", bucket: "artifacts" },
        nats: { servers: [nats.url] },
      }),
    );
    const s3Run = await _sync(
      await cfg("s3-root", {
        object_store: { kind: "s3", bucket: "addons", endpoint, force_path_style: true },
      }),
    );
    const ratio = natsRun.ms / s3Run.ms;
    const rss = Math.max(natsRun.rssKiB) / 1024;
    const rate = (ms: number) => `${(mib / (ms / 1000)).toFixed(0)} MiB/s`;
    return [
      `artifact: ${mib} MiB through addon-agent sync (download, sha256, stage); servers in their own processes`,
      `  NATS object store ${(natsRun.ms / 1000).toFixed(1)} s (${rate(natsRun.ms)}), peak RSS ${
        (natsRun.rssKiB / 1024).toFixed(0)
      } MiB`,
      `  s3rver            ${(s3Run.ms / 1000).toFixed(1)} s (${rate(s3Run.ms)}), peak RSS ${
        (s3Run.rssKiB / 1024).toFixed(0)
      } MiB`,
      `  NATS ÷ S3 time ${ratio.toFixed(2)}   target ≤ ${TARGETS.ratio}  ${
        _verdict(ratio <= TARGETS.ratio)
      }`,
      `  peak RSS of the NATS sync ${rss.toFixed(0)} MiB   target ≤ ${TARGETS.rssMiB} MiB  ${
        _verdict(rss <= TARGETS.rssMiB)
      }`,
    ];
  } finally {
    await s3.stop();
    await nats.stop();
  }
}

/** Run both parts; returns the lines to print. */
export async function benchFleet(): Promise<string[]> {
  try {
    await Deno.stat(NATS_SERVER);
  } catch {
    return [`skipped: ${NATS_SERVER} is not installed (apt-get install nats-server)`];
  }
  const agents = Number(Deno.env.get("BENCH_FLEET_AGENTS") ?? 5000);
  const mib = Number(Deno.env.get("BENCH_FLEET_MIB") ?? 1024);
  const dir = await Deno.makeTempDir({ prefix: "addon-agent-bench-fleet-" });
  try {
    const lines = await _fleet(`${dir}/fleet`, agents);
    await Deno.mkdir(`${dir}/artifact`);
    lines.push("", ...await _artifact(`${dir}/artifact`, mib));
    return lines;
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  for (const l of await benchFleet()) console.log(l);
}
