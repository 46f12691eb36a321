/**
 * SPEC 12 "Status" and the secret-holding files of "The runtime root",
 * against the real daemon: what `/status`, `/metrics` and `status --json`
 * show of an add-on's `env`, `args` and `config` (names only, fingerprints
 * hashed), the modes of `last-good.json` and `config.json`, and the `Host`
 * check of the status endpoint (DNS rebinding).
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import {
  daemonConfig,
  entry,
  sleepLink,
  VERSION,
  waitState,
  withAgent,
} from "./_daemon_fixtures.ts";
import { runAgent, withTempDir, writeAssignments } from "./_helpers.ts";
import { readAgentState, waitFor } from "./_agent_process.ts";

const SECRET = "s3cr3t-" + crypto.randomUUID().slice(0, 8);

/** A raw HTTP/1.1 GET with the given Host header (fetch would put its own). */
async function _rawGet(
  port: number,
  path: string,
  host: string,
): Promise<{ status: number; body: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(
      new TextEncoder().encode(
        `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
      ),
    );
    let text = "";
    const buf = new Uint8Array(65536);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
    return { status, body: text.slice(text.indexOf("\r\n\r\n") + 4) };
  } finally {
    try {
      conn.close();
    } catch { /* closed by the peer */ }
  }
}

Deno.test("run shows no env, args or config values in status and keeps secret files private", async (t) => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    await writeAssignments(dir, [
      await entry(dir, "plain", "agent_sidecar", `exec "${sleepBin}" 1000`, {
        env: { API_TOKEN: `${SECRET}-env` },
        args: [`--password=${SECRET}-arg`],
        config: { db_password: `${SECRET}-config` },
      }),
      await entry(dir, "helper", "ephemeral_helper", "echo done", {
        env: { HELPER_TOKEN: `${SECRET}-helper-env` },
        args: [`${SECRET}-helper-arg`],
      }),
      {
        addon_id: "toggle",
        version: VERSION,
        supervision: "config_toggle",
        config: { feature_x: `${SECRET}-toggle`, beta: true },
      },
    ]);
    const cfg = await daemonConfig(dir, { status: { listen: "127.0.0.1:0" } });

    await withAgent(dir, cfg, async (agent) => {
      await waitState(root, agent, "plain", "running");
      await waitState(root, agent, "helper", "completed");
      const toggle = await waitState(root, agent, "toggle", "running");
      await waitFor(
        async () => {
          try {
            return (await Deno.stat(`${root}/addons/plain/last-good.json`)).isFile;
          } catch {
            return null;
          }
        },
        { timeoutMs: 20_000, what: "last-good.json of plain", context: () => agent.tail() },
      );
      const listening = agent.logs().find((l) => l.msg === "status endpoint listening");
      assert(listening, "the agent logged its status address");
      const port = Number((listening.listen as string).split(":").pop());

      await t.step("toggles show their names, the helper fingerprint is a hash", async () => {
        assertEquals(toggle.toggles, ["beta", "feature_x"]);
        const state = await readAgentState(root);
        assertMatch(state?.addons.helper?.helper_fingerprint, /^[0-9a-f]{64}$/);
      });

      await t.step("/status, /metrics and status --json carry no value", async () => {
        const status = await _rawGet(port, "/status", `127.0.0.1:${port}`);
        assertEquals(status.status, 200);
        assert(status.body.includes('"toggle"'), "the document lists the add-ons");
        const metrics = await _rawGet(port, "/metrics", `localhost:${port}`);
        assertEquals(metrics.status, 200);
        const cli = await runAgent(["status", "--runtime-root", root, "--json"]);
        assertEquals(cli.code, 0, cli.stderr);
        const table = await runAgent(["status", "--runtime-root", root]);
        assertEquals(table.code, 0, table.stderr);
        for (
          const [what, text] of [
            ["/status", status.body],
            ["/metrics", metrics.body],
            ["status --json", cli.stdout],
            ["status", table.stdout],
          ]
        ) {
          assert(!text!.includes(SECRET), `${what} shows a secret value:\n${text}`);
        }
      });

      await t.step("last-good.json and config.json are not world-readable", async () => {
        for (const [file, want] of [["last-good.json", 0o600], ["config.json", 0o640]] as const) {
          const st = await Deno.stat(`${root}/addons/plain/${file}`);
          assertEquals((st.mode! & 0o777).toString(8), want.toString(8), file);
        }
        const lg = await Deno.readTextFile(`${root}/addons/plain/last-good.json`);
        assert(lg.includes(`${SECRET}-env`), "last-good.json holds the env (so its mode matters)");
      });

      await t.step("the endpoint refuses a Host that is not loopback (DNS rebinding)", async () => {
        for (const host of ["attacker.example", `attacker.example:${port}`, "127.0.0.1.nip.io"]) {
          for (const path of ["/status", "/metrics", "/healthz"]) {
            const r = await _rawGet(port, path, host);
            assertEquals(r.status, 421, `${path} with Host ${host}`);
            assert(!r.body.includes("toggle"), "no status in the refusal");
          }
        }
        for (const host of ["localhost", `[::1]:${port}`, "127.0.0.2", `LOCALHOST:${port}`]) {
          assertEquals((await _rawGet(port, "/healthz", host)).status, 200, `Host ${host}`);
        }
      });
    });
  });
});
