/**
 * Attacks by one agent on another over a real nats-server, in the layout
 * `addon-agent nats-permissions` prints: the buckets in the fleet's account
 * (`--accounts FLEET` exports), the agent users in an account of their own
 * (its imports, each with its own `--agent-id` block).
 *
 * NATS checks the subjects a user publishes to, never the *reply* subject of
 * its request: agent A can have the server answer on
 * `$KV.<bucket>.<B>`. In one shared account that answer was stored as B's
 * document (and `$KV.<status>.<B>` as B's status); across accounts it only
 * reaches B's subscription, where a pushed value the bucket does not hold
 * must not be taken.
 */

import { assert, assertEquals, assertMatch, assertRejects } from "./_assert.ts";
import { SourceError } from "../src/source/mod.ts";
import { decodeConfig } from "../src/config/mod.ts";
import { NatsSource } from "../src/source/nats.ts";
import { NatsStore } from "../src/store/nats.ts";
import { acquireNats } from "../src/common/mod.ts";
import { MAIN_TS, runAgent, sha256Hex, withTempDir } from "./_helpers.ts";
import { waitFor } from "./_agent_process.ts";
import { HAVE_NATS, serverPid, startNats } from "./_nats.ts";

const BUCKETS = [
  "--bucket",
  "assign",
  "--status-bucket",
  "status",
  "--artifact-bucket",
  "artifacts",
];

async function printed(args: string[]): Promise<string> {
  const r = await runAgent(["nats-permissions", ...args, ...BUCKETS]);
  assertEquals(r.code, 0, r.stderr);
  return r.stdout;
}

/** nats-server configuration: FLEET with the buckets, AGENTS with edge-a and edge-b. */
async function fleetConfig(): Promise<string> {
  const links = await printed(["--accounts", "FLEET"]);
  const [exports, imports] = links.split(/^# in the account of the agent users.*$/m);
  const users = [];
  for (const id of ["edge-a", "edge-b"]) {
    users.push(`{user: "${id}", password: "pw-${id}"\n${await printed(["--agent-id", id])}\n}`);
  }
  return `accounts {
 FLEET {
  jetstream: enabled
  users: [ {user: admin, password: admin} ]
${exports}
 }
 AGENTS {
  users: [
   ${users.join("\n   ")}
  ]
${imports}
 }
}
`;
}

Deno.test({
  name:
    "an agent that names another agent's key as its reply subject changes neither its document, its status nor what it runs",
  ignore: !HAVE_NATS,
  fn: () =>
    withTempDir(async (dir) => {
      const nats = await startNats(await fleetConfig());
      const { connect } = await import("@nats-io/transport-node");
      const { Kvm } = await import("@nats-io/kv");
      const { Objm } = await import("@nats-io/obj");
      const admin = await connect({ servers: [nats.url], user: "admin", pass: "admin" });
      const attacker = await connect({
        servers: [nats.url],
        user: "edge-a",
        pass: "pw-edge-a",
        inboxPrefix: "_INBOX_edge-a",
      });
      await Deno.writeTextFile(`${dir}/edge-b.pass`, "pw-edge-b\n");
      const cfgB = decodeConfig({
        agent_id: "edge-b",
        runtime_root: "/tmp/unused",
        source: { kind: "nats", bucket: "assign", status_bucket: "status" },
        object_store: { kind: "nats", bucket: "artifacts" },
        nats: { servers: [nats.url], user: "edge-b", password_file: `${dir}/edge-b.pass` },
      }, `${dir}/agent.json`);
      const source = NatsSource.open(cfgB);
      let pushes = 0;
      source.watch(() => pushes++);
      const handle = acquireNats(cfgB.nats!);
      try {
        const kvm = new Kvm(admin);
        const assign = await kvm.create("assign");
        const status = await kvm.create("status");
        const docB = { config_version: "b", addons: [] };
        await assign.put("edge-b", JSON.stringify(docB));
        // Any artifact whose bytes are a document will do; A cannot upload, only read.
        const forged = new TextEncoder().encode(
          JSON.stringify({ config_version: "FORGED", addons: [] }),
        );
        await (await new Objm(admin).create("artifacts")).putBlob({ name: "doc.json" }, forged);

        // B works in this layout: its document, its status, an artifact.
        const first = await source.poll();
        assertEquals(first.kind === "document" && first.json, docB);
        const report = { agent_id: "edge-b", addons: [] };
        await source.report(report);
        const store = new NatsStore("artifacts", handle);
        const obj = await store.open("doc.json", 0, { sha256: sha256Hex(forged) });
        for await (const _ of obj.body) { /* readable */ }

        // A: a direct get of the artifact's chunk answered on B's assignment subject, and its
        // own status put acknowledged on B's status subject.
        const pushesBefore = pushes;
        const chunkReply = { reply: "$KV.assign.edge-b" };
        attacker.publish(
          "$JS.API.DIRECT.GET.OBJ_artifacts",
          JSON.stringify({ seq: 1 }),
          chunkReply,
        );
        attacker.publish("$KV.status.edge-a", "{}", { reply: "$KV.status.edge-b" });
        await attacker.flush();
        const deadline = Date.now() + 5_000;
        while (pushes === pushesBefore && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 10));
        }
        assert(pushes > pushesBefore, "the forged answer reached B's subscription");
        // B reads what its bucket holds, not what was pushed.
        assertEquals((await source.poll()).kind, "not_modified");
        assertEquals((await assign.get("edge-b"))?.json(), docB);
        assertEquals((await status.get("edge-b"))?.json(), report);

        // A genuine put still arrives by push.
        const pushesNow = pushes;
        const docB2 = { config_version: "b2", addons: [] };
        await assign.put("edge-b", JSON.stringify(docB2));
        while (pushes === pushesNow && Date.now() < deadline + 5_000) {
          await new Promise((r) => setTimeout(r, 10));
        }
        const next = await source.poll();
        assertEquals(next.kind === "document" && next.json, docB2);
      } finally {
        await source.closed();
        await handle.release();
        await attacker.close();
        await admin.close();
        await nats.stop();
      }
    }),
});

