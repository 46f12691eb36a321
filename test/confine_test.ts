// Tests of src/supervise/confine.ts and src/supervise/cgroup.ts (SPEC 13) with real
// processes: setpriv drops to a real uid with exactly the add-on's capabilities, the
// add-on starts inside its cgroup v2, and stopping ends processes that left the group.

import {
  type CgroupTree,
  findOwnCgroup,
  openCgroupTree,
  parseOwnCgroup,
} from "../src/supervise/cgroup.ts";
import { confinedCommand, setprivCapList } from "../src/supervise/confine.ts";
import { type LaunchSpec, Sidecar } from "../src/supervise/sidecar.ts";
import { runHelper } from "../src/supervise/helper_job.ts";
import { assert, assertEquals, assertStringIncludes } from "./_assert.ts";
import { withTempDir } from "./_helpers.ts";

const TIMING = {
  backoffInitialMs: 60_000,
  backoffMaxMs: 60_000,
  resetAfterMs: 60_000,
  readyAfterMs: 50,
  graceMs: 500,
};

/** A uid no other test of this run uses. */
function _uid(): number {
  return 61500 + Math.floor(Math.random() * 400);
}

function _status(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of Deno.readTextFileSync(`/proc/${pid}/status`).split("\n")) {
    const i = line.indexOf(":");
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}

