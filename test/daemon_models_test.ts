/**
 * `addon-agent run` with real processes: the supervision models other than a
 * plain sidecar (`ephemeral_helper`, go-plugin handshake readiness,
 * `systemd_service` / `systemd_timer` units, file capabilities with
 * `setcap`, `os_package`, unsupported models) and the status endpoint.
 * Add-ons are staged through the real pipeline from a filesystem store; the
 * source is a file polled every 0.5 s. systemd is not PID 1 here: units are
 * checked with `systemd-analyze verify`, and a stand-in `systemctl` first on
 * the agent's PATH records the calls made.
 *
 * Every process an add-on starts carries the test's temp dir in its command
 * line (scripts live below it; their long sleeps run through a symlink
 * `<dir>/bin/sleep`), so `killMarked(dir)` finds and ends anything that
 * outlived a test, and the tests assert that nothing did.
 */

import { assert, assertEquals, assertMatch, assertStringIncludes } from "./_assert.ts";
import {
  type AgentProcess,
  killMarked,
  markedProcesses,
  pidAlive,
  readAgentState,
  sleep,
  startAgent,
  waitFor,
} from "./_agent_process.ts";
import { scriptAddon, sha256Hex, withTempDir, writeAssignments, writeConfig } from "./_helpers.ts";
import type { AddonState, AgentState } from "../src/state.ts";
import type { StatusDocument } from "../src/status.ts";

// ---------------------------------------------------------------------------
// helpers

const VERSION = "1.0.0";
const decoder = new TextDecoder();

/** Make `<dir>/bin/sleep` (a symlink to sleep) so long sleeps carry `dir` in their cmdline. */
async function _sleepLink(dir: string): Promise<string> {
  await Deno.mkdir(`${dir}/bin`, { recursive: true });
  const target = await Deno.realPath("/bin/sleep");
  await Deno.symlink(target, `${dir}/bin/sleep`);
  return `${dir}/bin/sleep`;
}

/** Publish `bytes` into the filesystem store; returns the artifact reference fields. */
async function _publish(
  dir: string,
  id: string,
  version: string,
  bytes: string | Uint8Array,
): Promise<{ artifact_object_key: string; artifact_sha256: string }> {
  const key = `${id}/${version}/${id}`;
  await Deno.mkdir(`${dir}/store/${id}/${version}`, { recursive: true });
  if (typeof bytes === "string") await Deno.writeTextFile(`${dir}/store/${key}`, bytes);
  else await Deno.writeFile(`${dir}/store/${key}`, bytes);
  return { artifact_object_key: key, artifact_sha256: sha256Hex(bytes) };
}

/** An entry supervised as `supervision` whose artifact is `bytes` (a script body when a string). */
async function _entry(
  dir: string,
  id: string,
  supervision: string,
  bytes: string | Uint8Array,
  extra: Record<string, unknown> = {},
): Promise<Record<string, unknown>> {
  return {
    addon_id: id,
    version: VERSION,
    delivery: "pushed_artifact",
    supervision,
    ...(await _publish(dir, id, VERSION, typeof bytes === "string" ? scriptAddon(bytes) : bytes)),
    ...extra,
  };
}

/** `agent.json` with a file source polled every 0.5 s and a filesystem store. */
function _config(dir: string, extra: Record<string, unknown> = {}): Promise<string> {
  return writeConfig(dir, {
    source: { kind: "file", path: `${dir}/assignments.json`, poll_interval_s: 0.5 },
    object_store: { kind: "filesystem", root: `${dir}/store` },
    ...extra,
  });
}

/**
 * Start the agent, run `body`, and always stop it (SIGTERM) and kill
 * whatever of the test is still alive. When `body` succeeded, the agent must
 * have exited 0 and no process carrying `dir` may have survived.
 */
async function _withAgent(
  dir: string,
  cfgPath: string,
  body: (agent: AgentProcess) => Promise<void>,
  env: Record<string, string> = {},
): Promise<void> {
  const agent = startAgent(cfgPath, env);
  let ok = false;
  try {
    await body(agent);
    ok = true;
  } finally {
    let code: number | Error;
    try {
      code = await agent.stop();
    } catch (e) {
      code = e as Error;
    }
    const left = await killMarked(dir);
    if (ok) {
      assertEquals(code, 0, `agent exit code; log:\n${agent.tail()}`);
      assertEquals(left, [], "processes of the test that outlived the agent");
    }
  }
}

