/**
 * Attacks on self-healing (SPEC 8) against the real agent, beyond the first
 * tests in `self_healing_test.ts`: staged records rewritten to fit tampered
 * bytes, links that point out of `versions/`, and a runtime root that is
 * read-only from the start. Add-ons are shell scripts staged through the real
 * pipeline from a filesystem store; the source is a file polled every 1 s.
 */

import { assert, assertEquals, assertRejects, assertStringIncludes } from "./_assert.ts";
import { daemonConfig, sidecar, sleepLink, waitAddon, withAgent } from "./_daemon_fixtures.ts";
import { exists, freePort, sha256Hex, withTempDir, writeAssignments } from "./_helpers.ts";
import { readAgentState, waitFor } from "./_agent_process.ts";
import type { StatusDocument } from "../src/status/mod.ts";
import type { AddonState } from "../src/runtime/state.ts";
import {
  activate,
  DamagedVersionError,
  Layout,
  rollBack,
  StagedVerifier,
  writeFileAtomicIfChanged,
} from "../src/runtime/mod.ts";

function _running(a: AddonState): boolean {
  return a.state === "running" && a.pid !== null;
}

/** Overwrite the staged script of `vdir` and make its `artifact.json` name the new bytes. */
async function _tamperWithRecord(vdir: string, bytes: string): Promise<void> {
  await Deno.writeTextFile(`${vdir}/probe`, bytes);
  const rec = JSON.parse(await Deno.readTextFile(`${vdir}/artifact.json`));
  rec.sha256 = sha256Hex(bytes);
  await Deno.writeTextFile(`${vdir}/artifact.json`, JSON.stringify(rec));
}

Deno.test("run fetches again a version whose bytes and artifact.json were both rewritten while it was stopped", async () => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const cfg = await daemonConfig(dir);
    await writeAssignments(dir, [await sidecar(dir, "probe", `exec "${sleepBin}" 300`)]);
    const vdir = `${root}/addons/probe/versions/1.0.0`;
    const marker = `${dir}/TAMPERED`;
    let good = "";
    await withAgent(dir, cfg, async (agent) => {
      await waitAddon(root, agent, "probe", "running", _running);
      good = await Deno.readTextFile(`${vdir}/probe`);
    });
    await _tamperWithRecord(vdir, `#!/bin/sh\ntouch "${marker}"\nexec "${sleepBin}" 300\n`);
    await withAgent(dir, cfg, async (agent) => {
      await waitAddon(root, agent, "probe", "running again", _running);
      assertEquals(await Deno.readTextFile(`${vdir}/probe`), good, "fetched again");
      assert(!(await exists(marker)), "the tampered bytes ran");
      const moved = agent.logs().find((l) => l.msg.startsWith("damaged version moved out"));
      assert(moved, agent.tail());
      assertStringIncludes(String(moved.reason), "its artifact.json names sha256 ");
    });
    assert(!(await exists(marker)), "the tampered bytes ran");
  });
});

Deno.test("run fetches again a running version whose bytes and artifact.json were rewritten before a restart", async () => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const cfg = await daemonConfig(dir);
    await writeAssignments(dir, [await sidecar(dir, "probe", `exec "${sleepBin}" 300`)]);
    const vdir = `${root}/addons/probe/versions/1.0.0`;
    const marker = `${dir}/TAMPERED`;
    await withAgent(dir, cfg, async (agent) => {
      const first = await waitAddon(root, agent, "probe", "running", _running);
      const good = await Deno.readTextFile(`${vdir}/probe`);
      await _tamperWithRecord(vdir, `#!/bin/sh\ntouch "${marker}"\nexec "${sleepBin}" 300\n`);
      Deno.kill(first.pid!, "SIGKILL");
      await waitAddon(
        root,
        agent,
        "probe",
        "running under a new pid",
        (a) => _running(a) && a.pid !== first.pid,
      );
      assertEquals(await Deno.readTextFile(`${vdir}/probe`), good, "fetched again");
      assert(!(await exists(marker)), "the tampered bytes ran");
    });
    assert(!(await exists(marker)), "the tampered bytes ran");
  });
});

