/**
 * SPEC 12 "Timeouts" against the real program: an S3 store and a control
 * plane that accept and say nothing, or send headers and 10 bytes and then
 * nothing. `sync` ends (exit 1, the partial kept); the daemon keeps the
 * add-on running, applies a corrected assignment, and stops on SIGTERM
 * while a read is stalled.
 */

import { assert, assertEquals, assertStringIncludes } from "./_assert.ts";
import { startAgent, waitFor } from "./_agent_process.ts";
import { publish, sleepLink, waitAddon, waitState, withAgent } from "./_daemon_fixtures.ts";
import {
  MAIN_TS,
  S3_ENV,
  scriptAddon,
  sha256Hex,
  syncJson,
  withTempDir,
  writeAssignments,
  writeConfig,
} from "./_helpers.ts";
import { type Reply, s3Object, type SeenRequest, startStallServer } from "./_stall_server.ts";

const enc = new TextEncoder();

/** Published bytes of add-on `app` at `version` (a script that sleeps through `sleepBin`). */
function _app(sleepBin: string, version: string): Uint8Array {
  return enc.encode(scriptAddon(`echo "up ${version}"; exec "${sleepBin}" 1000`));
}

function _entry(version: string, bytes: Uint8Array): Record<string, unknown> {
  return {
    addon_id: "app",
    version,
    delivery: "pushed_artifact",
    supervision: "agent_sidecar",
    artifact_object_key: `app/${version}/app`,
    artifact_sha256: sha256Hex(bytes),
  };
}

/** `sync --json` that is killed after 60 s: a hang fails the test instead of stalling it. */
async function _sync(cfg: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", MAIN_TS, "sync", "--config", cfg, "--json"],
    env: S3_ENV,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

function _s3Config(dir: string, endpoint: string, timeouts: Record<string, number>) {
  return writeConfig(dir, {
    source: { kind: "file", path: `${dir}/assignments.json`, poll_interval_s: 1 },
    object_store: { kind: "s3", bucket: "addons", endpoint, force_path_style: true },
    timeouts,
  });
}

/** Until the server holds a stalled request open (the agent is waiting on it). */
function _stalled(srv: { hanging(): number }, what: string, tail: () => string) {
  return waitFor(() => srv.hanging() > 0 ? true : null, { timeoutMs: 30_000, what, context: tail });
}

Deno.test("sync ends with exit 1 against a stalled S3 store and keeps the partial", async (t) => {
  await withTempDir(async (dir) => {
    const bytes = enc.encode(scriptAddon("exit 0") + "#".repeat(50_000));
    let mode: "silent" | "trickle" = "trickle";
    const srv = startStallServer((): Reply =>
      mode === "silent" ? { kind: "silent" } : { kind: "trickle", body: bytes, send: 10 }
    );
    try {
      const cfg = await _s3Config(dir, srv.url, { connect_s: 1, idle_s: 1 });
      await writeAssignments(dir, [_entry("1.0.0", bytes)]);
      await t.step("headers and 10 bytes, then nothing: exit 1, 10 bytes kept", async () => {
        const run = await _sync(cfg);
        assertEquals(run.code, 1, run.stderr);
        const r = syncJson(run).results[0]!;
        assertStringIncludes(r.message, "timeouts.idle_s");
        const partial = `${dir}/root/tmp/${sha256Hex(bytes)}.partial`;
        assertEquals((await Deno.stat(partial)).size, 10);
      });
      await t.step("accepts and says nothing: exit 1 naming connect_s", async () => {
        mode = "silent";
        const run = await _sync(cfg);
        assertEquals(run.code, 1, run.stderr);
        assertStringIncludes(syncJson(run).results[0]!.message, "timeouts.connect_s");
      });
    } finally {
      await srv.close();
    }
  });
});

Deno.test("run keeps an add-on running past a stalled S3 store, takes a corrected assignment and stops on SIGTERM", async (t) => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const v1 = _app(sleepBin, "1.0.0");
    const v2 = _app(sleepBin, "2.0.0");
    const v3 = _app(sleepBin, "3.0.0");
    const objects: Record<string, Uint8Array> = {
      "/addons/app/1.0.0/app": v1,
      "/addons/app/3.0.0/app": v3,
    };
    const srv = startStallServer((req: SeenRequest): Reply => {
      const path = req.path.split("?")[0]!;
      const body = objects[path];
      if (body) return s3Object(req, body);
      if (path === "/addons/app/2.0.0/app") return { kind: "trickle", body: v2, send: 10 };
      return { kind: "silent" };
    });
    try {
      await writeAssignments(dir, [_entry("1.0.0", v1)]);
      const cfg = await _s3Config(dir, srv.url, { connect_s: 2, idle_s: 2 });
      await withAgent(dir, cfg, async (agent) => {
        const first = await waitState(root, agent, "app", "running");
        await t.step(
          "a stalled download of 2.0.0 fails (transient); 1.0.0 keeps running",
          async () => {
            await writeAssignments(dir, [_entry("2.0.0", v2)], "v2");
            const s = await waitAddon(
              root,
              agent,
              "app",
              "fallback after a stall",
              (a) => a.state === "fallback" && a.message.includes("timeouts.idle_s"),
            );
            assertEquals(s.pid, first.pid, "the running version was not touched");
            assertEquals(s.version, "1.0.0");
          },
        );
        await t.step("a corrected assignment (3.0.0) is applied", async () => {
          await writeAssignments(dir, [_entry("3.0.0", v3)], "v3");
          await waitAddon(
            root,
            agent,
            "app",
            "3.0.0 running",
            (a) => a.state === "running" && a.version === "3.0.0",
          );
        });
      });
    } finally {
      await srv.close();
    }

    await t.step(
      "idle_s 3600: a newer assignment abandons a stalled download; SIGTERM during one exits 0",
      async () => {
        const stall = startStallServer((req): Reply => {
          const path = req.path.split("?")[0]!;
          const body = objects[path];
          if (body) return s3Object(req, body);
          return path === "/addons/app/2.0.0/app"
            ? { kind: "trickle", body: v2, send: 10 }
            : { kind: "silent" };
        });
        try {
          await writeAssignments(dir, [_entry("2.0.0", v2)], "v4");
          const cfg = await _s3Config(dir, stall.url, { connect_s: 3600, idle_s: 3600 });
          const agent = startAgent(cfg, {}, { stopTimeoutMs: 20_000 });
          try {
            await _stalled(stall, "the download of 2.0.0 is stalled", () => agent.tail());
            // Nothing ends that read but a newer assignment: it is abandoned at once.
            await writeAssignments(dir, [_entry("1.0.0", v1)], "v5");
            await waitAddon(
              root,
              agent,
              "app",
              "1.0.0 running after the abandoned download",
              (a) => a.state === "running" && a.version === "1.0.0",
            );
            assert(
              agent.logs().some((l) => l.msg === "delivery abandoned for a newer assignment"),
              agent.tail(),
            );
            const before = stall.hanging();
            await writeAssignments(dir, [_entry("2.0.0", v2)], "v6");
            await waitFor(() => stall.hanging() > before ? true : null, {
              timeoutMs: 30_000,
              what: "2.0.0 stalled again",
              context: () => agent.tail(),
            });
            assertEquals(await agent.stop(), 0);
          } finally {
            await agent.stop().catch(() => {});
          }
        } finally {
          await stall.close();
        }
      },
    );
  });
});

