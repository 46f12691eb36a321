// Attacks on add-on isolation (SPEC 13) by a control plane that may only send assignments and
// by a malicious add-on, each against the real agent running as root.

import { assert, assertEquals, assertRejects, assertStringIncludes } from "./_assert.ts";
import { AddonIsolation } from "../src/agent/isolation.ts";
import { DeliveryError } from "../src/delivery/mod.ts";
import { decodeAssignment, hostPlatform } from "../src/protocol/mod.ts";
import { emptyState, Layout } from "../src/runtime/mod.ts";
import { findOwnCgroup } from "../src/supervise/mod.ts";
import { waitFor } from "./_agent_process.ts";
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
import { withTempDir, writeAssignments } from "./_helpers.ts";

const ROOT_ONLY = { ignore: Deno.uid() !== 0 };
/** A value a shell would expand, split or unquote if it ever saw it as code. */
const TRICKY = `a  b'"\\ $(id) \${HOME} *`;

Deno.test({
  name:
    "an assignment's loader variables (LD_DEBUG_OUTPUT, LD_PRELOAD) act only as the add-on's user, never as root",
  ...ROOT_ONLY,
  fn: async () => {
    await withTempDir(async (dir) => {
      const sleep = await sleepLink(dir);
      // Only root may write here: a file appearing in it was written by a process running as root.
      const rootOnly = `${dir}/root-only`;
      await Deno.mkdir(rootOnly, { mode: 0o755 });
      const cfg = await daemonConfig(dir);
      const root = `${dir}/root`;
      await writeAssignments(dir, [
        await sidecar(
          dir,
          "ld",
          `echo "sees LD_DEBUG=$LD_DEBUG"; unset LD_DEBUG; printf 'TRICKY=%s\\n' "$TRICKY"; ` +
            `echo "renamed: $(env | grep -c ADDON_AGENT_ENV_)"; exec ${sleep} 300`,
          { env: { LD_DEBUG: "files", LD_DEBUG_OUTPUT: `${rootOnly}/pwned`, TRICKY } },
        ),
      ]);
      await withAgent(dir, cfg, async (agent) => {
        await waitState(root, agent, "ld", "running");
        await waitFor(
          () =>
            agent.logs().some((l) => l.addon_id === "ld" && l.msg === "sees LD_DEBUG=files")
              ? true
              : null,
          {
            timeoutMs: 10_000,
            what: "the add-on to print its environment",
            context: () => agent.tail(),
          },
        );
        const lines = agent.logs().filter((l) => l.addon_id === "ld").map((l) => l.msg);
        assert(lines.includes(`TRICKY=${TRICKY}`), `the add-on's env arrives verbatim: ${lines}`);
        assert(lines.includes("renamed: 0"), `no renamed variable is left: ${lines}`);
        const written = [];
        for await (const e of Deno.readDir(rootOnly)) written.push(e.name);
        assertEquals(written, [], "files the loader wrote as root at the assignment's request");
      });
    });
  },
});

Deno.test({
  name: "an add-on is never given the uid of a process that already runs on the host",
  ...ROOT_ONLY,
  fn: async () => {
    await withTempDir(async (dir) => {
      const sleep = await sleepLink(dir);
      // A service of the host (a systemd DynamicUser= one, say) runs as the range's first uid
      // (a plain sleep: withAgent counts what carries `dir` as the add-ons' leftovers).
      const service = new Deno.Command("setpriv", {
        args: ["--reuid", "64300", "--regid", "64300", "--clear-groups", "sleep", "300"],
        stdin: "null",
      }).spawn();
      try {
        const cfg = await daemonConfig(dir, { isolation: { uid_range: [64300, 64309] } });
        const root = `${dir}/root`;
        await writeAssignments(dir, [
          await sidecar(
            dir,
            "a",
            `if kill -0 ${service.pid} 2>/dev/null; then echo SIGNALS; else echo "CANNOT SIGNAL"; fi; ` +
              `exec ${sleep} 300`,
          ),
        ]);
        await withAgent(dir, cfg, async (agent) => {
          const a = await waitState(root, agent, "a", "running");
          await waitFor(
            () => agent.logs().some((l) => l.addon_id === "a" && /SIGNAL/.test(l.msg)) || null,
            { timeoutMs: 10_000, what: "the add-on's try", context: () => agent.tail() },
          );
          assertEquals(a.uid, 64301, "the next free uid");
          const said = agent.logs().filter((l) => l.addon_id === "a").map((l) => l.msg);
          assert(said.includes("CANNOT SIGNAL"), said.join(" | "));
          assert(
            agent.logs().some((l) => l.msg.startsWith("skipping a uid") && l.uid === 64300),
            "the skip is logged",
          );
        });
      } finally {
        service.kill("SIGKILL");
        await service.status;
      }
    });
  },
});

