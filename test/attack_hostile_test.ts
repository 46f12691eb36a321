/**
 * Attacks on SPEC 12 found by reviewing issue #9's work, each reproduced
 * against the real agent: what a local user, a source or a store could still
 * make it do.
 */

import { assert, assertEquals } from "./_assert.ts";
import { daemonConfig, entry, publish, sleepLink, waitState } from "./_daemon_fixtures.ts";
import { startAgent, waitFor } from "./_agent_process.ts";
import { startControlPlane } from "../src/control_plane/mod.ts";
import { runAgent, syncJson, withTempDir, writeAssignments } from "./_helpers.ts";

Deno.test("run ends on SIGTERM while a local user holds a status request open without its body", async () => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    await writeAssignments(dir, [
      await entry(dir, "keep", "agent_sidecar", `exec "${sleepBin}" 1000`),
    ]);
    const cfg = await daemonConfig(dir, { status: { listen: "127.0.0.1:0" } });
    // The agent gives its add-ons 10 s; a stop that takes longer than that is a hang.
    const agent = startAgent(cfg, {}, { stopTimeoutMs: 12_000 });
    const conns: Deno.TcpConn[] = [];
    try {
      await waitState(`${dir}/root`, agent, "keep", "running");
      const listening = agent.logs().find((l) => l.msg === "status endpoint listening");
      assert(listening, "the agent logged its status address");
      const port = Number((listening.listen as string).split(":").pop());
      for (
        const req of [
          "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n", // headers never finished
          "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n", // body never sent
        ]
      ) {
        const c = await Deno.connect({ hostname: "127.0.0.1", port });
        await c.write(new TextEncoder().encode(req));
        conns.push(c);
      }
      // Both requests reached the server: it answered the one whose headers are complete.
      const buf = new Uint8Array(1024);
      const n = await conns[1]!.read(buf);
      assert(n !== null && new TextDecoder().decode(buf.subarray(0, n)).startsWith("HTTP/1.1 200"));
      assertEquals(await agent.stop(), 0, agent.tail());
    } finally {
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed by the agent */ }
      }
      await agent.stop().catch(() => {});
    }
  });
});

Deno.test("startControlPlane() closes while a client holds a status POST open without its body", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(
      `${dir}/catalog.json`,
      JSON.stringify({ packages: {}, assignments: { default: [] } }),
    );
    const cp = await startControlPlane({ catalogPath: `${dir}/catalog.json` });
    const c = await Deno.connect({ hostname: "127.0.0.1", port: cp.port });
    try {
      await c.write(
        new TextEncoder().encode(
          "POST /v1/agents/a/addons/status HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n" +
            "Expect: 100-continue\r\n\r\n{",
        ),
      );
      // "100 Continue" comes once the handler reads the body: the request is under way.
      const buf = new Uint8Array(256);
      const n = await c.read(buf);
      assert(n !== null && new TextDecoder().decode(buf.subarray(0, n)).includes("100 Continue"));
      let timer: ReturnType<typeof setTimeout> | undefined;
      const closed = await Promise.race([
        cp.close().then(() => "closed"),
        new Promise<string>((r) => timer = setTimeout(() => r("still open after 5 s"), 5000)),
      ]);
      clearTimeout(timer);
      assertEquals(closed, "closed");
    } finally {
      try {
        c.close();
      } catch { /* closed by the server */ }
    }
  });
});

/** Whether `s` holds a control character other than a line break. */
function _control(s: string): boolean {
  return [...s].some((c) => c !== "\n" && (c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f));
}

Deno.test("status prints an add-on's terminal escapes as text, never to the terminal", async () => {
  await withTempDir(async (dir) => {
    // A helper whose output (in its state message) would retitle, clear and recolour the
    // operator's terminal, and write its clipboard (OSC 52).
    await writeAssignments(dir, [
      await entry(
        dir,
        "loud",
        "ephemeral_helper",
        String
          .raw`printf '\033]0;pwned\007\033[2J\033]52;c;ZWNobyBvd25lZA==\007\033[31mok\r\n'; exit 1`,
      ),
    ]);
    const cfg = await daemonConfig(dir);
    const agent = startAgent(cfg);
    try {
      await waitState(`${dir}/root`, agent, "loud", "failed");
    } finally {
      assertEquals(await agent.stop(), 0, agent.tail());
    }
    const table = await runAgent(["status", "--runtime-root", `${dir}/root`]);
    assertEquals(table.code, 0, table.stderr);
    assert(table.stdout.includes("pwned"), `the message is shown:\n${table.stdout}`);
    assert(!_control(table.stdout), JSON.stringify(table.stdout));
    assert(table.stdout.includes("\\x1b]0;pwned\\x07"), "shown as escapes");
  });
});

