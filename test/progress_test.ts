// Live progress of `sync` as a person sees it (SPEC 16): the real program in
// a real terminal (tmux), downloading from a loopback store that serves
// slowly; and the same sync with stderr piped, which shows JSON lines only.

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import {
  MAIN_TS,
  newKey,
  runDeno,
  S3_ENV,
  signFor,
  withTempDir,
  writeAssignments,
  writeConfig,
} from "./_helpers.ts";

const SIZE = 3 << 20;
const CHUNK = 64 << 10;

/** A path-style S3 GET endpoint that sends `body` one chunk every 40 ms (about 1.6 MiB/s). */
function slowStore(body: Uint8Array): { endpoint: string; close: () => Promise<void> } {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    if (req.method !== "GET") return new Response(null, { status: 405 });
    const m = /^bytes=(\d+)-$/.exec(req.headers.get("range") ?? "");
    const from = m ? Number(m[1]) : 0;
    let at = from;
    const stream = new ReadableStream<Uint8Array>({
      async pull(c) {
        if (at >= body.length) return c.close();
        await new Promise((r) => setTimeout(r, 40));
        c.enqueue(body.subarray(at, Math.min(at + CHUNK, body.length)));
        at += CHUNK;
      },
    });
    const headers: Record<string, string> = {
      "content-length": String(body.length - from),
      "content-type": "application/octet-stream",
      etag: '"slow"',
    };
    if (m) headers["content-range"] = `bytes ${from}-${body.length - 1}/${body.length}`;
    return new Response(stream, { status: m ? 206 : 200, headers });
  });
  return {
    endpoint: `http://127.0.0.1:${server.addr.port}`,
    close: () => server.shutdown(),
  };
}

async function setUp(dir: string, endpoint: string): Promise<string> {
  const key = await newKey();
  const bytes = new Uint8Array(SIZE);
  bytes.set(new TextEncoder().encode("#!/bin/sh\nexec sleep 300\n"));
  await writeAssignments(dir, [{
    addon_id: "big-probe",
    version: "2.0.0",
    delivery: "pushed_artifact",
    supervision: "agent_sidecar",
    artifact_object_key: "big-probe/2.0.0/big-probe",
    ...(await signFor(key, "big-probe", "2.0.0", bytes)),
  }]);
  return await writeConfig(dir, {
    object_store: { kind: "s3", bucket: "addons", endpoint, force_path_style: true },
    trust: { public_keys: [key.publicBase64], require_signature: true },
  });
}

function artifact(): Uint8Array {
  const bytes = new Uint8Array(SIZE);
  bytes.set(new TextEncoder().encode("#!/bin/sh\nexec sleep 300\n"));
  return bytes;
}

async function tmux(...args: string[]): Promise<string> {
  const out = await new Deno.Command("tmux", { args, stdout: "piped", stderr: "piped" }).output();
  return new TextDecoder().decode(out.stdout);
}

Deno.test({
  name: "sync at a terminal shows one progress line per transfer, moving, then the outcome",
  ignore: new Deno.Command("tmux", { args: ["-V"] }).outputSync().code !== 0,
  fn: async () => {
    await withTempDir(async (dir) => {
      const store = slowStore(artifact());
      const session = `addon-progress-${crypto.randomUUID().slice(0, 8)}`;
      try {
        const config = await setUp(dir, store.endpoint);
        const env = Object.entries(S3_ENV).map(([k, v]) => `${k}=${v}`).join(" ");
        const cmd = `env ${env} ${Deno.execPath()} run -A --quiet ${MAIN_TS} sync ` +
          `--config ${config} > ${dir}/stdout; echo EXIT=$? >> ${dir}/stdout; sleep 60`;
        await tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "20", cmd);
        const seen = new Set<number>();
        let screen = "";
        const deadline = Date.now() + 60_000;
        while (Date.now() < deadline) {
          screen = await tmux("capture-pane", "-p", "-t", session);
          for (
            const m of screen.matchAll(/big-probe 2\.0\.0 +[\d.]+ \w?i?B \/ 3\.0 MiB +(\d+)%/g)
          ) {
            seen.add(Number(m[1]));
          }
          const out = await Deno.readTextFile(`${dir}/stdout`).catch(() => "");
          if (out.includes("EXIT=")) break;
          await new Promise((r) => setTimeout(r, 100));
        }
        const out = await Deno.readTextFile(`${dir}/stdout`);
        // The program has exited: what the terminal shows now is its last word.
        screen = await tmux("capture-pane", "-p", "-t", session);
        if (Deno.env.get("SHOW_SCREEN")) console.log(screen);
        assertMatch(out, /EXIT=0/, screen);
        const moving = [...seen].filter((p) => p > 0 && p < 100);
        assert(moving.length >= 2, `the percentage moved: saw ${[...seen]} in\n${screen}`);
        assertMatch(screen, /big-probe 2\.0\.0 +3\.0 MiB \/ 3\.0 MiB +100% .*current/, screen);
        // A log line wider than the pane wraps whole; none of its figures is cut.
        const joined = await tmux("capture-pane", "-p", "-J", "-t", session);
        assertMatch(
          joined,
          /INFO +\[big-probe\] staged .* bytes=3145728 fetched=3145728$/m,
          joined,
        );
        assertMatch(
          screen,
          /INFO +\[big-probe\] staged and current/,
          "log lines show above the bars",
        );
        assertEquals(screen.match(/big-probe 2\.0\.0 +[\d.]+ \w?i?B \//g)?.length, 1, screen);
      } finally {
        await tmux("kill-session", "-t", session);
        await store.close();
      }
    });
  },
});

Deno.test("sync with stderr piped writes JSON lines only, no progress", async () => {
  await withTempDir(async (dir) => {
    const store = slowStore(artifact());
    try {
      const config = await setUp(dir, store.endpoint);
      const r = await runDeno(["run", "-A", "--quiet", MAIN_TS, "sync", "--config", config], {
        env: S3_ENV,
      });
      assertEquals(r.code, 0, r.stderr);
      const lines = r.stderr.split("\n").filter((l) => l !== "");
      assert(lines.length > 0);
      const logs = lines.map((l) => JSON.parse(l)); // every line is JSON
      // The store sent every byte of the artifact: all of it counts as fetched.
      const staged = logs.find((l) => l.msg === "staged");
      assertEquals([staged?.bytes, staged?.fetched], [SIZE, SIZE], r.stderr);
      assert(!/%|\r/.test(r.stderr), r.stderr);
      assert(!r.stderr.includes("\u001b["), "no terminal control sequences");
    } finally {
      await store.close();
    }
  });
});
