/**
 * Self-healing of the runtime root (SPEC 8) against the real agent: no
 * litter after crashes, small volumes, damaged versions that are fetched
 * again, and tampered bytes that never run. Add-ons are shell scripts staged
 * through the real pipeline from a filesystem store; the source is a file
 * polled every 0.5 s.
 */

import { assert, assertEquals, assertStringIncludes } from "./_assert.ts";
import { readAgentState, startAgent, waitFor } from "./_agent_process.ts";
import { daemonConfig, sidecar, sleepLink, waitAddon, withAgent } from "./_daemon_fixtures.ts";
import {
  freePort,
  listTree,
  runAgent,
  syncJson,
  withTempDir,
  writeAssignments,
} from "./_helpers.ts";
import type { StatusDocument } from "../src/status/mod.ts";
import { killMarked } from "./_agent_process.ts";
import { sweepAtomicTemps, sweepLitter } from "../src/runtime/mod.ts";
import { Layout } from "../src/runtime/mod.ts";
import type { AddonState } from "../src/runtime/state.ts";

function _running(a: AddonState): boolean {
  return a.state === "running" && a.pid !== null;
}

/** Files that an interrupted atomic write leaves (`.x.<hex8>.tmp`, `x.<hex8>.new`). */
function _litter(paths: string[]): string[] {
  return paths.filter((p) => /\.[0-9a-f]{8}\.(tmp|new)$/.test(p));
}

