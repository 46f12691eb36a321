/**
 * Status reports to the control plane (SPEC 4, issue 4 part 1), end to end:
 * the agent runs as a real subprocess (`addon-agent run`) against a small
 * control plane written here (Deno.serve on loopback: the SPEC 3 document
 * with `ETag`/`304`, every status `POST` recorded, and a switch that makes
 * those `POST`s answer 500), with s3rver as the object store and signed sh
 * scripts as add-ons.
 *
 * - a failing status endpoint never blocks delivery, and the agent retries
 *   its report once the endpoint answers again;
 * - while an artifact downloads (slowly, through a throttling TCP proxy in
 *   front of s3rver) the reports carry `progress`;
 * - with nothing changing, a report still arrives at least every 10 polls.
 *
 * Every add-on process carries a unique marker in its `args`; each test ends
 * by stopping the agent (SIGTERM, exit 0) and checking that no process with
 * its marker is left.
 */

import { assert, assertEquals, assertMatch, assertStringIncludes } from "./_assert.ts";
import {
  encodeBase64,
  newKey,
  randomBytes,
  type S3Fixture,
  s3SignedStore,
  signFor,
  startS3,
  withTempDir,
  writeConfig,
} from "./_helpers.ts";
import {
  type AgentProcess,
  newMarker,
  pidAlive,
  readAgentState,
  startAgent,
  stopAndSweep,
  waitFor,
} from "./_agent_process.ts";
import { hostPlatform, platformString } from "../src/protocol/platform.ts";
import { startTcpProxy, type TcpProxy } from "./_tcp_proxy.ts";
import type { KeyPair } from "../src/protocol/signature.ts";
import type { AddonState } from "../src/runtime/state.ts";

const AGENT = "edge-status";
const ADDON = "probe";
const PLATFORM = hostPlatform();
const TARGET = platformString(PLATFORM);
const POLL_S = 1;
const WAIT_MS = 30_000;
/** SPEC 4: a report at least every this many polls. */
const REPORT_EVERY_POLLS = 10;

// ---------------------------------------------------------------------------
// The control plane

/** One add-on in a status report, as SPEC 4 lists its fields. */
interface ReportedAddon {
  addon_id: string;
  version: string | null;
  desired_version: string | null;
  state: string;
  message: string;
  pid: number | null;
  restarts: number;
  since: string | null;
  progress: { bytes: number; total_bytes: number } | null;
}

/** A status report body. */
interface Report {
  agent_id: string;
  config_version: string | null;
  reported_at: string;
  addons: ReportedAddon[];
}

/** A status POST as the control plane saw it. */
interface RecordedPost {
  /** The parsed body (null when it did not parse; see `raw`). */
  body: Report | null;
  raw: string;
  /** What the control plane answered. */
  status: number;
  /** How many polls (GETs) had arrived before this POST. */
  afterGets: number;
}

/** A loopback control plane that serves one document and records status reports. */
interface FakeControlPlane {
  url: string;
  /** Polls so far, and how many were answered 304. */
  gets: number;
  notModified: number;
  /** Query strings of the polls (`os=…&arch=…`). */
  queries: string[];
  posts: RecordedPost[];
  /** Answer status POSTs with 500 while true (204 otherwise). */
  failPosts: boolean;
  /** The current document's `config_version`. */
  configVersion: string;
  /** Serve a new document with these entries (and a new `config_version`). */
  setAddons(addons: Record<string, unknown>[]): void;
  close(): Promise<void>;
}

function startControlPlane(agentId: string, addons: Record<string, unknown>[]): FakeControlPlane {
  let revision = 0;
  let doc = "";
  const addonsPath = `/v1/agents/${agentId}/addons`;
  const statusPath = `${addonsPath}/status`;
  const cp = {
    url: "",
    gets: 0,
    notModified: 0,
    queries: [] as string[],
    posts: [] as RecordedPost[],
    failPosts: false,
    configVersion: "",
    setAddons(list: Record<string, unknown>[]) {
      revision++;
      cp.configVersion = `cv-${revision}`;
      doc = JSON.stringify({ config_version: cp.configVersion, addons: list });
    },
    close: async () => {},
  };
  cp.setAddons(addons);
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      const url = new URL(req.url);
      if (req.method === "GET" && url.pathname === addonsPath) {
        cp.gets++;
        cp.queries.push(url.search);
        const etag = `"${cp.configVersion}"`;
        if (req.headers.get("if-none-match") === etag) {
          cp.notModified++;
          return new Response(null, { status: 304, headers: { etag } });
        }
        return new Response(doc, {
          status: 200,
          headers: { etag, "content-type": "application/json" },
        });
      }
      if (req.method === "POST" && url.pathname === statusPath) {
        const raw = await req.text();
        let body: Report | null = null;
        try {
          body = JSON.parse(raw) as Report;
        } catch { /* kept as raw */ }
        const status = cp.failPosts ? 500 : 204;
        cp.posts.push({ body, raw, status, afterGets: cp.gets });
        return new Response(status === 500 ? "status store unavailable" : null, { status });
      }
      await req.body?.cancel();
      return new Response("not found", { status: 404 });
    },
  );
  cp.url = `http://127.0.0.1:${server.addr.port}`;
  cp.close = () => server.shutdown();
  return cp;
}

