// Tests of src/supervise/process_group.ts with real processes (Linux, /proc, sh, sleep, setsid).

import {
  endLeftoverGroup,
  groupAlive,
  groupMatches,
  groupMembers,
  type GroupProcess,
  processIdentity,
  signalGroup,
  spawnGroup,
  stopGroup,
} from "../src/supervise/process_group.ts";
import { LineSplitter, TRUNCATION_MARKER } from "../src/supervise/line_splitter.ts";
import { captureLog } from "../src/common/log.ts";
import { assert, assertEquals } from "./_assert.ts";

// ---------------------------------------------------------------------------
// helpers

interface _Stat {
  pid: number;
  state: string;
  ppid: number;
  pgrp: number;
  session: number;
}

function _stat(pid: number): _Stat | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return null;
  }
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return {
    pid,
    state: f[0] ?? "",
    ppid: Number(f[1]),
    pgrp: Number(f[2]),
    session: Number(f[3]),
  };
}

/** Alive means: exists and is not a zombie. */
function _alive(pid: number): boolean {
  const st = _stat(pid);
  return st !== null && st.state !== "Z" && st.state !== "X";
}

/** Whether `pid` runs with SIGTERM ignored (bit 15 of SigIgn in /proc/<pid>/status). */
function _ignoresTerm(pid: number): boolean {
  try {
    const m = /^SigIgn:\s*([0-9a-f]+)$/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    return m !== null && (BigInt(`0x${m[1]}`) & (1n << 14n)) !== 0n;
  } catch {
    return false;
  }
}

/** Zombies whose parent is this test process (ours to reap). */
function _ourZombies(): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const st = _stat(Number(e.name));
    if (st && st.ppid === Deno.pid && st.state === "Z") out.push(st.pid);
  }
  return out;
}

/** Collects forwarded lines; `waitFor` resolves when a matching line arrived. */
function _collector() {
  const lines: [string, string][] = [];
  const waiters: { pred: (l: string) => boolean; resolve: (l: string) => void }[] = [];
  return {
    lines,
    onLine: (stream: "stdout" | "stderr", line: string) => {
      lines.push([stream, line]);
      for (const w of waiters.splice(0)) {
        if (w.pred(line)) w.resolve(line);
        else waiters.push(w);
      }
    },
    waitFor: (pred: (l: string) => boolean): Promise<string> => {
      const hit = lines.find(([, l]) => pred(l));
      if (hit) return Promise.resolve(hit[1]);
      return new Promise((resolve) => waiters.push({ pred, resolve }));
    },
  };
}

/** Poll `cond` every 10 ms for up to `ms`. */
async function _eventually(cond: () => boolean, ms = 5_000): Promise<boolean> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
  return true;
}

/** Kill group `pgid` with SIGKILL, ignoring every error (test cleanup). */
function _killGroup(pgid: number | undefined): void {
  if (!pgid || pgid <= 1) return;
  try {
    Deno.kill(-pgid, "SIGKILL");
  } catch { /* gone */ }
}

/** Kill what is left of `proc` and settle its promises (test cleanup). */
async function _cleanup(proc: GroupProcess | undefined): Promise<void> {
  if (!proc) return;
  _killGroup(proc.pgid);
  await proc.status;
  await proc.closeOutput();
}

function _sh(script: string, onLine: (s: "stdout" | "stderr", l: string) => void, max?: number) {
  return spawnGroup({
    cmd: "sh",
    args: ["-c", script],
    env: {},
    onLine,
    ...(max ? { maxLineBytes: max } : {}),
  });
}

/** Run `script` to its end, collecting its forwarded lines (cut at `max` bytes); then clean up. */
async function _lines(script: string, max?: number): Promise<[string, string][]> {
  const c = _collector();
  const proc = _sh(script, c.onLine, max);
  try {
    await proc.status;
    await proc.output;
    return c.lines;
  } finally {
    await _cleanup(proc);
  }
}

/** Run `fn` with the module's log lines swallowed. */
async function _quiet<T>(fn: () => Promise<T>): Promise<T> {
  const restore = captureLog(() => {});
  try {
    return await fn();
  } finally {
    restore();
  }
}

// ---------------------------------------------------------------------------
// tests

