/**
 * Timeouts on every request to a store or source (SPEC 12), against real
 * sockets: a peer that accepts and says nothing, and one that sends the
 * headers and 10 bytes and then nothing. Unit level: `fetchWithTimeouts()`,
 * `S3Store.open()`, `ControlPlaneSource.poll()` and `Downloads.fetch()`
 * (timeouts below the config's 1 s minimum keep these fast).
 */

import { assert, assertEquals, assertRejects, assertStringIncludes } from "./_assert.ts";
import { type Reply, s3Object, type SeenRequest, startStallServer } from "./_stall_server.ts";
import { randomBytes, S3_ENV, sha256Hex, withTempDir } from "./_helpers.ts";
import {
  fetchWithTimeouts,
  guardBody,
  interruptionOf,
  StallError,
} from "../src/common/io_timeouts.ts";
import { S3Store } from "../src/store/s3.ts";
import { StoreError } from "../src/store/types.ts";
import { ControlPlaneSource, SourceError } from "../src/source/mod.ts";
import { S3Source } from "../src/source/s3.ts";
import { DownloadError, Downloads } from "../src/delivery/download.ts";
import { Layout } from "../src/runtime/runtime_root.ts";
import type { AgentConfig } from "../src/config/config.ts";

for (const [k, v] of Object.entries(S3_ENV)) Deno.env.set(k, v);

const FAST = { connect_s: 0.3, idle_s: 0.3 };
const NEVER = { connect_s: 3600, idle_s: 3600 };
const BODY = randomBytes(100_000);

/** Fail unless `p` settles within `ms` (a guard against a hang, not a timing goal). */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still waiting after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, guard]);
  } finally {
    clearTimeout(timer);
  }
}

const silent = (): Reply => ({ kind: "silent" });
const trickle = (): Reply => ({ kind: "trickle", body: BODY, send: 10 });

async function withServer(
  route: (req: SeenRequest) => Reply,
  fn: (srv: ReturnType<typeof startStallServer>) => Promise<void>,
): Promise<void> {
  const srv = startStallServer(route);
  try {
    await fn(srv);
  } finally {
    await srv.close();
  }
}

Deno.test("fetchWithTimeouts() fails a silent or stalled peer with a StallError", async (t) => {
  await t.step("no headers within connect_s", async () => {
    await withServer(silent, async (srv) => {
      const e = await within(
        assertRejects(() => fetchWithTimeouts(srv.url, {}, FAST, "peer"), StallError),
        10_000,
        "fetch of a silent peer",
      );
      assertStringIncludes(e.message, "timeouts.connect_s");
      assert(e.transient, "a stall is transient");
    });
  });
  await t.step("headers and 10 bytes, then nothing for idle_s", async () => {
    await withServer(trickle, async (srv) => {
      const res = await fetchWithTimeouts(srv.url, {}, FAST, "peer");
      assertEquals(res.status, 200);
      const e = await within(
        assertRejects(() => res.arrayBuffer(), StallError),
        10_000,
        "body of a stalled peer",
      );
      assertStringIncludes(e.message, "peer: no byte for 0.3 s (timeouts.idle_s)");
    });
  });
  await t.step("a signal interrupts a read that waits for bytes", async () => {
    await withServer(trickle, async (srv) => {
      const stop = new AbortController();
      const res = await fetchWithTimeouts(srv.url, { signal: stop.signal }, NEVER, "peer");
      const reader = res.body!.getReader();
      const first = await reader.read();
      assertEquals(first.value?.length, 10);
      const pending = reader.read();
      stop.abort(new Error("stopping"));
      const e = await within(assertRejects(() => pending), 10_000, "read after abort");
      assertStringIncludes(e.message, "stopping");
    });
  });
  await t.step("a signal aborts a request still waiting for headers", async () => {
    await withServer(silent, async (srv) => {
      const stop = new AbortController();
      const p = fetchWithTimeouts(srv.url, { signal: stop.signal }, NEVER, "peer");
      await within(
        (async () => {
          while (srv.hanging() === 0) await new Promise((r) => setTimeout(r, 10));
        })(),
        10_000,
        "the request reached the server",
      );
      stop.abort(new Error("stopping"));
      await within(assertRejects(() => p), 10_000, "fetch after abort");
    });
  });
  await t.step("a whole body comes through to a BYOB reader, 304 keeps no body", async () => {
    const big = randomBytes(3 << 20);
    await withServer(
      (req) =>
        req.path === "/304"
          ? { kind: "respond", status: 304 }
          : { kind: "respond", status: 200, body: big },
      async (srv) => {
        const res = await fetchWithTimeouts(srv.url, {}, FAST, "peer");
        const reader = res.body!.getReader({ mode: "byob" });
        let buf = new Uint8Array(1 << 20);
        const got: Uint8Array<ArrayBuffer>[] = [];
        for (;;) {
          const { value, done } = await reader.read(buf, { min: buf.length });
          if (value) got.push(value.slice());
          if (done) break;
          buf = new Uint8Array(value!.buffer);
        }
        assertEquals(sha256Hex(new Uint8Array(await new Blob(got).arrayBuffer())), sha256Hex(big));
        const nm = await fetchWithTimeouts(`${srv.url}/304`, {}, FAST, "peer");
        assertEquals(nm.status, 304);
        assertEquals(nm.body, null);
      },
    );
  });
});

