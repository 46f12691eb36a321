/**
 * End to end with real parts (issue 4): the reference control plane serving
 * a catalog file that the test rewrites to publish versions, s3rver as the
 * object store, the agent as a real subprocess (`addon-agent run`), and real
 * add-ons — small sh scripts signed with a fresh key, uploaded to s3rver and
 * staged by the agent's own pipeline.
 *
 * Every add-on process carries a unique marker in its `args`; each test ends
 * by stopping the agent (SIGTERM, exit 0) and checking that no process with
 * its marker is left.
 *
 * Each script appends `<ADDON_VERSION> <pid>` to `$ADDON_DATA_DIR/starts`
 * when it starts, so the tests count starts exactly.
 */

import { assert, assertEquals, assertMatch, assertStringIncludes } from "./_assert.ts";
import {
  newKey,
  type S3Fixture,
  s3SignedStore,
  signFor,
  startS3,
  withTempDir,
  writeConfig,
} from "./_helpers.ts";
import {
  type AgentProcess,
  killMarked,
  type LogLine,
  newMarker,
  pidAlive,
  readAgentState,
  startAgent,
  stopAndSweep,
  waitFor,
} from "./_agent_process.ts";
import { type ControlPlane, startControlPlane } from "../src/control_plane/server.ts";
import { captureLog, configureLog } from "../src/common/log.ts";
import { hostPlatform, platformString } from "../src/protocol/platform.ts";
import type { KeyPair } from "../src/protocol/signature.ts";
import type { AddonState } from "../src/runtime/state.ts";

const ADDON = "probe";
const AGENT = "edge-e2e";
const TOKEN = "e2e-token-5f1c0a";
const TARGET = platformString(hostPlatform());
const POLL_S = 1;
const WAIT_MS = 30_000;

/** A published build, as the catalog lists it. */
interface Artifact {
  object_key: string;
  sha256: string;
  signature: string;
}

/** Everything one test runs against. */
interface World {
  dir: string;
  root: string;
  marker: string;
  key: KeyPair;
  s3: S3Fixture;
  s3Port: number;
  cp: ControlPlane;
  cpPort: number;
  catalogPath: string;
  configPath: string;
  overridePath: string;
  agent: AgentProcess;
  /** Requests the control plane(s) logged in this test process: `{status, path}`. */
  cpRequests: { status: number; path: string }[];
  /** What a wait saw last, for failure messages. */
  lastSeen: unknown;
}

// ---------------------------------------------------------------------------
// Add-on scripts

/** A healthy add-on: records its start, then stays up (the sh process keeps the marker). */
function goodAddon(version: string): string {
  return [
    "#!/bin/sh",
    `# probe build ${version}`,
    'echo "$ADDON_VERSION $$" >> "$ADDON_DATA_DIR/starts"',
    'echo "up $ADDON_ID $ADDON_VERSION $*"',
    "while :; do sleep 1; done",
    "",
  ].join("\n");
}

/** A broken add-on: records its start and exits at once. */
function crashingAddon(version: string): string {
  return [
    "#!/bin/sh",
    `# probe build ${version}, broken`,
    'echo "$ADDON_VERSION $$" >> "$ADDON_DATA_DIR/starts"',
    'echo "cannot start: broken build" >&2',
    "exit 3",
    "",
  ].join("\n");
}

// ---------------------------------------------------------------------------
// Publishing

async function publish(w: World, version: string, script: string): Promise<Artifact> {
  const object_key = `${ADDON}/${version}/${TARGET.replace("/", "-")}/${ADDON}`;
  await w.s3.put(object_key, script);
  const signed = await signFor(w.key, ADDON, version, script);
  return { object_key, sha256: signed.artifact_sha256, signature: signed.artifact_signature };
}