/** The entry for `id` in a recorded report, or null. */
function entryOf(p: RecordedPost, id = ADDON): ReportedAddon | null {
  return p.body?.addons?.find((a) => a.addon_id === id) ?? null;
}

// ---------------------------------------------------------------------------
// Add-ons and the world a test runs in

/**
 * A healthy add-on: the sh process stays up (and keeps the marker in its
 * command line). `padding` is appended as a comment after the loop, to make
 * the artifact large; sh never reads that far.
 */
function addonScript(version: string, padding = ""): string {
  return [
    "#!/bin/sh",
    `# probe build ${version}`,
    'echo "up $ADDON_ID $ADDON_VERSION $*"',
    "while :; do sleep 1; done",
    ...(padding ? [`# ${padding}`] : []),
    "",
  ].join("\n");
}

/** Everything one test runs against. */
interface World {
  dir: string;
  root: string;
  marker: string;
  key: KeyPair;
  s3: S3Fixture;
  cp: FakeControlPlane;
  proxy: TcpProxy | null;
  agent: AgentProcess;
  /** What a wait saw last, for failure messages. */
  lastSeen: unknown;
}

/** Upload `script` as `version` to s3rver and return its assignment entry. */
async function publish(
  w: World,
  version: string,
  script: string,
): Promise<Record<string, unknown>> {
  const key = `${ADDON}/${version}/${TARGET.replace("/", "-")}/${ADDON}`;
  await w.s3.put(key, script);
  const signed = await signFor(w.key, ADDON, version, script);
  return {
    addon_id: ADDON,
    version,
    delivery: "pushed_artifact",
    supervision: "agent_sidecar",
    args: ["--marker", w.marker],
    config: { built: version },
    artifact_object_key: key,
    artifact_sha256: signed.artifact_sha256,
    artifact_signature: signed.artifact_signature,
  };
}

interface WorldOptions {
  /** Status POSTs answer 500 from the start. */
  failPosts?: boolean;
  /** Put a proxy paced at this many bytes a second between the agent and s3rver. */
  throttleBytesPerSecond?: number;
}

/**
 * s3rver, a fresh signing key, 1.0.0 published and assigned by the control
 * plane, optionally the throttling proxy, and the agent polling every second.
 * Afterwards, even on failure: the agent must stop with exit 0 on SIGTERM,
 * no add-on may be left, and proxy, servers and the temp dir are gone.
 */
async function withWorld(opts: WorldOptions, fn: (w: World) => Promise<void>): Promise<void> {
  await withTempDir(async (dir) => {
    const w = { dir, root: `${dir}/root`, marker: newMarker("status-report"), lastSeen: null } as
      & Partial<World>
      & Pick<World, "dir" | "root" | "marker" | "lastSeen">;
    w.proxy = null;
    let failure: unknown = null;
    try {
      w.s3 = await startS3(dir);
      w.key = await newKey();
      const v1 = await publish(w as World, "1.0.0", addonScript("1.0.0"));
      w.cp = startControlPlane(AGENT, [v1]);
      w.cp.failPosts = opts.failPosts ?? false;
      const store = s3SignedStore(w.s3, w.key) as { object_store: Record<string, unknown> };
      if (opts.throttleBytesPerSecond) {
        w.proxy = startTcpProxy(Number(new URL(w.s3.endpoint).port), {
          bytesPerSecond: opts.throttleBytesPerSecond,
        });
        store.object_store.endpoint = w.proxy.endpoint;
      }
      const configPath = await writeConfig(dir, {
        agent_id: AGENT,
        source: { kind: "control_plane", url: w.cp.url, poll_interval_s: POLL_S },
        ...store,
      });
      w.agent = startAgent(configPath);
      await fn(w as World);
    } catch (e) {
      failure = e;
    }
    // Teardown: every step runs even when an earlier one fails.
    const problems = await stopAndSweep(w.agent, w.marker);
    await w.proxy?.close().catch((e) => problems.push(`proxy close: ${e}`));
    await w.cp?.close().catch((e) => problems.push(`control plane close: ${e}`));
    await w.s3?.stop().catch((e) => problems.push(`s3rver stop: ${e}`));
    if (failure !== null) throw failure;
    if (problems.length > 0) throw new Error(problems.join("\n"));
  });
}