Deno.test("guardBody() passes a source's error through and leaves a quiet consumer alone", async () => {
  let pulls = 0;
  const src = new ReadableStream<Uint8Array>({
    pull(c) {
      pulls++;
      if (pulls === 1) c.enqueue(new Uint8Array([1, 2, 3]));
      else c.error(new Error("connection reset"));
    },
  });
  const guarded = guardBody(src, { idleMs: 50, onStall: () => new StallError("stalled") });
  const reader = guarded.getReader();
  assertEquals([...(await reader.read()).value!], [1, 2, 3]);
  // The consumer takes its time: only waiting for the peer counts as idle.
  await new Promise((r) => setTimeout(r, 200));
  const e = await assertRejects(() => reader.read());
  assertStringIncludes(e.message, "connection reset");
});

function _s3(url: string, timeouts: { connect_s: number; idle_s: number }): S3Store {
  return new S3Store(
    {
      kind: "s3",
      bucket: "addons",
      region: "us-east-1",
      endpoint: url,
      force_path_style: true,
      prefix: "",
    },
    timeouts,
  );
}

Deno.test("S3Store.open() gives up on a silent or stalled store", async (t) => {
  await t.step("silent: a transient StoreError naming connect_s", async () => {
    await withServer(silent, async (srv) => {
      const e = await within(
        assertRejects(() => _s3(srv.url, FAST).open("a/1/a", 0), StoreError),
        20_000,
        "open of a silent store",
      );
      assertEquals(e.kind, "unavailable", "a stall is worth another attempt");
      assertStringIncludes(e.message, "timeouts.connect_s");
      assertStringIncludes(e.message, "s3://addons/a/1/a");
    });
  });
  await t.step("headers and 10 bytes: the body ends there after idle_s, saying why", async () => {
    await withServer(trickle, async (srv) => {
      const obj = await _s3(srv.url, FAST).open("a/1/a", 0);
      assertEquals(obj.size, BODY.length);
      let got = 0;
      await within(
        (async () => {
          for await (const chunk of obj.body) got += chunk.length;
        })(),
        10_000,
        "body of a stalled store",
      );
      assertEquals(got, 10, "the bytes that came are delivered (a download keeps them)");
      const why = interruptionOf(obj.body);
      assert(why instanceof StallError, `a StallError: ${why}`);
      assertStringIncludes(why.message, "timeouts.idle_s");
      obj.close();
    });
  });
  await t.step("a signal interrupts a body read that waits for bytes", async () => {
    await withServer(trickle, async (srv) => {
      const stop = new AbortController();
      const obj = await _s3(srv.url, NEVER).open("a/1/a", 0, { signal: stop.signal });
      const it = obj.body[Symbol.asyncIterator]();
      assertEquals((await it.next()).value?.length, 10);
      const pending = it.next();
      stop.abort(new Error("agent stopping"));
      assertEquals((await within(pending, 10_000, "read after abort")).done, true);
      assertStringIncludes(String(interruptionOf(obj.body)), "agent stopping");
      obj.close();
    });
  });
});