/** Wait until `pred` holds for add-on `id` in `state.json`; returns that add-on's state. */
function _waitAddon(
  root: string,
  agent: AgentProcess,
  id: string,
  what: string,
  pred: (a: AddonState, s: AgentState) => boolean,
  timeoutMs = 20_000,
): Promise<AddonState> {
  return waitFor(async () => {
    agent.assertAlive();
    const s = await readAgentState(root);
    const a = s?.addons[id];
    return a && s && pred(a, s) ? a : null;
  }, {
    timeoutMs,
    what: `${id}: ${what}`,
    context: () => agent.tail(),
  });
}

async function _lines(path: string): Promise<string[]> {
  try {
    return (await Deno.readTextFile(path)).split("\n").filter((l) => l !== "");
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
}

async function _exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Run a command; its exit code and stdout+stderr. */
async function _cmd(cmd: string, args: string[]): Promise<{ code: number; output: string }> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped", stdin: "null" })
    .output();
  return {
    code: out.code,
    output: (decoder.decode(out.stdout) + decoder.decode(out.stderr)).trim(),
  };
}

// ---------------------------------------------------------------------------
// tests

Deno.test("run kills an overrunning helper with its group and runs a completed one once", async (t) => {
  await withTempDir(async (dir) => {
    const sleepBin = await _sleepLink(dir);
    const root = `${dir}/root`;
    const overrun = await _entry(
      dir,
      "overrun",
      "ephemeral_helper",
      [
        `"${sleepBin}" 1000 &`,
        'echo $! >> "$ADDON_DATA_DIR/grandchildren"',
        "echo working",
        `"${sleepBin}" 1000`,
      ].join("\n"),
      { timeout_s: 1 },
    );
    const once = await _entry(
      dir,
      "once",
      "ephemeral_helper",
      'echo run >> "$ADDON_DATA_DIR/runs"\necho "all done"\nexit 0',
      { config: { mode: "setup" } },
    );
    await writeAssignments(dir, [overrun, once]);
    const cfg = await _config(dir);
    let completedMessage = "";

    await _withAgent(dir, cfg, async (agent) => {
      await t.step("a helper that overruns its timeout fails and its group is killed", async () => {
        const s = await _waitAddon(root, agent, "overrun", "failed", (a) => a.state === "failed");
        assertStringIncludes(s.message, "timed out");
        assertStringIncludes(s.message, "working", "the message carries the output's tail");
        assertEquals([s.pid, s.pgid], [null, null]);
        const gcs = (await _lines(`${root}/addons/overrun/data/grandchildren`)).map(Number);
        assertEquals(gcs.length, 1, "grandchildren recorded");
        assert(!pidAlive(gcs[0]!), `the helper's grandchild ${gcs[0]} is alive`);
        assertEquals(
          markedProcesses(`${root}/addons/overrun/`).concat(markedProcesses(sleepBin)),
          [],
          "processes of the helper alive",
        );
      });

      await t.step("a helper that exits 0 is completed", async () => {
        const s = await _waitAddon(
          root,
          agent,
          "once",
          "completed",
          (a) => a.state === "completed",
        );
        assertEquals(s.exit_code, 0);
        assertStringIncludes(s.message, "all done");
        completedMessage = s.message;
        await sleep(1_500); // more polls: it is not run again
        assertEquals(await _lines(`${root}/addons/once/data/runs`), ["run"]);
      });
    });

    await _withAgent(dir, cfg, async (agent) => {
      await t.step(
        "after an agent restart with the same version and config it is not run again",
        async () => {
          const s = await _waitAddon(
            root,
            agent,
            "once",
            "completed again, without a run",
            (a) => a.state === "completed" && a.message !== completedMessage,
          );
          assertEquals(s.exit_code, 0);
          await sleep(1_500);
          assertEquals(await _lines(`${root}/addons/once/data/runs`), ["run"], "runs");
        },
      );
    });
  });
});