Deno.test({
  name: "`NatsSource.poll()` refuses a key's value over limits.max_document_bytes",
  ignore: !HAVE_NATS,
  fn: async () => {
    const nats = await startNats();
    const { connect } = await import("@nats-io/transport-node");
    const { Kvm } = await import("@nats-io/kv");
    const admin = await connect({ servers: [nats.url] });
    const source = NatsSource.open(decodeConfig({
      agent_id: "edge-01",
      runtime_root: "/tmp/unused",
      limits: { max_document_bytes: 1024 },
      source: { kind: "nats", bucket: "assign", status_bucket: "status" },
      object_store: { kind: "nats", bucket: "artifacts" },
      nats: { servers: [nats.url] },
    }, "/tmp/agent.json"));
    try {
      const kv = await new Kvm(admin).create("assign");
      // Valid JSON, just too big: a hostile or broken server could send megabytes.
      await kv.put("edge-01", `{"config_version": "big", "addons": []${" ".repeat(2000)}}`);
      const e = await assertRejects(() => source.poll(), SourceError);
      assertMatch(e.message, /larger than 1024 \(limits\.max_document_bytes\)/);
      await kv.put("edge-01", `{"config_version": "small", "addons": []}`);
      const r = await source.poll();
      assertEquals(r.kind === "document" && r.json, { config_version: "small", addons: [] });
    } finally {
      await source.closed();
      await admin.close();
      await nats.stop();
    }
  },
});