Deno.test("sweepAtomicTemps() removes only the temporaries of atomic writes", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/.state.json.0a1b2c3d.tmp`, "{");
    await Deno.symlink("versions/1.0.0", `${dir}/current.0a1b2c3d.new`);
    // Look-alikes that are not ours, or not files: they stay.
    await Deno.writeTextFile(`${dir}/.hidden`, "");
    await Deno.writeTextFile(`${dir}/state.json.tmp`, "");
    await Deno.writeTextFile(`${dir}/.x.NOTHEX00.tmp`, "");
    await Deno.mkdir(`${dir}/.dir.0a1b2c3d.tmp`);
    const removed = await sweepAtomicTemps(dir);
    assertEquals(removed.sort(), [".state.json.0a1b2c3d.tmp", "current.0a1b2c3d.new"]);
    assertEquals((await listTree(dir)).sort(), [
      ".dir.0a1b2c3d.tmp",
      ".hidden",
      ".x.NOTHEX00.tmp",
      "state.json.tmp",
    ]);
    assertEquals(await sweepAtomicTemps(`${dir}/missing`), []);
  });
});

Deno.test("sweepLitter() sweeps the root and every add-on directory, not data/", async () => {
  await withTempDir(async (dir) => {
    const layout = new Layout(dir);
    await Deno.mkdir(layout.dataDir("a"), { recursive: true });
    await Deno.writeTextFile(`${dir}/.state.json.01234567.tmp`, "");
    await Deno.writeTextFile(`${layout.addonDir("a")}/.last-good.json.89abcdef.tmp`, "");
    await Deno.writeTextFile(`${layout.dataDir("a")}/.own.01234567.tmp`, "the add-on's");
    const removed = await sweepLitter(layout);
    assertEquals(removed.length, 2);
    assertEquals(_litter(await listTree(dir)), ["addons/a/data/.own.01234567.tmp"]);
  });
});

Deno.test("run leaves no temporaries of atomic writes after kill -9 during rollouts", async () => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const unitDir = `${dir}/units`;
    await Deno.mkdir(unitDir);
    const cfg = await daemonConfig(dir, { systemd: { unit_dir: unitDir } });
    const ids = ["a", "b", "c"];
    const rollout = async (n: number) => {
      const entries = [];
      for (const id of ids) {
        entries.push(
          await sidecar(dir, id, `"${sleepBin}" 300`, { version: `1.0.${n}`, config: { n } }),
        );
      }
      await writeAssignments(dir, entries, `v${n}`);
    };
    try {
      for (let n = 0; n < 4; n++) {
        await rollout(n);
        const agent = startAgent(cfg);
        // Kill it while it stages, switches links and writes state: as soon as the rollout began.
        await waitFor(async () => {
          agent.assertAlive();
          const s = await readAgentState(root);
          return Object.values(s?.addons ?? {}).some((a) => a.desired_version === `1.0.${n}`);
        }, { timeoutMs: 20_000, what: `rollout ${n} under way`, context: () => agent.tail() });
        await agent.kill9();
      }
      // What a crash in the middle of each atomic write leaves, wherever the agent writes.
      await Deno.writeTextFile(`${root}/.state.json.0a1b2c3d.tmp`, "{");
      await Deno.writeTextFile(`${root}/addons/a/.last-good.json.0a1b2c3d.tmp`, "{");
      await Deno.writeTextFile(`${root}/addons/b/.config.json.0a1b2c3d.tmp`, "{");
      await Deno.symlink("versions/1.0.0", `${root}/addons/c/current.0a1b2c3d.new`);
      await Deno.writeTextFile(`${unitDir}/.addon-agent-a.service.0a1b2c3d.tmp`, "[Unit]");
      await Deno.writeTextFile(`${unitDir}/.someone-else.service.0a1b2c3d.tmp`, "not ours");
      await Deno.writeTextFile(`${root}/tmp/stray`, "");

      await withAgent(dir, cfg, async (agent) => {
        for (const id of ids) {
          await waitAddon(
            root,
            agent,
            id,
            "running 1.0.3",
            (a) => _running(a) && a.version === "1.0.3",
          );
        }
        assertEquals(_litter(await listTree(root)), [], "temporaries in the runtime root");
        assertEquals(await listTree(unitDir), [".someone-else.service.0a1b2c3d.tmp"]);
        const tmp = (await listTree(`${root}/tmp`)).filter((p) =>
          !/^[0-9a-f]{64}\.partial$/.test(p)
        );
        assertEquals(tmp, [], "tmp/ holds nothing but resumable partials");
      });
    } finally {
      await killMarked(dir);
    }
  });
});

Deno.test("run takes a 36-byte add-on on an 8 MiB volume (the margin is 5 % of it)", async () => {
  await withTempDir(async (dir) => {
    const root = `${dir}/root`;
    const cfg = await daemonConfig(dir);
    await _mountTmpfs(root, "8m");
    try {
      const sleepBin = await sleepLink(dir);
      await writeAssignments(dir, [await sidecar(dir, "tiny", `exec "${sleepBin}" 300`)]);
      await withAgent(dir, cfg, async (agent) => {
        const a = await waitAddon(root, agent, "tiny", "running", _running);
        assertEquals(a.version, "1.0.0");
      });
    } finally {
      await _umount(root);
    }
  });
});

/** Mount a tmpfs of `size` on `dir` (mode 0755, as the agent wants its root). */
async function _mountTmpfs(dir: string, size: string): Promise<void> {
  const out = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", `size=${size},mode=0755`, "tmpfs", dir],
  }).output();
  assert(out.success, new TextDecoder().decode(out.stderr));
}

async function _mountOpt(dir: string, opts: string): Promise<void> {
  const out = await new Deno.Command("mount", { args: ["-o", opts, dir] }).output();
  assert(out.success, `mount -o ${opts} ${dir}: ${new TextDecoder().decode(out.stderr)}`);
}

async function _umount(dir: string): Promise<void> {
  await new Deno.Command("umount", { args: ["-l", dir] }).output();
}

/** `GET /status` of the agent's endpoint. */
async function _status(port: number): Promise<StatusDocument> {
  const r = await fetch(`http://127.0.0.1:${port}/status`);
  assertEquals(r.status, 200);
  return await r.json() as StatusDocument;
}

Deno.test("run keeps add-ons running on a runtime root turned read-only, and resumes writing", async () => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const port = freePort();
    const cfg = await daemonConfig(dir, { status: { listen: `127.0.0.1:${port}` } });
    await _mountTmpfs(root, "16m");
    try {
      await writeAssignments(dir, [await sidecar(dir, "steady", `exec "${sleepBin}" 300`)]);
      await withAgent(dir, cfg, async (agent) => {
        const first = await waitAddon(root, agent, "steady", "running", _running);
        await _mountOpt(root, "remount,ro");
        try {
          // A crash of the add-on while the root is read-only: restarted, shown live.
          Deno.kill(first.pid!, "SIGKILL");
          const live = await waitFor(async () => {
            agent.assertAlive();
            const doc = await _status(port);
            const a = doc.addons.find((x) => x.addon_id === "steady");
            return a && a.pid !== null && a.pid !== first.pid && doc.error ? { doc, a } : null;
          }, {
            timeoutMs: 20_000,
            what: "/status: restarted, with the write error",
            context: () => agent.tail(),
          });
          assertStringIncludes(live.doc.error!, "state.json cannot be written");
          assertEquals(
            (await readAgentState(root))?.addons.steady?.pid,
            first.pid,
            "state.json is stale",
          );
        } finally {
          await _mountOpt(root, "remount,rw");
        }
        const now = await waitAddon(
          root,
          agent,
          "steady",
          "state.json written again",
          (a) => a.pid !== first.pid && _running(a),
          40_000,
        );
        assertEquals((await _status(port)).error, undefined);
        assert(now.pid !== null);
      });
    } finally {
      await _umount(root);
    }
  });
});