function context(w: World): () => string {
  return () =>
    `last seen: ${JSON.stringify(w.lastSeen, null, 2)}\n--- reports (last 5) ---\n${
      w.cp.posts.slice(-5).map((p) => `${p.status} ${p.raw}`).join("\n")
    }\n--- agent log (tail) ---\n${w.agent.tail(60)}`;
}

/** Wait until `version` runs (state.json: `running`, that version, a pid); the agent must stay up. */
async function waitRunning(w: World, version: string): Promise<AddonState> {
  return await waitFor(async () => {
    w.agent.assertAlive();
    const a = (await readAgentState(w.root))?.addons[ADDON] ?? null;
    w.lastSeen = a;
    return a?.state === "running" && a.version === version && a.pid !== null ? a : null;
  }, {
    timeoutMs: WAIT_MS,
    what: `${ADDON} ${version} running in state.json`,
    context: context(w),
  });
}

/** Wait until a recorded POST (from index `from`) satisfies `pred`; returns it and its index. */
async function waitPost(
  w: World,
  what: string,
  pred: (p: RecordedPost, e: ReportedAddon | null) => boolean,
  from = 0,
): Promise<{ post: RecordedPost; entry: ReportedAddon; index: number }> {
  return await waitFor(() => {
    w.agent.assertAlive();
    for (let i = from; i < w.cp.posts.length; i++) {
      const p = w.cp.posts[i]!;
      const e = entryOf(p);
      if (e && pred(p, e)) return { post: p, entry: e, index: i };
    }
    w.lastSeen = w.cp.posts.length > 0 ? w.cp.posts[w.cp.posts.length - 1]!.body : null;
    return null;
  }, { timeoutMs: WAIT_MS, what, context: context(w) });
}

/** Wait until `n` more polls arrived than `from`. */
async function waitGets(w: World, from: number, n: number, what: string): Promise<void> {
  await waitFor(() => {
    w.agent.assertAlive();
    w.lastSeen = { gets: w.cp.gets, from };
    return w.cp.gets >= from + n;
  }, { timeoutMs: WAIT_MS, what, context: context(w) });
}

/** Assert that `pid` is alive and is the add-on with this test's marker. */
function assertRuns(w: World, pid: number | null): void {
  assert(pid !== null, "the add-on has no pid");
  assert(pidAlive(pid), `add-on pid ${pid} is not alive`);
  const cl = Deno.readTextFileSync(`/proc/${pid}/cmdline`).replaceAll("\0", " ");
  assertStringIncludes(cl, w.marker, `command line of ${pid}`);
}

