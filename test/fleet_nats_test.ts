/**
 * A fleet on NATS end to end, through the real CLI and a real nats-server:
 * `addon-agent publish` uploads artifacts to the object store,
 * `control-plane --publish` writes each agent's document to KV (only the
 * changed ones), the daemon gets it by push, runs it, reports to the status
 * bucket, and stops what a deleted key no longer assigns; when the server
 * is gone for good, add-ons keep running and a delivery that needs it is
 * `fallback`.
 */

import { assert, assertEquals } from "./_assert.ts";
import { hostPlatform, platformString } from "../src/protocol/platform.ts";
import { pidAlive, readAgentState, waitFor } from "./_agent_process.ts";
import { waitAddon, waitState, withAgent } from "./_daemon_fixtures.ts";
import { runAgent, scriptAddon, sha256Hex, withTempDir, writeConfig } from "./_helpers.ts";
import { HAVE_NATS, startNats } from "./_nats.ts";
import { partialName } from "../src/runtime/mod.ts";

const PLATFORM = platformString(hostPlatform());

async function publishArtifact(dir: string, url: string, id: string, version: string) {
  const body = scriptAddon(`echo "up ${version}"; exec ${dir}/bin/sleep 300`);
  const file = `${dir}/${id}-${version}`;
  await Deno.writeTextFile(file, body);
  const key = `${id}/${version}/${id}`;
  const r = await runAgent(["publish", "--store", `${url}/artifacts`, "--key", key, file]);
  assertEquals(r.code, 0, r.stderr);
  assertEquals(JSON.parse(r.stdout).size, body.length);
  return { object_key: key, sha256: sha256Hex(body) };
}

async function writeCatalog(
  dir: string,
  version: string,
  art: { object_key: string; sha256: string },
) {
  await Deno.writeTextFile(
    `${dir}/catalog.json`,
    JSON.stringify({
      packages: {
        probe: {
          version,
          delivery: "pushed_artifact",
          supervision: "agent_sidecar",
          artifacts: { [PLATFORM]: art },
        },
      },
      assignments: { agents: { "edge-01": ["probe"] } },
    }),
  );
}

