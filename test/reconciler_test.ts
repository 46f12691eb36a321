/**
 * The reconciler alone (SPEC 6 and 8): a fake deliverer, fake runners and a
 * fake clock drive it, while `state.json`'s add-on entries, `last-good.json`
 * and `config.json` are real files in a temp runtime root. Each test checks
 * what an operator would see: which version runs, its state and message,
 * whether a process was stopped or left alone.
 */

import { assert, assertEquals, assertStringIncludes } from "./_assert.ts";
import { FakeClock, withTempDir } from "./_helpers.ts";
import { Reconciler } from "../src/agent/reconciler.ts";
import type { Delivered, Deliverer, DeliveryHooks } from "../src/delivery/mod.ts";
import { DeliveryError } from "../src/delivery/mod.ts";
import type { Launch, Runner, RunnerEvents } from "../src/supervise/mod.ts";
import {
  type AgentState,
  emptyState,
  Layout,
  readLastGood,
  writeLastGood,
} from "../src/runtime/mod.ts";
import {
  type Assignment,
  decodeAssignment,
  type Entry,
  hostPlatform,
} from "../src/protocol/mod.ts";
import { decodeConfig } from "../src/config/mod.ts";

const PLATFORM = hostPlatform();
const MINUTE = 60_000;

/** A runner that only records what it is told; the test plays the process. */
class _FakeRunner implements Runner {
  readonly pid = null;
  restarts = 0;
  started = false;
  stopped = false;
  minimumBackoffMs = 0;
  constructor(readonly launch: Launch, readonly events: RunnerEvents) {}
  get id(): string {
    return this.launch.addon_id;
  }
  get version(): string {
    return this.launch.version;
  }
  start(): Promise<void> {
    this.started = true;
    return Promise.resolve();
  }
  stop(): Promise<void> {
    this.stopped = true;
    return Promise.resolve();
  }
  setMinimumBackoff(ms: number): void {
    this.minimumBackoffMs = ms;
  }
  /** The process crashed and the runner will restart it. */
  crash(code = 1): void {
    this.events.exited(code, null, 1000);
    this.restarts++;
  }
}

/** Delivers every assignment at once unless told to fail or hold one (`id@version`). */
class _FakeDeliverer implements Deliverer {
  readonly calls: string[] = [];
  readonly failing = new Map<string, string>();
  readonly held = new Map<string, Promise<void>>();
  deliver(a: Assignment, _hooks: DeliveryHooks): Promise<Delivered> {
    const key = `${a.addon_id}@${a.version}`;
    this.calls.push(`deliver ${key}`);
    return (async () => {
      await this.held.get(key);
      const why = this.failing.get(key);
      if (why !== undefined) throw new DeliveryError(why, { kind: "unavailable" });
      return {
        binary: `/staged/${a.addon_id}/${a.version}/${a.binary_name}`,
        sha256: a.artifact?.sha256 ?? "",
        fetched: 0,
        source: "staged",
      };
    })();
  }
  activate(addonId: string, version: string): Promise<{ changed: boolean }> {
    this.calls.push(`activate ${addonId}@${version}`);
    return Promise.resolve({ changed: true });
  }
  rollBack(addonId: string): Promise<string | null> {
    this.calls.push(`rollBack ${addonId}`);
    return Promise.resolve(null);
  }
  abortAll(): void {}
  downloading(): Iterable<string> {
    return [];
  }
}

interface _World {
  layout: Layout;
  state: AgentState;
  clock: FakeClock;
  deliverer: _FakeDeliverer;
  runners: _FakeRunner[];
  rec: Reconciler;
  /** The runner started last for `id`. */
  latest(id: string): _FakeRunner;
}

async function _world(dir: string): Promise<_World> {
  const layout = new Layout(`${dir}/root`);
  await Deno.mkdir(layout.addons, { recursive: true });
  await Deno.mkdir(layout.tmp, { recursive: true });
  const state = emptyState();
  const clock = new FakeClock();
  const deliverer = new _FakeDeliverer();
  const runners: _FakeRunner[] = [];
  const cfg = decodeConfig({
    agent_id: "test-host",
    runtime_root: layout.root,
    source: { kind: "file", path: `${dir}/assignments.json` },
    object_store: { kind: "filesystem", root: `${dir}/store` },
  }, `${dir}/agent.json`);
  const rec = new Reconciler({
    cfg,
    layout,
    platform: PLATFORM,
    state,
    deliverer,
    runners: (launch, events) => {
      const r = new _FakeRunner(launch, events);
      runners.push(r);
      return r;
    },
    clock,
    onChange: () => {},
  });
  return {
    layout,
    state,
    clock,
    deliverer,
    runners,
    rec,
    latest(id) {
      const r = runners.filter((x) => x.id === id).at(-1);
      if (!r) throw new Error(`no runner was started for ${id}`);
      return r;
    },
  };
}

