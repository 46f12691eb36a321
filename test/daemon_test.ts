/**
 * `addon-agent run` with real processes and signals: `agent_sidecar`
 * supervision (restart backoff, leftover grandchildren, kill -9 of the agent,
 * targeted restarts, `enabled: false`, graceful and forced stop, the add-on's
 * environment and log lines). Add-ons are small shell scripts staged through
 * the real pipeline from a filesystem store; the source is a file polled every
 * 0.5 s. Models other than sidecars are in `daemon_models_test.ts`.
 *
 * Every process an add-on starts carries the test's temp dir in its command
 * line (scripts live below it; their long sleeps run through a symlink
 * `<dir>/bin/sleep`), so `killMarked(dir)` finds and ends anything that
 * outlived a test, and the tests assert that nothing did.
 */

import {
  assert,
  assertEquals,
  assertMatch,
  assertNotEquals,
  assertStringIncludes,
} from "./_assert.ts";
import {
  killMarked,
  markedProcesses,
  newMarker,
  pidAlive,
  readAgentState,
  startAgent,
  waitFor,
} from "./_agent_process.ts";
import {
  COUNT_POLLS,
  daemonConfig,
  sidecar,
  sleepLink,
  VERSION,
  waitAddon,
  waitPolls,
  waitState,
  withAgent,
} from "./_daemon_fixtures.ts";
import { fileLines, withTempDir, writeAssignments } from "./_helpers.ts";
import type { AddonState } from "../src/runtime/state.ts";

// ---------------------------------------------------------------------------
// helpers

/** `state === "running"` with a pid. */
function _running(a: AddonState): boolean {
  return a.state === "running" && a.pid !== null;
}

// ---------------------------------------------------------------------------
// tests

Deno.test("run restarts a crashed add-on with growing backoff", async (t) => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const data = (id: string) => `${root}/addons/${id}/data`;
    // Crashes at once, noting when it started.
    const crasher = await sidecar(
      dir,
      "crasher",
      'date +%s.%N >> "$ADDON_DATA_DIR/starts"\nexit 1',
    );
    // Exits 0 at once, noting when it started: a clean exit is restarted too, but never in a
    // hot loop.
    const quitter = await sidecar(
      dir,
      "quitter",
      'date +%s.%N >> "$ADDON_DATA_DIR/starts"\nexit 0',
    );
    // Leaves a grandchild behind and crashes; each start records what became of the
    // grandchild of the start before (so the check happens exactly at the restart).
    const orphaner = await sidecar(
      dir,
      "orphaner",
      [
        'd="$ADDON_DATA_DIR"',
        'if [ -f "$d/grandchildren" ]; then',
        '  prev=$(tail -n 1 "$d/grandchildren")',
        // One read of /proc/<pid>/stat: "gone" when it does not exist (any more).
        '  st=$(cut -d" " -f3,4 "/proc/$prev/stat" 2>/dev/null)',
        '  echo "$prev ${st:-gone}" >> "$d/seen"',
        "fi",
        `"${sleepBin}" 1000 &`,
        'echo $! >> "$d/grandchildren"',
        "exit 1",
      ].join("\n"),
    );
    await writeAssignments(dir, [crasher, quitter, orphaner]);
    const cfg = await daemonConfig(dir);

    await withAgent(dir, cfg, async (agent) => {
      await t.step("an add-on that exits at once lands in backoff, not a hot loop", async () => {
        const starts = await waitFor(async () => {
          const s = (await fileLines(`${data("quitter")}/starts`)).map(Number);
          return s.length >= 3 ? s : null;
        }, { timeoutMs: 20_000, what: "quitter's third start", context: () => agent.tail() });
        // Backoff 1 s then 2 s: starts at ~0, ~1 and ~3 s. A hot loop would start it at once.
        const gaps = [starts[1]! - starts[0]!, starts[2]! - starts[1]!];
        assert(gaps[0]! >= 0.9 && gaps[1]! >= 1.9, `gaps between quitter's starts: ${gaps} s`);
        const st = (await readAgentState(root))?.addons.quitter;
        assert(st, "quitter is in state.json");
        assertNotEquals(st.state, "running", "an add-on that exits at once is not running");
        assertMatch(st.message, /exited with code 0; restarting in \d+ s/);
        const exits = agent.logs().filter((l) =>
          l.addon_id === "quitter" && typeof l.restart_in_ms === "number"
        );
        assert(exits.length >= 2, `quitter exits logged: ${exits.length}`);
        const delays = exits.map((l) => l.restart_in_ms as number);
        assertEquals(delays.slice(0, 2), [1_000, 2_000], "announced restart delays");
      });

      await t.step("a grandchild of a crashed add-on is gone before the restart", async () => {
        const seen = await waitFor(async () => {
          const s = await fileLines(`${data("orphaner")}/seen`);
          return s.length >= 2 ? s : null;
        }, { timeoutMs: 20_000, what: "orphaner restarted twice", context: () => agent.tail() });
        const grandchildren = (await fileLines(`${data("orphaner")}/grandchildren`)).map(Number);
        assert(grandchildren.length >= 3, `grandchildren recorded: ${grandchildren}`);
        for (const line of seen) {
          // "<pid> gone", or "<pid> Z <ppid>": a zombie that is not the agent's child.
          const [pid, state, ppid] = line.split(" ");
          assert(grandchildren.includes(Number(pid)), `seen names a grandchild: ${line}`);
          if (state === "gone") continue;
          assertEquals(state, "Z", `grandchild ${pid} was still alive at the restart: ${line}`);
          assertNotEquals(Number(ppid), agent.pid, `zombie ${pid} belongs to the agent`);
        }
        // Every grandchild but the newest (which waits for its own restart) is dead now.
        for (const pid of grandchildren.slice(0, -1)) {
          assert(!pidAlive(pid), `grandchild ${pid} of an earlier start is alive`);
        }
      });

      await t.step("the intervals between restarts grow", async () => {
        const starts = await waitFor(async () => {
          const s = (await fileLines(`${data("crasher")}/starts`)).map(Number);
          return s.length >= 4 ? s : null;
        }, { timeoutMs: 30_000, what: "crasher started 4 times", context: () => agent.tail() });
        const intervals = starts.slice(1, 4).map((s, i) => s - starts[i]!);
        // Backoff 1 s, 2 s, 4 s: each interval is longer than the one before.
        assert(intervals[0]! >= 0.5, `first restart came after ${intervals[0]} s`);
        assert(
          intervals[1]! > intervals[0]! && intervals[2]! > intervals[1]!,
          `intervals do not grow: ${intervals.map((i) => i.toFixed(2)).join(", ")} s`,
        );
        const st = (await readAgentState(root))?.addons.crasher;
        assert(st && st.restarts >= 3, `restarts in state.json: ${st?.restarts}`);
      });
    });
  });
});