Deno.test("run marks a go-plugin add-on running on its handshake and serves the status endpoint", async (t) => {
  await withTempDir(async (dir) => {
    const sleepBin = await _sleepLink(dir);
    const root = `${dir}/root`;
    await writeAssignments(dir, [
      await _entry(
        dir,
        "plugin",
        "agent_sidecar",
        `echo "1|1|tcp|127.0.0.1:4321|grpc"\nexec "${sleepBin}" 1000`,
      ),
      // Up for half a second only: it can be `running` through its handshake alone,
      // never through the 2 s uptime rule.
      await _entry(
        dir,
        "brief-plugin",
        "agent_sidecar",
        `echo "1|1|tcp|127.0.0.1:4322|grpc"\n"${sleepBin}" 0.5\nexit 1`,
      ),
      await _entry(dir, "plain", "agent_sidecar", `exec "${sleepBin}" 1000`),
      {
        addon_id: "pkg-missing",
        version: VERSION,
        delivery: "os_package",
        supervision: "agent_sidecar",
        binary_path: `${dir}/not-installed/pkg-missing`,
      },
      await _entry(dir, "exotic", "docker_container", "exit 0"),
      {
        addon_id: "toggle",
        version: VERSION,
        supervision: "config_toggle",
        config: { feature_x: true },
      },
    ]);
    const cfg = await _config(dir, { status: { listen: "127.0.0.1:0" } });

    await _withAgent(dir, cfg, async (agent) => {
      await t.step("a handshake line makes it running with its address", async () => {
        const s = await _waitAddon(
          root,
          agent,
          "plugin",
          "running with an address",
          (a) => a.state === "running" && a.address !== undefined,
        );
        assertEquals(s.address, "127.0.0.1:4321");
        assert(s.pid !== null && pidAlive(s.pid), "plugin runs");
      });

      await t.step("the handshake alone, before the 2 s rule, makes it running", async () => {
        await waitFor(
          () => agent.logs().some((l) => l.addon_id === "brief-plugin" && l.state === "running"),
          { timeoutMs: 20_000, what: "brief-plugin running", context: () => agent.tail() },
        );
        const logs = agent.logs().filter((l) => l.addon_id === "brief-plugin");
        const exited = logs.findIndex((l) => typeof l.restart_in_ms === "number");
        const running = logs.findIndex((l) => l.state === "running");
        assert(exited === -1 || running < exited, "it was running before its first exit");
      });

      await t.step("os_package with a missing binary_path is failed with that reason", async () => {
        const s = await _waitAddon(
          root,
          agent,
          "pkg-missing",
          "failed",
          (a) => a.state === "failed",
        );
        assertStringIncludes(s.message, `${dir}/not-installed/pkg-missing does not exist`);
        assertEquals(s.pid, null);
      });

      await t.step("an unknown supervision is unsupported while the others run", async () => {
        const s = await _waitAddon(
          root,
          agent,
          "exotic",
          "unsupported",
          (a) => a.state === "unsupported",
        );
        assertStringIncludes(s.message, "docker_container");
        assertEquals(s.pid, null);
        const p = await _waitAddon(root, agent, "plain", "running", (a) => a.state === "running");
        assert(p.pid !== null && pidAlive(p.pid), "plain runs");
        const tg = await _waitAddon(root, agent, "toggle", "running", (a) => a.state === "running");
        assertEquals(tg.toggles, { feature_x: true });
      });

      await t.step("the status endpoint serves /healthz, /status and /metrics", async () => {
        const listening = agent.logs().find((l) => l.msg === "status endpoint listening");
        assert(listening, "the agent logged its status address");
        const base = `http://${listening.listen as string}`;
        assertMatch(base, /^http:\/\/127\.0\.0\.1:\d+$/);

        const h = await fetch(`${base}/healthz`);
        assertEquals(h.status, 200);
        await h.body?.cancel();

        const st = await fetch(`${base}/status`);
        assertEquals(st.status, 200);
        const doc = await st.json() as StatusDocument;
        assertEquals(
          doc.addons.map((a) => a.addon_id),
          ["brief-plugin", "exotic", "pkg-missing", "plain", "plugin", "toggle"],
        );
        const byId = new Map(doc.addons.map((a) => [a.addon_id, a]));
        assertEquals(byId.get("plugin")?.state, "running");
        assertEquals(byId.get("plugin")?.address, "127.0.0.1:4321");
        assertEquals(byId.get("plain")?.current, VERSION);
        assertEquals(byId.get("exotic")?.state, "unsupported");
        assertEquals(byId.get("pkg-missing")?.state, "failed");
        assert(!("pgid_identity" in (byId.get("plain") ?? {})), "no pgid_identity in /status");

        const m = await fetch(`${base}/metrics`);
        assertEquals(m.status, 200);
        assertStringIncludes(m.headers.get("content-type") ?? "", "text/plain");
        const text = await m.text();
        const metrics = text.split("\n");
        for (
          const line of [
            'addon_agent_addon_state{addon_id="plain",state="running"} 1',
            'addon_agent_addon_state{addon_id="plain",state="failed"} 0',
            'addon_agent_addon_state{addon_id="plugin",state="running"} 1',
            'addon_agent_addon_state{addon_id="exotic",state="unsupported"} 1',
            'addon_agent_addon_state{addon_id="pkg-missing",state="failed"} 1',
            'addon_agent_addon_restarts_total{addon_id="plain"} 0',
          ]
        ) {
          assert(metrics.includes(line), `/metrics lacks ${line}:\n${text}`);
        }
        assert(
          metrics.some((l) => /^addon_agent_uptime_seconds \d+(\.\d+)?$/.test(l)),
          `/metrics lacks addon_agent_uptime_seconds:\n${text}`,
        );
        assert(
          metrics.some((l) => /^addon_agent_last_delivery_bytes\{addon_id="plain"\} \d+$/.test(l)),
          `/metrics lacks the last delivery bytes of plain:\n${text}`,
        );

        const nf = await fetch(`${base}/nope`);
        assertEquals(nf.status, 404);
        await nf.body?.cancel();
      });
    });
  });
});

