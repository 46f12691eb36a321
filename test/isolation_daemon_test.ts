// Add-on isolation (SPEC 13) through the real agent: add-ons run as their own uid, in their
// own cgroup, with only their capabilities; each attack of issue #10 is a test here.

import { assert, assertEquals, assertStringIncludes } from "./_assert.ts";
import { readAgentState, waitFor } from "./_agent_process.ts";
import {
  alive,
  assertKill9LeftoverEnded,
  daemonConfig,
  sidecar,
  sleepLink,
  waitAddon,
  waitState,
  withAgent,
} from "./_daemon_fixtures.ts";
import { freePort, runAgent, withTempDir, writeAssignments } from "./_helpers.ts";
import { findOwnCgroup } from "../src/supervise/cgroup.ts";

const ROOT_ONLY = { ignore: Deno.uid() !== 0 };

function _status(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of Deno.readTextFileSync(`/proc/${pid}/status`).split("\n")) {
    const i = line.indexOf(":");
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}

Deno.test({
  name: "an isolated add-on cannot read the agent's secrets, state or another add-on's files",
  ...ROOT_ONLY,
  fn: async () => {
    await withTempDir(async (dir) => {
      const sleep = await sleepLink(dir);
      const token = `${dir}/token`;
      await Deno.writeTextFile(token, "s3cr3t-token\n", { mode: 0o600 });
      const cfg = await daemonConfig(dir);
      await Deno.chmod(cfg, 0o600);
      const root = `${dir}/root`;
      const attempts: [string, string][] = [
        ["environ", '"/proc/$PPID/environ"'],
        ["token", token],
        ["agent.json", cfg],
        ["state.json", `${root}/state.json`],
        ["b-config", `${root}/addons/b/config.json`],
        ["b-binary", `${root}/addons/b/current/b`],
      ];
      const probe = attempts.map(([name, path]) =>
        `if cat ${path} >/dev/null 2>&1; then echo "READ ${name}"; else echo "DENIED ${name}"; fi`
      ).join("; ");
      await writeAssignments(dir, [
        await sidecar(dir, "b", `exec ${sleep} 300`, { config: { secret: "b-only" } }),
        await sidecar(
          dir,
          "a",
          `while [ ! -e "$ADDON_DATA_DIR/go" ]; do ${sleep} 0.1; done; ${probe}; ` +
            `touch "$ADDON_DATA_DIR/mine" && echo "WROTE data"; exec ${sleep} 300`,
        ),
      ]);
      await withAgent(dir, cfg, async (agent) => {
        const b = await waitState(root, agent, "b", "running");
        const a = await waitState(root, agent, "a", "running");
        // b's files exist now: a looks only after this, so a refusal is the modes' doing.
        await Deno.stat(`${root}/addons/b/config.json`);
        await Deno.writeTextFile(`${root}/addons/a/data/go`, "");
        const lines = () => agent.logs().filter((l) => l.addon_id === "a").map((l) => l.msg);
        await waitFor(() => lines().includes("WROTE data") ? true : null, {
          timeoutMs: 10_000,
          what: "the probe to finish",
          context: () => agent.tail(),
        });
        for (const [name] of attempts) {
          assert(lines().includes(`DENIED ${name}`), `${name}: ${lines().join(" | ")}`);
        }
        assert(a.uid !== undefined && b.uid !== undefined && a.uid !== b.uid, "two uids");
        assert(a.uid! >= 61000 && a.uid! <= 61999, `uid ${a.uid} from the default range`);
        assertEquals(_status(a.pid!).Uid?.split("\t")[0], String(a.uid));
        assertEquals(a.containment, "cgroup");
        const state = await readAgentState(root);
        assertEquals(state?.uids?.a, a.uid, "the uid is recorded in state.json");
      });
    });
  },
});