async function publishOnce(dir: string, url: string) {
  const r = await runAgent([
    "control-plane",
    "--catalog",
    `${dir}/catalog.json`,
    "--publish",
    `${url}/assign`,
    "--status-bucket",
    "status",
    "--platform",
    PLATFORM,
    "--once",
  ]);
  assertEquals(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as { written: string[]; unchanged: string[] };
}

async function sleepLink(dir: string) {
  await Deno.mkdir(`${dir}/bin`, { recursive: true });
  await Deno.symlink(await Deno.realPath("/bin/sleep"), `${dir}/bin/sleep`);
}

Deno.test({
  name: "a NATS fleet: published documents arrive by push, run, report, and a deleted key stops",
  ignore: !HAVE_NATS,
  fn: () =>
    withTempDir(async (dir) => {
      const nats = await startNats();
      try {
        await sleepLink(dir);
        const v1 = await publishArtifact(dir, nats.url, "probe", "1.0.0");
        await writeCatalog(dir, "1.0.0", v1);
        assertEquals(await publishOnce(dir, nats.url), { written: ["edge-01"], unchanged: [] });
        // Nothing changed: nothing is written.
        assertEquals(await publishOnce(dir, nats.url), { written: [], unchanged: ["edge-01"] });

        const cfg = await writeConfig(dir, {
          agent_id: "edge-01",
          // An hour between resyncs: only a push can bring the second version in time.
          source: {
            kind: "nats",
            bucket: "assign",
            status_bucket: "status",
            resync_interval_s: 3600,
          },
          object_store: { kind: "nats", bucket: "artifacts" },
          nats: { servers: [nats.url] },
        });
        const root = `${dir}/root`;
        await withAgent(dir, cfg, async (agent) => {
          const a1 = await waitAddon(root, agent, "probe", "1.0.0 running", (a) =>
            a.state === "running" && a.version === "1.0.0");
          // Source, store and status share one connection to the server.
          const connz = await (await fetch(`${nats.monitor}/connz`)).json() as {
            connections: { name?: string }[];
          };
          assertEquals(
            connz.connections.filter((c) =>
              c.name?.startsWith("addon-agent ")
            ).map((c) =>
              c.name
            ),
            ["addon-agent _INBOX_edge-01"],
          );

          const v2 = await publishArtifact(dir, nats.url, "probe", "2.0.0");
          await writeCatalog(dir, "2.0.0", v2);
          assertEquals((await publishOnce(dir, nats.url)).written, ["edge-01"]);
          await waitAddon(root, agent, "probe", "2.0.0 running", (a) =>
            a.state === "running" && a.version === "2.0.0");
          assert(a1.pid !== null && !pidAlive(a1.pid), "1.0.0 was stopped");

          // The status report is in the status bucket under the agent's key.
          const { connect } = await import("@nats-io/transport-node");
          const { Kvm } = await import("@nats-io/kv");
          const nc = await connect({ servers: [nats.url] });
          try {
            const kvm = new Kvm(nc);
            const status = await kvm.open("status");
            await waitFor(async () => {
              const e = await status.get("edge-01");
              const r = e?.json<
                { addons: { addon_id: string; version: string; state: string }[] }
              >();
              return r?.addons.some((x) =>
                  x.version === "2.0.0" && x.state === "running"
                )
                ? r
                : null;
            }, { what: "a status report with 2.0.0 running", timeoutMs: 10_000 });

            // A deleted key is the empty document: the add-on is stopped.
            const running = (await readAgentState(root))!.addons.probe!;
            await (await kvm.open("assign")).delete("edge-01");
            await waitFor(() =>
              running.pid !== null && !pidAlive(running.pid) ? true : null, {
              what: "probe stopped after its key was deleted",
              timeoutMs: 20_000,
              context: () => agent.tail(),
            });
          } finally {
            await nc.close();
          }
        });
      } finally {
        await nats.stop();
      }
    }),
});

Deno.test({
  name: "with the NATS server gone for good, add-ons keep running and a new delivery is fallback",
  ignore: !HAVE_NATS,
  fn: () =>
    withTempDir(async (dir) => {
      const nats = await startNats();
      try {
        await sleepLink(dir);
        const v1 = await publishArtifact(dir, nats.url, "probe", "1.0.0");
        const doc = (version: string, art: { object_key: string; sha256: string }) =>
          Deno.writeTextFile(
            `${dir}/assignments.json`,
            JSON.stringify({
              config_version: version,
              addons: [{
                addon_id: "probe",
                version,
                delivery: "pushed_artifact",
                supervision: "agent_sidecar",
                artifact_object_key: art.object_key,
                artifact_sha256: art.sha256,
              }],
            }),
          );
        await doc("1.0.0", v1);
        const cfg = await writeConfig(dir, {
          agent_id: "edge-01",
          source: { kind: "file", path: `${dir}/assignments.json`, poll_interval_s: 1 },
          object_store: { kind: "nats", bucket: "artifacts" },
          nats: { servers: [nats.url] },
          timeouts: { connect_s: 2, idle_s: 2 },
        });
        const root = `${dir}/root`;
        await withAgent(dir, cfg, async (agent) => {
          const a1 = await waitState(root, agent, "probe", "running");
          await nats.stop();
          await doc("2.0.0", { object_key: "probe/2.0.0/probe", sha256: "ab".repeat(32) });
          const fb = await waitAddon(root, agent, "probe", "fallback", (a) =>
            a.state === "fallback", 30_000);
          assertEquals(fb.pid, a1.pid);
          assert(a1.pid !== null && pidAlive(a1.pid), "1.0.0 still runs");
        });
      } finally {
        await nats.stop();
      }
    }),
});

Deno.test({
  name: "sync from a NATS object store resumes a partial download and fetches only the rest",
  ignore: !HAVE_NATS,
  fn: () =>
    withTempDir(async (dir) => {
      const nats = await startNats();
      const { connect } = await import("@nats-io/transport-node");
      const { Objm } = await import("@nats-io/obj");
      const nc = await connect({ servers: [nats.url] });
      try {
        const bytes = new TextEncoder().encode(
          scriptAddon("exit 0") + "#".repeat(1024 * 1024) + "\n",
        );
        const sha256 = sha256Hex(bytes);
        const os = await new Objm(nc).create("artifacts");
        await os.putBlob({ name: "tool/1/tool", options: { max_chunk_size: 64 * 1024 } }, bytes);
        await Deno.writeTextFile(
          `${dir}/assignments.json`,
          JSON.stringify({
            config_version: "v1",
            addons: [{
              addon_id: "tool",
              version: "1",
              delivery: "pushed_artifact",
              supervision: "ephemeral_helper",
              artifact_object_key: "tool/1/tool",
              artifact_sha256: sha256,
            }],
          }),
        );
        const cfg = await writeConfig(dir, {
          object_store: { kind: "nats", bucket: "artifacts" },
          nats: { servers: [nats.url] },
        });
        // An earlier attempt stopped after 300,001 bytes (inside the fifth chunk).
        await Deno.mkdir(`${dir}/root/tmp`, { recursive: true, mode: 0o700 });
        await Deno.writeFile(`${dir}/root/tmp/${partialName(sha256)}`, bytes.subarray(0, 300_001));
        const run = await runAgent(["sync", "--config", cfg, "--json"]);
        assertEquals(run.code, 0, run.stderr);
        const r = JSON.parse(run.stdout) as {
          results: { outcome: string; fetched_bytes: number }[];
        };
        assertEquals(r.results.map((x) => [x.outcome, x.fetched_bytes]), [
          ["current", bytes.length - 300_001],
        ]);
        assertEquals(await Deno.readFile(`${dir}/root/addons/tool/versions/1/tool`), bytes);
      } finally {
        await nc.close();
        await nats.stop();
      }
    }),
});