Deno.test("run writes systemd units that verify and drives systemctl to enable and remove them", async (t) => {
  await withTempDir(async (dir) => {
    const root = `${dir}/root`;
    const unitDir = `${dir}/units`;
    await Deno.mkdir(unitDir);
    // A stand-in systemctl, first on the agent's PATH, that records its arguments.
    const callLog = `${dir}/systemctl.log`;
    await Deno.mkdir(`${dir}/fakebin`);
    await Deno.writeTextFile(
      `${dir}/fakebin/systemctl`,
      `#!/bin/sh\necho "$*" >> "${callLog}"\nexit 0\n`,
      { mode: 0o755 },
    );
    await Deno.chmod(`${dir}/fakebin/systemctl`, 0o755);
    const env = { PATH: `${dir}/fakebin:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}` };

    const svc = await _entry(dir, "svc", "systemd_service", "exec sleep 1000", {
      args: ["--port", "8080"],
      env: { MODE: "fast" },
    });
    const tmr = await _entry(dir, "tmr", "systemd_timer", "echo tick", { schedule: "*:0/5" });
    await writeAssignments(dir, [svc, tmr], "v1");
    const cfg = await _config(dir, { systemd: { unit_dir: unitDir } });
    const calls = () => _lines(callLog);
    const files = {
      svc: `${unitDir}/addon-agent-svc.service`,
      tmrService: `${unitDir}/addon-agent-tmr.service`,
      tmrTimer: `${unitDir}/addon-agent-tmr.timer`,
    };

    await _withAgent(dir, cfg, async (agent) => {
      await t.step("the unit files are written and pass systemd-analyze verify", async () => {
        await _waitAddon(root, agent, "svc", "running", (a) => a.state === "running");
        await _waitAddon(root, agent, "tmr", "running", (a) => a.state === "running");
        for (const f of Object.values(files)) assert(await _exists(f), `${f} exists`);
        assertEquals(
          [...Deno.readDirSync(unitDir)].map((e) => e.name).sort(),
          ["addon-agent-svc.service", "addon-agent-tmr.service", "addon-agent-tmr.timer"],
        );
        const r = await _cmd("systemd-analyze", [
          "verify",
          "--man=no",
          "--recursive-errors=no",
          ...Object.values(files),
        ]);
        assertEquals(`exit ${r.code}: ${r.output}`, "exit 0: ", "systemd-analyze verify");
      });

      await t.step("ExecStart runs the staged binary, which exists", async () => {
        const staged = `${root}/addons/svc/versions/${VERSION}/svc`;
        const unit = await Deno.readTextFile(files.svc);
        assert(unit.split("\n").includes(`ExecStart=${staged} --port 8080`), unit);
        assert(unit.split("\n").includes('Environment="MODE=fast"'), unit);
        assert(unit.split("\n").includes(`ReadWritePaths="${root}/addons/svc/data"`), unit);
        const st = await Deno.stat(staged);
        assert(st.isFile && (st.mode! & 0o111) !== 0, `${staged} is executable`);
        const tunit = await Deno.readTextFile(files.tmrService);
        assert(
          tunit.split("\n").includes(`ExecStart=${root}/addons/tmr/versions/${VERSION}/tmr`),
          tunit,
        );
        const timer = await Deno.readTextFile(files.tmrTimer);
        assert(timer.split("\n").includes("OnCalendar=*:0/5"), timer);
        assert(timer.split("\n").includes("Unit=addon-agent-tmr.service"), timer);
      });

      await t.step("systemctl was asked to reload and enable --now each primary unit", async () => {
        const c = await calls();
        const enables = c.filter((l) => l.startsWith("enable"));
        assertEquals(
          enables.sort(),
          ["enable --now addon-agent-svc.service", "enable --now addon-agent-tmr.timer"],
          `calls: ${JSON.stringify(c)}`,
        );
        for (const e of enables) {
          const i = c.indexOf(e);
          assert(c.slice(0, i).includes("daemon-reload"), `no daemon-reload before ${e}: ${c}`);
        }
        assertEquals(
          c.filter((l) => l !== "daemon-reload" && !l.startsWith("enable --now")),
          [],
          "other calls",
        );
      });

      await t.step(
        "removing the service: disable --now, files deleted, daemon-reload",
        async () => {
          const before = (await calls()).length;
          await writeAssignments(dir, [tmr], "v2");
          await waitFor(async () => !(await _exists(files.svc)), {
            timeoutMs: 10_000,
            what: "the svc unit file to be deleted",
            context: () => agent.tail(),
          });
          await waitFor(async () => (await calls()).length >= before + 2, {
            timeoutMs: 5_000,
            what: "systemctl calls for the removal",
          });
          await sleep(1_000); // no further calls
          assertEquals(
            (await calls()).slice(before),
            ["disable --now addon-agent-svc.service", "daemon-reload"],
          );
          assert(
            await _exists(files.tmrTimer) && await _exists(files.tmrService),
            "tmr's units stay",
          );
          const s = await readAgentState(root);
          assert(s && !("svc" in s.addons), "svc is no longer in state.json");
        },
      );

      await t.step(
        "removing the timer: disable --now timer and service, files deleted",
        async () => {
          const before = (await calls()).length;
          await writeAssignments(dir, [], "v3");
          await waitFor(() => [...Deno.readDirSync(unitDir)].length === 0, {
            timeoutMs: 10_000,
            what: "the tmr unit files to be deleted",
            context: () => agent.tail(),
          });
          await waitFor(async () => (await calls()).length >= before + 3, {
            timeoutMs: 5_000,
            what: "systemctl calls for the removal",
          });
          await sleep(1_000);
          assertEquals((await calls()).slice(before), [
            "disable --now addon-agent-tmr.timer",
            "disable --now addon-agent-tmr.service",
            "daemon-reload",
          ]);
        },
      );
    }, env);
  });
});