/** Rewrite the catalog (by rename) so that the agent is assigned `version`. */
async function assign(w: World, version: string, art: Artifact): Promise<void> {
  const catalog = {
    packages: {
      [ADDON]: {
        version,
        delivery: "pushed_artifact",
        supervision: "agent_sidecar",
        binary_path: `/usr/lib/${ADDON}/${ADDON}`,
        args: ["--marker", w.marker],
        env: { PROBE_MODE: "e2e" },
        config: { built: version },
        artifacts: { [TARGET]: art },
      },
    },
    assignments: { agents: { [AGENT]: [ADDON] } },
  };
  const tmp = `${w.catalogPath}.tmp`;
  await Deno.writeTextFile(tmp, JSON.stringify(catalog, null, 2));
  await Deno.rename(tmp, w.catalogPath);
}

// ---------------------------------------------------------------------------
// Looking at the agent

async function addonState(w: World): Promise<AddonState | null> {
  return (await readAgentState(w.root))?.addons[ADDON] ?? null;
}

function context(w: World): () => string {
  return () =>
    `last seen: ${JSON.stringify(w.lastSeen, null, 2)}\n--- agent log (tail) ---\n${
      w.agent.tail(60)
    }`;
}

/** Wait until the add-on's entry in state.json satisfies `pred`; the agent must stay up. */
async function waitAddon(
  w: World,
  what: string,
  pred: (a: AddonState) => boolean,
  timeoutMs = WAIT_MS,
): Promise<AddonState> {
  return await waitFor(async () => {
    w.agent.assertAlive();
    const a = await addonState(w);
    w.lastSeen = a;
    return a !== null && pred(a) ? a : null;
  }, { timeoutMs, what, context: context(w) });
}

/** Wait until `version` of the add-on is running with a pid; `what` names the wait. */
function waitRunning(w: World, version: string, what: string): Promise<AddonState> {
  return waitAddon(
    w,
    what,
    (a) => a.state === "running" && a.version === version && a.pid !== null,
  );
}

/** Wait until `last-good.json` records `version`. */
async function waitLastGood(w: World, version: string): Promise<void> {
  await waitFor(async () => (await lastGoodVersion(w)) === version, {
    timeoutMs: WAIT_MS,
    what: `last-good.json to record ${version}`,
  });
}

/**
 * Install `goodAddon("local-1")` as the executable `local-bin/probe-local`,
 * pin it with the local override file (os_package at that path), and wait
 * until it runs; returns its path and the add-on's state.
 */
async function pinLocal(w: World): Promise<{ local: string; pinned: AddonState }> {
  const local = `${w.dir}/local-bin/probe-local`;
  await Deno.mkdir(`${w.dir}/local-bin`);
  await Deno.writeTextFile(local, goodAddon("local-1"));
  await Deno.chmod(local, 0o755);
  await Deno.writeTextFile(
    w.overridePath,
    JSON.stringify({
      addons: [{
        addon_id: ADDON,
        delivery: "os_package",
        binary_path: local,
        version: "local-1",
      }],
    }),
  );
  return { local, pinned: await waitRunning(w, "local-1", "the local binary running") };
}