Deno.test("run ends the add-ons of an agent killed with SIGKILL, so each runs once", async (t) => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const markers = { alpha: newMarker("alpha"), beta: newMarker("beta") };
    // A shell (carrying the marker in its args) with a grandchild sleep.
    const body = `"${sleepBin}" 1000 &\necho $! >> "$ADDON_DATA_DIR/grandchildren"\nwait`;
    await writeAssignments(dir, [
      await sidecar(dir, "alpha", body, { args: [markers.alpha] }),
      await sidecar(dir, "beta", body, { args: [markers.beta] }),
    ]);
    const cfg = await daemonConfig(dir);
    const count = (id: "alpha" | "beta") => markedProcesses(markers[id]).length;

    const first = startAgent(cfg);
    const firstPids: Record<string, number> = {};
    try {
      await t.step("the first agent runs each add-on once", async () => {
        for (const id of ["alpha", "beta"] as const) {
          const a = await waitAddon(root, first, id, "running", _running);
          firstPids[id] = a.pid!;
          assertEquals(count(id), 1, `${id} processes`);
        }
      });
      await t.step("after kill -9 of the agent its add-ons are still running", async () => {
        await first.kill9();
        assert(pidAlive(firstPids.alpha!) && pidAlive(firstPids.beta!), "add-ons survived");
      });
    } catch (e) {
      await first.kill9();
      await killMarked(dir);
      throw e;
    }

    await withAgent(
      dir,
      cfg,
      async (second) => {
        await t.step("the second agent ends the leftovers and runs each add-on once", async () => {
          for (const id of ["alpha", "beta"] as const) {
            const a = await waitAddon(
              root,
              second,
              id,
              "running again under a new pid",
              (a) => _running(a) && a.pid !== firstPids[id],
            );
            assert(!pidAlive(firstPids[id]!), `the old ${id} (${firstPids[id]}) is alive`);
            assertEquals(count(id), 1, `${id} processes`);
            assertEquals(markedProcesses(markers[id]).map((p) => p.pid), [a.pid]);
          }
          // The old grandchildren went with their groups.
          for (const id of ["alpha", "beta"]) {
            const gcs = (await fileLines(`${root}/addons/${id}/data/grandchildren`)).map(Number);
            assertEquals(gcs.length, 2, `${id} grandchildren recorded`);
            assert(!pidAlive(gcs[0]!), `the old ${id} grandchild ${gcs[0]} is alive`);
            assert(pidAlive(gcs[1]!), `the new ${id} grandchild ${gcs[1]} is not running`);
          }
        });
        await t.step("and keeps it at one", async () => {
          await waitPolls(second, 3);
          assertEquals([count("alpha"), count("beta")], [1, 1], "alpha, beta processes");
        });
      },
      {},
      COUNT_POLLS,
    );
  });
});