async function _mount(args: string[]): Promise<void> {
  const out = await new Deno.Command("mount", { args }).output();
  assert(out.success, `mount ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
}

Deno.test("run starts the staged add-ons of a runtime root that is read-only at start, and writes once it is writable", async () => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const port = freePort();
    const cfg = await daemonConfig(dir, { status: { listen: `127.0.0.1:${port}` } });
    await Deno.mkdir(root, { recursive: true });
    await _mount(["-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", root]);
    try {
      await writeAssignments(dir, [await sidecar(dir, "steady", `exec "${sleepBin}" 300`)]);
      let before = 0;
      await withAgent(dir, cfg, async (agent) => {
        before = (await waitAddon(root, agent, "steady", "running", _running)).pid!;
      });
      await _mount(["-o", "remount,ro", root]);
      let ro = true;
      try {
        await withAgent(dir, cfg, async (agent) => {
          const live = await waitFor(async () => {
            agent.assertAlive();
            const r = await fetch(`http://127.0.0.1:${port}/status`).catch(() => null);
            if (r === null) return null;
            const doc = await r.json() as StatusDocument;
            const a = doc.addons.find((x) => x.addon_id === "steady");
            return a?.state === "running" && a.pid !== null && doc.error ? { doc, a } : null;
          }, {
            timeoutMs: 20_000,
            what: "/status: running from the read-only root, with the write error",
            context: () => agent.tail(),
          });
          assertStringIncludes(live.doc.error!, "state.json cannot be written");
          assertEquals((await readAgentState(root))?.addons.steady?.pid, null, "stale state");
          await _mount(["-o", "remount,rw", root]);
          ro = false;
          const now = await waitAddon(
            root,
            agent,
            "steady",
            "state.json written again",
            (a) => _running(a) && a.pid === live.a.pid,
            40_000,
          );
          assert(now.pid !== before);
        });
      } finally {
        if (ro) await _mount(["-o", "remount,rw", root]);
      }
    } finally {
      await new Deno.Command("umount", { args: ["-l", root] }).output();
    }
  });
});