Deno.test("spawnGroup() makes the child a session and process-group leader", async (t) => {
  let proc: GroupProcess | undefined;
  try {
    const c = _collector();
    proc = _sh("echo ready; exec sleep 300", c.onLine);
    await c.waitFor((l) => l === "ready");

    await t.step("pgid == sid == pid", () => {
      const st = _stat(proc!.pid);
      assertEquals(proc!.pgid, proc!.pid, "pgid");
      assertEquals([st?.pgrp, st?.session], [proc!.pid, proc!.pid], "stat pgrp/session");
    });

    await t.step("identity is the leader's and matches the group", () => {
      assertEquals(proc!.identity, processIdentity(proc!.pid), "identity");
      assert(groupMatches(proc!.pgid, proc!.identity), "groupMatches");
      assertEquals(groupMembers(proc!.pgid), [proc!.pid], "members");
      assert(groupAlive(proc!.pgid), "alive");
    });

    await t.step("env and cwd are passed", async () => {
      const c2 = _collector();
      const p2 = spawnGroup({
        cmd: "sh",
        args: ["-c", 'echo "$FOO $(pwd) ${HOME:-nohome}"'],
        env: { FOO: "bar" },
        clearEnv: true,
        cwd: "/tmp",
        onLine: c2.onLine,
      });
      try {
        assertEquals((await p2.status).code, 0, "exit code");
        await p2.output;
        assertEquals(c2.lines, [["stdout", "bar /tmp nohome"]], "lines");
      } finally {
        await _cleanup(p2);
      }
    });

    await t.step("a missing executable throws NotFound", () => {
      let err: unknown;
      try {
        spawnGroup({ cmd: "/nonexistent/addon", args: [], env: {}, onLine: () => {} });
      } catch (e) {
        err = e;
      }
      assert(err instanceof Deno.errors.NotFound, `NotFound, got ${err}`);
    });
  } finally {
    await _cleanup(proc);
  }
});

Deno.test("spawnGroup() forwards output line by line", async (t) => {
  await t.step("lines arrive in order, tagged by stream", async () => {
    const lines = await _lines(
      'i=1; while [ $i -le 300 ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done',
    );
    const out = lines.filter(([s]) => s === "stdout").map(([, l]) => l);
    const err = lines.filter(([s]) => s === "stderr").map(([, l]) => l);
    assertEquals(out, Array.from({ length: 300 }, (_, i) => `out ${i + 1}`), "stdout");
    assertEquals(err, Array.from({ length: 300 }, (_, i) => `err ${i + 1}`), "stderr");
  });

  await t.step("CRLF, empty lines and a last line without newline", async () => {
    const lines = await _lines(String.raw`printf 'a\r\n\nb\nno newline'`);
    assertEquals(lines.map(([, l]) => l), ["a", "", "b", "no newline"], "lines");
  });

  await t.step("an overlong line is cut at maxLineBytes, the next line is intact", async () => {
    // 3 MB in one line, more than pipe buffers and chunks, then a normal line.
    const lines = await _lines(
      "head -c 3000000 /dev/zero | tr '\\0' a; echo; echo after; head -c 5000 /dev/zero | tr '\\0' b",
      1000,
    );
    assertEquals(
      lines,
      [
        ["stdout", "a".repeat(1000) + TRUNCATION_MARKER],
        ["stdout", "after"],
        ["stdout", "b".repeat(1000) + TRUNCATION_MARKER],
      ],
      "lines",
    );
  });

  await t.step("a cut never splits a UTF-8 character", async () => {
    const lines = await _lines(
      "i=0; while [ $i -lt 100 ]; do printf 'é'; i=$((i+1)); done; echo",
      7,
    );
    assertEquals(lines, [["stdout", "ééé" + TRUNCATION_MARKER]], "lines");
  });

  await t.step("a throwing line handler does not stop forwarding", async () => {
    const seen: string[] = [];
    const proc = _sh("echo one; echo two", (_s, l) => {
      seen.push(l);
      throw new Error("handler bug");
    });
    try {
      await _quiet(async () => {
        await proc.status;
        await proc.output;
      });
      assertEquals(seen, ["one", "two"], "lines");
    } finally {
      await _cleanup(proc);
    }
  });
});

