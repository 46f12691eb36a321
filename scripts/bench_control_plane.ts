/**
 * Benchmark of the reference control plane: 1,000 distinct agents poll a
 * loopback server once (`200`, the whole document) and again with
 * `If-None-Match` (`304`), 50 requests in flight at a time.
 *
 * @example Run it
 * ```sh
 * deno run -A scripts/bench_control_plane.ts
 * ```
 *
 * @module
 */

import { startControlPlane } from "../src/control_plane/server.ts";
import { captureLog } from "../src/common/log.ts";

const AGENTS = 1000;
const CONCURRENCY = 50;
const PLATFORMS = [["linux", "amd64"], ["linux", "arm64"]] as const;

/** Run the benchmark and return printable result lines. */
export async function benchControlPlane(): Promise<string[]> {
  const dir = await Deno.makeTempDir({ prefix: "bench-cp-" });
  const restore = captureLog(() => {});
  const cp = await startControlPlane({ catalogPath: await _writeCatalog(dir) }).catch((e) => {
    restore();
    throw e;
  });
  try {
    const agents = Array.from({ length: AGENTS }, (_, i) => {
      const [os, arch] = PLATFORMS[i % PLATFORMS.length] ?? PLATFORMS[0];
      return `${cp.url}/v1/agents/agent-${String(i).padStart(4, "0")}/addons?os=${os}&arch=${arch}`;
    });
    const etags = new Array<string>(AGENTS).fill("");
    const first = await _run(AGENTS, async (i) => {
      const res = await fetch(agents[i] ?? "");
      await res.arrayBuffer();
      etags[i] = res.headers.get("etag") ?? "";
      return res.status;
    });
    const second = await _run(AGENTS, async (i) => {
      const res = await fetch(agents[i] ?? "", { headers: { "if-none-match": etags[i] ?? "" } });
      await res.arrayBuffer();
      return res.status;
    });
    return [
      `control plane: ${AGENTS} agents, ${CONCURRENCY} in flight, loopback`,
      _line("first poll (200)", first, 200),
      _line("conditional poll (304)", second, 304),
    ];
  } finally {
    await cp.close();
    restore();
    await Deno.remove(dir, { recursive: true });
  }
}

interface _Result {
  ms: number;
  statuses: Map<number, number>;
}

async function _run(n: number, fn: (i: number) => Promise<number>): Promise<_Result> {
  const statuses = new Map<number, number>();
  let next = 0;
  const started = performance.now();
  const worker = async (): Promise<void> => {
    while (next < n) {
      const status = await fn(next++);
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return { ms: performance.now() - started, statuses };
}

function _line(name: string, r: _Result, want: number): string {
  const got = r.statuses.get(want) ?? 0;
  const others = [...r.statuses].filter(([s]) => s !== want).map(([s, c]) => `${c}×${s}`);
  const rate = Math.round(got / (r.ms / 1000));
  return `  ${name.padEnd(24)} ${String(rate).padStart(7)} polls/s  (${got}×${want} in ${
    r.ms.toFixed(0)
  } ms${others.length ? `; unexpected: ${others.join(", ")}` : ""})`;
}

async function _writeCatalog(dir: string): Promise<string> {
  const packages: Record<string, unknown> = {};
  for (let p = 0; p < 5; p++) {
    const name = `addon-${p}`;
    packages[name] = {
      version: `1.${p}.0`,
      delivery: "pushed_artifact",
      supervision: "agent_sidecar",
      binary_path: `/usr/lib/${name}/${name}`,
      args: ["--interval", "10s"],
      env: { MODE: "fast" },
      config: { targets: ["10.0.0.1", "10.0.0.2"] },
      artifacts: {
        "linux/amd64": {
          object_key: `${name}/1.${p}.0/linux-amd64/${name}`,
          sha256: p.toString(16).repeat(64),
          signature: btoa(String.fromCharCode(...new Uint8Array(64).fill(p))),
        },
      },
    };
  }
  const catalog = {
    packages,
    assignments: {
      default: Object.keys(packages),
      agents: { "agent-0000": ["addon-0", { addon_id: "addon-1", enabled: false }] },
    },
  };
  const path = `${dir}/catalog.json`;
  await Deno.writeTextFile(path, JSON.stringify(catalog, null, 2));
  return path;
}

if (import.meta.main) {
  for (const line of await benchControlPlane()) console.log(line);
}