Deno.test("run applies file capabilities with setcap to a staged executable", async (t) => {
  await withTempDir(async (dir) => {
    const root = `${dir}/root`;
    const sleepBytes = await Deno.readFile(await Deno.realPath("/bin/sleep"));
    await writeAssignments(dir, [
      await _entry(dir, "pinger", "agent_sidecar", sleepBytes, {
        args: ["1000"],
        capabilities: ["CAP_NET_RAW"],
      }),
    ]);
    const cfg = await _config(dir);
    await _withAgent(dir, cfg, async (agent) => {
      const staged = `${root}/addons/pinger/versions/${VERSION}/pinger`;
      const s = await _waitAddon(root, agent, "pinger", "running", (a) => a.state === "running");

      await t.step("getcap shows cap_net_raw=ep on the staged binary", async () => {
        const r = await _cmd("getcap", [staged]);
        assertEquals(r.code, 0, r.output);
        assertEquals(r.output, `${staged} cap_net_raw=ep`);
      });

      await t.step("the add-on runs from that binary", async () => {
        assert(s.pid !== null && pidAlive(s.pid), "pinger runs");
        assertEquals(await Deno.readLink(`/proc/${s.pid}/exe`), staged);
        assertEquals(sha256Hex(await Deno.readFile(staged)), sha256Hex(sleepBytes));
      });
    });
  });
});