Deno.test({
  name: "an add-on runs with exactly its capabilities; one outside the allowlist is refused",
  ...ROOT_ONLY,
  fn: async () => {
    await withTempDir(async (dir) => {
      const sleep = await sleepLink(dir);
      const port = freePort();
      const cfg = await daemonConfig(dir, { status: { listen: `127.0.0.1:${port}` } });
      const root = `${dir}/root`;
      await writeAssignments(dir, [
        await sidecar(dir, "raw", `exec ${sleep} 300`, { capabilities: ["CAP_NET_RAW"] }),
        await sidecar(dir, "plain", `exec ${sleep} 300`, {
          resources: { memory_max_bytes: 67108864, pids_max: 16 },
        }),
        await sidecar(dir, "admin", `exec ${sleep} 300`, { capabilities: ["CAP_SYS_ADMIN"] }),
      ]);
      await withAgent(dir, cfg, async (agent) => {
        const raw = await waitState(root, agent, "raw", "running");
        const st = _status(raw.pid!);
        assertEquals(st.CapBnd, "0000000000002000", "bounding set: CAP_NET_RAW only");
        assertEquals(st.CapEff, "0000000000002000");
        assertEquals(st.NoNewPrivs, "0");
        const plain = await waitState(root, agent, "plain", "running");
        const ps = _status(plain.pid!);
        assertEquals([ps.CapBnd, ps.CapEff, ps.NoNewPrivs], [
          "0000000000000000",
          "0000000000000000",
          "1",
        ]);
        assertEquals(plain.containment, "cgroup");
        // This host's cgroup v2 offers no controllers: the limits are reported, not pretended.
        const mount = findOwnCgroup()!.mount;
        if (!(await Deno.readTextFile(`${mount}/cgroup.controllers`)).includes("memory")) {
          assertEquals(plain.resources_not_enforced, [
            "memory_max_bytes: not enforced: no memory controller",
            "pids_max: not enforced: no pids controller",
          ]);
        }
        const status = await (await fetch(`http://127.0.0.1:${port}/status`)).json();
        const p = status.addons.find((x: { addon_id: string }) => x.addon_id === "plain");
        assertEquals(p.containment, "cgroup");
        assert(typeof p.cpu_seconds === "number", `cpu_seconds in status: ${JSON.stringify(p)}`);
        const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        assert(
          /^addon_agent_addon_cpu_seconds_total\{addon_id="plain"\} \d/m.test(metrics),
          metrics,
        );
        const admin = await waitState(root, agent, "admin", "failed");
        assertStringIncludes(admin.message, "allowed_capabilities");
        assertStringIncludes(admin.message, "CAP_SYS_ADMIN");
        assertEquals(admin.pid, null, "nothing of it ran");
      });
    });
  },
});

Deno.test({
  name: "a child that called setsid is gone after enabled: false and after the agent's SIGTERM",
  ...ROOT_ONLY,
  fn: async () => {
    await withTempDir(async (dir) => {
      const sleep = await sleepLink(dir);
      const cfg = await daemonConfig(dir);
      const root = `${dir}/root`;
      const body = (name: string) =>
        `setsid sh -c 'echo $$ > "$ADDON_DATA_DIR/escaped"; exec ${sleep} 301' & exec ${sleep} 300 # ${name}`;
      await writeAssignments(dir, [
        await sidecar(dir, "off", body("off")),
        await sidecar(dir, "term", body("term")),
      ]);
      const escaped = async (id: string) =>
        await waitFor(async () => {
          try {
            const pid = Number(
              (await Deno.readTextFile(`${root}/addons/${id}/data/escaped`)).trim(),
            );
            return pid > 0 && alive(pid) ? pid : null;
          } catch {
            return null;
          }
        }, { timeoutMs: 10_000, what: `${id}'s escaped child` });
      let termChild = 0;
      await withAgent(dir, cfg, async (agent) => {
        await waitState(root, agent, "off", "running");
        await waitState(root, agent, "term", "running");
        const offChild = await escaped("off");
        termChild = await escaped("term");
        await writeAssignments(dir, [
          await sidecar(dir, "off", body("off"), { enabled: false }),
          await sidecar(dir, "term", body("term")),
        ], "v2");
        await waitAddon(root, agent, "off", "disabled", (a) => a.state === "disabled");
        assert(!alive(offChild), `the escaped child ${offChild} of a disabled add-on is gone`);
        assert(alive(termChild), "the other add-on's child still runs");
      });
      // withAgent stopped the agent with SIGTERM and found no process of the test left.
      assert(!alive(termChild), `the escaped child ${termChild} is gone after SIGTERM`);
    });
  },
});

Deno.test({
  name: "after a kill -9 the next agent ends what was left in the add-on's cgroup",
  ...ROOT_ONLY,
  fn: async () => {
    await withTempDir((dir) => assertKill9LeftoverEnded(dir));
  },
});

Deno.test({
  name: "users: shared runs every add-on as the named user",
  ...ROOT_ONLY,
  fn: async () => {
    await withTempDir(async (dir) => {
      const sleep = await sleepLink(dir);
      const cfg = await daemonConfig(dir, { isolation: { users: "shared", user: "nobody" } });
      const root = `${dir}/root`;
      await writeAssignments(dir, [await sidecar(dir, "s", `exec ${sleep} 300`)]);
      await withAgent(dir, cfg, async (agent) => {
        const s = await waitState(root, agent, "s", "running");
        assertEquals(s.uid, 65534);
        assertEquals(_status(s.pid!).Uid?.split("\t")[0], "65534");
        const data = await Deno.lstat(`${root}/addons/s/data`);
        assertEquals([data.uid, data.mode! & 0o777], [65534, 0o700]);
        const table = await runAgent(["status", "--config", cfg]);
        assertStringIncludes(table.stdout, "s: runs as uid 65534, contained by cgroup");
      });
    });
  },
});
