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
import { markedProcesses, pidAlive, readAgentState, waitFor } from "./_agent_process.ts";
import {
  COUNT_POLLS,
  daemonConfig,
  entry,
  sleepLink,
  VERSION,
  waitAddon,
  waitPolls,
  waitState,
  withAgent,
} from "./_daemon_fixtures.ts";
import { exists, fileLines, sha256Hex, withTempDir, writeAssignments } from "./_helpers.ts";
import type { StatusDocument } from "../src/status/status.ts";

// ---------------------------------------------------------------------------
// helpers

const decoder = new TextDecoder();

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
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const overrun = await entry(
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
    const once = await entry(
      dir,
      "once",
      "ephemeral_helper",
      'echo run >> "$ADDON_DATA_DIR/runs"\necho "all done"\nexit 0',
      { config: { mode: "setup" } },
    );
    await writeAssignments(dir, [overrun, once]);
    const cfg = await daemonConfig(dir);
    let completedMessage = "";

    await withAgent(
      dir,
      cfg,
      async (agent) => {
        await t.step(
          "a helper that overruns its timeout fails and its group is killed",
          async () => {
            const s = await waitState(root, agent, "overrun", "failed");
            assertStringIncludes(s.message, "timed out");
            assertStringIncludes(s.message, "working", "the message carries the output's tail");
            assertEquals([s.pid, s.pgid], [null, null]);
            const gcs = (await fileLines(`${root}/addons/overrun/data/grandchildren`)).map(Number);
            assertEquals(gcs.length, 1, "grandchildren recorded");
            assert(!pidAlive(gcs[0]!), `the helper's grandchild ${gcs[0]} is alive`);
            assertEquals(
              markedProcesses(`${root}/addons/overrun/`).concat(markedProcesses(sleepBin)),
              [],
              "processes of the helper alive",
            );
          },
        );

        await t.step("a helper that exits 0 is completed", async () => {
          const s = await waitState(root, agent, "once", "completed");
          assertEquals(s.exit_code, 0);
          assertStringIncludes(s.message, "all done");
          completedMessage = s.message;
          await waitPolls(agent, 3); // more polls: it is not run again
          assertEquals(await fileLines(`${root}/addons/once/data/runs`), ["run"]);
        });
      },
      {},
      COUNT_POLLS,
    );

    await withAgent(
      dir,
      cfg,
      async (agent) => {
        await t.step(
          "after an agent restart with the same version and config it is not run again",
          async () => {
            const s = await waitAddon(
              root,
              agent,
              "once",
              "completed again, without a run",
              (a) => a.state === "completed" && a.message !== completedMessage,
            );
            assertEquals(s.exit_code, 0);
            await waitPolls(agent, 3);
            assertEquals(await fileLines(`${root}/addons/once/data/runs`), ["run"], "runs");
          },
        );
      },
      {},
      COUNT_POLLS,
    );
  });
});