Deno.test("writeFileAtomicIfChanged() writes only when the bytes, the kind or the mode differ", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/config.json`;
    assertEquals(await writeFileAtomicIfChanged(path, "{}\n", 0o640), true, "absent");
    const ino = (await Deno.lstat(path)).ino;
    assertEquals(await writeFileAtomicIfChanged(path, "{}\n", 0o640), false, "unchanged");
    assertEquals((await Deno.lstat(path)).ino, ino);
    assertEquals(
      await writeFileAtomicIfChanged(path, "{ }\n", 0o640),
      true,
      "same size, other bytes",
    );
    await Deno.chmod(path, 0o644);
    assertEquals(await writeFileAtomicIfChanged(path, "{ }\n", 0o640), true, "world-readable");
    assertEquals((await Deno.lstat(path)).mode! & 0o777, 0o640);
    await Deno.writeTextFile(`${dir}/other`, "{ }\n", { mode: 0o600 });
    await Deno.remove(path);
    await Deno.symlink(`${dir}/other`, path);
    assertEquals(await writeFileAtomicIfChanged(path, "{ }\n", 0o640), true, "a symlink");
    assert((await Deno.lstat(path)).isFile);
  });
});

Deno.test("run repairs current and previous links that point out of versions/ or at a file", async () => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const cfg = await daemonConfig(dir);
    const body = `exec "${sleepBin}" 300`;
    const addon = `${root}/addons/probe`;
    await writeAssignments(dir, [await sidecar(dir, "probe", body, { version: "1.0.0" })]);
    await withAgent(dir, cfg, async (agent) => {
      await waitAddon(root, agent, "probe", "running 1.0.0", _running);
      await writeAssignments(dir, [await sidecar(dir, "probe", body, { version: "2.0.0" })]);
      await waitAddon(
        root,
        agent,
        "probe",
        "running 2.0.0",
        (a) => _running(a) && a.version === "2.0.0",
      );
    });
    // Links that resolve, but not to a version: a directory elsewhere, another add-on's, a file.
    await Deno.mkdir(`${dir}/outside/versions/9.9.9`, { recursive: true });
    const cases: [string, string][] = [
      [`${dir}/outside`, "versions/1.0.0/probe"],
      ["../../../outside/versions/9.9.9", `${dir}/outside/versions/9.9.9`],
    ];
    for (const [current, previous] of cases) {
      await Deno.remove(`${addon}/current`);
      await Deno.symlink(current, `${addon}/current`);
      await Deno.remove(`${addon}/previous`).catch(() => {});
      await Deno.symlink(previous, `${addon}/previous`);
      await withAgent(dir, cfg, async (agent) => {
        await waitFor(
          () => agent.logs().some((l) => l.msg === "repaired links that pointed nowhere"),
          { timeoutMs: 20_000, what: `the repair of ${current}`, context: () => agent.tail() },
        );
        await waitAddon(
          root,
          agent,
          "probe",
          "running 2.0.0",
          (a) => _running(a) && a.version === "2.0.0",
        );
        assertEquals(await Deno.readLink(`${addon}/current`), "versions/2.0.0");
        assert(!(await exists(`${addon}/previous`)), "previous points out of versions/");
      });
    }
  });
});

Deno.test("rollBack() and activate() never take a link out of versions/ for a version", async () => {
  await withTempDir(async (dir) => {
    const layout = new Layout(`${dir}/root`);
    await Deno.mkdir(layout.versionDir("probe", "1.0.0"), { recursive: true });
    await Deno.mkdir(`${dir}/elsewhere`);
    await Deno.symlink(`${dir}/elsewhere`, layout.previous("probe"));
    assertEquals(await rollBack(layout, "probe"), null);
    assert(!(await exists(layout.current("probe"))), "current switched out of versions/");
    assert(!(await exists(layout.previous("probe"))));
    // An old `current` out of versions/ does not become `previous`.
    await Deno.symlink("../../../elsewhere", layout.current("probe"));
    assertEquals((await activate(layout, "probe", "1.0.0")).changed, true);
    assertEquals(await Deno.readLink(layout.current("probe")), "versions/1.0.0");
    assert(!(await exists(layout.previous("probe"))), "previous out of versions/");
  });
});

Deno.test("StagedVerifier.check() never blocks on a FIFO swapped in for the staged file", async () => {
  await withTempDir(async (dir) => {
    const layout = new Layout(dir);
    const vdir = layout.versionDir("probe", "1.0.0");
    await Deno.mkdir(vdir, { recursive: true });
    const bytes = "#!/bin/sh\necho fine\n";
    await Deno.writeTextFile(`${vdir}/probe`, bytes, { mode: 0o755 });
    await Deno.chmod(`${vdir}/probe`, 0o755);
    await Deno.writeTextFile(
      `${vdir}/artifact.json`,
      JSON.stringify({ addon_id: "probe", version: "1.0.0", sha256: sha256Hex(bytes) }),
    );
    await Deno.writeTextFile(`${dir}/reg`, bytes);
    await Deno.chmod(`${dir}/reg`, 0o755);
    const mk = await new Deno.Command("mkfifo", { args: [`${dir}/fifo`] }).output();
    assert(mk.success);
    // A local attacker swaps a FIFO and a regular file at the staged name as fast as it can.
    const swapper = new Deno.Command("sh", {
      args: [
        "-c",
        `cd "${dir}" && while :; do ln -f fifo t1 && mv -f t1 "${vdir}/probe"; ` +
        `ln -f reg t2 && mv -f t2 "${vdir}/probe"; done`,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    const v = new StagedVerifier();
    const want = { version: "1.0.0", binary_name: "probe", sha256: sha256Hex(bytes) };
    let damaged = 0;
    try {
      for (let i = 0; i < 400; i++) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const check = v.check(layout, "probe", want).then(() => "ok", (e) => {
          if (e instanceof DamagedVersionError) return "damaged";
          throw e;
        });
        const out = await Promise.race([
          check,
          new Promise<string>((r) => timer = setTimeout(() => r("blocked"), 5_000)),
        ]);
        clearTimeout(timer);
        assert(out !== "blocked", `check ${i} blocked on the FIFO`);
        if (out === "damaged") damaged++;
        v.forget(vdir);
      }
    } finally {
      swapper.kill("SIGKILL");
      await swapper.status;
    }
    assert(damaged > 0, "the FIFO was never seen: the test did not race");
  });
});

Deno.test("StagedVerifier.check() sees bytes rewritten within the clock tick of the check", async () => {
  await withTempDir(async (dir) => {
    const layout = new Layout(dir);
    const vdir = layout.versionDir("probe", "1.0.0");
    await Deno.mkdir(vdir, { recursive: true });
    const good = "#!/bin/sh\necho fine\n";
    const evil = "#!/bin/sh\necho EVIL\n"; // same size
    await Deno.writeTextFile(
      `${vdir}/artifact.json`,
      JSON.stringify({ addon_id: "probe", version: "1.0.0", sha256: sha256Hex(good) }),
    );
    const want = { version: "1.0.0", binary_name: "probe", sha256: sha256Hex(good) };
    // File timestamps advance in coarse ticks: a rewrite right after a check may keep the
    // identity (size, mtime, ctime) the check saw. Each round races that; none may pass.
    for (let i = 0; i < 50; i++) {
      const v = new StagedVerifier();
      const f = await Deno.open(`${vdir}/probe`, { write: true, create: true, truncate: true });
      await f.write(new TextEncoder().encode(good));
      await Deno.chmod(`${vdir}/probe`, 0o755);
      assertEquals(await v.check(layout, "probe", want), "intact");
      await f.seek(0, Deno.SeekMode.Start);
      await f.write(new TextEncoder().encode(evil));
      f.close();
      await assertRejects(
        () => v.check(layout, "probe", want),
        DamagedVersionError,
        undefined,
        `round ${i}: the rewrite ran unseen`,
      );
    }
  });
});

Deno.test("run fetches again a staged executable whose mode was changed (chmod 0644), instead of crash-looping", async () => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const cfg = await daemonConfig(dir);
    await writeAssignments(dir, [await sidecar(dir, "probe", `exec "${sleepBin}" 300`)]);
    const staged = `${root}/addons/probe/versions/1.0.0/probe`;
    await withAgent(dir, cfg, async (agent) => {
      const first = await waitAddon(root, agent, "probe", "running", _running);
      const mode = (await Deno.lstat(staged)).mode! & 0o7777;
      await Deno.chmod(staged, 0o644);
      Deno.kill(first.pid!, "SIGKILL");
      await waitAddon(
        root,
        agent,
        "probe",
        "running under a new pid",
        (a) => _running(a) && a.pid !== first.pid,
      );
      assertEquals((await Deno.lstat(staged)).mode! & 0o7777, mode, "staged again");
      const moved = agent.logs().find((l) => l.msg.startsWith("damaged version moved out"));
      assert(moved, agent.tail());
      assertStringIncludes(String(moved.reason), "is not executable (mode 0644)");
    });
  });
});

Deno.test("run stages an add-on of half an 8 MiB volume (the download's space is all staging needs)", async () => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const cfg = await daemonConfig(dir);
    await Deno.mkdir(root, { recursive: true });
    await _mount(["-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", root]);
    try {
      // 4.5 MiB: fits with the 5 % margin, but not twice.
      const pad = "#" + "x".repeat(4_500_000) + "\n";
      await writeAssignments(dir, [await sidecar(dir, "half", `${pad}exec "${sleepBin}" 300`)]);
      await withAgent(dir, cfg, async (agent) => {
        const a = await waitAddon(root, agent, "half", "running", _running);
        assertEquals(a.version, "1.0.0");
      });
    } finally {
      await new Deno.Command("umount", { args: ["-l", root] }).output();
    }
  });
});

Deno.test("run converges from a state.json of the wrong shape, and never takes its ids for paths", async () => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const cfg = await daemonConfig(dir);
    await writeAssignments(dir, [await sidecar(dir, "probe", `exec "${sleepBin}" 300`)]);
    await withAgent(dir, cfg, async (agent) => {
      await waitAddon(root, agent, "probe", "running", _running);
    });
    // Something outside the runtime root that an add-on id of "../../victim" would name.
    await Deno.mkdir(`${dir}/victim/versions/keep`, { recursive: true });
    await Deno.writeTextFile(`${dir}/victim/config.json`, "mine");
    for (
      const bad of [
        { addons: [1, 2], pushed: "x" },
        { addons: { "../../victim": { version: "x" }, probe: "garbage", other: { pid: "1" } } },
      ]
    ) {
      await Deno.writeTextFile(`${root}/state.json`, JSON.stringify(bad));
      await withAgent(dir, cfg, async (agent) => {
        await waitAddon(root, agent, "probe", "running, in state.json", _running);
      });
      assert(await exists(`${dir}/victim/versions/keep`), "removed outside the runtime root");
      assert(await exists(`${dir}/victim/config.json`), "removed outside the runtime root");
    }
  });
});

Deno.test("writeFileAtomicIfChanged() never blocks on a FIFO swapped in for the file", async () => {
  await withTempDir(async (dir) => {
    const target = `${dir}/addon/config.json`;
    await Deno.mkdir(`${dir}/addon`);
    const text = '{"k":1}\n';
    await Deno.writeTextFile(`${dir}/reg`, text);
    await Deno.chmod(`${dir}/reg`, 0o640);
    const mk = await new Deno.Command("mkfifo", { args: [`${dir}/fifo`] }).output();
    assert(mk.success);
    const swapper = new Deno.Command("sh", {
      args: [
        "-c",
        `cd "${dir}" && while :; do ln -f fifo t1 && mv -f t1 "${target}"; ` +
        `ln -f reg t2 && mv -f t2 "${target}"; done`,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    let wrote = 0;
    try {
      for (let i = 0; i < 3000; i++) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const out = await Promise.race([
          writeFileAtomicIfChanged(target, text, 0o640).then((w) => w ? "wrote" : "kept"),
          new Promise<string>((r) => timer = setTimeout(() => r("blocked"), 5_000)),
        ]);
        clearTimeout(timer);
        assert(out !== "blocked", `write ${i} blocked on the FIFO`);
        if (out === "wrote") wrote++;
      }
    } finally {
      swapper.kill("SIGKILL");
      await swapper.status;
    }
    assert(wrote > 0, "the FIFO was never seen: the test did not race");
  });
});