function _cpConfig(url: string, timeouts: { connect_s: number; idle_s: number }): AgentConfig {
  return {
    file: "/x/agent.json",
    agent_id: "h1",
    runtime_root: "/x",
    config_dir: "/x",
    source: { kind: "control_plane", url, poll_interval_s: 1 },
    object_store: { kind: "filesystem", root: "/x" },
    trust: { public_keys: [], require_signature: false },
    limits: { max_artifact_bytes: 1 << 20, keep_versions: 3 },
    systemd: { unit_dir: "/x" },
    timeouts,
  } as unknown as AgentConfig;
}

Deno.test("ControlPlaneSource.poll() and report() fail on a silent or stalled control plane", async (t) => {
  const platform = { os: "linux", arch: "amd64" } as const;
  await t.step("silent: SourceError naming connect_s", async () => {
    await withServer(silent, async (srv) => {
      const src = await ControlPlaneSource.open(_cpConfig(srv.url, FAST), platform);
      const e = await within(assertRejects(() => src.poll(), SourceError), 10_000, "poll");
      assertStringIncludes(e.message, "timeouts.connect_s");
      const r = await within(assertRejects(() => src.report({}), SourceError), 10_000, "report");
      assertStringIncludes(r.message, "timeouts.connect_s");
      src.close();
    });
  });
  await t.step("headers and 10 bytes: SourceError naming idle_s", async () => {
    await withServer(trickle, async (srv) => {
      const src = await ControlPlaneSource.open(_cpConfig(srv.url, FAST), platform);
      const e = await within(assertRejects(() => src.poll(), SourceError), 10_000, "poll");
      assertStringIncludes(e.message, "timeouts.idle_s");
      src.close();
    });
  });
  await t.step("a signal ends a stalled poll at once", async () => {
    await withServer(trickle, async (srv) => {
      const src = await ControlPlaneSource.open(_cpConfig(srv.url, NEVER), platform);
      const stop = new AbortController();
      const p = src.poll(stop.signal);
      await within(
        (async () => {
          while (srv.hanging() === 0) await new Promise((r) => setTimeout(r, 10));
        })(),
        10_000,
        "the poll reached the server",
      );
      stop.abort(new Error("stopping"));
      await within(assertRejects(() => p, SourceError), 10_000, "poll after abort");
      src.close();
    });
  });
});

Deno.test("Downloads.fetch() treats a stall as transient, keeps the partial and resumes it", async (t) => {
  await withTempDir(async (dir) => {
    const layout = new Layout(dir);
    await Deno.mkdir(layout.tmp);
    const sha = sha256Hex(BODY);
    let serve = false;
    await withServer((req) => serve ? s3Object(req, BODY) : trickle(), async (srv) => {
      const store = _s3(srv.url, FAST);
      const downloads = new Downloads();
      const req = { store, layout, key: "a/1/a", sha256: sha, maxBytes: 1 << 20 };

      await t.step("headers and 10 bytes: a transient DownloadError, 10 bytes kept", async () => {
        const e = await within(
          assertRejects(() => downloads.fetch(req), DownloadError),
          20_000,
          "download from a stalled store",
        );
        assertEquals(e.kind, "unavailable", `worth another attempt: ${e.message}`);
        assertStringIncludes(e.message, "timeouts.idle_s");
        assertEquals((await Deno.stat(layout.partial(sha))).size, 10);
      });
      await t.step("the next attempt resumes from byte 10", async () => {
        serve = true;
        const lease = await within(downloads.fetch(req), 20_000, "resumed download");
        assertEquals(lease.size, BODY.length);
        assertEquals(lease.fetched, BODY.length - 10);
        assertEquals(srv.requests.at(-1)?.headers["range"], "bytes=10-");
        await lease.release();
      });
      await t.step("abortAll() ends a read that waits for bytes; the partial stays", async () => {
        serve = false;
        const slow = { ...req, store: _s3(srv.url, NEVER) };
        const p = downloads.fetch(slow);
        await within(
          (async () => {
            while (srv.hanging() === 0) await new Promise((r) => setTimeout(r, 10));
          })(),
          10_000,
          "the download reached the server",
        );
        await within(
          (async () => {
            while (!(await Deno.stat(layout.partial(sha)).then(() => true, () => false))) {
              await new Promise((r) => setTimeout(r, 10));
            }
          })(),
          10_000,
          "the partial was created",
        );
        downloads.abortAll();
        const e = await within(assertRejects(() => p, DownloadError), 10_000, "abortAll");
        assertStringIncludes(e.message, "because the agent is stopping");
        // What arrived before the stop is kept (10 bytes, or none if the stop came first).
        assert((await Deno.stat(layout.partial(sha))).size <= 10, "the partial stays");
      });
    });
  });
});