/** The SPEC 4 report shape: every field present, with its type. */
function assertReportShape(p: RecordedPost, configVersion: string): void {
  const b = p.body;
  assert(b !== null, `a status POST body is not JSON: ${p.raw}`);
  assertEquals(b.agent_id, AGENT);
  assertEquals(b.config_version, configVersion);
  assertMatch(b.reported_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
  assert(!Number.isNaN(Date.parse(b.reported_at)), `reported_at ${b.reported_at}`);
  for (const a of b.addons) {
    assertEquals(
      Object.keys(a).sort(),
      [
        "addon_id",
        "desired_version",
        "message",
        "pid",
        "progress",
        "restarts",
        "since",
        "state",
        "version",
      ],
      `fields of ${a.addon_id} in ${p.raw}`,
    );
  }
}

// ---------------------------------------------------------------------------

Deno.test("status reports: a failing status endpoint never blocks delivery", async () => {
  await withWorld({ failPosts: true }, async (w) => {
    // Delivered, verified, staged and running although every report so far got a 500.
    const running = await waitRunning(w, "1.0.0");
    assertRuns(w, running.pid);
    await waitPost(w, "a status POST (answered 500)", (p) => p.status === 500);
    assertEquals(w.cp.posts.filter((p) => p.status !== 500), [], "every POST so far failed");
    assert(
      w.cp.queries.every((q) => q === `?os=${PLATFORM.os}&arch=${PLATFORM.arch}`),
      `polls carry os and arch: ${JSON.stringify(w.cp.queries)}`,
    );

    // The agent keeps polling while its reports fail, and the add-on keeps running as it was.
    const gets = w.cp.gets;
    const failed = w.cp.posts.length;
    await waitGets(w, gets, 4, "4 more polls while status POSTs answer 500");
    const still = (await readAgentState(w.root))?.addons[ADDON];
    assertEquals(still?.state, "running");
    assertEquals(still?.pid, running.pid, "the add-on was not restarted");
    assert(
      w.cp.posts.length > failed,
      `the agent tried to report again after the failure (${failed} POSTs, all 500)`,
    );

    // The endpoint recovers: the pending report is retried and shows what runs.
    const fromPost = w.cp.posts.length;
    const fromGets = w.cp.gets;
    w.cp.failPosts = false;
    const { post, entry } = await waitPost(
      w,
      "a report (answered 204) showing 1.0.0 running with its pid",
      (p, e) =>
        p.status === 204 && e?.state === "running" && e.version === "1.0.0" &&
        e.pid === running.pid,
      fromPost,
    );
    assert(
      post.afterGets - fromGets < REPORT_EVERY_POLLS / 2,
      `the report was retried on one of the next polls, not left to the periodic report ` +
        `(${post.afterGets - fromGets} polls after the endpoint recovered)`,
    );
    assertReportShape(post, w.cp.configVersion);
    assertEquals(entry.desired_version, "1.0.0");
    assertEquals(entry.progress, null);
    assertEquals(entry.restarts, 0);
    assertEquals(entry.since, running.since);
    assertRuns(w, entry.pid);
  });
});

Deno.test("status reports: reports carry progress while an artifact downloads", async () => {
  const RATE = 4 << 20; // bytes a second, server → agent
  await withWorld({ throttleBytesPerSecond: RATE }, async (w) => {
    const v1 = await waitRunning(w, "1.0.0");
    assertRuns(w, v1.pid);

    // 2.0.0: a script followed by ~24 MiB of padding, fetched through the slow proxy.
    const script = addonScript("2.0.0", encodeBase64(randomBytes(18 << 20)));
    const size = new TextEncoder().encode(script).length;
    assert(size > 24_000_000, `artifact size ${size}`);
    const fromPost = w.cp.posts.length;
    w.cp.setAddons([await publish(w, "2.0.0", script)]);

    const v2 = await waitRunning(w, "2.0.0");
    assertRuns(w, v2.pid);
    const done = await waitPost(
      w,
      "a report showing 2.0.0 running",
      (_p, e) => e?.state === "running" && e.version === "2.0.0" && e.pid === v2.pid,
      fromPost,
    );
    assertReportShape(done.post, w.cp.configVersion);
    assertEquals(done.entry.desired_version, "2.0.0");
    assertEquals(done.entry.progress, null, "no progress once the download is over");
    assert(w.proxy !== null && w.proxy.bytesDown >= size, "the artifact came through the proxy");

    const reports = w.cp.posts.slice(fromPost, done.index + 1).map((p) => ({
      p,
      e: entryOf(p),
    }));
    const downloading = reports.filter(({ e }) =>
      e?.state === "downloading" && e.progress !== null && e.progress.bytes > 0 &&
      e.progress.bytes < e.progress.total_bytes
    );
    assert(
      downloading.length > 0,
      `a report shows 2.0.0 downloading with partial progress; got ${
        JSON.stringify(reports.map(({ e }) => e && [e.state, e.progress]))
      }`,
    );
    let last = 0;
    for (const { p, e } of downloading) {
      assertReportShape(p, w.cp.configVersion);
      assertEquals(e!.progress!.total_bytes, size, "total_bytes is the artifact's size");
      assert(e!.progress!.bytes >= last, "progress never goes back");
      last = e!.progress!.bytes;
      assertEquals(e!.desired_version, "2.0.0");
      assertEquals(e!.version, "1.0.0", "version is the one that runs meanwhile");
    }
    // progress is there while downloading only.
    for (const p of w.cp.posts) {
      const e = entryOf(p);
      if (e && e.state !== "downloading") assertEquals(e.progress, null, p.raw.slice(0, 500));
    }
  });
});

Deno.test("status reports: a report is sent at least every 10 polls when nothing changes", async () => {
  await withWorld({}, async (w) => {
    const running = await waitRunning(w, "1.0.0");
    const settled = await waitPost(
      w,
      "a report showing 1.0.0 running",
      (_p, e) => e?.state === "running" && e.version === "1.0.0" && e.pid === running.pid,
    );
    // Steady: count what arrives over 12 polls.
    const fromGets = w.cp.gets;
    const fromPost = w.cp.posts.length;
    const notModified = w.cp.notModified;
    await waitGets(w, fromGets, REPORT_EVERY_POLLS + 2, "12 more polls");
    const window = w.cp.posts.slice(fromPost).filter((p) =>
      p.afterGets <= fromGets + REPORT_EVERY_POLLS + 2
    );
    assert(
      window.length >= 1,
      `at least one report over ${REPORT_EVERY_POLLS + 2} polls; got none (${
        w.cp.posts.length - fromPost
      } after the window)`,
    );
    assert(w.cp.notModified > notModified, "the steady polls were answered 304");
    // Nothing changed: the periodic report says what the last one said.
    for (const p of window) {
      assertReportShape(p, w.cp.configVersion);
      assertEquals(p.body!.addons, settled.post.body!.addons);
    }
    const st = (await readAgentState(w.root))?.addons[ADDON];
    assertEquals(st?.pid, running.pid, "the add-on was not restarted");
    assertRuns(w, running.pid);
  });
});

Deno.test("run stops during a download without finishing it, and keeps the partial", async () => {
  const RATE = 1 << 20; // bytes a second, server → agent: the download would take ~24 s
  await withWorld({ throttleBytesPerSecond: RATE }, async (w) => {
    await waitRunning(w, "1.0.0");
    const script = addonScript("2.0.0", encodeBase64(randomBytes(18 << 20)));
    const size = new TextEncoder().encode(script).length;
    const entry = await publish(w, "2.0.0", script);
    w.cp.setAddons([entry]);
    await waitFor(async () => {
      w.agent.assertAlive();
      const a = (await readAgentState(w.root))?.addons[ADDON] ?? null;
      w.lastSeen = a;
      return a?.state === "downloading" && (a.progress?.bytes ?? 0) > 0;
    }, { timeoutMs: 30_000, what: "2.0.0 downloading", context: context(w) });
    assertEquals(await w.agent.stop(), 0, "exit code on SIGTERM during a download");
    assert(
      w.proxy !== null && w.proxy.bytesDown < size,
      "the agent stopped before the download ended",
    );
    const partial = `${w.root}/tmp/${entry.artifact_sha256}.partial`;
    const kept = (await Deno.stat(partial)).size;
    assert(kept > 0 && kept < size, `the partial (${kept} of ${size} bytes) stays for a resume`);
    assertEquals(await Deno.readLink(`${w.root}/addons/${ADDON}/current`), "versions/1.0.0");
  });
});

Deno.test("run keeps its desired state when a document is refused, and reports why", async () => {
  await withWorld({}, async (w) => {
    const v1 = await waitRunning(w, "1.0.0");
    const entry = await publish(w, "1.0.0", addonScript("1.0.0"));
    const from = w.cp.posts.length;
    w.cp.setAddons([entry, entry]); // two entries for one addon_id refuse the whole document
    const refused = await waitPost(
      w,
      "a report that names the refused document",
      (p) => /duplicate addon_id/.test((p.body as { error?: string } | null)?.error ?? ""),
      from,
    );
    assertEquals(refused.entry.state, "running");
    assertEquals(refused.entry.pid, v1.pid, "the add-on keeps running as it was");
    const gets = w.cp.gets;
    await waitGets(w, gets, 3, "polls after the refusal");
    assertRuns(w, v1.pid);
    assertEquals((await readAgentState(w.root))?.addons[ADDON]?.pid, v1.pid);

    const fixed = w.cp.posts.length;
    w.cp.setAddons([{ ...entry, args: [...(entry.args as string[]), "--fixed"] }]);
    const after = await waitPost(
      w,
      "a report without the error once a good document arrives",
      (p, e) =>
        (p.body as { error?: string } | null)?.error === undefined && e?.state === "running" &&
        e.pid !== v1.pid,
      fixed,
    );
    assertRuns(w, after.entry.pid);
  });
});
