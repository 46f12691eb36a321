/**
 * The `nats` object store against a real nats-server: reads an object put by
 * the client library (`addon-agent publish`), checks the object's own digest
 * before reading, resumes from an offset, and fails on a stall.
 */

import { assert, assertEquals, assertMatch, assertRejects } from "./_assert.ts";
import { acquireNats } from "../src/common/mod.ts";
import { encodeObjectName, NatsStore, objectDigest } from "../src/store/nats.ts";
import { StoreError } from "../src/store/mod.ts";
import { randomBytes, sha256Hex, withTempDir } from "./_helpers.ts";
import { HAVE_NATS, type NatsFixture, serverPid, startNats } from "./_nats.ts";

async function withNats(fn: (nats: NatsFixture, dir: string) => Promise<void>): Promise<void> {
  await withTempDir(async (dir) => {
    const nats = await startNats();
    try {
      await fn(nats, dir);
    } finally {
      await nats.stop();
    }
  });
}

async function putObject(url: string, name: string, bytes: Uint8Array, chunk = 128 * 1024) {
  const { connect } = await import("@nats-io/transport-node");
  const { Objm } = await import("@nats-io/obj");
  const nc = await connect({ servers: [url] });
  const os = await new Objm(nc).create("artifacts");
  await os.putBlob({ name, options: { max_chunk_size: chunk } }, bytes);
  return nc;
}

async function readAll(body: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const p of body) parts.push(p.slice());
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function handle(url: string) {
  return acquireNats({ servers: [url], inbox_prefix: "_INBOX_edge-01" });
}

Deno.test("`objectDigest()` is the object store's SHA-256= base64url with padding", () => {
  assertEquals(
    objectDigest(sha256Hex("")),
    "SHA-256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=",
  );
  assertEquals(encodeObjectName("a/b?"), "YS9iPw==");
});

Deno.test({
  name: "`NatsStore.open()` streams an object, from an offset too, when its digest matches",
  ignore: !HAVE_NATS,
  fn: () =>
    withNats(async (nats) => {
      const bytes = randomBytes(1024 * 1024 + 12345);
      const nc = await putObject(nats.url, "net-probe/1.0/net-probe", bytes, 64 * 1024);
      const h = handle(nats.url);
      try {
        const store = new NatsStore("artifacts", h);
        const sha256 = sha256Hex(bytes);
        const whole = await store.open("net-probe/1.0/net-probe", 0, { sha256 });
        assertEquals(whole.size, bytes.length);
        assertEquals(sha256Hex(await readAll(whole.body)), sha256);
        // A resume from the middle of a chunk gets exactly the rest.
        for (const offset of [64 * 1024, 300_001, bytes.length - 1]) {
          const rest = await store.open("net-probe/1.0/net-probe", offset, { sha256 });
          assertEquals(await readAll(rest.body), bytes.subarray(offset), `offset ${offset}`);
        }
      } finally {
        await h.release();
        await nc.close();
      }
    }),
});

Deno.test({
  name: "`NatsStore.open()` refuses an object whose digest is not artifact_sha256, before reading",
  ignore: !HAVE_NATS,
  fn: () =>
    withNats(async (nats) => {
      const good = new TextEncoder().encode("the published bytes");
      const nc = await putObject(nats.url, "tool", new TextEncoder().encode("tampered bytes"));
      const h = handle(nats.url);
      try {
        const store = new NatsStore("artifacts", h);
        const e = await assertRejects(
          () => store.open("tool", 0, { sha256: sha256Hex(good) }),
          StoreError,
        );
        assertMatch(e.message, /digest .* does not match artifact_sha256/);
        assertEquals(e.kind, "refused");
        const missing = await assertRejects(() => store.open("nope", 0), StoreError);
        assertMatch(missing.message, /does not exist/);
      } finally {
        await h.release();
        await nc.close();
      }
    }),
});

Deno.test({
  name: "`NatsStore` fails a read that stalls for idle_s, keeping what it read",
  ignore: !HAVE_NATS,
  fn: () =>
    withNats(async (nats) => {
      // More chunks than a read keeps in flight, so the stall hits the read.
      const bytes = randomBytes(100 * 16 * 1024);
      const nc = await putObject(nats.url, "big", bytes, 16 * 1024);
      const h = handle(nats.url);
      try {
        const store = new NatsStore("artifacts", h, 1_000);
        const obj = await store.open("big", 0);
        const it = obj.body[Symbol.asyncIterator]();
        const first = await it.next();
        assert(!first.done && first.value.length > 0);
        // The server stops answering (SIGSTOP): the read fails after idle_s instead of hanging.
        const pid = await serverPid(nats.port);
        Deno.kill(pid, "SIGSTOP");
        try {
          const e = await assertRejects(async () => {
            for (let r = await it.next(); !r.done; r = await it.next()) { /* drain */ }
          }, StoreError);
          assertMatch(e.message, /no data for 1 s after \d+ of 1638400 bytes/);
        } finally {
          Deno.kill(pid, "SIGCONT");
        }
      } finally {
        await h.release();
        await nc.close();
      }
    }),
});

Deno.test({
  name:
    "`NatsStore` ends a read waiting on a silent server as soon as it is closed or its signal aborts",
  ignore: !HAVE_NATS,
  fn: () =>
    withNats(async (nats) => {
      const bytes = randomBytes(100 * 16 * 1024);
      const nc = await putObject(nats.url, "big", bytes, 16 * 1024);
      const h = handle(nats.url);
      const pid = await serverPid(nats.port);
      try {
        // idle_s far longer than the test: only the abort can end the read in time.
        const store = new NatsStore("artifacts", h, 120_000);
        const ctl = new AbortController();
        const obj = await store.open("big", 0, { signal: ctl.signal });
        const it = obj.body[Symbol.asyncIterator]();
        const first = await it.next();
        assert(!first.done && first.value.length > 0);
        Deno.kill(pid, "SIGSTOP");
        try {
          const drained = (async () => {
            for (let r = await it.next(); !r.done; r = await it.next()) { /* drain */ }
          })();
          drained.catch(() => {});
          ctl.abort(new Error("the agent is stopping"));
          let timer: ReturnType<typeof setTimeout> | undefined;
          const outcome = await Promise.race([
            drained.then(() => "ended", (e) => `failed: ${(e as Error).message}`),
            new Promise<string>((r) => timer = setTimeout(() => r("still waiting"), 5_000)),
          ]);
          clearTimeout(timer);
          assertMatch(outcome, /^failed: .*the read was closed/);
        } finally {
          Deno.kill(pid, "SIGCONT");
        }
      } finally {
        await h.release();
        await nc.close();
      }
    }),
});