Deno.test("run ends an add-on started just before the agent was killed with SIGKILL", async (t) => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const marker = newMarker("early");
    const body = `"${sleepBin}" 1000 &\nwait`;
    await writeAssignments(dir, [await sidecar(dir, "early", body, { args: [marker] })]);
    const cfg = await daemonConfig(dir);

    const first = startAgent(cfg);
    let firstPid = 0;
    try {
      // kill -9 as soon as the add-on's process exists: SPEC 8 says no add-on ever runs
      // twice, whenever the agent dies.
      firstPid = await waitFor(() => {
        first.assertAlive();
        return markedProcesses(marker)[0]?.pid;
      }, {
        timeoutMs: 20_000,
        what: "early's process",
        intervalMs: 1,
        context: () => first.tail(),
      });
    } catch (e) {
      await first.kill9();
      await killMarked(dir);
      throw e;
    }
    await first.kill9();
    assert(pidAlive(firstPid), "the add-on survived the agent");
    const recorded = (await readAgentState(root))?.addons.early?.pgid ?? null;

    await withAgent(dir, cfg, async (second) => {
      await t.step("the next agent runs it once", async () => {
        const a = await waitAddon(
          root,
          second,
          "early",
          "running under a new pid",
          (a) => _running(a) && a.pid !== firstPid,
        );
        const procs = markedProcesses(marker);
        assertEquals(
          procs.map((p) => p.pid),
          [a.pid],
          `early's processes (the first agent's was ${firstPid}; the group state.json recorded ` +
            `when that agent was killed: ${recorded})`,
        );
      });
    });
  });
});

Deno.test("run restarts only the add-on whose assignment changed; enabled false stops it", async (t) => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const marker = newMarker();
    const body = `echo "args: $*"\n"${sleepBin}" 1000 &\nwait`;
    const a1 = await sidecar(dir, "changing", body, { args: [marker, "--mode", "one"] });
    const b1 = await sidecar(dir, "steady", body, { args: [marker] });
    await writeAssignments(dir, [a1, b1], "v1");
    const cfg = await daemonConfig(dir);

    await withAgent(
      dir,
      cfg,
      async (agent) => {
        const a = await waitAddon(root, agent, "changing", "running", _running);
        const b = await waitAddon(root, agent, "steady", "running", _running);

        let newA = a;
        await t.step("changing one add-on's args restarts it under a new pid", async () => {
          await writeAssignments(dir, [{ ...a1, args: [marker, "--mode", "two"] }, b1], "v2");
          newA = await waitAddon(
            root,
            agent,
            "changing",
            "running under a new pid",
            (x) => _running(x) && x.pid !== a.pid,
          );
          assert(!pidAlive(a.pid!), `the old process ${a.pid} is alive`);
          const procs = markedProcesses(marker).filter((p) => p.cmdline.includes("--mode"));
          assertEquals(procs.map((p) => p.pid), [newA.pid], "processes of 'changing'");
          assertStringIncludes(procs[0]!.cmdline, "--mode two");
          await waitFor(
            () =>
              agent.logs().some((l) =>
                l.addon_id === "changing" && l.msg === `args: ${marker} --mode two`
              ),
            { timeoutMs: 5_000, what: "the new args in the log", context: () => agent.tail() },
          );
        });

        await t.step("the other add-on keeps its pid", async () => {
          await waitPolls(agent, 3); // a few more polls of the changed document
          const s = (await readAgentState(root))?.addons.steady;
          assertEquals(s?.pid, b.pid, "steady's pid");
          assertEquals(s?.state, "running");
          assertEquals(s?.restarts, 0);
          assert(pidAlive(b.pid!), `steady ${b.pid} is not running`);
        });

        await t.step("enabled false stops it and keeps its files", async () => {
          await writeAssignments(
            dir,
            [{ ...a1, args: [marker, "--mode", "two"] }, { ...b1, enabled: false }],
            "v3",
          );
          const s = await waitState(root, agent, "steady", "disabled");
          assertEquals(s.pid, null);
          assert(!pidAlive(b.pid!), `steady ${b.pid} is still running`);
          const procs = markedProcesses(marker).filter((p) => !p.cmdline.includes("--mode"));
          assertEquals(procs, [], "processes of 'steady'");
          const addonDir = `${root}/addons/steady`;
          assertEquals(await Deno.readLink(`${addonDir}/current`), `versions/${VERSION}`);
          const bin = await Deno.stat(`${addonDir}/versions/${VERSION}/steady`);
          assert(bin.isFile && (bin.mode! & 0o111) !== 0, "the staged binary is kept");
          assert((await Deno.stat(`${addonDir}/versions/${VERSION}/artifact.json`)).isFile);
          // The other add-on was not touched.
          const c = (await readAgentState(root))?.addons.changing;
          assertEquals([c?.state, c?.pid], ["running", newA.pid], "changing's state and pid");
        });
      },
      {},
      COUNT_POLLS,
    );
  });
});