/** `<version> <pid>` lines the add-on wrote at each start. */
async function starts(w: World): Promise<{ version: string; pid: number }[]> {
  let text = "";
  try {
    text = await Deno.readTextFile(`${w.root}/addons/${ADDON}/data/starts`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return text.split("\n").filter((l) => l !== "").map((l) => {
    const [version, pid] = l.split(" ");
    return { version: version ?? "", pid: Number(pid) };
  });
}

async function link(w: World, which: "current" | "previous"): Promise<string | null> {
  try {
    return await Deno.readLink(`${w.root}/addons/${ADDON}/${which}`);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

async function lastGoodVersion(w: World): Promise<string | null> {
  try {
    const lg = JSON.parse(await Deno.readTextFile(`${w.root}/addons/${ADDON}/last-good.json`));
    return lg.assignment.version;
  } catch {
    return null;
  }
}

function cmdline(pid: number): string {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/cmdline`).replaceAll("\0", " ").trim();
  } catch {
    return "";
  }
}

/** Assert that `pid` is alive and runs `binary` with this test's marker. */
function assertRuns(w: World, pid: number | null, binary: string): void {
  assert(pid !== null, "the add-on has no pid");
  assert(pidAlive(pid), `add-on pid ${pid} is not alive`);
  const cl = cmdline(pid);
  assertStringIncludes(cl, binary, `command line of ${pid}`);
  assertStringIncludes(cl, w.marker, `command line of ${pid}`);
}

function polls304(w: World, from = 0): number {
  return w.cpRequests.slice(from).filter((r) =>
    r.status === 304 && r.path === `/v1/agents/${AGENT}/addons`
  ).length;
}

/** Let `n` polls answered `304` pass (counted at the control plane). */
async function waitPolls(w: World, n: number): Promise<void> {
  const from = w.cpRequests.length;
  await waitFor(() => {
    w.agent.assertAlive();
    return polls304(w, from) >= n;
  }, { timeoutMs: WAIT_MS, what: `${n} polls answered 304`, context: context(w) });
}

/** Agent log lines with this message. */
function logged(w: World, msg: string): LogLine[] {
  return w.agent.logs().filter((l) => l.msg === msg);
}

type Reported = Record<string, unknown>;

/**
 * Wait until the control plane's stored report for the add-on equals what
 * state.json says (state, version, desired_version, pid, message) and has
 * the `expected` values; returns the report's entry.
 */
async function waitReport(w: World, expected: Reported): Promise<Reported> {
  const fields = ["state", "version", "desired_version", "pid", "message", "since"];
  return await waitFor(async () => {
    w.agent.assertAlive();
    const report = w.cp.reports(AGENT) as Reported | undefined;
    const st = await readAgentState(w.root);
    const entry = (report?.addons as Reported[] | undefined)?.find((a) => a.addon_id === ADDON);
    const local = st?.addons[ADDON] as Reported | undefined;
    w.lastSeen = { report: entry ?? null, state_json: local ?? null };
    if (!report || !entry || !local || !st) return null;
    if (report.agent_id !== AGENT || report.config_version !== st.config_version) return null;
    if (fields.some((k) => entry[k] !== local[k])) return null;
    if (Object.entries(expected).some(([k, v]) => entry[k] !== v)) return null;
    return entry;
  }, {
    timeoutMs: WAIT_MS,
    what: `the control plane's stored status to match state.json and ${JSON.stringify(expected)}`,
    context: context(w),
  });
}

// ---------------------------------------------------------------------------
// Setup and teardown

/**
 * s3rver, a fresh signing key, 1.0.0 published and assigned, the reference
 * control plane (with a bearer token), and the agent polling every second.
 * Afterwards: the agent must stop with exit 0 and no add-on may be left.
 */
async function withWorld(fn: (w: World) => Promise<void>): Promise<void> {
  await withTempDir(async (dir) => {
    const cpRequests: World["cpRequests"] = [];
    configureLog({ level: "debug" });
    const restoreLog = captureLog((line) => {
      try {
        const v = JSON.parse(line);
        if (v.msg === "control plane request") cpRequests.push({ status: v.status, path: v.path });
      } catch { /* not ours */ }
    });
    const marker = newMarker("e2e-cp");
    let s3: S3Fixture | null = null;
    let cp: ControlPlane | null = null;
    const w = { dir, root: `${dir}/root`, marker, cpRequests, lastSeen: null } as Partial<World>;
    let failure: unknown = null;
    try {
      s3 = await startS3(dir);
      w.s3 = s3;
      w.s3Port = Number(new URL(s3.endpoint).port);
      w.key = await newKey();
      w.catalogPath = `${dir}/catalog.json`;
      w.overridePath = `${dir}/addons.local.json`;
      const world = w as World;
      await assign(world, "1.0.0", await publish(world, "1.0.0", goodAddon("1.0.0")));
      cp = await startControlPlane({ catalogPath: w.catalogPath, token: TOKEN });
      w.cp = cp;
      w.cpPort = cp.port;
      await Deno.writeTextFile(`${dir}/token`, `  ${TOKEN}\n`);
      w.configPath = await writeConfig(dir, {
        agent_id: AGENT,
        source: {
          kind: "control_plane",
          url: cp.url,
          poll_interval_s: POLL_S,
          token_file: `${dir}/token`,
        },
        ...s3SignedStore(s3, w.key),
      });
      w.agent = startAgent(w.configPath);
      await fn(world);
    } catch (e) {
      failure = e;
    }
    // Teardown: every step runs even when an earlier one fails.
    const problems = await stopAndSweep(w.agent, marker);
    await w.cp?.close().catch(() => {});
    if (cp !== w.cp) await cp?.close().catch(() => {});
    await w.s3?.stop().catch(() => {});
    if (s3 !== w.s3) await s3?.stop().catch(() => {});
    restoreLog();
    configureLog({ level: "info" });
    if (failure !== null) throw failure;
    if (problems.length > 0) throw new Error(problems.join("\n"));
  });
}

/** `t.step`, except that once a step failed the later (dependent) steps are reported as ignored. */
function stepper(t: Deno.TestContext): (name: string, fn: () => Promise<void>) => Promise<void> {
  let broken = false;
  return async (name, fn) => {
    const ok = await t.step({ name, ignore: broken, fn });
    if (!ok) broken = true;
  };
}

// ---------------------------------------------------------------------------

Deno.test({
  name: "e2e: rollout, store outage (fallback), restart from disk, crash-loop rollback",
}, async (t) => {
  await withWorld(async (w) => {
    const step = stepper(t);
    let pidV2 = 0;

    await step("1.0.0 is delivered, verified, staged and running", async () => {
      const a = await waitRunning(w, "1.0.0", "1.0.0 running");
      assertEquals(a.desired_version, "1.0.0");
      assertEquals(await link(w, "current"), "versions/1.0.0");
      assertEquals(await link(w, "previous"), null);
      assertRuns(w, a.pid, `/addons/${ADDON}/versions/1.0.0/${ADDON}`);
      assertEquals(await starts(w), [{ version: "1.0.0", pid: a.pid! }]);
      await waitReport(w, { state: "running", version: "1.0.0", pid: a.pid });
    });

    await step("rollout 1.0.0 → 2.0.0: current flips, previous kept, one restart", async () => {
      const [pidV1] = (await starts(w)).map((s) => s.pid);
      await assign(w, "2.0.0", await publish(w, "2.0.0", goodAddon("2.0.0")));
      const a = await waitRunning(w, "2.0.0", "2.0.0 running");
      pidV2 = a.pid!;
      assertEquals(a.desired_version, "2.0.0");
      assertEquals(await link(w, "current"), "versions/2.0.0");
      assertEquals(await link(w, "previous"), "versions/1.0.0");
      await waitLastGood(w, "2.0.0");
      await waitPolls(w, 3);
      // Exactly one restart: 1.0.0 started once, 2.0.0 started once, and nothing since.
      assertEquals(await starts(w), [
        { version: "1.0.0", pid: pidV1! },
        { version: "2.0.0", pid: pidV2 },
      ]);
      assert(!pidAlive(pidV1!), "1.0.0 still runs after the rollout");
      assertRuns(w, pidV2, `/addons/${ADDON}/versions/2.0.0/${ADDON}`);
      const now = await addonState(w);
      assertEquals([now?.state, now?.pid, now?.restarts], ["running", pidV2, 0]);
      await waitReport(w, {
        state: "running",
        version: "2.0.0",
        desired_version: "2.0.0",
        pid: pidV2,
      });
    });

    await step("store stopped, 3.0.0 assigned → 2.0.0 keeps running in fallback", async () => {
      const art3 = await publish(w, "3.0.0", goodAddon("3.0.0"));
      await w.s3.stop();
      await assign(w, "3.0.0", art3);
      const a = await waitAddon(
        w,
        "fallback while 3.0.0 cannot be delivered",
        (a) => a.state === "fallback" && a.desired_version === "3.0.0",
      );
      assertEquals(a.version, "2.0.0");
      assertEquals(a.pid, pidV2, "the running 2.0.0 process is kept, not restarted");
      assertRuns(w, a.pid, `/addons/${ADDON}/versions/2.0.0/${ADDON}`);
      assertStringIncludes(a.message, "3.0.0 could not be delivered");
      assertEquals(await link(w, "current"), "versions/2.0.0");
      assertEquals(await link(w, "previous"), "versions/1.0.0");
      assertEquals(
        await Deno.lstat(`${w.root}/addons/${ADDON}/versions/3.0.0`).then(() => true, () => false),
        false,
      );
      assertEquals((await starts(w)).length, 2, "no add-on start during the fallback");
      await waitReport(w, {
        state: "fallback",
        version: "2.0.0",
        desired_version: "3.0.0",
        pid: pidV2,
      });
    });

    await step("agent restarted while the store is down → 2.0.0 comes back from disk", async () => {
      assertEquals(await w.agent.stop(), 0, "SIGTERM stops the agent with exit 0");
      assert(!pidAlive(pidV2), "SIGTERM to the agent stops its add-ons");
      assertEquals(await killMarked(w.marker), [], "no add-on survives a graceful stop");
      assertEquals((await addonState(w))?.pid, null);
      const startsBefore = (await starts(w)).length;

      w.agent = startAgent(w.configPath);
      const a = await waitAddon(
        w,
        "2.0.0 back from disk in fallback",
        (a) => a.state === "fallback" && a.version === "2.0.0" && a.pid !== null && pidAlive(a.pid),
      );
      assertEquals(a.desired_version, "3.0.0");
      assertRuns(w, a.pid, `/addons/${ADDON}/versions/2.0.0/${ADDON}`);
      assertStringIncludes(a.message, "3.0.0 could not be delivered");
      assertEquals(await link(w, "current"), "versions/2.0.0");
      const s = await starts(w);
      assertEquals(s.slice(startsBefore), [{ version: "2.0.0", pid: a.pid! }]);
      assert(
        logged(w, "starting the add-ons last desired, before the source answers").length > 0,
        "the agent says it starts what it last persisted",
      );
      pidV2 = a.pid!;
      await waitReport(w, {
        state: "fallback",
        version: "2.0.0",
        desired_version: "3.0.0",
        pid: pidV2,
      });
    });

    await step("4.0.0 exits at once → rolled back to 2.0.0 and not retried", async () => {
      w.s3 = await startS3(w.dir, w.s3Port);
      const art4 = await publish(w, "4.0.0", crashingAddon("4.0.0"));
      await assign(w, "4.0.0", art4);
      // 5 exits with restarts after 1, 2, 4 and 8 s: about 15 s.
      const a = await waitAddon(
        w,
        "4.0.0 rolled back",
        (a) => a.state === "rolled_back" && a.pid !== null && pidAlive(a.pid),
        90_000,
      );
      assertEquals([a.version, a.desired_version], ["2.0.0", "4.0.0"]);
      assertRuns(w, a.pid, `/addons/${ADDON}/versions/2.0.0/${ADDON}`);
      assertStringIncludes(a.message, "4.0.0 rolled back to 2.0.0");
      assertEquals(await link(w, "current"), "versions/2.0.0");
      assertEquals(await link(w, "previous"), null, "rollback removes the previous link");
      assertEquals(a.failed_versions.map((f) => [f.version, f.sha256]), [["4.0.0", art4.sha256]]);
      assertMatch(a.failed_versions[0]!.reason, /5 exits within \d+ s of activation/);
      assertEquals(await lastGoodVersion(w), "2.0.0");
      const v4Starts = () => starts(w).then((s) => s.filter((x) => x.version === "4.0.0").length);
      assertEquals(await v4Starts(), 5, "4.0.0 started exactly 5 times");
      const s = await starts(w);
      assertEquals(s[s.length - 1], { version: "2.0.0", pid: a.pid! });

      // Not retried while it stays assigned.
      await waitPolls(w, 5);
      assertEquals(await v4Starts(), 5, "4.0.0 is not started again");
      const later = await addonState(w);
      assertEquals([later?.state, later?.version, later?.pid], ["rolled_back", "2.0.0", a.pid]);
      assertEquals(later?.failed_versions.map((f) => f.version), ["4.0.0"]);
      const persisted = await readAgentState(w.root);
      assertEquals(persisted?.addons[ADDON]?.failed_versions[0]?.sha256, art4.sha256);
    });

    await step("the status the control plane stores matches what the agent runs", async () => {
      const a = await addonState(w);
      assert(a !== null);
      const entry = await waitReport(w, {
        state: "rolled_back",
        version: "2.0.0",
        desired_version: "4.0.0",
        pid: a.pid,
      });
      assertRuns(w, entry.pid as number, `/addons/${ADDON}/versions/2.0.0/${ADDON}`);
    });

    // SPEC 7 + 8: a local pin is in force only while the override says so, and the
    // rolled-back 4.0.0 (still the pushed assignment) is not tried again meanwhile.
    await step("a local pin and its removal do not bring back the rolled-back 4.0.0", async () => {
      const { local, pinned } = await pinLocal(w);
      assertRuns(w, pinned.pid, local);

      await Deno.writeTextFile(w.overridePath, "{"); // malformed: treated as absent
      const a = await waitFor(async () => {
        w.agent.assertAlive();
        const v4 = (await starts(w)).filter((s) => s.version === "4.0.0").length;
        assertEquals(
          v4,
          5,
          "4.0.0 (rolled back and still assigned) was started again once the override was gone",
        );
        const a = await addonState(w);
        w.lastSeen = a;
        return a !== null && a.version === "2.0.0" && a.pid !== null && a.pid !== pinned.pid &&
            pidAlive(a.pid)
          ? a
          : null;
      }, { timeoutMs: WAIT_MS, what: "2.0.0 running again", context: context(w) });
      assertEquals([a.state, a.desired_version], ["rolled_back", "4.0.0"]);
      assertRuns(w, a.pid, `/addons/${ADDON}/versions/2.0.0/${ADDON}`);
      assert(!pidAlive(pinned.pid!), "the local binary is no longer in force");
      assertEquals(a.failed_versions.map((f) => f.version), ["4.0.0"]);
      assertEquals(await link(w, "current"), "versions/2.0.0");
    });
  });
});

Deno.test({
  name: "e2e: 304 polls, control plane outage, local override (pin, then malformed)",
}, async (t) => {
  await withWorld(async (w) => {
    const step = stepper(t);
    let pid = 0;

    await step("1.0.0 is running and reported", async () => {
      const a = await waitRunning(w, "1.0.0", "1.0.0 running");
      pid = a.pid!;
      assertRuns(w, pid, `/addons/${ADDON}/versions/1.0.0/${ADDON}`);
      await waitLastGood(w, "1.0.0");
      await waitReport(w, { state: "running", version: "1.0.0", desired_version: "1.0.0", pid });
    });

    await step("a 304 poll changes nothing", async () => {
      await waitPolls(w, 2); // let the start settle
      const before = await Deno.readTextFile(`${w.root}/state.json`);
      const logFrom = w.agent.lines().length;
      await waitPolls(w, 5);
      const after = await Deno.readTextFile(`${w.root}/state.json`);
      const b = JSON.parse(before);
      const a = JSON.parse(after);
      assertEquals(a.updated_at, b.updated_at, "state.json was not rewritten");
      assertEquals(a.addons[ADDON].pid, pid);
      assertEquals(after, before);
      assert(pidAlive(pid));
      assertEquals(w.agent.lines().slice(logFrom), [], "nothing is logged for unchanged documents");
      assertEquals((await starts(w)).length, 1);
    });

    await step("control plane down for a while → add-on unaffected, agent recovers", async () => {
      const failed = "poll failed; add-ons keep running";
      const failsBefore = logged(w, failed).length;
      await w.cp.close();
      const fails = await waitFor(() => {
        w.agent.assertAlive();
        const f = logged(w, failed).slice(failsBefore);
        return f.length >= 4 ? f : null;
      }, { timeoutMs: WAIT_MS, what: "4 failed polls", context: context(w) });
      assertEquals(
        [...new Set(fails.map((l) => l.kind))],
        ["unavailable"],
        "a control plane that is down is an unavailable source",
      );
      // Exponential backoff: the announced waits never shrink, and they grow.
      const waits = fails.map((l) => l.retry_in_s as number);
      assert(
        waits.every((x, i) => i === 0 || x >= waits[i - 1]!) &&
          waits[waits.length - 1]! > waits[0]!,
        `retry_in_s should grow: ${JSON.stringify(waits)}`,
      );
      const mid = await addonState(w);
      assertEquals([mid?.state, mid?.pid], ["running", pid], "the add-on is not touched");
      assert(pidAlive(pid));

      const requestsFrom = w.cpRequests.length;
      w.cp = await startControlPlane({
        catalogPath: w.catalogPath,
        listen: `127.0.0.1:${w.cpPort}`,
        token: TOKEN,
      });
      // Reports reach the new control plane (it starts with none).
      await waitReport(w, { state: "running", version: "1.0.0", desired_version: "1.0.0", pid });
      await waitFor(() => polls304(w, requestsFrom) > 0, {
        timeoutMs: WAIT_MS,
        what: "a poll answered by the new control plane",
        context: context(w),
      });
      assertRuns(w, pid, `/addons/${ADDON}/versions/1.0.0/${ADDON}`);
      assertEquals((await starts(w)).length, 1, "the add-on was never restarted");
    });

    let localPid = 0;

    await step("a local override pins a local binary", async () => {
      const { local, pinned: a } = await pinLocal(w);
      localPid = a.pid!;
      assertEquals(a.desired_version, "local-1");
      assertRuns(w, localPid, local); // pushed args (the marker) are kept: the override patches
      assert(!pidAlive(pid), "the pushed 1.0.0 was stopped");
      assertEquals((await starts(w)).map((s) => s.version), ["1.0.0", "local-1"]);
      assertEquals(await link(w, "current"), "versions/1.0.0", "current is not touched");
      await waitReport(w, {
        state: "running",
        version: "local-1",
        desired_version: "local-1",
        pid: localPid,
      });
    });

    await step("a malformed override is ignored: the pushed assignment runs again", async () => {
      const warnFrom = w.agent.logs().length;
      await Deno.writeTextFile(w.overridePath, '{"addons": [{"addon_id": "probe", ');
      const a = await waitRunning(w, "1.0.0", "the pushed 1.0.0 running again");
      pid = a.pid!;
      assertEquals(a.desired_version, "1.0.0");
      assertRuns(w, pid, `/addons/${ADDON}/versions/1.0.0/${ADDON}`);
      assert(!pidAlive(localPid), "the local binary was stopped");
      const warnings = w.agent.logs().slice(warnFrom).filter((l) =>
        l.level === "warn" && l.msg.includes("malformed") && l.path === w.overridePath
      );
      assert(warnings.length > 0, `a warning names the override file:\n${w.agent.tail()}`);
      assertEquals((await starts(w)).map((s) => s.version), ["1.0.0", "local-1", "1.0.0"]);
    });

    await step("the status the control plane stores matches what the agent runs", async () => {
      const entry = await waitReport(w, {
        state: "running",
        version: "1.0.0",
        desired_version: "1.0.0",
        pid,
      });
      assertRuns(w, entry.pid as number, `/addons/${ADDON}/versions/1.0.0/${ADDON}`);
      assertEquals(entry.restarts, 0);
    });
  });
});