Deno.test({
  name:
    "`control-plane --publish` refuses a catalog grown over 8 MiB, keeps publishing, and publishes the next good one",
  ignore: !HAVE_NATS,
  fn: () =>
    withTempDir(async (dir) => {
      const nats = await startNats();
      const { connect } = await import("@nats-io/transport-node");
      const { Kvm } = await import("@nats-io/kv");
      const admin = await connect({ servers: [nats.url] });
      const catalogPath = `${dir}/catalog.json`;
      const catalog = (version: string, pad = 0) =>
        JSON.stringify({
          packages: {
            probe: {
              version,
              delivery: "pushed_artifact",
              supervision: "agent_sidecar",
              artifacts: {
                "linux/amd64": { object_key: `probe/${version}`, sha256: "ab".repeat(32) },
              },
            },
          },
          assignments: { agents: { "edge-01": ["probe"] } },
        }) + " ".repeat(pad);
      const versionIn = async () => {
        try {
          const kv = await new Kvm(admin).open("assign");
          const doc = (await kv.get("edge-01"))?.json<{ addons: { version: string }[] }>();
          return doc?.addons[0]?.version ?? null;
        } catch {
          return null; // the publisher has not made the bucket yet
        }
      };
      await Deno.writeTextFile(catalogPath, catalog("1.0.0"));
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--quiet",
          MAIN_TS,
          "control-plane",
          "--catalog",
          catalogPath,
          "--publish",
          `${nats.url}/assign`,
          "--platform",
          "linux/amd64",
        ],
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
      let stderr = "";
      const copied = child.stderr.pipeThrough(new TextDecoderStream()).pipeTo(
        new WritableStream({ write: (t) => void (stderr += t) }),
      ).catch(() => {});
      try {
        await waitFor(async () => (await versionIn()) === "1.0.0" || null, {
          timeoutMs: 20_000,
          what: "the first catalog published",
          context: () => stderr,
        });
        // Valid, and it changes the version: only its size is wrong.
        await Deno.writeTextFile(catalogPath, catalog("2.0.0", 8 * 1024 * 1024));
        await waitFor(() => /larger than 8388608 bytes/.test(stderr) || null, {
          timeoutMs: 15_000,
          what: "the oversized catalog refused",
          context: () => stderr,
        });
        assertEquals(await versionIn(), "1.0.0");
        await Deno.writeTextFile(catalogPath, catalog("3.0.0"));
        await waitFor(async () => (await versionIn()) === "3.0.0" || null, {
          timeoutMs: 15_000,
          what: "the corrected catalog published",
          context: () => "",
        });
      } finally {
        try {
          child.kill("SIGTERM");
        } catch { /* it exited */ }
        await child.status;
        await copied;
        await admin.close();
        await nats.stop();
      }
    }),
});

Deno.test("releasing a NATS handle whose server never answered settles at once (no command waits for ever)", async () => {
  // A closed port: every first-connect attempt is refused.
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const h = acquireNats({ servers: [`nats://127.0.0.1:${port}`], inbox_prefix: "_INBOX_edge-01" });
  const e = await assertRejects(() => h.connection(300));
  assertMatch((e as Error).message, /no connection to NATS .* within 0 s.*still trying/);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const settled = await Promise.race([
    h.release().then(() => "released"),
    new Promise((r) => timer = setTimeout(() => r("still waiting after 5 s"), 5_000)),
  ]);
  clearTimeout(timer);
  assertEquals(settled, "released");
});

Deno.test({
  name:
    "a NATS source whose server is down at start connects when it comes up and reads its key, without a restart",
  ignore: !HAVE_NATS,
  fn: async () => {
    const nats = await startNats();
    const { connect } = await import("@nats-io/transport-node");
    const { Kvm } = await import("@nats-io/kv");
    const admin = await connect({ servers: [nats.url] });
    const kv = await new Kvm(admin).create("assign");
    await kv.put("edge-01", JSON.stringify({ config_version: "v1", addons: [] }));
    await admin.close();
    await nats.kill();
    const source = NatsSource.open(decodeConfig({
      agent_id: "edge-01",
      runtime_root: "/tmp/unused",
      timeouts: { connect_s: 1 },
      source: { kind: "nats", bucket: "assign", status_bucket: "status" },
      object_store: { kind: "nats", bucket: "artifacts" },
      nats: { servers: [nats.url] },
    }, "/tmp/agent.json"));
    let wakes = 0;
    source.watch(() => wakes++);
    try {
      const e = await assertRejects(() => source.poll(), SourceError);
      assertMatch(e.message, /no connection to NATS .*still trying/);
      await nats.start();
      await waitFor(() => wakes > 0 || null, {
        timeoutMs: 15_000,
        what: "the source woken by the first connection",
        context: () => "",
      });
      const r = await source.poll();
      assertEquals(r.kind === "document" && r.json, { config_version: "v1", addons: [] });
    } finally {
      await source.closed();
      await nats.stop();
    }
  },
});