Deno.test("run stops every add-on and grandchild on SIGTERM and exits 0", async (t) => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const marker = newMarker();
    // One grandchild directly, one two levels down (a shell running a sleep).
    const body = [
      `"${sleepBin}" 1000 &`,
      'echo $! >> "$ADDON_DATA_DIR/descendants"',
      `sh -c '"${sleepBin}" 1000 & echo $! >> "$ADDON_DATA_DIR/descendants"; wait' &`,
      'echo $! >> "$ADDON_DATA_DIR/descendants"',
      "wait",
    ].join("\n");
    await writeAssignments(dir, [
      await sidecar(dir, "one", body, { args: [marker] }),
      await sidecar(dir, "two", body, { args: [marker] }),
    ]);
    const cfg = await daemonConfig(dir);
    const agent = startAgent(cfg);
    try {
      const pids: number[] = [];
      await t.step("the add-ons and their descendants run", async () => {
        for (const id of ["one", "two"]) {
          const a = await waitAddon(root, agent, id, "running", _running);
          pids.push(a.pid!);
          const d = await waitFor(async () => {
            const l = (await fileLines(`${root}/addons/${id}/data/descendants`)).map(Number);
            return l.length >= 3 ? l : null;
          }, { timeoutMs: 5_000, what: `${id}'s descendants` });
          pids.push(...d);
        }
        for (const pid of pids) assert(pidAlive(pid), `${pid} runs`);
      });
      await t.step("SIGTERM: the agent exits 0 and nothing of the add-ons is left", async () => {
        const code = await agent.stop("SIGTERM");
        assertEquals(code, 0, `exit code; log:\n${agent.tail()}`);
        assertEquals(pids.filter(pidAlive), [], "processes alive after the agent exited");
        assertEquals(markedProcesses(dir), [], "processes of the test alive");
        const s = await readAgentState(root);
        assertEquals([s?.addons.one?.pid, s?.addons.two?.pid], [null, null], "pids in state.json");
        assertEquals([s?.addons.one?.pgid, s?.addons.two?.pgid], [null, null]);
        assert(agent.logs().some((l) => l.msg === "stopped"), "the agent logged that it stopped");
      });
    } finally {
      await agent.kill9();
      await killMarked(dir);
    }
  });
});