Deno.test("LineSplitter bounds lines across arbitrary chunk boundaries", async (t) => {
  const enc = new TextEncoder();
  const run = (max: number, chunks: Uint8Array[]) => {
    const out: string[] = [];
    const s = new LineSplitter(max, (l) => out.push(l));
    for (const ch of chunks) s.push(ch);
    s.end();
    return out;
  };
  const bytewise = (text: string) => Array.from(enc.encode(text), (b) => Uint8Array.of(b));

  await t.step("byte-by-byte input gives the same lines", () => {
    const text = "héllo\r\nwörld\n\nlast";
    assertEquals(run(100, bytewise(text)), ["héllo", "wörld", "", "last"], "lines");
    assertEquals(run(100, [enc.encode(text)]), ["héllo", "wörld", "", "last"], "one chunk");
  });

  await t.step("overlong lines spread over chunks are cut once", () => {
    const chunks = [
      enc.encode("abc"),
      enc.encode("defgh"),
      enc.encode("ij\nxy"),
      enc.encode("z\n"),
    ];
    assertEquals(run(4, chunks), ["abcd" + TRUNCATION_MARKER, "xyz"], "lines");
  });

  await t.step("a line of exactly maxBytes is not cut", () => {
    assertEquals(run(4, [enc.encode("abcd\nabcde\n")]), ["abcd", "abcd" + TRUNCATION_MARKER]);
  });

  await t.step("4-byte characters are not split", () => {
    assertEquals(run(6, bytewise("😀😀\n")), ["😀" + TRUNCATION_MARKER], "lines");
    assertEquals(run(8, bytewise("😀😀\n")), ["😀😀"], "exact fit");
  });

  await t.step("invalid UTF-8 is replaced, not thrown", () => {
    assertEquals(run(10, [Uint8Array.of(0x61, 0xff, 0x62, 0x0a)]), ["a\ufffdb"], "lines");
  });
});

Deno.test("stopGroup() ends the whole group", async (t) => {
  await t.step("a grandchild is gone after stopGroup", async () => {
    const c = _collector();
    const proc = _sh("sleep 300 & echo $!; wait", c.onLine);
    try {
      const grandchild = Number(await c.waitFor((l) => /^\d+$/.test(l)));
      assert(_alive(grandchild), "grandchild runs");
      assertEquals(_stat(grandchild)?.pgrp, proc.pgid, "grandchild is in the group");
      const r = await stopGroup(proc, 2_000);
      assertEquals(r, { killed: false, remaining: [] }, "result");
      assert(!_alive(grandchild), "grandchild gone");
      assertEquals(groupMembers(proc.pgid), [], "group empty");
      assert(!groupAlive(proc.pgid), "group not alive");
      assertEquals(_stat(proc.pid), null, "leader reaped");
      assertEquals((await proc.status).signal, "SIGTERM", "leader got SIGTERM");
    } finally {
      await _cleanup(proc);
    }
  });

  await t.step("a child that ignores SIGTERM is SIGKILLed after the grace", async () => {
    const c = _collector();
    // The ignored SIGTERM is inherited by the sleeps too.
    const proc = _sh("trap '' TERM; echo ready; while :; do sleep 0.05; done", c.onLine);
    try {
      await c.waitFor((l) => l === "ready");
      const t0 = performance.now();
      const r = await stopGroup(proc, 300);
      assertEquals(r, { killed: true, remaining: [] }, "result");
      assert(performance.now() - t0 >= 290, "waited for the grace");
      assertEquals((await proc.status).signal, "SIGKILL", "leader got SIGKILL");
      assertEquals(groupMembers(proc.pgid), [], "group empty");
    } finally {
      await _cleanup(proc);
    }
  });

  await t.step("a stopped (SIGSTOP) group still ends on SIGTERM", async () => {
    const c = _collector();
    const proc = _sh("echo ready; exec sleep 300", c.onLine);
    try {
      await c.waitFor((l) => l === "ready");
      assert(signalGroup(proc.pgid, "SIGSTOP"), "stopped");
      assert(await _eventually(() => _stat(proc.pid)?.state === "T"), "state T");
      const r = await stopGroup(proc, 2_000);
      assertEquals(r, { killed: false, remaining: [] }, "result");
    } finally {
      await _cleanup(proc);
    }
  });

  await t.step("a leader that already exited with an empty group: nothing to do", async () => {
    const proc = _sh("exit 3", () => {});
    try {
      assertEquals((await proc.status).code, 3, "code");
      assertEquals(await stopGroup(proc, 300), { killed: false, remaining: [] }, "result");
    } finally {
      await _cleanup(proc);
    }
  });

  await t.step("no zombies and no orphans are left", async () => {
    const procs: GroupProcess[] = [];
    const grandchildren: number[] = [];
    try {
      for (let i = 0; i < 4; i++) {
        const c = _collector();
        const p = _sh("sleep 300 & echo $!; sleep 300 & wait", c.onLine);
        procs.push(p);
        grandchildren.push(Number(await c.waitFor((l) => /^\d+$/.test(l))));
      }
      await Promise.all(procs.map((p) => stopGroup(p, 1_000)));
      assertEquals(_ourZombies(), [], "zombie children of ours");
      for (const p of procs) {
        assertEquals(_stat(p.pid), null, `leader ${p.pid} reaped`);
        assertEquals(groupMembers(p.pgid), [], `group ${p.pgid} empty`);
      }
      // Orphaned grandchildren are reparented to pid 1 (or a subreaper); if
      // they are zombies at all, reaping them is that process's job.
      for (const g of grandchildren) {
        const st = _stat(g);
        assert(st === null || (st.state === "Z" && st.ppid !== Deno.pid), `grandchild ${g}`);
      }
    } finally {
      for (const p of procs) await _cleanup(p);
    }
  });
});