/** Alive: exists and is not a zombie (PID 1 here does not reap orphans). */
function _alive(pid: number): boolean {
  try {
    const st = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const state = st.slice(st.lastIndexOf(")") + 2).split(" ")[0];
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

async function _until(cond: () => boolean, what: string, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function _script(dir: string, name: string, body: string): Promise<string> {
  const p = `${dir}/${name}`;
  await Deno.writeTextFile(p, `#!/bin/sh\n${body}\n`);
  await Deno.chmod(p, 0o755);
  await Deno.chmod(dir, 0o755);
  return p;
}

function _spec(id: string, binary: string, extra: Partial<LaunchSpec> = {}): LaunchSpec {
  return {
    addon_id: id,
    version: "1",
    binary,
    args: [],
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
    cwd: "/",
    ...extra,
  };
}

async function _withTree(fn: (tree: CgroupTree, dir: string) => Promise<void>): Promise<void> {
  await withTempDir(async (dir) => {
    const tree = await openCgroupTree(dir);
    assert(tree !== null, "this host has a writable cgroup v2 (see the test brief)");
    try {
      await fn(tree, dir);
    } finally {
      for (const id of await tree.leftovers()) {
        const cg = await tree.prepare(id);
        await cg.kill();
        await cg.remove();
      }
      await Deno.remove(tree.container).catch(() => {});
    }
  });
}

Deno.test("parseOwnCgroup() finds the v2 path below the cgroup2 mount", () => {
  const mi = [
    "25 30 0:22 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory",
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw",
  ].join("\n");
  assertEquals(parseOwnCgroup("4:memory:/x\n0::/system.slice/a.service\n", mi), {
    mount: "/sys/fs/cgroup/unified",
    path: "/system.slice/a.service",
  });
  assertEquals(parseOwnCgroup("4:memory:/x\n", mi), null, "no 0:: line: no v2 cgroup");
  assertEquals(parseOwnCgroup("0::/\n", mi.split("\n")[0]!), null, "no cgroup2 mount");
  const own = findOwnCgroup();
  assert(own !== null && own.mount.startsWith("/"), "this host has a cgroup2 mount");
});

Deno.test("confinedCommand() asks setpriv for exactly the add-on's capabilities", () => {
  assertEquals(setprivCapList(["CAP_NET_RAW", "CAP_BPF"]), "-all,+bpf,+net_raw");
  assertEquals(setprivCapList([]), "-all");
  const c = confinedCommand({ uid: 61000, gid: 61000, capabilities: [], procsFile: null }, "/b", [
    "x",
  ]);
  assert(c.args.includes("--no-new-privs"), "no capabilities: no_new_privs");
  assertEquals(c.args.slice(-3), ["addon-agent-env", "/b", "x"]);
  assertEquals(
    c.args[c.args.indexOf("--") + 1],
    "/bin/sh",
    "setpriv runs the shell that restores env",
  );
  assertEquals(c.env, { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" }, "no variable of the add-on's");
  const w = confinedCommand(
    { uid: null, gid: null, capabilities: ["CAP_NET_RAW"], procsFile: "/cg/cgroup.procs" },
    "/b",
    [],
  );
  assertEquals(w.cmd, "/bin/sh");
  assert(!w.args.includes("--no-new-privs"), "capabilities: no no_new_privs");
  assert(!w.args.includes("--reuid"), "uid null keeps the agent's user");
});

Deno.test("a confined sidecar runs as its uid with exactly its capabilities", async (t) => {
  await _withTree(async (tree, dir) => {
    const bin = await _script(dir, "probe", "exec sleep 300");
    for (
      const [name, caps, bnd, nnp] of [
        ["CAP_NET_RAW only", ["CAP_NET_RAW"], "0000000000002000", "0"],
        ["no capabilities: an empty bounding set and no_new_privs", [], "0000000000000000", "1"],
      ] as const
    ) {
      await t.step(name, async () => {
        const uid = _uid();
        const cg = await tree.prepare("caps");
        const events: string[] = [];
        let pid = 0;
        const sc = new Sidecar(
          _spec("caps", bin, {
            confine: { uid, gid: uid, capabilities: [...caps], procsFile: cg.procsFile },
            cgroup: cg,
          }),
          (e) => {
            events.push(e.type);
            if (e.type === "started") pid = e.pid;
          },
          TIMING,
        );
        sc.start();
        try {
          await _until(() => events.includes("running"), "running");
          // Past sh and setpriv: the add-on's own program runs (a loaded host is slow).
          const sleepExe = Deno.realPathSync("/bin/sleep");
          await _until(() => {
            try {
              return Deno.readLinkSync(`/proc/${pid}/exe`) === sleepExe;
            } catch {
              return false;
            }
          }, "the add-on to exec sleep");
          const st = _status(pid);
          assertEquals(st.Uid, `${uid}\t${uid}\t${uid}\t${uid}`);
          assertEquals(st.Gid, `${uid}\t${uid}\t${uid}\t${uid}`);
          assertEquals(st.Groups, "", "no supplementary groups");
          assertEquals(st.CapBnd, bnd);
          assertEquals(st.CapEff, bnd);
          assertEquals(st.CapAmb, bnd);
          assertEquals(st.NoNewPrivs, nnp);
          assertEquals(cg.members(), [pid], "the add-on is in its cgroup");
        } finally {
          await sc.stop();
        }
        assert(cg.empty(), "the cgroup is empty after stop");
      });
    }
  });
});

Deno.test("a confined add-on cannot read the agent's /proc/<pid>/environ", async () => {
  await _withTree(async (tree) => {
    const uid = _uid();
    const cg = await tree.prepare("environ");
    const r = await runHelper(
      _spec("environ", "/bin/cat", {
        args: [`/proc/${Deno.pid}/environ`],
        confine: { uid, gid: uid, capabilities: [], procsFile: cg.procsFile },
        cgroup: cg,
      }),
      { timeoutMs: 10_000 },
    );
    assert(r.code !== 0, `cat of the agent's environ must fail, got ${r.code}: ${r.tail}`);
    assertStringIncludes(r.tail.join("\n"), "Permission denied");
  });
});

Deno.test("a confined helper's first instruction already runs in its cgroup", async () => {
  await _withTree(async (tree) => {
    const cg = await tree.prepare("first");
    // cat reads its own /proc entry before anything else it does.
    const r = await runHelper(
      _spec("first", "/bin/cat", {
        args: ["/proc/self/cgroup"],
        confine: { uid: _uid(), gid: null, capabilities: [], procsFile: cg.procsFile },
        cgroup: cg,
      }),
      { timeoutMs: 10_000 },
    );
    assertEquals(r.code, 0, r.tail.join("\n"));
    const own = findOwnCgroup()!;
    const rel = cg.dir.slice(own.mount.replace(/\/$/, "").length);
    assert(r.tail.includes(`0::${rel}`), `expected 0::${rel} in ${JSON.stringify(r.tail)}`);
  });
});

Deno.test("stopping a sidecar in a cgroup ends a child that called setsid", async () => {
  await _withTree(async (tree, dir) => {
    const pidFile = `${dir}/escaped.pid`;
    const bin = await _script(
      dir,
      "escaper",
      `setsid sh -c 'echo $$ > ${pidFile}; exec sleep 300' & exec sleep 300`,
    );
    const cg = await tree.prepare("escaper");
    const events: string[] = [];
    let leader = 0;
    const sc = new Sidecar(
      _spec("escaper", bin, {
        confine: { uid: null, gid: null, capabilities: [], procsFile: cg.procsFile },
        cgroup: cg,
      }),
      (e) => {
        events.push(e.type);
        if (e.type === "started") leader = e.pid;
      },
      TIMING,
    );
    sc.start();
    let escaped = 0;
    try {
      await _until(() => {
        try {
          escaped = Number(Deno.readTextFileSync(pidFile).trim());
        } catch { /* not yet */ }
        return escaped > 0 && _alive(escaped);
      }, "the escaped child");
      const stat = Deno.readTextFileSync(`/proc/${escaped}/stat`);
      const pgrp = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
      assert(pgrp !== leader, "the child left the add-on's process group");
      assert(cg.members().includes(escaped), "but not its cgroup");
    } finally {
      await sc.stop();
    }
    assert(!_alive(escaped), "the escaped child is gone once stop resolves");
    assert(cg.empty(), "nothing is left in the cgroup");
  });
});

Deno.test("openCgroupTree() in a delegated cgroup moves the agent into a leaf and uses siblings", async () => {
  const own = findOwnCgroup()!;
  const base = `${own.mount.replace(/\/$/, "")}${own.path === "/" ? "" : own.path}`;
  const delegated = `${base}/addon-agent-test-delegated-${Deno.pid}`;
  await Deno.mkdir(delegated);
  const probe = new URL("../src/supervise/cgroup.ts", import.meta.url).href;
  const script = `
    const { openCgroupTree, findOwnCgroup } = await import(${JSON.stringify(probe)});
    const tree = await openCgroupTree("/unused");
    const cg = await tree.prepare("x");
    console.log(JSON.stringify({ container: tree.container, own: findOwnCgroup().path, cg: cg.dir }));
    cg.remove();
  `;
  const run = async (join: string) => {
    const o = await new Deno.Command("/bin/sh", {
      args: [
        "-c",
        'echo $$ > "$1/cgroup.procs" && shift && exec "$@"',
        "sh",
        join,
        Deno.execPath(),
        "eval",
        script,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(o.code, 0, new TextDecoder().decode(o.stderr));
    return JSON.parse(new TextDecoder().decode(o.stdout).trim().split("\n").pop()!);
  };
  try {
    const rel = delegated.slice(own.mount.replace(/\/$/, "").length);
    const r = await run(delegated);
    assertEquals(r.container, delegated, "the agent's own cgroup holds the add-on cgroups");
    assertEquals(r.own, `${rel}/agent`, "the agent moved itself into the leaf agent/");
    assertEquals(r.cg, `${delegated}/addon-x`);
    const again = await run(`${delegated}/agent`);
    assertEquals(again.container, delegated, "started in the leaf: the parent is still the home");
    assertEquals(again.own, `${rel}/agent`);
  } finally {
    await Deno.remove(`${delegated}/agent`).catch(() => {});
    await Deno.remove(delegated).catch(() => {});
  }
});