Deno.test("run kills an add-on that ignores SIGTERM after the grace period", async (t) => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const marker = newMarker();
    // SIGTERM is ignored by the shell and (inherited) by its sleeps.
    const body = `trap '' TERM\n"${sleepBin}" 1000 &\nwait\necho "still here"\n"${sleepBin}" 1000`;
    await writeAssignments(dir, [await sidecar(dir, "stubborn", body, { args: [marker] })]);
    const cfg = await daemonConfig(dir);
    const agent = startAgent(cfg);
    try {
      const a = await waitAddon(root, agent, "stubborn", "running", _running);
      const t0 = performance.now();
      const stopping = agent.stop("SIGTERM");
      await t.step("SIGTERM alone does not end it: the agent waits", async () => {
        await waitFor(() => agent.logs().some((l) => l.msg === "stopping: ending every add-on"), {
          timeoutMs: 10_000,
          what: "the agent to start stopping its add-ons",
          context: () => agent.tail(),
        });
        assert(agent.exitStatus() === null, "the agent exited before the grace period ended");
        assert(pidAlive(a.pid!), "the add-on did not survive SIGTERM: it is not ignoring it");
        assertEquals(markedProcesses(marker).map((p) => p.pid), [a.pid]);
      });
      await t.step("after the grace period it is killed and the agent exits 0", async () => {
        const code = await stopping;
        const waitedS = (performance.now() - t0) / 1000;
        // SPEC 8: SIGKILL after 10 s; the add-on ignored SIGTERM, so the agent waited that long.
        assert(waitedS >= 9.5, `the agent exited ${waitedS.toFixed(1)} s after SIGTERM`);
        assertEquals(code, 0, `exit code; log:\n${agent.tail()}`);
        assert(!pidAlive(a.pid!), `${a.pid} is alive`);
        assertEquals(markedProcesses(dir), [], "processes of the test alive");
      });
    } finally {
      await agent.kill9();
      await killMarked(dir);
    }
  });
});

Deno.test("run gives an add-on its environment and logs its output tagged with its id", async (t) => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const config = { targets: ["10.0.0.1", "10.0.0.2"], nested: { deep: true, n: 3 } };
    const body = [
      // Files first: once the lines below are in the log, these are complete.
      'cp "$ADDON_CONFIG_FILE" "$ADDON_DATA_DIR/config-seen.json"',
      'env > "$ADDON_DATA_DIR/env"',
      'echo "id=$ADDON_ID"',
      'echo "version=$ADDON_VERSION"',
      'echo "config_file=$ADDON_CONFIG_FILE"',
      'echo "data_dir=$ADDON_DATA_DIR"',
      'echo "mode=$PROBE_MODE"',
      'echo "to stderr" >&2',
      `exec "${sleepBin}" 1000`,
    ].join("\n");
    await writeAssignments(dir, [
      await sidecar(dir, "envy", body, { env: { PROBE_MODE: "fast" }, config }),
    ]);
    const cfg = await daemonConfig(dir);
    await withAgent(dir, cfg, async (agent) => {
      const want = [
        "id=envy",
        `version=${VERSION}`,
        `config_file=${root}/addons/envy/config.json`,
        `data_dir=${root}/addons/envy/data`,
        "mode=fast",
      ];
      const lines = await waitFor(() => {
        agent.assertAlive();
        const l = agent.logs().filter((l) => l.addon_id === "envy" && l.stream === "stdout");
        return l.length >= want.length ? l : null;
      }, { timeoutMs: 20_000, what: "envy's stdout lines", context: () => agent.tail() });

      await t.step("ADDON_* and its own env are set", () => {
        assertEquals(lines.map((l) => l.msg), want);
      });
      await t.step("ADDON_CONFIG_FILE holds the assignment's config", async () => {
        const seen = JSON.parse(
          await Deno.readTextFile(`${root}/addons/envy/data/config-seen.json`),
        );
        assertEquals(seen, config);
      });
      await t.step("stdout and stderr lines are tagged with addon_id and stream", async () => {
        for (const l of lines) assertEquals([l.addon_id, l.stream], ["envy", "stdout"]);
        const err = await waitFor(
          () => agent.logs().find((l) => l.msg === "to stderr"),
          { timeoutMs: 5_000, what: "the stderr line" },
        );
        assertEquals([err.addon_id, err.stream], ["envy", "stderr"]);
      });
      await t.step("the agent's own AWS credentials are not passed to it", async () => {
        const env = (await fileLines(`${root}/addons/envy/data/env`)).map((l) => l.split("=")[0]);
        assert(env.includes("ADDON_ID") && env.includes("PROBE_MODE"), `env: ${env}`);
        // The agent runs with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (startAgent sets them).
        assertEquals(
          env.filter((k) => k === "AWS_ACCESS_KEY_ID" || k === "AWS_SECRET_ACCESS_KEY"),
          [],
          "the agent's credentials in the add-on's environment",
        );
      });
    });
  });
});
