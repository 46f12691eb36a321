/**
 * `deno task bench isolation` (SPEC 13, issue #10): what add-on isolation
 * costs.
 *
 * - Start-to-running of one sidecar with its own uid and cgroup ÷ without
 *   isolation, as ratios of medians: to the add-on's `exec` (the pid runs the
 *   add-on's binary: the cost of the `sh` + `setpriv` steps) and to the
 *   `running` event (the 2 s readiness of SPEC 10 included). Target ≤ 1.10.
 * - 50 isolated idle sidecars under the real agent (per-add-on users and
 *   cgroups): agent CPU < 0.2 % of a core, RSS ≤ 80 MiB.
 *
 * Needs root and a writable cgroup v2; otherwise it says so and skips.
 *
 * @example
 * ```sh
 * deno task bench isolation
 * ```
 *
 * @module
 */

import { configureLog } from "../src/common/log.ts";
import { type LaunchSpec, Sidecar, type SidecarTiming } from "../src/supervise/sidecar.ts";
import { type CgroupTree, openCgroupTree } from "../src/supervise/cgroup.ts";

const MAIN_TS = new URL("../main.ts", import.meta.url).pathname;
const TICKS = 100;
const SLEEP = Deno.realPathSync("/bin/sleep");

function _median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function _exe(pid: number): string | null {
  try {
    return Deno.readLinkSync(`/proc/${pid}/exe`);
  } catch {
    return null;
  }
}

/** One start: ms to the add-on's exec and to `running`. */
async function _start(spec: LaunchSpec, timing: SidecarTiming): Promise<[number, number]> {
  const t0 = performance.now();
  let pid = 0;
  let execAt = 0;
  let runningAt = 0;
  const sc = new Sidecar(spec, (e) => {
    if (e.type === "started") pid = e.pid;
    if (e.type === "running") runningAt = performance.now();
  }, timing);
  sc.start();
  while (execAt === 0) {
    if (pid !== 0 && _exe(pid) === SLEEP) execAt = performance.now();
    else await new Promise((r) => setTimeout(r, 0));
  }
  while (runningAt === 0) await new Promise((r) => setTimeout(r, 5));
  await sc.stop();
  return [execAt - t0, runningAt - t0];
}

async function _startRatio(tree: CgroupTree, trials: number): Promise<string[]> {
  const timing: SidecarTiming = {
    backoffInitialMs: 60_000,
    backoffMaxMs: 60_000,
    resetAfterMs: 60_000,
    readyAfterMs: 2_000,
    graceMs: 1_000,
  };
  const base: LaunchSpec = {
    addon_id: "bench-iso",
    version: "1",
    binary: SLEEP,
    args: ["300"],
    env: { PATH: "/usr/bin:/bin" },
    cwd: "/",
  };
  const cg = await tree.prepare("bench-iso");
  const isolated: LaunchSpec = {
    ...base,
    confine: { uid: 61999, gid: 61999, capabilities: [], procsFile: cg.procsFile },
    cgroup: cg,
  };
  const plain: [number, number][] = [];
  const iso: [number, number][] = [];
  for (let i = 0; i < trials; i++) {
    plain.push(await _start(base, timing));
    iso.push(await _start(isolated, timing));
  }
  cg.remove();
  const pe = _median(plain.map((x) => x[0])), ie = _median(iso.map((x) => x[0]));
  const pr = _median(plain.map((x) => x[1])), ir = _median(iso.map((x) => x[1]));
  return [
    `start to running (SPEC 10 readiness, median of ${trials}): isolated ${ir.toFixed(1)} ms, ` +
    `plain ${pr.toFixed(1)} ms: ratio ${(ir / pr).toFixed(3)} (target ≤ 1.10) ${
      ir / pr <= 1.10 ? "✔" : "✘"
    }`,
    `  start to the add-on's exec: isolated ${ie.toFixed(2)} ms, plain ${pe.toFixed(2)} ms ` +
    `(ratio ${(ie / pe).toFixed(2)}: sh joins the cgroup, setpriv drops, sh names the ` +
    "environment back, then exec)",
  ];
}

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

async function _idle(dir: string, seconds: number, isolate = true): Promise<string[]> {
  const n = 50;
  const addons = Array.from({ length: n }, (_, i) => ({
    addon_id: `idle-${i}`,
    version: "1",
    delivery: "os_package",
    supervision: "agent_sidecar",
    binary_path: SLEEP,
    args: ["100000"],
  }));
  await Deno.mkdir(dir, { recursive: true, mode: 0o755 });
  await Deno.writeTextFile(
    `${dir}/assignments.json`,
    JSON.stringify({ config_version: "1", addons }),
  );
  await Deno.mkdir(`${dir}/root`, { recursive: true, mode: 0o755 });
  await Deno.writeTextFile(
    `${dir}/agent.json`,
    JSON.stringify({
      agent_id: "bench",
      runtime_root: `${dir}/root`,
      source: { kind: "file", path: `${dir}/assignments.json` },
      object_store: { kind: "filesystem", root: dir },
      // A host binary the source names runs only when allowed (SPEC 12).
      host_binaries: { allow: [SLEEP] },
      isolation: isolate
        ? { users: "per_addon", cgroup: "auto" }
        : { users: "none", cgroup: "off" },
    }),
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", MAIN_TS, "run", "--config", `${dir}/agent.json`],
    stdout: "null",
    stderr: "null",
    stdin: "null",
  }).spawn();
  try {
    const end = Date.now() + 60_000;
    let isolated = 0;
    for (;;) {
      try {
        const s = JSON.parse(await Deno.readTextFile(`${dir}/root/state.json`));
        const running = Object.values(
          s.addons as Record<string, { state: string; uid?: number; containment?: string }>,
        ).filter((a) => a.state === "running");
        isolated = running.filter((a) => a.uid !== undefined && a.containment === "cgroup").length;
        if (running.length === n) break;
      } catch { /* not yet */ }
      if (Date.now() > end) throw new Error("timed out waiting for 50 sidecars running");
      await new Promise((r) => setTimeout(r, 200));
    }
    await new Promise((r) => setTimeout(r, 10_000)); // past start-up work and its garbage
    const cpu0 = _cpuSeconds(child.pid);
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const cpu = (_cpuSeconds(child.pid) - cpu0) / ((performance.now() - t0) / 1000) * 100;
    const mem = _rssMiB(child.pid);
    return [
      `50 idle sidecars (${isolated} with own uid + cgroup) for ${seconds} s: agent CPU ${
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

/** Run the isolation benchmarks; returns printable lines. */
export async function benchIsolation(
  opts: { trials?: number; idleSeconds?: number } = {},
): Promise<string[]> {
  configureLog({ level: "error" });
  if (Deno.uid() !== 0) return ["skipped: needs root (per-add-on users)"];
  const dir = await Deno.makeTempDir({ prefix: "addon-agent-bench-iso-" });
  await Deno.chmod(dir, 0o755);
  const tree = await openCgroupTree(dir);
  if (!tree) return ["skipped: no writable cgroup v2"];
  try {
    return [
      ...await _startRatio(tree, opts.trials ?? 7),
      ...await _idle(dir, opts.idleSeconds ?? 30),
      "  the same without isolation, for comparison on this (shared) machine:",
      ...(await _idle(`${dir}/plain`, opts.idleSeconds ?? 30, false)).map((l) => `  ${l}`),
    ];
  } finally {
    tree.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  for (const line of await benchIsolation()) console.log(line);
}
