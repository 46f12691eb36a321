/**
 * The `nats` source against a real nats-server: the document is the KV key
 * `<agent_id>`, updates arrive by push, a deleted key is the empty
 * document, a reconnect re-reads the key, status reports are put to the
 * status bucket.
 */

import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { decodeConfig } from "../src/config/mod.ts";
import { NatsSource } from "../src/source/nats.ts";
import { SourceError } from "../src/source/mod.ts";

import { HAVE_NATS, type NatsFixture, startNats } from "./_nats.ts";
import { waitFor } from "./_agent_process.ts";

function cfgFor(url: string, agentId = "edge-01") {
  return decodeConfig({
    agent_id: agentId,
    runtime_root: "/tmp/unused",
    source: { kind: "nats", bucket: "assign", status_bucket: "status", resync_interval_s: 600 },
    object_store: { kind: "nats", bucket: "artifacts" },
    nats: { servers: [url] },
  }, "/tmp/agent.json");
}

async function admin(url: string) {
  const { connect } = await import("@nats-io/transport-node");
  const { Kvm } = await import("@nats-io/kv");
  const nc = await connect({ servers: [url] });
  const kvm = new Kvm(nc);
  const kv = await kvm.create("assign");
  const status = await kvm.create("status");
  return { nc, kv, status };
}

async function withNats(fn: (nats: NatsFixture) => Promise<void>): Promise<void> {
  const nats = await startNats();
  try {
    await fn(nats);
  } finally {
    await nats.stop();
  }
}

function doc(v: string) {
  return JSON.stringify({ config_version: v, addons: [] });
}

Deno.test({
  name: "`NatsSource` reads the key, gets a put by push, and a deleted key is the empty document",
  ignore: !HAVE_NATS,
  fn: () =>
    withNats(async (nats) => {
      const a = await admin(nats.url);
      const source = NatsSource.open(cfgFor(nats.url));
      try {
        await a.kv.put("edge-01", doc("v1"));
        await a.kv.put("edge-02", doc("other"));
        let pushes = 0;
        source.watch(() => pushes++);
        const r1 = await source.poll();
        assertEquals(r1, { kind: "document", json: JSON.parse(doc("v1")) });
        assertEquals(await source.poll(), { kind: "not_modified" });

        const before = pushes;
        await a.kv.put("edge-01", doc("v2"));
        await waitFor(() => pushes > before ? true : null, { what: "a push", timeoutMs: 5000 });
        assertEquals(await source.poll(), { kind: "document", json: JSON.parse(doc("v2")) });

        // Another agent's key is not this agent's document.
        const p2 = pushes;
        await a.kv.put("edge-02", doc("other-2"));
        await a.kv.put("edge-01", doc("v3"));
        await waitFor(() => pushes > p2 ? true : null, { what: "a push", timeoutMs: 5000 });
        assertEquals(await source.poll(), { kind: "document", json: JSON.parse(doc("v3")) });

        await a.kv.delete("edge-01");
        await waitFor(async () => {
          const r = await source.poll();
          return r.kind === "document" ? r : null;
        }, { what: "the deleted key as a document", timeoutMs: 5000 }).then((r) =>
          assertEquals(r.json, { config_version: "", addons: [] })
        );
        // After a resync read the deleted key is still the empty document (unchanged).
        assertEquals(await source.poll(), { kind: "not_modified" });
      } finally {
        await source.closed();
        await a.nc.close();
      }
    }),
});

Deno.test({
  name: "`NatsSource` reads the key again after the server restarts and gets pushes again",
  ignore: !HAVE_NATS,
  fn: () =>
    withNats(async (nats) => {
      let a = await admin(nats.url);
      const source = NatsSource.open(cfgFor(nats.url));
      try {
        await a.kv.put("edge-01", doc("v1"));
        let wakes = 0;
        source.watch(() => wakes++);
        assertEquals((await source.poll()).kind, "document");
        await a.nc.close();
        await nats.kill();
        // While it is down, polls fail with a reason (the daemon keeps its add-ons).
        await nats.start();
        // Put before the agent's client is back (it waits ~2 s between attempts): no push for it.
        a = await admin(nats.url);
        await a.kv.put("edge-01", doc("v-while-away"));
        const got = await waitFor(async () => {
          if (wakes === 0) return null;
          const r = await source.poll().catch(() => null);
          return r?.kind === "document" ? r : null;
        }, { what: "the document put while the agent was away", timeoutMs: 20_000 });
        assertEquals(got.json, JSON.parse(doc("v-while-away")));
        // The subscription is back too: the next put arrives by push.
        const before = wakes;
        await a.kv.put("edge-01", doc("v-after"));
        await waitFor(() => wakes > before ? true : null, {
          what: "a push after the restart",
          timeoutMs: 10_000,
        });
        assertEquals(await source.poll(), { kind: "document", json: JSON.parse(doc("v-after")) });
      } finally {
        await source.closed();
        await a.nc.close();
      }
    }),
});

Deno.test({
  name: "`NatsSource.report()` puts the report to the status bucket under the agent's key",
  ignore: !HAVE_NATS,
  fn: () =>
    withNats(async (nats) => {
      const a = await admin(nats.url);
      const source = NatsSource.open(cfgFor(nats.url));
      try {
        await source.report({ agent_id: "edge-01", addons: [] });
        const e = await a.status.get("edge-01");
        assertEquals(e?.json(), { agent_id: "edge-01", addons: [] });
      } finally {
        await source.closed();
        await a.nc.close();
      }
    }),
});

Deno.test({
  name: "`NatsSource.poll()` fails with a reason when the server is gone",
  ignore: !HAVE_NATS,
  fn: () =>
    withNats(async (nats) => {
      const a = await admin(nats.url);
      await a.nc.close();
      const source = NatsSource.open(cfgFor(nats.url));
      try {
        assertEquals((await source.poll()).kind, "document");
        await nats.kill();
        const e = await assertRejects(() => source.poll(), SourceError);
        assert(/edge-01/.test(e.message), e.message);
      } finally {
        await source.closed();
      }
    }),
});
