/**
 * Attacks on SPEC 12 found by reviewing issue #9's work, each reproduced
 * against the real agent: what a local user, a source or a store could still
 * make it do.
 */

import { assert, assertEquals } from "./_assert.ts";
import { daemonConfig, entry, sleepLink, waitState } from "./_daemon_fixtures.ts";
import { startAgent } from "./_agent_process.ts";
import { startControlPlane } from "../src/control_plane/mod.ts";
import { withTempDir, writeAssignments } from "./_helpers.ts";

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