Deno.test("stopGroup() ends what a leader that exited by itself left behind", async (t) => {
  await t.step("grandchild of a leader that exited is killed", async () => {
    const c = _collector();
    // The grandchild keeps stdout open, so output only ends once it is gone.
    const proc = _sh("sleep 300 & echo $!; echo leader done", c.onLine);
    try {
      const grandchild = Number(await c.waitFor((l) => /^\d+$/.test(l)));
      assertEquals((await proc.status).code, 0, "leader exited by itself");
      assert(_alive(grandchild), "grandchild still runs");
      assertEquals(groupMembers(proc.pgid), [grandchild], "group is the grandchild");
      assert(groupMatches(proc.pgid, proc.identity), "leaderless group still matches");
      const r = await stopGroup(proc, 2_000);
      assertEquals(r, { killed: false, remaining: [] }, "result");
      assert(!_alive(grandchild), "grandchild gone");
      await proc.output; // EOF now that nobody holds the pipe
      assertEquals(c.lines.map(([, l]) => l), [String(grandchild), "leader done"], "lines");
    } finally {
      await _cleanup(proc);
    }
  });

  await t.step("a grandchild that ignores SIGTERM is SIGKILLed", async () => {
    const c = _collector();
    const proc = _sh("(trap '' TERM; exec sleep 300) & echo $!", c.onLine);
    try {
      const grandchild = Number(await c.waitFor((l) => /^\d+$/.test(l)));
      await proc.status;
      // Only once it has exec'd sleep has the subshell run `trap '' TERM`: before that a
      // SIGTERM would end it and there would be nothing left to SIGKILL.
      assert(await _eventually(() => _ignoresTerm(grandchild)), "grandchild ignores SIGTERM");
      const r = await stopGroup(proc, 300);
      assertEquals(r, { killed: true, remaining: [] }, "result");
      assert(!_alive(grandchild), "grandchild gone");
      await proc.output;
    } finally {
      await _cleanup(proc);
    }
  });
});

Deno.test("signalGroup() and groupMembers() with groups that do not exist", async (t) => {
  const beyond = Number(Deno.readTextFileSync("/proc/sys/kernel/pid_max").trim()) + 1;

  await t.step("no such group: false and empty, no throw", () => {
    assertEquals(signalGroup(beyond, "SIGTERM"), false, "signalGroup");
    assertEquals(groupMembers(beyond), [], "groupMembers");
    assertEquals(groupAlive(beyond), false, "groupAlive");
  });

  await t.step("pgid 0, 1, negatives and the agent's own group are refused", () => {
    const own = _stat(Deno.pid)!.pgrp;
    for (const bad of [0, 1, -1, -5, 2.5, own]) {
      let err: unknown;
      try {
        signalGroup(bad, "SIGCONT");
      } catch (e) {
        err = e;
      }
      assert(err instanceof RangeError, `refused ${bad}`);
    }
  });

  await t.step("a group with only a reaped leader is empty", async () => {
    const proc = _sh("exit 0", () => {});
    try {
      await proc.status;
      assertEquals(groupMembers(proc.pgid), [], "members");
      assertEquals(signalGroup(proc.pgid, "SIGTERM"), false, "no group");
    } finally {
      await _cleanup(proc);
    }
  });
});

