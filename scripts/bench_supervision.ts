/**
 * Supervision figures for `deno task bench`: the agent's CPU and RSS while
 * it supervises 50 idle sidecars, a no-op reconcile of 500 staged
 * assignments, crash-to-restart latency at the 1 s backoff step, and the
 * agent's CPU per control-plane poll answered 304.
 *
 * @example
 * ```ts
 * for (const line of await benchSupervision()) console.log(line);
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import { decodeDocument } from "../src/protocol/assignment.ts";
import { decodeConfig } from "../src/config/config.ts";
import { startControlPlane } from "../src/control_plane/server.ts";
import { configureLog } from "../src/common/log.ts";
import { deliveryContext } from "../src/delivery/delivery.ts";
import { storeDeliverer } from "../src/delivery/deliverer.ts";
import { hostPlatform } from "../src/protocol/platform.ts";
import { Reconciler, runnersFor } from "../src/agent/reconciler.ts";
import { openRuntimeRoot } from "../src/runtime/runtime_root.ts";
import { Sidecar } from "../src/supervise/sidecar.ts";
import { emptyState } from "../src/runtime/state.ts";
import { commandSystemctl, SystemdUnits } from "../src/supervise/systemctl.ts";

const MAIN_TS = new URL("../main.ts", import.meta.url).pathname;
const TICKS = 100;
const SLEEP = Deno.realPathSync("/bin/sleep");

function _cpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / TICKS;
}

function _rssMiB(pid: number): { rss: number; hwm: number } {
  const s = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, "m").exec(s)?.[1] ?? 0);
  return { rss: kb("VmRSS") / 1024, hwm: kb("VmHWM") / 1024 };
}

async function _waitFor(
  fn: () => Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function _agent(dir: string, cfg: Record<string, unknown>): Promise<Deno.ChildProcess> {
  await Deno.writeTextFile(`${dir}/agent.json`, JSON.stringify(cfg));
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", MAIN_TS, "run", "--config", `${dir}/agent.json`],
    stdout: "null",
    stderr: "null",
    stdin: "null",
  }).spawn();
}

async function _stateCount(root: string, state: string): Promise<number> {
  try {
    const s = JSON.parse(await Deno.readTextFile(`${root}/state.json`));
    return Object.values(s.addons as Record<string, { state: string }>).filter((a) =>
      a.state === state
    ).length;
  } catch {
    return 0;
  }
}

async function _idleSidecars(dir: string, seconds: number): Promise<string[]> {
  const n = 50;
  const addons = Array.from({ length: n }, (_, i) => ({
    addon_id: `idle-${i}`,
    version: "1",
    delivery: "os_package",
    supervision: "agent_sidecar",
    binary_path: SLEEP,
    args: ["100000"],
  }));
  await Deno.writeTextFile(
    `${dir}/assignments.json`,
    JSON.stringify({ config_version: "1", addons }),
  );
  await Deno.mkdir(`${dir}/root`, { mode: 0o755 });
  const child = await _agent(dir, {
    agent_id: "bench",
    runtime_root: `${dir}/root`,
    source: { kind: "file", path: `${dir}/assignments.json` },
    object_store: { kind: "filesystem", root: dir },
    // A host binary the source names runs only when allowed (SPEC 12).
    host_binaries: { allow: [SLEEP] },
  });
  try {
    await _waitFor(
      async () => (await _stateCount(`${dir}/root`, "running")) === n,
      60_000,
      "50 sidecars running",
    );
    await new Promise((r) => setTimeout(r, 10_000)); // past start-up work and its garbage
    const cpu0 = _cpuSeconds(child.pid);
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const cpu = (_cpuSeconds(child.pid) - cpu0) / ((performance.now() - t0) / 1000) * 100;
    const mem = _rssMiB(child.pid);
    return [
      `50 idle sidecars for ${seconds} s: agent CPU ${
        cpu.toFixed(3)
      } % of a core (target < 0.2 %) ${cpu < 0.2 ? "✔" : "✘"}`,
      `  agent RSS ${mem.rss.toFixed(1)} MiB, peak ${mem.hwm.toFixed(1)} MiB (target ≤ 80 MiB) ${
        mem.hwm <= 80 ? "✔" : "✘"
      }`,
    ];
  } finally {
    child.kill("SIGTERM");
    await child.status;
  }
}

async function _noopReconcile(dir: string): Promise<string[]> {
  const n = 500;
  const platform = hostPlatform();
  await Deno.mkdir(`${dir}/store`);
  const body = "#!/bin/sh\nexit 0\n";
  const sha = createHash("sha256").update(body).digest("hex");
  const addons = [];
  for (let i = 0; i < n; i++) {
    await Deno.writeTextFile(`${dir}/store/h${i}`, body);
    addons.push({
      addon_id: `helper-${i}`,
      version: "1",
      delivery: "pushed_artifact",
      supervision: "ephemeral_helper",
      artifact_object_key: `h${i}`,
      artifact_sha256: sha,
    });
  }
  const doc = { config_version: "1", addons };
  await Deno.mkdir(`${dir}/root`, { mode: 0o755 });
  const cfg = decodeConfig({
    agent_id: "bench",
    runtime_root: `${dir}/root`,
    source: { kind: "file", path: `${dir}/a.json` },
    object_store: { kind: "filesystem", root: `${dir}/store` },
  }, `${dir}/agent.json`);
  const root = await openRuntimeRoot(cfg.runtime_root);
  const state = emptyState();
  const rec = new Reconciler({
    cfg,
    layout: root,
    deliverer: storeDeliverer(await deliveryContext(cfg, root, platform)),
    platform,
    state,
    runners: runnersFor({ units: new SystemdUnits(`${dir}`, commandSystemctl("true")) }),
    onChange: () => {},
  });
  try {
    await rec.apply(decodeDocument(doc, platform).entries);
    await _waitFor(
      () => Promise.resolve(Object.values(state.addons).every((a) => a.state === "completed")),
      120_000,
      "500 helpers completed",
    );
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const entries = decodeDocument(doc, platform).entries;
      const t0 = performance.now();
      await rec.apply(entries);
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    const median = times[2]!;
    return [
      `no-op reconcile of ${n} staged assignments: ${
        median.toFixed(1)
      } ms median of 5 (target < 50 ms) ${median < 50 ? "✔" : "✘"}`,
    ];
  } finally {
    await rec.stopAll();
    root.release();
  }
}

async function _restartLatency(): Promise<string[]> {
  const ratios: number[] = [];
  for (let i = 0; i < 5; i++) {
    let exitedAt = 0;
    let ratio = 0;
    await new Promise<void>((resolve) => {
      let starts = 0;
      const sc = new Sidecar(
        { addon_id: "crash", version: "1", binary: "/bin/sh", args: ["-c", "exit 1"], env: {} },
        (e) => {
          if (e.type === "exited" && starts === 1) exitedAt = performance.now();
          if (e.type === "started") {
            starts++;
            if (starts === 2) {
              ratio = (performance.now() - exitedAt) / 1000;
              sc.stop().then(resolve);
            }
          }
        },
      );
      sc.start();
    });
    ratios.push(ratio);
  }
  ratios.sort((a, b) => a - b);
  const median = ratios[2]!;
  return [
    `crash-to-restart at the 1 s backoff step ÷ 1 s: ${
      median.toFixed(3)
    } median of 5 (target ≤ 1.05) ${median <= 1.05 ? "✔" : "✘"}`,
  ];
}

async function _pollCost(dir: string, seconds: number): Promise<string[]> {
  await Deno.writeTextFile(
    `${dir}/catalog.json`,
    JSON.stringify({
      packages: { t: { version: "1", supervision: "config_toggle", config: { a: 1 } } },
      assignments: { default: ["t"] },
    }),
  );
  const cp = await startControlPlane({ catalogPath: `${dir}/catalog.json` });
  await Deno.mkdir(`${dir}/root`, { mode: 0o755 });
  const child = await _agent(dir, {
    agent_id: "bench",
    runtime_root: `${dir}/root`,
    // The shortest interval SPEC 12 allows.
    source: { kind: "control_plane", url: cp.url, poll_interval_s: 1 },
    object_store: { kind: "filesystem", root: dir },
  });
  try {
    await _waitFor(
      async () => (await _stateCount(`${dir}/root`, "running")) === 1,
      30_000,
      "toggle running",
    );
    await new Promise((r) => setTimeout(r, 1000));
    const cpu0 = _cpuSeconds(child.pid);
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const cpu = _cpuSeconds(child.pid) - cpu0;
    const polls = (performance.now() - t0) / 1000;
    const perPoll = cpu / polls * 1000;
    return [
      `agent CPU per poll answered 304: ${perPoll.toFixed(2)} ms (≈${
        Math.round(polls)
      } polls in ${seconds} s, idle cost included; target < 2 ms) ${perPoll < 2 ? "✔" : "✘"}`,
    ];
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await cp.close();
  }
}

async function _inTemp<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "addon-agent-bench-" });
  await Deno.chmod(dir, 0o755);
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Run the supervision benchmarks; returns printable lines. */
export async function benchSupervision(opts: { idleSeconds?: number } = {}): Promise<string[]> {
  configureLog({ level: "error" });
  return [
    ...await _inTemp((d) => _idleSidecars(d, opts.idleSeconds ?? 30)),
    ...await _inTemp(_noopReconcile),
    ...await _restartLatency(),
    ...await _inTemp((d) => _pollCost(d, 20)),
  ];
}

if (import.meta.main) {
  for (const line of await benchSupervision()) console.log(line);
}
