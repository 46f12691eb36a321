/**
 * `addon-agent nats-permissions` against a real nats-server whose users get
 * exactly the printed blocks: an agent reads its own document, reports its
 * own status and reads artifacts, and cannot read another agent's document
 * (by any of the JetStream APIs that carry the key in the body) nor write
 * another agent's status nor listen to its replies.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { decodeConfig } from "../src/config/mod.ts";
import { NatsSource } from "../src/source/nats.ts";
import { NatsStore } from "../src/store/nats.ts";
import { acquireNats } from "../src/common/mod.ts";
import { runAgent, sha256Hex, withTempDir } from "./_helpers.ts";
import { HAVE_NATS, startNats } from "./_nats.ts";

async function block(id: string): Promise<string> {
  const r = await runAgent([
    "nats-permissions",
    "--agent-id",
    id,
    "--bucket",
    "assign",
    "--status-bucket",
    "status",
    "--artifact-bucket",
    "artifacts",
  ]);
  assertEquals(r.code, 0, r.stderr);
  return r.stdout;
}

Deno.test("`nats-permissions` never grants an API that takes the key in the request body", async () => {
  const text = await block("edge.01");
  assertMatch(text, /"\$JS\.API\.DIRECT\.GET\.KV_assign\.\$KV\.assign\.edge\.01"/);
  assertMatch(text, /"_INBOX_edge~01\.>"/);
  for (
    const bad of [/STREAM\.MSG\.GET/, /DIRECT\.GET\.KV_assign"/, /CONSUMER\.[A-Z.]*KV_/, /KV_\*/]
  ) {
    assert(!bad.test(text), `${bad} in\n${text}`);
  }
});

Deno.test({
  name: "an agent with its `nats-permissions` block reads only its own document and status",
  ignore: !HAVE_NATS,
  fn: () =>
    withTempDir(async (dir) => {
      const users = [];
      for (const id of ["edge-a", "edge-b"]) {
        await Deno.writeTextFile(`${dir}/${id}.pass`, `pw-${id}\n`);
        users.push(`{user: "${id}", password: "pw-${id}"\n${await block(id)}\n}`);
      }
      const nats = await startNats(
        `accounts {\n FLEET {\n  jetstream: enabled\n  users: [\n   {user: admin, password: admin}\n   ${
          users.join("\n   ")
        }\n  ]\n }\n}\n`,
      );
      const { connect } = await import("@nats-io/transport-node");
      const { Kvm } = await import("@nats-io/kv");
      const { Objm } = await import("@nats-io/obj");
      const admin = await connect({ servers: [nats.url], user: "admin", pass: "admin" });
      const cfgA = decodeConfig({
        agent_id: "edge-a",
        runtime_root: "/tmp/unused",
        source: { kind: "nats", bucket: "assign", status_bucket: "status" },
        object_store: { kind: "nats", bucket: "artifacts" },
        nats: { servers: [nats.url], user: "edge-a", password_file: `${dir}/edge-a.pass` },
      }, `${dir}/agent.json`);
      const source = NatsSource.open(cfgA);
      const handle = acquireNats(cfgA.nats!);
      try {
        const kvm = new Kvm(admin);
        const assign = await kvm.create("assign");
        const status = await kvm.create("status");
        await assign.put("edge-a", JSON.stringify({ config_version: "a", addons: [] }));
        await assign.put("edge-b", JSON.stringify({ config_version: "secret-b", addons: [] }));
        const art = new TextEncoder().encode("artifact bytes");
        await (await new Objm(admin).create("artifacts")).putBlob({ name: "tool" }, art);

        // What it may do: its own document, its own status, any artifact.
        const r = await source.poll();
        assertEquals(r.kind === "document" && r.json, { config_version: "a", addons: [] });
        await source.report({ agent_id: "edge-a", addons: [] });
        assertEquals((await status.get("edge-a"))?.json(), { agent_id: "edge-a", addons: [] });
        const store = new NatsStore("artifacts", handle);
        const obj = await store.open("tool", 0, { sha256: sha256Hex(art) });
        const chunks: Uint8Array[] = [];
        for await (const c of obj.body) chunks.push(c.slice());
        assertEquals(new TextDecoder().decode(chunks[0]), "artifact bytes");

        // What it may not: B's document by any API, B's status, B's replies or pushes.
        const nc = await handle.connection(5_000);
        const attempts: [string, string | undefined][] = [
          ["$JS.API.DIRECT.GET.KV_assign.$KV.assign.edge-b", undefined],
          ["$JS.API.DIRECT.GET.KV_assign", JSON.stringify({ last_by_subj: "$KV.assign.edge-b" })],
          [
            "$JS.API.STREAM.MSG.GET.KV_assign",
            JSON.stringify({ last_by_subj: "$KV.assign.edge-b" }),
          ],
          [
            "$JS.API.CONSUMER.CREATE.KV_assign",
            JSON.stringify({ config: { filter_subject: ">" } }),
          ],
          ["$KV.status.edge-b", JSON.stringify({ agent_id: "edge-b", forged: true })],
          // No consumer on the artifacts without a chunk filter, no durable one.
          ["$JS.API.CONSUMER.CREATE.OBJ_artifacts.x", JSON.stringify({ config: { name: "x" } })],
          ["$JS.API.CONSUMER.DURABLE.CREATE.OBJ_artifacts.d", JSON.stringify({ config: {} })],
          // Not even with the chunk filter in the subject: a name there made a durable consumer
          // that stays for good, and its deliver_subject pushed artifact bytes onto B's subject.
          [
            "$JS.API.CONSUMER.CREATE.OBJ_artifacts.dur.$O.artifacts.C.>",
            JSON.stringify({
              stream_name: "OBJ_artifacts",
              config: {
                name: "dur",
                durable_name: "dur",
                deliver_subject: "$KV.assign.edge-b",
                filter_subject: "$O.artifacts.C.>",
                ack_policy: "none",
              },
            }),
          ],
        ];
        for (const [subject, body] of attempts) {
          const got = await nc.request(subject, body, { timeout: 1_500 }).then(
            (m) => `answered: ${m.string()}`,
            (e) => `refused: ${(e as Error).message}`,
          );
          assertMatch(got, /^refused: /, subject);
          assert(!got.includes("secret-b"), got);
        }
        assertEquals(await status.get("edge-b"), null);
        for (const subject of ["$KV.assign.edge-b", "_INBOX_edge-b.>", "$KV.assign.>"]) {
          const sub = nc.subscribe(subject);
          const err = await sub.closed;
          assertMatch(String(err), /Permissions Violation/i, subject);
        }
      } finally {
        await source.closed();
        await handle.release();
        await admin.close();
        await nats.stop();
      }
    }),
});