Deno.test("run shows a delivery that failed on a full disk at once, and writes it when space is back", async () => {
  await withTempDir(async (dir) => {
    const root = `${dir}/root`;
    const port = freePort();
    const cfg = await daemonConfig(dir, { status: { listen: `127.0.0.1:${port}` } });
    await _mountTmpfs(root, "8m");
    try {
      await writeAssignments(dir, []);
      await withAgent(dir, cfg, async (agent) => {
        await waitFor(() => readAgentState(root), { timeoutMs: 20_000, what: "state.json" });
        // Fill the volume to the last byte.
        const filler = await Deno.open(`${root}/filler`, { write: true, create: true });
        try {
          const chunk = new Uint8Array(64 << 10);
          for (;;) await filler.write(chunk);
        } catch (e) {
          if (!(e instanceof Error && /space/i.test(e.message))) throw e;
        } finally {
          filler.close();
        }
        await writeAssignments(dir, [await sidecar(dir, "big", "exec sleep 300")]);
        const live = await waitFor(async () => {
          agent.assertAlive();
          const doc = await _status(port);
          const a = doc.addons.find((x) => x.addon_id === "big");
          return a?.state === "failed" && doc.error ? { doc, a } : null;
        }, { timeoutMs: 20_000, what: "/status: the failure, live", context: () => agent.tail() });
        assertStringIncludes(live.a.message, "not enough free disk space");
        assertStringIncludes(live.doc.error!, "state.json cannot be written");
        await Deno.remove(`${root}/filler`);
        const a = await waitAddon(
          root,
          agent,
          "big",
          "the failure in state.json",
          (x) => x.message.includes("not enough free disk space"),
          40_000,
        );
        assertStringIncludes(a.message, "retry in");
      });
    } finally {
      await _umount(root);
    }
  });
});

Deno.test("run fetches a version whose artifact.json is garbage again and runs it", async () => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const cfg = await daemonConfig(dir);
    await writeAssignments(dir, [await sidecar(dir, "probe", `exec "${sleepBin}" 300`)]);
    const record = `${root}/addons/probe/versions/1.0.0/artifact.json`;
    await withAgent(dir, cfg, async (agent) => {
      await waitAddon(root, agent, "probe", "running", _running);
    });
    await Deno.writeTextFile(record, "garbage{");
    await withAgent(dir, cfg, async (agent) => {
      const a = await waitAddon(root, agent, "probe", "running again", _running);
      assertEquals(a.version, "1.0.0");
      assertEquals(JSON.parse(await Deno.readTextFile(record)).version, "1.0.0", "restaged");
      assert(
        agent.logs().some((l) => l.msg.startsWith("damaged version moved out")),
        agent.tail(),
      );
    });
  });
});

Deno.test("run never runs a staged executable overwritten while it was stopped", async () => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const cfg = await daemonConfig(dir);
    const e = await sidecar(dir, "probe", `exec "${sleepBin}" 300`);
    await writeAssignments(dir, [e]);
    const staged = `${root}/addons/probe/versions/1.0.0/probe`;
    const marker = `${dir}/TAMPERED`;
    await withAgent(dir, cfg, async (agent) => {
      await waitAddon(root, agent, "probe", "running", _running);
    });
    // Same size or not, whatever was written there must not run.
    await Deno.writeTextFile(staged, `#!/bin/sh\ntouch "${marker}"\nexec "${sleepBin}" 300\n`);
    // The store lost the object too: the version cannot be fetched again for now.
    await Deno.remove(`${dir}/store/${e.artifact_object_key}`);
    await withAgent(dir, cfg, async (agent) => {
      const a = await waitAddon(
        root,
        agent,
        "probe",
        "failed as damaged",
        (x) => x.state === "failed" && x.message.includes("is damaged"),
      );
      assertStringIncludes(a.message, "version 1.0.0 is damaged: probe has sha256 ");
      assertStringIncludes(a.message, "retry in");
      assertEquals(a.pid, null);
      assert(!(await Deno.lstat(marker).then(() => true, () => false)), "the tampered bytes ran");
      assert(
        !(await Deno.lstat(staged).then(() => true, () => false)),
        "the damaged version is out of versions/",
      );
    });
    assert(!(await Deno.lstat(marker).then(() => true, () => false)), "the tampered bytes ran");
  });
});