Deno.test("run marks a go-plugin add-on running on its handshake and serves the status endpoint", async (t) => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    await writeAssignments(dir, [
      await entry(
        dir,
        "plugin",
        "agent_sidecar",
        `echo "1|1|tcp|127.0.0.1:4321|grpc"\nexec "${sleepBin}" 1000`,
      ),
      // Up for half a second only: it can be `running` through its handshake alone,
      // never through the 2 s uptime rule.
      await entry(
        dir,
        "brief-plugin",
        "agent_sidecar",
        `echo "1|1|tcp|127.0.0.1:4322|grpc"\n"${sleepBin}" 0.5\nexit 1`,
      ),
      await entry(dir, "plain", "agent_sidecar", `exec "${sleepBin}" 1000`),
      {
        addon_id: "pkg-missing",
        version: VERSION,
        delivery: "os_package",
        supervision: "agent_sidecar",
        binary_path: `${dir}/not-installed/pkg-missing`,
      },
      await entry(dir, "exotic", "docker_container", "exit 0"),
      {
        addon_id: "toggle",
        version: VERSION,
        supervision: "config_toggle",
        config: { feature_x: true },
      },
    ]);
    const cfg = await daemonConfig(dir, { status: { listen: "127.0.0.1:0" } });

    await withAgent(dir, cfg, async (agent) => {
      await t.step("a handshake line makes it running with its address", async () => {
        const s = await waitAddon(
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
        const s = await waitState(root, agent, "pkg-missing", "failed");
        assertStringIncludes(s.message, `${dir}/not-installed/pkg-missing does not exist`);
        assertEquals(s.pid, null);
      });

      await t.step("an unknown supervision is unsupported while the others run", async () => {
        const s = await waitState(root, agent, "exotic", "unsupported");
        assertStringIncludes(s.message, "docker_container");
        assertEquals(s.pid, null);
        const p = await waitState(root, agent, "plain", "running");
        assert(p.pid !== null && pidAlive(p.pid), "plain runs");
        const tg = await waitState(root, agent, "toggle", "running");
        assertEquals(tg.toggles, ["feature_x"]);
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

    const svc = await entry(dir, "svc", "systemd_service", "exec sleep 1000", {
      args: ["--port", "8080"],
      env: { MODE: "fast" },
    });
    const tmr = await entry(dir, "tmr", "systemd_timer", "echo tick", { schedule: "*:0/5" });
    await writeAssignments(dir, [svc, tmr], "v1");
    const cfg = await daemonConfig(dir, { systemd: { unit_dir: unitDir } });
    const calls = () => fileLines(callLog);
    const files = {
      svc: `${unitDir}/addon-agent-svc.service`,
      tmrService: `${unitDir}/addon-agent-tmr.service`,
      tmrTimer: `${unitDir}/addon-agent-tmr.timer`,
    };

    await withAgent(
      dir,
      cfg,
      async (agent) => {
        await t.step("the unit files are written and pass systemd-analyze verify", async () => {
          await waitState(root, agent, "svc", "running");
          await waitState(root, agent, "tmr", "running");
          for (const f of Object.values(files)) assert(await exists(f), `${f} exists`);
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

        await t.step(
          "systemctl was asked to reload and enable --now each primary unit",
          async () => {
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
          },
        );

        /**
         * Assign `addons` as `version`, wait until `gone()` (the unit files are
         * deleted) and `n` more systemctl calls, and, 2 polls later (no further
         * calls), return the calls made since the assignment.
         */
        const removal = async (
          addons: Record<string, unknown>[],
          version: string,
          what: string,
          gone: () => Promise<boolean> | boolean,
          n: number,
        ): Promise<string[]> => {
          const before = (await calls()).length;
          await writeAssignments(dir, addons, version);
          await waitFor(gone, { timeoutMs: 10_000, what, context: () => agent.tail() });
          await waitFor(async () => (await calls()).length >= before + n, {
            timeoutMs: 5_000,
            what: "systemctl calls for the removal",
          });
          await waitPolls(agent, 2);
          return (await calls()).slice(before);
        };

        await t.step(
          "removing the service: disable --now, files deleted, daemon-reload",
          async () => {
            const made = await removal(
              [tmr],
              "v2",
              "the svc unit file to be deleted",
              async () => !(await exists(files.svc)),
              2,
            );
            assertEquals(made, ["disable --now addon-agent-svc.service", "daemon-reload"]);
            assert(
              await exists(files.tmrTimer) && await exists(files.tmrService),
              "tmr's units stay",
            );
            const s = await readAgentState(root);
            assert(s && !("svc" in s.addons), "svc is no longer in state.json");
          },
        );

        await t.step(
          "removing the timer: disable --now timer and service, files deleted",
          async () => {
            const made = await removal(
              [],
              "v3",
              "the tmr unit files to be deleted",
              () => [...Deno.readDirSync(unitDir)].length === 0,
              3,
            );
            assertEquals(made, [
              "disable --now addon-agent-tmr.timer",
              "disable --now addon-agent-tmr.service",
              "daemon-reload",
            ]);
          },
        );
      },
      env,
      COUNT_POLLS,
    );
  });
});

Deno.test("run applies file capabilities with setcap to a staged executable", async (t) => {
  await withTempDir(async (dir) => {
    const root = `${dir}/root`;
    const sleepBytes = await Deno.readFile(await Deno.realPath("/bin/sleep"));
    await writeAssignments(dir, [
      await entry(dir, "pinger", "agent_sidecar", sleepBytes, {
        args: ["1000"],
        capabilities: ["CAP_NET_RAW"],
      }),
    ]);
    const cfg = await daemonConfig(dir);
    await withAgent(
      dir,
      cfg,
      async (agent) => {
        const staged = `${root}/addons/pinger/versions/${VERSION}/pinger`;
        const s = await waitState(root, agent, "pinger", "running");

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
      },
    );
  });
});
