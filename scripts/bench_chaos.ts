/**
 * Chaos figures for `deno task bench chaos` (issue #14): a crash storm —
 * `kill -9` of the agent in the middle of rollouts of 10 add-ons, counting
 * the processes of each add-on and the litter after each restart — and
 * churn — add-ons reassigned every 2 s while the agent's RSS and open file
 * descriptors are sampled.
 *
 * @example
 * ```ts
 * for (const line of await benchChaos()) console.log(line);
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import { Layout, MAX_REMEMBERED, RACY_MS, StagedVerifier } from "../src/runtime/mod.ts";

const MAIN_TS = new URL("../main.ts", import.meta.url).pathname;
const ADDONS = 10;
const KILLS = 10;
const CHURN_ADDONS = 30;
const CHURN_S = 30;

function _sha(b: string): string {
  return createHash("sha256").update(b).digest("hex");
}

async function _waitFor(fn: () => Promise<boolean>, timeoutMs: number, what: string) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function _agent(cfgPath: string): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", MAIN_TS, "run", "--config", cfgPath],
    stdout: "null",
    stderr: Deno.env.get("CHAOS_LOG") ? "inherit" : "null",
    stdin: "null",
  }).spawn();
}

async function _state(root: string): Promise<Record<string, { state: string; version: string }>> {
  try {
    return JSON.parse(await Deno.readTextFile(`${root}/state.json`)).addons;
  } catch {
    return {};
  }
}

/** Pids of processes whose command line holds `marker`, by add-on id (`<marker>:<id>`). */
function _processesPerAddon(marker: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    let cmd = "";
    try {
      cmd = Deno.readTextFileSync(`/proc/${e.name}/cmdline`).replaceAll("\0", " ");
    } catch {
      continue;
    }
    const m = new RegExp(`${marker}:(\\S+)`).exec(cmd);
    if (m) out.set(m[1]!, (out.get(m[1]!) ?? 0) + 1);
  }
  return out;
}

async function _litter(root: string): Promise<number> {
  let n = 0;
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      if (/\.[0-9a-f]{8}\.(tmp|new)$/.test(e.name)) n++;
      if (e.isDirectory && e.name !== "data") await walk(`${d}/${e.name}`);
    }
  };
  await walk(root);
  return n;
}

async function _setup(dir: string, pollS: number): Promise<{ cfg: string; root: string }> {
  const root = `${dir}/root`;
  await Deno.chmod(dir, 0o755); // add-ons run as their own uids and must reach bin/sleep
  await Deno.mkdir(root, { mode: 0o755 });
  await Deno.chmod(root, 0o755);
  await Deno.mkdir(`${dir}/bin`);
  await Deno.symlink(await Deno.realPath("/bin/sleep"), `${dir}/bin/sleep`);
  const cfg = `${dir}/agent.json`;
  await Deno.writeTextFile(
    cfg,
    JSON.stringify({
      agent_id: "chaos",
      runtime_root: root,
      source: { kind: "file", path: `${dir}/assignments.json`, poll_interval_s: pollS },
      object_store: { kind: "filesystem", root: `${dir}/store` },
      systemd: { unit_dir: `${dir}/units` },
    }),
  );
  return { cfg, root };
}

async function _assign(dir: string, marker: string, ids: string[], n: number): Promise<void> {
  const addons = [];
  for (const id of ids) {
    const body = `#!/bin/sh\n# ${n}\n"${dir}/bin/sleep" 1000\n`;
    const key = `${id}/${n}/${id}`;
    await Deno.mkdir(`${dir}/store/${id}/${n}`, { recursive: true });
    await Deno.writeTextFile(`${dir}/store/${key}`, body);
    addons.push({
      addon_id: id,
      version: `1.0.${n}`,
      delivery: "pushed_artifact",
      supervision: "agent_sidecar",
      artifact_object_key: key,
      artifact_sha256: _sha(body),
      args: [`${marker}:${id}`],
    });
  }
  await Deno.writeTextFile(
    `${dir}/assignments.json`,
    JSON.stringify({ config_version: `v${n}`, addons }),
  );
}

function _killMarked(marker: string): void {
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      if (Deno.readTextFileSync(`/proc/${e.name}/cmdline`).includes(marker)) {
        Deno.kill(Number(e.name), "SIGKILL");
      }
    } catch { /* gone */ }
  }
}