Deno.test("run re-checks staged bytes at a restart: overwritten ones never run, the version is fetched again", async () => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const cfg = await daemonConfig(dir);
    await writeAssignments(dir, [await sidecar(dir, "probe", `exec "${sleepBin}" 300`)]);
    const staged = `${root}/addons/probe/versions/1.0.0/probe`;
    const marker = `${dir}/TAMPERED`;
    await withAgent(dir, cfg, async (agent) => {
      const first = await waitAddon(root, agent, "probe", "running", _running);
      const good = await Deno.readTextFile(staged);
      await Deno.writeTextFile(staged, `#!/bin/sh\ntouch "${marker}"\nexec "${sleepBin}" 300\n`);
      Deno.kill(first.pid!, "SIGKILL"); // the add-on crashes: its restart must not run those bytes
      const again = await waitAddon(
        root,
        agent,
        "probe",
        "running again under a new pid",
        (a) => _running(a) && a.pid !== first.pid,
      );
      assertEquals(again.version, "1.0.0");
      assertEquals(await Deno.readTextFile(staged), good, "fetched again");
      assert(!(await Deno.lstat(marker).then(() => true, () => false)), "the tampered bytes ran");
      assert(
        agent.logs().some((l) => l.msg.startsWith("damaged version moved out")),
        agent.tail(),
      );
    });
  });
});

Deno.test("sync fetches a staged version whose artifact.json is garbage again", async () => {
  await withTempDir(async (dir) => {
    const root = `${dir}/root`;
    const cfg = await daemonConfig(dir);
    await writeAssignments(dir, [await sidecar(dir, "probe", "exit 0")]);
    const first = await runAgent(["sync", "--config", cfg, "--json"]);
    assertEquals(first.code, 0, first.stderr);
    const record = `${root}/addons/probe/versions/1.0.0/artifact.json`;
    await Deno.writeTextFile(record, "garbage{");
    const again = await runAgent(["sync", "--config", cfg, "--json"]);
    assertEquals(again.code, 0, again.stderr);
    const r = syncJson(again).results[0]!;
    assertEquals(r.outcome, "current");
    assertStringIncludes(r.message, "fetched again (version 1.0.0 is damaged: its artifact.json");
    assertEquals(JSON.parse(await Deno.readTextFile(record)).version, "1.0.0");
  });
});

Deno.test("run repairs current and previous links that point nowhere from the state", async () => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const cfg = await daemonConfig(dir);
    const body = `exec "${sleepBin}" 300`;
    const addon = `${root}/addons/probe`;
    await writeAssignments(dir, [await sidecar(dir, "probe", body, { version: "1.0.0" })]);
    await withAgent(dir, cfg, async (agent) => {
      await waitAddon(root, agent, "probe", "running 1.0.0", (a) => _running(a));
      await writeAssignments(dir, [await sidecar(dir, "probe", body, { version: "2.0.0" })]);
      await waitAddon(
        root,
        agent,
        "probe",
        "running 2.0.0",
        (a) => _running(a) && a.version === "2.0.0",
      );
    });
    assertEquals(await Deno.readLink(`${addon}/previous`), "versions/1.0.0");
    // A crash (or a hand) left both links pointing nowhere.
    await Deno.remove(`${addon}/versions/1.0.0`, { recursive: true });
    await Deno.remove(`${addon}/current`);
    await Deno.symlink("versions/9.9.9", `${addon}/current`);
    await withAgent(dir, cfg, async (agent) => {
      await waitFor(
        () => agent.logs().some((l) => l.msg === "repaired links that pointed nowhere"),
        { timeoutMs: 20_000, what: "the repair", context: () => agent.tail() },
      );
      assertEquals(await Deno.readLink(`${addon}/current`), "versions/2.0.0");
      assert(!(await Deno.lstat(`${addon}/previous`).then(() => true, () => false)));
      await waitAddon(
        root,
        agent,
        "probe",
        "running 2.0.0",
        (a) => _running(a) && a.version === "2.0.0",
      );
    });
  });
});