Deno.test("sync prints a control plane's terminal escapes as text, never to the terminal", async () => {
  await withTempDir(async (dir) => {
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      () => new Response("\x1b]0;pwned\x07\x1b[2Jbusy", { status: 503 }),
    );
    try {
      const url = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`;
      const cfg = await daemonConfig(dir, { source: { kind: "control_plane", url } });
      const run = await runAgent(["sync", "--config", cfg]);
      assertEquals(run.code, 1, run.stderr);
      assert(run.stdout.includes("pwned"), `the answer is shown:\n${run.stdout}`);
      assert(!_control(run.stdout), JSON.stringify(run.stdout));
    } finally {
      await server.shutdown();
    }
  });
});

Deno.test("startControlPlane() keeps status reports within their memory budget, however many agent ids a client invents", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(
      `${dir}/catalog.json`,
      JSON.stringify({ packages: {}, assignments: { default: [] } }),
    );
    const budget = 256 * 1024;
    const cp = await startControlPlane({
      catalogPath: `${dir}/catalog.json`,
      maxReportsBytes: budget,
    });
    try {
      // ~20 KB reports under 100 fresh ids: 2 MB posted, 8 times the budget.
      const post = async (id: string) => {
        const report = {
          agent_id: id,
          config_version: "x".repeat(20_000),
          reported_at: "2025-01-01T00:00:00Z",
          addons: [],
        };
        const res = await fetch(`${cp.url}/v1/agents/${id}/addons/status`, {
          method: "POST",
          body: JSON.stringify(report),
        });
        await res.body?.cancel();
        assertEquals(res.status, 204, id);
      };
      for (let i = 0; i < 100; i++) await post(`flood-${i}`);
      const kept = Array.from({ length: 100 }, (_, i) => cp.reports(`flood-${i}`)).filter((r) =>
        r !== undefined
      );
      assert(kept.length * 20_000 <= budget, `${kept.length} reports of 20 KB kept`);
      assert(cp.reports("flood-99") !== undefined, "the newest report is kept");
      assertEquals(cp.reports("flood-0"), undefined, "the oldest report was dropped");
    } finally {
      await cp.close();
    }
  });
});

Deno.test("sync refuses a binary_path or addon_id that would stage the binary over artifact.json", async () => {
  await withTempDir(async (dir) => {
    const mk = async (id: string, binary_path?: string) => ({
      addon_id: id,
      version: "1",
      delivery: "pushed_artifact",
      supervision: "ephemeral_helper",
      ...(binary_path ? { binary_path } : {}),
      ...(await publish(dir, id, "1", "#!/bin/sh\necho hi\n")),
    });
    await writeAssignments(dir, [
      await mk("named", "/usr/lib/named/artifact.json"),
      await mk("artifact.json"),
    ]);
    const run = await runAgent(["sync", "--config", await daemonConfig(dir), "--json"]);
    assertEquals(run.code, 1, run.stderr);
    const byId = new Map(syncJson(run).results.map((r) => [r.addon_id, r]));
    for (const [id, field] of [["named", "binary_path"], ["artifact.json", "addon_id"]] as const) {
      const r = byId.get(id);
      assertEquals(r?.outcome, "refused", JSON.stringify(r));
      assert(r!.message.includes(field) && r!.message.includes("agent's own record"), r!.message);
      assert(
        !(await Deno.lstat(`${dir}/root/addons/${id}/versions/1`).then(() => true, () => false)),
        `${id} was staged`,
      );
    }
  });
});

Deno.test("run ends on SIGTERM while placing a document of 1,500 add-ons", async () => {
  await withTempDir(async (dir) => {
    // Each placement allocates a uid (a shell, a scan of addons/): all at once, SIGTERM
    // waited for every one of them (~100 s for 2,000 on a busy host).
    const toggles = Array.from({ length: 1500 }, (_, i) => ({
      addon_id: `t${i}`,
      version: "1",
      supervision: "config_toggle",
      config: { on: true },
    }));
    await writeAssignments(dir, toggles);
    const cfg = await daemonConfig(dir, { isolation: { users: "per_addon" } });
    const agent = startAgent(cfg, {}, { stopTimeoutMs: 12_000 });
    try {
      await waitFor(() => {
        agent.assertAlive();
        return agent.logs().some((l) => l.msg.startsWith("state running"));
      }, { timeoutMs: 60_000, what: "a first add-on placed", context: () => agent.tail() });
      assertEquals(await agent.stop(), 0, agent.tail());
    } finally {
      await agent.stop().catch(() => {});
    }
  });
});