async function _crashStorm(): Promise<string[]> {
  const dir = await Deno.makeTempDir({ prefix: "bench-chaos-" });
  const marker = `chaos${crypto.randomUUID().slice(0, 8)}`;
  const ids = Array.from({ length: ADDONS }, (_, i) => `storm-${i}`);
  const { cfg, root } = await _setup(dir, 1);
  let maxPerAddon = 0;
  let litter = 0;
  const converge: number[] = [];
  try {
    for (let n = 0; n <= KILLS; n++) {
      await _assign(dir, marker, ids, n);
      const t0 = Date.now();
      const agent = _agent(cfg);
      if (n < KILLS) {
        // Kill it in the middle of the rollout: once some but not all add-ons switched.
        await _waitFor(
          async () => {
            const s = await _state(root);
            return Object.values(s).some((a) => a.version === `1.0.${n}`);
          },
          30_000,
          `rollout ${n} under way`,
        );
        await new Promise((r) => setTimeout(r, Math.random() * 300));
        agent.kill("SIGKILL");
        await agent.status;
        for (const c of _processesPerAddon(marker).values()) maxPerAddon = Math.max(maxPerAddon, c);
        continue;
      }
      await _waitFor(
        async () => {
          const s = await _state(root);
          return ids.every((id) => s[id]?.state === "running" && s[id]?.version === `1.0.${n}`);
        },
        60_000,
        "convergence",
      ).catch(async (e) => {
        const s = await _state(root);
        const off = Object.values(s).filter((a) =>
          a.version !== `1.0.${n}` || a.state !== "running"
        );
        throw new Error(`${(e as Error).message}: ${JSON.stringify(off)}`);
      });
      converge.push(Date.now() - t0);
      const per = _processesPerAddon(marker);
      for (const c of per.values()) maxPerAddon = Math.max(maxPerAddon, c);
      litter = await _litter(root);
      agent.kill("SIGTERM");
      await agent.status;
    }
  } finally {
    _killMarked(marker);
    _killMarked(dir);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  return [
    `crash storm: ${KILLS} kill -9s in ${KILLS} rollouts of ${ADDONS} add-ons`,
    `  most processes of one add-on at any check: ${maxPerAddon} (1 expected)`,
    `  converged after the last start in ${(converge[0]! / 1000).toFixed(1)} s`,
    `  temporaries of atomic writes left: ${litter}`,
  ];
}

function _sample(pid: number): { rss: number; fds: number } {
  const s = Deno.readTextFileSync(`/proc/${pid}/status`);
  const rss = Number(/^VmRSS:\s+(\d+)/m.exec(s)?.[1] ?? 0) / 1024;
  return { rss, fds: [...Deno.readDirSync(`/proc/${pid}/fd`)].length };
}

async function _churn(): Promise<string[]> {
  const dir = await Deno.makeTempDir({ prefix: "bench-churn-" });
  const marker = `churn${crypto.randomUUID().slice(0, 8)}`;
  const all = Array.from({ length: CHURN_ADDONS }, (_, i) => `churn-${i}`);
  const { cfg, root } = await _setup(dir, 1);
  const samples: { rss: number; fds: number }[] = [];
  let mismatches = 0;
  try {
    await _assign(dir, marker, all, 0);
    const agent = _agent(cfg);
    await _waitFor(
      async () => {
        const s = await _state(root);
        return all.every((id) => s[id]?.state === "running");
      },
      60_000,
      "first convergence",
    );
    const end = Date.now() + CHURN_S * 1000;
    let n = 1;
    while (Date.now() < end) {
      // Every 2 s: a new version of a random half, the others dropped or kept.
      const ids = all.filter(() => Math.random() < 0.8);
      await _assign(dir, marker, ids, n++);
      await new Promise((r) => setTimeout(r, 2_000));
      samples.push(_sample(agent.pid));
    }
    const last = n - 1;
    const final = all.slice();
    await _assign(dir, marker, final, last + 1);
    await _waitFor(
      async () => {
        const s = await _state(root);
        return final.every((id) =>
          s[id]?.state === "running" && s[id]?.version === `1.0.${last + 1}`
        );
      },
      60_000,
      "final convergence",
    );
    const per = _processesPerAddon(marker);
    mismatches = final.filter((id) => per.get(id) !== 1).length;
    agent.kill("SIGTERM");
    await agent.status;
  } finally {
    _killMarked(marker);
    _killMarked(dir);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  const rss = samples.map((s) => s.rss);
  const fds = samples.map((s) => s.fds);
  return [
    `churn: ${CHURN_ADDONS} add-ons reassigned every 2 s for ${CHURN_S} s`,
    `  agent RSS ${Math.min(...rss).toFixed(0)}–${Math.max(...rss).toFixed(0)} MiB, open fds ${
      Math.min(...fds)
    }–${Math.max(...fds)} over ${samples.length} samples`,
    `  add-ons not running exactly once after the final rollout: ${mismatches}`,
  ];
}

/** What the re-check of staged bytes before a start costs: a first hash, then a cached check. */
async function _recheck(): Promise<string[]> {
  const dir = await Deno.makeTempDir({ prefix: "bench-recheck-" });
  try {
    const layout = new Layout(dir);
    const vdir = layout.versionDir("big", "1.0.0");
    await Deno.mkdir(vdir, { recursive: true });
    const bytes = new Uint8Array(64 << 20);
    for (let i = 0; i < bytes.length; i += 65536) {
      crypto.getRandomValues(bytes.subarray(i, i + 65536));
    }
    await Deno.writeFile(`${vdir}/big`, bytes, { mode: 0o755 });
    await Deno.chmod(`${vdir}/big`, 0o755);
    const sha256 = createHash("sha256").update(bytes).digest("hex");
    await Deno.writeTextFile(`${vdir}/artifact.json`, JSON.stringify({ sha256 }));
    // A file staged a while ago (one written within RACY_MS is hashed at every check).
    const v = new StagedVerifier(MAX_REMEMBERED, () => Date.now() + 10 * RACY_MS);
    const want = { version: "1.0.0", binary_name: "big", sha256 };
    let t = performance.now();
    await v.check(layout, "big", want);
    const first = performance.now() - t;
    t = performance.now();
    for (let i = 0; i < 100; i++) await v.check(layout, "big", want);
    const cached = (performance.now() - t) / 100;
    return [
      `re-check of a 64 MiB staged file: ${first.toFixed(0)} ms hashed, ${
        cached.toFixed(2)
      } ms per restart while unchanged (${v.hashes} hash)`,
    ];
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The chaos section: crash storm, churn and re-check figures. */
export async function benchChaos(): Promise<string[]> {
  return [...await _recheck(), ...await _crashStorm(), ...await _churn()];
}