Deno.test("run survives a stalled control plane, applies the corrected document and stops on SIGTERM", async (t) => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const doc = async (version: string) =>
      JSON.stringify({
        config_version: `c${version}`,
        addons: [{
          addon_id: "app",
          version,
          delivery: "pushed_artifact",
          supervision: "agent_sidecar",
          ...(await publish(dir, "app", version, _app(sleepBin, version))),
        }],
      });
    let route: (req: SeenRequest) => Reply;
    const good = (text: string) => (req: SeenRequest): Reply =>
      req.method === "POST" ? { kind: "respond", status: 204 } : {
        kind: "respond",
        status: 200,
        body: text,
        headers: { "content-type": "application/json" },
      };
    route = good(await doc("1.0.0"));
    const srv = startStallServer((req) => route(req));
    const config = (timeouts: Record<string, number>) =>
      writeConfig(dir, {
        source: { kind: "control_plane", url: srv.url, poll_interval_s: 1 },
        object_store: { kind: "filesystem", root: `${dir}/store` },
        timeouts,
      });
    try {
      const cfg = await config({ connect_s: 2, idle_s: 2 });
      await withAgent(dir, cfg, async (agent) => {
        const first = await waitState(root, agent, "app", "running");
        await t.step(
          "headers and 10 bytes, then nothing: the poll fails, the add-on runs on",
          async () => {
            route = (req) =>
              req.method === "POST"
                ? { kind: "silent" }
                : { kind: "trickle", body: enc.encode(" ".repeat(1000)), send: 10 };
            const failed = await waitFor(
              () =>
                agent.logs().find((l) =>
                  l.msg.startsWith("poll failed") && String(l.error).includes("timeouts.idle_s")
                ) ?? null,
              { timeoutMs: 30_000, what: "a poll failed on idle_s", context: () => agent.tail() },
            );
            assert(failed);
            route = (req) =>
              req.method === "POST" ? { kind: "respond", status: 204 } : { kind: "silent" };
            await waitFor(
              () =>
                agent.logs().find((l) =>
                  l.msg.startsWith("poll failed") && String(l.error).includes("timeouts.connect_s")
                ) ?? null,
              {
                timeoutMs: 30_000,
                what: "a poll failed on connect_s",
                context: () => agent.tail(),
              },
            );
            const s = await waitState(root, agent, "app", "running");
            assertEquals(s.pid, first.pid);
          },
        );
        await t.step("the corrected document is applied", async () => {
          route = good(await doc("2.0.0"));
          await waitAddon(
            root,
            agent,
            "app",
            "2.0.0 running",
            (a) => a.state === "running" && a.version === "2.0.0",
            60_000,
          );
        });
      });

      await t.step("SIGTERM while a poll is stalled (3600 s timeouts): exit 0", async () => {
        const cfg = await config({ connect_s: 3600, idle_s: 3600 });
        route = (req) =>
          req.method === "POST"
            ? { kind: "silent" }
            : { kind: "trickle", body: enc.encode(" ".repeat(1000)), send: 10 };
        const before = srv.hanging();
        const agent = startAgent(cfg, {}, { stopTimeoutMs: 20_000 });
        try {
          await waitFor(() => srv.hanging() > before ? true : null, {
            timeoutMs: 30_000,
            what: "a stalled poll",
            context: () => agent.tail(),
          });
          assertEquals(await agent.stop(), 0);
        } finally {
          await agent.stop().catch(() => {});
        }
      });
    } finally {
      await srv.close();
    }
  });
});