function _sidecar(id: string, version: string, extra: Record<string, unknown> = {}): Assignment {
  return decodeAssignment(
    {
      addon_id: id,
      version,
      delivery: "pushed_artifact",
      supervision: "agent_sidecar",
      artifact_object_key: `${id}/${version}/${id}`,
      artifact_sha256: (version.replace(/\D/g, "") + "a".repeat(64)).slice(0, 64),
      ...extra,
    },
    "addons[0]",
    PLATFORM,
  );
}

function _ok(...as: Assignment[]): Entry[] {
  return as.map((assignment) => ({ ok: true, assignment }));
}

/** Wait until `cond` holds (it may need a file written in the background); fail after 5 s. */
async function _until(cond: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const end = Date.now() + 5_000;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Apply `a`, let its runner report it up, and wait until it is the last known good. */
async function _runGood(w: _World, entries: Entry[], handshake = false): Promise<void> {
  await w.rec.apply(entries);
  for (const e of entries) {
    if (!e.ok) continue;
    const a = e.assignment;
    w.latest(a.addon_id).events.running(handshake ? "unix|1|/tmp/plugin.sock|grpc" : undefined);
    await _until(async () => {
      const lg = await readLastGood(w.layout, a.addon_id, PLATFORM);
      return lg?.assignment.version === a.version && lg.handshake === handshake;
    }, `last-good.json of ${a.addon_id} ${a.version}`);
  }
  await w.rec.settled();
}

Deno.test("Reconciler rolls a new version back after 5 exits within 5 minutes of activation", async (t) => {
  await withTempDir(async (dir) => {
    const w = await _world(dir);
    await _runGood(w, _ok(_sidecar("probe", "1.0.0")));
    await w.rec.apply(_ok(_sidecar("probe", "2.0.0")));
    const bad = w.latest("probe");
    assertEquals(bad.version, "2.0.0");

    await t.step("4 exits within the window: still 2.0.0, restarting", async () => {
      for (let i = 0; i < 4; i++) {
        w.clock.advance(MINUTE);
        bad.crash();
      }
      await w.rec.settled();
      assertEquals(w.latest("probe"), bad);
      assertEquals(bad.stopped, false);
      assertEquals(w.state.addons.probe?.state, "starting");
      assert(!w.deliverer.calls.includes("rollBack probe"), "rolled back too early");
    });

    await t.step("the 5th exit (4m30s after activation) rolls back to 1.0.0", async () => {
      w.clock.advance(30_000);
      bad.crash();
      await w.rec.settled();
      assertEquals(bad.stopped, true);
      assert(w.deliverer.calls.includes("rollBack probe"), "current was not rolled back");
      const now = w.latest("probe");
      assertEquals([now.version, now.started], ["1.0.0", true]);
      const s = w.state.addons.probe!;
      assertEquals([s.state, s.version], ["rolled_back", "1.0.0"]);
      assertStringIncludes(s.message, "2.0.0 rolled back to 1.0.0: 5 exits within 270 s");
      assertEquals(s.failed_versions.map((f) => f.version), ["2.0.0"]);
      assertEquals((await readLastGood(w.layout, "probe", PLATFORM))?.assignment.version, "1.0.0");
    });

    await t.step("2.0.0 stays refused while it is assigned", async () => {
      const before = w.runners.length;
      await w.rec.apply(_ok(_sidecar("probe", "2.0.0")));
      await w.rec.tick();
      assertEquals(w.runners.length, before);
      assertEquals(w.state.addons.probe?.state, "rolled_back");
    });
  });
});

Deno.test("Reconciler keeps a version whose exits spread beyond the 5-minute window", async () => {
  await withTempDir(async (dir) => {
    const w = await _world(dir);
    await _runGood(w, _ok(_sidecar("probe", "1.0.0")));
    await w.rec.apply(_ok(_sidecar("probe", "2.0.0")));
    const v2 = w.latest("probe");
    for (let i = 0; i < 8; i++) {
      w.clock.advance(MINUTE + 1);
      v2.crash();
    }
    await w.rec.settled();
    assertEquals([w.latest("probe"), v2.stopped], [v2, false]);
    assert(!w.deliverer.calls.includes("rollBack probe"), "rolled back after the window");
    assertEquals(w.state.addons.probe?.failed_versions, []);
  });
});

Deno.test("Reconciler rolls back a version that owes the handshake after the timeout", async (t) => {
  await withTempDir(async (dir) => {
    const w = await _world(dir);
    await _runGood(w, _ok(_sidecar("plug", "1.0.0")), true);

    await t.step("a handshake in time: 2.0.0 is running, nothing fires later", async () => {
      await w.rec.apply(_ok(_sidecar("plug", "2.0.0")));
      const v2 = w.latest("plug");
      w.clock.advance(30_000);
      v2.events.running(); // up, but no handshake yet
      assertEquals(w.state.addons.plug?.state, "starting");
      v2.events.running("unix|1|/tmp/p.sock|grpc");
      assertEquals(w.state.addons.plug?.state, "running");
      w.clock.advance(10 * MINUTE);
      await w.rec.settled();
      assertEquals([w.latest("plug"), v2.stopped], [v2, false]);
      await _until(
        async () =>
          (await readLastGood(w.layout, "plug", PLATFORM))?.assignment.version === "2.0.0",
        "2.0.0 as the last good",
      );
    });

    await t.step("no handshake within 60 s: 3.0.0 is rolled back to 2.0.0", async () => {
      await w.rec.apply(_ok(_sidecar("plug", "3.0.0")));
      const v3 = w.latest("plug");
      v3.events.running(); // started, but never prints the handshake
      w.clock.advance(59_999);
      await w.rec.settled();
      assertEquals([w.latest("plug"), w.state.addons.plug?.state], [v3, "starting"]);
      w.clock.advance(1);
      await w.rec.settled();
      assertEquals(v3.stopped, true);
      assertEquals(w.latest("plug").version, "2.0.0");
      const s = w.state.addons.plug!;
      assertEquals(s.state, "rolled_back");
      assertStringIncludes(s.message, "no go-plugin handshake within 60 s");
    });
  });
});

Deno.test("Reconciler with nothing to roll back to: failed, restarting at the longest backoff", async () => {
  await withTempDir(async (dir) => {
    const w = await _world(dir);
    await w.rec.apply(_ok(_sidecar("first", "1.0.0")));
    const r = w.latest("first");
    for (let i = 0; i < 5; i++) {
      w.clock.advance(10_000);
      r.crash();
    }
    await w.rec.settled();
    const s = w.state.addons.first!;
    assertEquals(s.state, "failed");
    assertStringIncludes(s.message, "nothing to roll back to, restarting at the longest backoff");
    // It keeps restarting (no other version to run), but never sooner than 60 s apart.
    assertEquals([r.stopped, r.minimumBackoffMs], [false, 60_000]);
    assert(!w.deliverer.calls.includes("rollBack first"), "rolled back to nothing");
    assertEquals(w.runners.length, 1);
  });
});

Deno.test("Reconciler keeps the last known good when a new version cannot be delivered", async (t) => {
  await withTempDir(async (dir) => {
    const w = await _world(dir);
    await _runGood(w, _ok(_sidecar("probe", "1.0.0")));
    const v1 = w.latest("probe");

    await t.step("the running 1.0.0 is left alone: fallback, with the reason", async () => {
      w.deliverer.failing.set("probe@2.0.0", "store unreachable");
      await w.rec.apply(_ok(_sidecar("probe", "2.0.0")));
      assertEquals([v1.stopped, w.runners.length], [false, 1]);
      const s = w.state.addons.probe!;
      assertEquals([s.state, s.version, s.desired_version], ["fallback", "1.0.0", "2.0.0"]);
      assertStringIncludes(s.message, "2.0.0 could not be delivered: store unreachable");
      assertStringIncludes(s.message, "(retry in");
    });

    await t.step("no retry before the backoff is over", async () => {
      const delivered = w.deliverer.calls.filter((c) => c === "deliver probe@2.0.0").length;
      w.clock.advance(20_000);
      await w.rec.tick();
      assertEquals(w.deliverer.calls.filter((c) => c === "deliver probe@2.0.0").length, delivered);
    });

    await t.step("after the backoff a retry delivers and starts 2.0.0", async () => {
      w.deliverer.failing.delete("probe@2.0.0");
      w.clock.advance(20_000);
      await w.rec.tick();
      assertEquals([v1.stopped, w.latest("probe").version], [true, "2.0.0"]);
      assertEquals(w.state.addons.probe?.state, "starting");
    });
  });
});

Deno.test("Reconciler starts the last known good when nothing runs and delivery fails", async () => {
  await withTempDir(async (dir) => {
    const w = await _world(dir);
    // An earlier agent recorded 1.0.0; this one starts with 2.0.0 assigned and a dead store.
    await Deno.mkdir(w.layout.addonDir("probe"));
    await writeLastGood(w.layout, _sidecar("probe", "1.0.0"), { handshake: false });
    w.deliverer.failing.set("probe@2.0.0", "store unreachable");
    await w.rec.apply(_ok(_sidecar("probe", "2.0.0")));
    const r = w.latest("probe");
    assertEquals([r.version, r.started], ["1.0.0", true]);
    r.events.running();
    const s = w.state.addons.probe!;
    assertEquals([s.state, s.version], ["fallback", "1.0.0"]);
    assertStringIncludes(s.message, "2.0.0 could not be delivered: store unreachable");
  });
});

Deno.test("Reconciler keeps an add-on running as it was when its new entry is refused", async () => {
  await withTempDir(async (dir) => {
    const w = await _world(dir);
    await _runGood(w, _ok(_sidecar("probe", "1.0.0")));
    const v1 = w.latest("probe");
    const since = w.state.addons.probe?.since;
    await w.rec.apply([{
      ok: false,
      addon_id: "probe",
      path: "addons[0].artifact_sha256",
      error: "addons[0].artifact_sha256: must be 64 hex characters",
    }]);
    assertEquals([v1.stopped, w.runners.length], [false, 1]);
    const s = w.state.addons.probe!;
    assertEquals([s.state, s.version, s.since], ["running", "1.0.0", since]);
    assertStringIncludes(s.message, "assignment refused (addons[0].artifact_sha256: must be 64");
    assertStringIncludes(s.message, "still running 1.0.0");
    assert(await Deno.stat(w.layout.lastGood("probe")).then(() => true), "files were removed");
  });
});

Deno.test("Reconciler: a change to one add-on never touches another", async (t) => {
  await withTempDir(async (dir) => {
    const w = await _world(dir);
    await _runGood(w, _ok(_sidecar("alpha", "1.0.0"), _sidecar("beta", "1.0.0")));
    const alpha = w.latest("alpha");
    const alphaState = structuredClone(w.state.addons.alpha);

    await t.step("beta's new version restarts beta only", async () => {
      const calls = w.deliverer.calls.length;
      await w.rec.apply(_ok(_sidecar("alpha", "1.0.0"), _sidecar("beta", "2.0.0")));
      assertEquals(w.latest("beta").version, "2.0.0");
      assertEquals([w.latest("alpha"), alpha.stopped], [alpha, false]);
      assertEquals(w.state.addons.alpha, alphaState);
      assertEquals(
        w.deliverer.calls.slice(calls).filter((c) => c.includes("alpha")),
        [],
        "alpha was delivered again",
      );
    });

    await t.step("beta crash-looping and rolled back leaves alpha alone", async () => {
      const beta = w.latest("beta");
      for (let i = 0; i < 5; i++) beta.crash();
      await w.rec.settled();
      assertEquals(w.state.addons.beta?.state, "rolled_back");
      assertEquals([w.latest("alpha"), alpha.stopped], [alpha, false]);
      assertEquals(w.state.addons.alpha, alphaState);
    });

    await t.step("a hanging delivery of gamma does not hold up alpha's change", async () => {
      let release = () => {};
      w.deliverer.held.set("gamma@1.0.0", new Promise<void>((r) => release = r));
      const applied = w.rec.apply(
        // gamma first: a shared queue would make alpha wait behind it
        _ok(_sidecar("gamma", "1.0.0"), _sidecar("alpha", "1.1.0"), _sidecar("beta", "1.0.0")),
      );
      await _until(() => w.latest("alpha").version === "1.1.0", "alpha 1.1.0 to start");
      assertEquals(alpha.stopped, true);
      assert(!w.runners.some((r) => r.id === "gamma"), "gamma started before its delivery");
      release();
      await applied;
      assertEquals(w.latest("gamma").version, "1.0.0");
    });

    await t.step("removing beta stops it and removes its files, and nothing else", async () => {
      const beta = w.latest("beta");
      const alphaNow = w.latest("alpha");
      await w.rec.apply(_ok(_sidecar("alpha", "1.1.0"), _sidecar("gamma", "1.0.0")));
      assertEquals(beta.stopped, true);
      assertEquals(w.state.addons.beta, undefined);
      assertEquals(await Deno.stat(w.layout.lastGood("beta")).then(() => true, () => false), false);
      assertEquals([w.latest("alpha"), alphaNow.stopped], [alphaNow, false]);
      assertEquals(w.state.addons.alpha?.version, "1.1.0");
    });
  });
});