Deno.test("endLeftoverGroup() ends groups of an earlier run, and only those", async (t) => {
  const flag = await Deno.makeTempFile({ prefix: "pg-test-" });
  await Deno.remove(flag);

  /** Start a setsid group whose parent (a "killed agent") has already exited. */
  async function orphanGroup(script: string): Promise<number> {
    const out = await new Deno.Command("sh", {
      args: ["-c", `setsid sh -c '${script}' </dev/null >/dev/null 2>&1 & echo $!`],
      stdout: "piped",
      stderr: "null",
    }).output();
    const pgid = Number(new TextDecoder().decode(out.stdout).trim());
    assert(pgid > 1, "pgid");
    // setsid + exec are done once the process is its own group leader.
    assert(await _eventually(() => _stat(pgid)?.pgrp === pgid), "became group leader");
    return pgid;
  }

  await t.step("a group whose parent is gone is ended", async () => {
    let pgid: number | undefined;
    try {
      pgid = await orphanGroup("sleep 300 & wait");
      assert(await _eventually(() => groupMembers(pgid!).length === 2), "leader + sleep");
      const members = groupMembers(pgid);
      const identity = processIdentity(pgid)!; // what state.json recorded
      assert(_stat(pgid)?.ppid !== Deno.pid, "not our child");
      assertEquals(await _quiet(() => endLeftoverGroup(pgid!, identity, 1_000)), true, "ended");
      assertEquals(groupMembers(pgid), [], "group empty");
      for (const m of members) assert(!_alive(m), `member ${m} gone`);
      assertEquals(
        await endLeftoverGroup(pgid, identity, 300),
        false,
        "nothing left the 2nd time",
      );
    } finally {
      _killGroup(pgid);
    }
  });

  await t.step("a group that ignores SIGTERM is SIGKILLed", async () => {
    let pgid: number | undefined;
    try {
      pgid = await orphanGroup(`trap "" TERM; while :; do sleep 0.05; done`);
      const identity = processIdentity(pgid)!;
      assertEquals(await _quiet(() => endLeftoverGroup(pgid!, identity, 300)), true, "ended");
      assertEquals(groupMembers(pgid), [], "group empty");
    } finally {
      _killGroup(pgid);
    }
  });

  await t.step("a group whose leader is gone (reaped) is still ended", async () => {
    let child: Deno.ChildProcess | undefined;
    let pgid: number | undefined;
    try {
      // A detached child of ours via setsid(1): the leader is reaped by Deno
      // when it exits, so only the left-over sleep is in the group.
      child = new Deno.Command("setsid", {
        args: ["sh", "-c", `sleep 300 & echo $!; while [ ! -e "${flag}" ]; do sleep 0.02; done`],
        stdout: "piped",
        stderr: "null",
        stdin: "null",
      }).spawn();
      pgid = child.pid;
      assert(await _eventually(() => _stat(pgid!)?.pgrp === pgid), "became group leader");
      const identity = processIdentity(pgid)!;
      const reader = child.stdout.getReader();
      const first = new TextDecoder().decode((await reader.read()).value);
      await reader.cancel();
      const sleeper = Number(first.trim());
      await Deno.writeTextFile(flag, "");
      await child.status;
      assertEquals(_stat(pgid), null, "leader reaped");
      assertEquals(groupMembers(pgid), [sleeper], "sleep is left");
      assert(groupMatches(pgid, identity), "matches without leader");
      assertEquals(await _quiet(() => endLeftoverGroup(pgid!, identity, 1_000)), true, "ended");
      assert(!_alive(sleeper), "sleep gone");
    } finally {
      _killGroup(pgid);
      if (child) await child.status;
      await Deno.remove(flag).catch(() => {});
    }
  });

  await t.step("a group that does not match the recorded identity is left alone", async () => {
    let pgid: number | undefined;
    try {
      pgid = await orphanGroup("exec sleep 300");
      const identity = processIdentity(pgid)!;
      const colon = identity.lastIndexOf(":");
      const boot = identity.slice(0, colon);
      const start = Number(identity.slice(colon + 1));
      const wrong = [
        `${boot}:${start + 1}`, // pid reused by a later process
        `${boot}:${start - 1}`,
        `00000000-0000-0000-0000-000000000000:${start}`, // recorded before a reboot
        "garbage",
        "",
      ];
      for (const w of wrong) {
        assertEquals(groupMatches(pgid, w), false, `groupMatches ${w}`);
        assertEquals(await _quiet(() => endLeftoverGroup(pgid!, w, 300)), false, `refused ${w}`);
        assert(_alive(pgid), "still running");
      }
      assertEquals(await _quiet(() => endLeftoverGroup(pgid!, identity, 1_000)), true, "real one");
      assert(!_alive(pgid), "ended");
    } finally {
      _killGroup(pgid);
    }
  });

  await t.step("a group that does not exist or pgid <= 1: false", async () => {
    const beyond = Number(Deno.readTextFileSync("/proc/sys/kernel/pid_max").trim()) + 1;
    const me = processIdentity(Deno.pid)!;
    assertEquals(await endLeftoverGroup(beyond, me, 300), false, "missing");
    assertEquals(await endLeftoverGroup(1, processIdentity(1)!, 300), false, "init");
    assertEquals(await endLeftoverGroup(0, me, 300), false, "zero");
    assertEquals(await endLeftoverGroup(_stat(Deno.pid)!.pgrp, me, 300), false, "own group");
  });
});