Deno.test("without setpriv a per-add-on user's sidecar is refused, never run as the agent; a unit still gets User=", async () => {
  await withTempDir(async (dir) => {
    const layout = new Layout(`${dir}/root`);
    await Deno.mkdir(layout.addons, { recursive: true });
    const state = emptyState();
    const cfg = {
      runtime_root: layout.root,
      isolation: {
        users: "per_addon" as const,
        uid_range: [64400, 64409] as [number, number],
        cgroup: "off" as const,
        allowed_capabilities: [],
      },
    };
    const iso = await AddonIsolation.open(cfg, layout, state, { setpriv: false });
    const entry = (supervision: string) =>
      decodeAssignment(
        {
          addon_id: supervision.replace("_", "-"),
          version: "1.0.0",
          delivery: "os_package",
          binary_path: "/bin/true",
          supervision,
          ...(supervision === "systemd_timer" ? { schedule: "hourly" } : {}),
        },
        "addons[0]",
        hostPlatform(),
      );
    for (const kind of ["agent_sidecar", "ephemeral_helper"]) {
      const e = await assertRejects(() => iso.place(entry(kind), null), DeliveryError);
      assertEquals(e.kind, "refused");
      assertStringIncludes(e.message, "setpriv (util-linux) is not installed");
    }
    const unit = await iso.place(entry("systemd_service"), null);
    assert(unit.confine?.uid !== undefined && unit.confine.uid !== null, "User= for the unit");
    assertEquals(unit.confine.uid, state.uids?.["systemd-service"]);
  });
});

Deno.test({
  name:
    "without a cgroup, a setsid child of an add-on with its own uid is gone after enabled: false and SIGTERM",
  ...ROOT_ONLY,
  fn: async () => {
    await withTempDir(async (dir) => {
      const sleep = await sleepLink(dir);
      const cfg = await daemonConfig(dir, {
        isolation: { cgroup: "off", uid_range: [64500, 64509] },
      });
      const root = `${dir}/root`;
      const body = (name: string) =>
        `setsid sh -c 'echo $$ > "$ADDON_DATA_DIR/escaped"; exec ${sleep} 301' & exec ${sleep} 300 # ${name}`;
      await writeAssignments(dir, [
        await sidecar(dir, "off", body("off")),
        await sidecar(dir, "term", body("term")),
      ]);
      const escaped = (id: string) =>
        waitFor(async () => {
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
        const off = await waitState(root, agent, "off", "running");
        assertEquals(off.containment, "process_group");
        await waitState(root, agent, "term", "running");
        const offChild = await escaped("off");
        termChild = await escaped("term");
        await writeAssignments(dir, [
          await sidecar(dir, "off", body("off"), { enabled: false }),
          await sidecar(dir, "term", body("term")),
        ], "v2");
        await waitAddon(root, agent, "off", "disabled", (a) => a.state === "disabled");
        await waitFor(() => !alive(offChild), {
          timeoutMs: 10_000,
          what: `the escaped child ${offChild} of the disabled add-on to be gone`,
          context: () => agent.tail(),
        });
        assert(alive(termChild), "the other add-on's child still runs");
      });
      // withAgent stopped the agent with SIGTERM and found no process of the test left.
      assert(!alive(termChild), `the escaped child ${termChild} is gone after SIGTERM`);
    });
  },
});

Deno.test({
  name: "an add-on cannot leave its cgroup, make one, or look at the agent's open files",
  ...ROOT_ONLY,
  fn: async () => {
    await withTempDir(async (dir) => {
      const sleep = await sleepLink(dir);
      const cfg = await daemonConfig(dir, { isolation: { uid_range: [64600, 64609] } });
      const root = `${dir}/root`;
      const mount = findOwnCgroup()!.mount;
      const tries: [string, string][] = [
        ["into its parent", 'echo $$ > "$P/cgroup.procs"'],
        ["into a sibling", 'echo $$ > "$P/addon-b/cgroup.procs"'],
        ["into the root", `echo $$ > ${mount}/cgroup.procs`],
        ["a child cgroup", 'mkdir "$D/sub"'],
        ["the agent's fds", 'ls "/proc/$PPID/fd"'],
      ];
      const probe = `D=${mount}$(sed -n 's/^0:://p' /proc/self/cgroup); P=$(dirname "$D"); ` +
        tries.map(([what, cmd]) =>
          `if (${cmd}) >/dev/null 2>&1; then echo "DID ${what}"; else echo "DENIED ${what}"; fi`
        ).join("; ") + `; echo "now in $(sed -n 's/^0:://p' /proc/self/cgroup)"; exec ${sleep} 300`;
      await writeAssignments(dir, [
        await sidecar(dir, "b", `exec ${sleep} 300`),
        await sidecar(dir, "a", probe),
      ]);
      await withAgent(dir, cfg, async (agent) => {
        await waitState(root, agent, "b", "running");
        const lines = () => agent.logs().filter((l) => l.addon_id === "a").map((l) => l.msg);
        await waitFor(() => lines().some((l) => l.startsWith("now in ")) || null, {
          timeoutMs: 10_000,
          what: "the add-on's tries",
          context: () => agent.tail(),
        });
        for (const [what] of tries) assert(lines().includes(`DENIED ${what}`), lines().join(" | "));
        assert(lines().some((l) => /^now in \/.*\/addon-a$/.test(l)), lines().join(" | "));
      });
    });
  },
});

Deno.test({
  name:
    "without a cgroup, after a kill -9 the next agent ends what was left running as the add-on's uid",
  ...ROOT_ONLY,
  fn: async () => {
    await withTempDir((dir) =>
      assertKill9LeftoverEnded(dir, {
        isolation: { cgroup: "off", uid_range: [64700, 64709] },
      })
    );
  },
});