Deno.test({
  name:
    "`NatsSource.report()` to a status bucket that does not exist fails with a reason, and reading goes on",
  ignore: !HAVE_NATS,
  fn: async () => {
    const nats = await startNats();
    const { connect } = await import("@nats-io/transport-node");
    const { Kvm } = await import("@nats-io/kv");
    const admin = await connect({ servers: [nats.url] });
    const source = NatsSource.open(decodeConfig({
      agent_id: "edge-01",
      runtime_root: "/tmp/unused",
      timeouts: { connect_s: 2 },
      source: { kind: "nats", bucket: "assign", status_bucket: "nowhere" },
      object_store: { kind: "nats", bucket: "artifacts" },
      nats: { servers: [nats.url] },
    }, "/tmp/agent.json"));
    try {
      const kv = await new Kvm(admin).create("assign");
      await kv.put("edge-01", JSON.stringify({ config_version: "v1", addons: [] }));
      const e = await assertRejects(
        () => source.report({ agent_id: "edge-01", addons: [] }),
        SourceError,
      );
      assertMatch(e.message, /status report to \$KV\.nowhere\.edge-01/);
      const r = await source.poll();
      assertEquals(r.kind === "document" && r.json, { config_version: "v1", addons: [] });
    } finally {
      await source.closed();
      await admin.close();
      await nats.stop();
    }
  },
});

Deno.test({
  name:
    "`NatsSource.poll()` and `report()` end at once when their signal aborts while the server says nothing",
  ignore: !HAVE_NATS,
  fn: async () => {
    const nats = await startNats();
    const source = NatsSource.open(decodeConfig({
      agent_id: "edge-01",
      runtime_root: "/tmp/unused",
      // Far longer than the test: only the signal can end the requests in time.
      timeouts: { connect_s: 120 },
      source: { kind: "nats", bucket: "assign", status_bucket: "status" },
      object_store: { kind: "nats", bucket: "artifacts" },
      nats: { servers: [nats.url] },
    }, "/tmp/agent.json"));
    const pid = await serverPid(nats.port);
    try {
      const { connect } = await import("@nats-io/transport-node");
      const { Kvm } = await import("@nats-io/kv");
      const admin = await connect({ servers: [nats.url] });
      await (await new Kvm(admin).create("assign")).put(
        "edge-01",
        '{"config_version":"v1","addons":[]}',
      );
      await admin.close();
      assertEquals((await source.poll()).kind, "document"); // connected and subscribed
      Deno.kill(pid, "SIGSTOP");
      try {
        const ctl = new AbortController();
        const poll = source.poll(ctl.signal).then(() => "answered", (e) => (e as Error).message);
        const report = source.report({ agent_id: "edge-01", addons: [] }, ctl.signal).then(
          () => "answered",
          (e) => (e as Error).message,
        );
        ctl.abort(new Error("SIGTERM"));
        let timer: ReturnType<typeof setTimeout> | undefined;
        const outcome = await Promise.race([
          Promise.all([poll, report]),
          new Promise((r) => timer = setTimeout(() => r("still waiting after 5 s"), 5_000)),
        ]);
        clearTimeout(timer);
        assert(Array.isArray(outcome), String(outcome));
        for (const m of outcome) assertMatch(m, /abandoned, the agent is stopping/);
      } finally {
        Deno.kill(pid, "SIGCONT");
      }
    } finally {
      await source.closed();
      await nats.stop();
    }
  },
});