function _s3Source(url: string, timeouts: { connect_s: number; idle_s: number }): S3Source {
  return new S3Source(
    {
      kind: "s3",
      bucket: "fleet",
      key: "assignments/h1.json",
      status_key: "status/h1.json",
      poll_interval_s: 30,
      region: "us-east-1",
      force_path_style: true,
      endpoint: url,
    },
    1 << 20,
    timeouts,
  );
}

Deno.test("S3Source.poll() and report() fail on a silent or stalled bucket", async (t) => {
  await t.step("silent: SourceError naming connect_s", async () => {
    await withServer(silent, async (srv) => {
      const src = _s3Source(srv.url, FAST);
      const e = await within(assertRejects(() => src.poll(), SourceError), 20_000, "poll");
      assertStringIncludes(e.message, "timeouts.connect_s");
      assertEquals(e.kind, "unavailable");
      const r = await within(assertRejects(() => src.report({}), SourceError), 20_000, "report");
      assertStringIncludes(r.message, "timeouts.connect_s");
      src.close();
    });
  });
  await t.step("headers and 10 bytes, then nothing: the poll fails", async () => {
    await withServer(trickle, async (srv) => {
      const src = _s3Source(srv.url, { connect_s: 0.3, idle_s: 1 });
      const e = await within(assertRejects(() => src.poll(), SourceError), 20_000, "poll");
      assertEquals(e.kind, "unavailable", e.message);
      src.close();
    });
  });
  await t.step("a signal ends a stalled poll at once", async () => {
    await withServer(trickle, async (srv) => {
      const src = _s3Source(srv.url, NEVER);
      const stop = new AbortController();
      const p = src.poll(stop.signal);
      await within(
        (async () => {
          while (srv.hanging() === 0) await new Promise((r) => setTimeout(r, 10));
        })(),
        10_000,
        "the poll reached the server",
      );
      stop.abort(new Error("stopping"));
      await within(assertRejects(() => p, SourceError), 10_000, "poll after abort");
      src.close();
    });
  });
});

Deno.test("Downloads.fetch() lets a caller abandon its wait; the download stops when nobody wants it", async (t) => {
  await withTempDir(async (dir) => {
    const layout = new Layout(dir);
    await Deno.mkdir(layout.tmp);
    const sha = sha256Hex(BODY);
    await withServer(trickle, async (srv) => {
      const downloads = new Downloads();
      const req = {
        store: _s3(srv.url, NEVER),
        layout,
        key: "a/1/a",
        sha256: sha,
        maxBytes: 1 << 20,
      };
      const a = new AbortController();
      const b = new AbortController();
      const pa = downloads.fetch({ ...req, signal: a.signal });
      const pb = downloads.fetch({ ...req, signal: b.signal });
      await within(
        (async () => {
          while (srv.hanging() === 0) await new Promise((r) => setTimeout(r, 10));
        })(),
        10_000,
        "the download reached the server",
      );
      await t.step("one caller gives up: its wait ends, the shared download goes on", async () => {
        a.abort(new Error("superseded by 2.0.0"));
        const e = await within(assertRejects(() => pa, DownloadError), 10_000, "abandoned wait");
        assertStringIncludes(e.message, "abandoned (superseded by 2.0.0)");
        assertEquals(downloads.active(), [sha]);
      });
      await t.step("the last caller gives up: the download stops, mid-read", async () => {
        b.abort(new Error("removed"));
        await within(assertRejects(() => pb, DownloadError), 10_000, "second wait");
        await within(
          (async () => {
            while (downloads.active().length > 0) await new Promise((r) => setTimeout(r, 10));
          })(),
          10_000,
          "the download stopped",
        );
      });
    });
  });
});
