/**
 * Hostile inputs, the documents' side (SPEC 12): sizes counted while reading,
 * no redirects, trusted files with safe owners and modes, and the reference
 * control plane's body limit, token and listen address. Each attack runs
 * against the real CLI (sync, run, control-plane) with real servers and files.
 */

import { readFileBounded, TooLargeError } from "../src/common/bounded_read.ts";
import { startControlPlane } from "../src/control_plane/server.ts";
import { FileSource, SourceError } from "../src/source/mod.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "./_assert.ts";
import { waitFor } from "./_agent_process.ts";
import { daemonConfig, sidecar, waitState, withAgent } from "./_daemon_fixtures.ts";
import {
  type AgentRun,
  freePort,
  MAIN_TS,
  publishFs,
  S3_ENV,
  scriptAddon,
  sha256Hex,
  syncJson,
  withTempDir,
  writeAssignments,
  writeConfig,
} from "./_helpers.ts";

/** Run `addon-agent args`; killed (and failing the test) after 60 s instead of hanging. */
async function _cli(args: string[]): Promise<AgentRun> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", MAIN_TS, ...args],
    env: S3_ENV,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** A loopback HTTP server answering with `handler`; counts requests. */
function _serve(handler: (req: Request) => Response | Promise<Response>): {
  url: string;
  hits: () => number;
  close: () => Promise<void>;
} {
  let hits = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    hits++;
    return handler(req);
  });
  return {
    url: `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`,
    hits: () => hits,
    close: () => server.shutdown(),
  };
}

/** An endless body of spaces (valid JSON whitespace, never a document). */
function _spaces(): ReadableStream<Uint8Array> {
  const chunk = new Uint8Array(64 * 1024).fill(0x20);
  return new ReadableStream({
    pull(c) {
      c.enqueue(chunk);
    },
  });
}

/** `writeConfig` into a new file (an existing one would keep the mode a step gave it). */
async function _freshConfig(dir: string, extra: Record<string, unknown>): Promise<string> {
  await Deno.remove(`${dir}/agent.json`).catch(() => {});
  return await writeConfig(dir, extra);
}

const TOGGLE = { addon_id: "t", version: "1", supervision: "config_toggle" };

// ---------------------------------------------------------------------------
// sizes

Deno.test("readFileBounded() stops at the limit, even on a file that never ends", async () => {
  const e = await assertRejects(() => readFileBounded("/dev/zero", 4096), TooLargeError);
  assertStringIncludes(e.message, "larger than 4096 bytes");
});

Deno.test("FileSource.poll() refuses a document over maxBytes", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/a.json`, `{"addons":[]}${" ".repeat(5000)}`);
    const e = await assertRejects(
      () => new FileSource(`${dir}/a.json`, 5, 4096).poll(),
      SourceError,
    );
    assertStringIncludes(e.message, "limits.max_document_bytes");
    const ok = await new FileSource(`${dir}/a.json`, 5, 8192).poll();
    assertEquals(ok.kind, "document");
  });
});

Deno.test("sync refuses a control plane that streams an endless document, within its limit", async () => {
  await withTempDir(async (dir) => {
    const cp = _serve(() =>
      new Response(_spaces(), { headers: { "content-type": "application/json" } })
    );
    try {
      const cfg = await writeConfig(dir, {
        source: { kind: "control_plane", url: cp.url },
        object_store: { kind: "filesystem", root: `${dir}/store` },
        limits: { max_document_bytes: 1 << 20 },
      });
      const run = await _cli(["sync", "--config", cfg, "--json"]);
      assertEquals(run.code, 1, run.stderr);
      const report = syncJson(run);
      assertStringIncludes(report.document_error ?? "", "larger than 1048576 bytes");
      assertStringIncludes(report.document_error ?? "", "limits.max_document_bytes");
    } finally {
      await cp.close();
    }
  });
});

// ---------------------------------------------------------------------------
// redirects

Deno.test("sync follows no redirect from the control plane (no downgrade to another URL)", async () => {
  await withTempDir(async (dir) => {
    const elsewhere = _serve(() =>
      Response.json({ config_version: "plain", addons: [TOGGLE] }, {
        headers: { etag: '"plain"' },
      })
    );
    const cp = _serve((req) =>
      Response.redirect(`${elsewhere.url}${new URL(req.url).pathname}`, 302)
    );
    try {
      const cfg = await writeConfig(dir, {
        source: { kind: "control_plane", url: cp.url },
        object_store: { kind: "filesystem", root: `${dir}/store` },
      });
      const run = await _cli(["sync", "--config", cfg, "--json"]);
      assertEquals(run.code, 1, run.stderr);
      const report = syncJson(run);
      assertStringIncludes(report.document_error ?? "", "HTTP 302");
      assertStringIncludes(report.document_error ?? "", "redirects are not followed");
      assertEquals(report.results, []);
      assertEquals(elsewhere.hits(), 0, "the redirect target was never asked");
    } finally {
      await cp.close();
      await elsewhere.close();
    }
  });
});

// ---------------------------------------------------------------------------
// files the agent trusts

Deno.test("sync refuses trusted files that others could write (exit 2, naming the file)", async (t) => {
  await withTempDir(async (dir) => {
    const cp = _serve(() => Response.json({ config_version: "v", addons: [TOGGLE] }));
    try {
      const base = {
        object_store: { kind: "filesystem", root: `${dir}/store` },
      };
      await t.step("agent.json world-writable", async () => {
        const cfg = await _freshConfig(dir, base);
        await Deno.chmod(cfg, 0o666);
        const run = await _cli(["sync", "--config", cfg]);
        assertEquals(run.code, 2, run.stderr);
        assertStringIncludes(run.stderr, cfg);
        assertStringIncludes(run.stderr, "group- or world-writable");
      });
      await t.step("agent.json owned by another user", async () => {
        const cfg = await _freshConfig(dir, base);
        await Deno.chown(cfg, 65534, 65534);
        const run = await _cli(["sync", "--config", cfg]);
        assertEquals(run.code, 2, run.stderr);
        assertStringIncludes(run.stderr, "owned by uid 65534");
      });
      for (const [field, mode] of [["token_file", 0o664], ["key_file", 0o646]] as const) {
        await t.step(`${field} mode ${mode.toString(8)}`, async () => {
          for (const f of ["token", "cert.pem", "key.pem"]) {
            await Deno.writeTextFile(`${dir}/${f}`, "secret\n", { mode: 0o600 });
            await Deno.chmod(`${dir}/${f}`, 0o600);
          }
          const file = field === "token_file" ? `${dir}/token` : `${dir}/key.pem`;
          await Deno.chmod(file, mode);
          const cfg = await _freshConfig(dir, {
            ...base,
            source: {
              kind: "control_plane",
              url: cp.url,
              token_file: `${dir}/token`,
              ...(field === "key_file"
                ? { cert_file: `${dir}/cert.pem`, key_file: `${dir}/key.pem` }
                : {}),
            },
          });
          const run = await _cli(["sync", "--config", cfg]);
          assertEquals(run.code, 2, run.stderr);
          assertStringIncludes(run.stderr, `source.${field}`);
          assertStringIncludes(run.stderr, file);
          assertEquals(cp.hits(), 0, "nothing was sent with a token others could have planted");
        });
      }
      await t.step(
        "the file source's document world-writable: refused, nothing staged",
        async () => {
          await publishFs(dir, "p/1/p", scriptAddon());
          const cfg = await _freshConfig(dir, base);
          await writeAssignments(dir, [{
            addon_id: "p",
            version: "1",
            delivery: "pushed_artifact",
            supervision: "agent_sidecar",
            artifact_object_key: "p/1/p",
            artifact_sha256: sha256Hex(scriptAddon()),
          }]);
          await Deno.chmod(`${dir}/assignments.json`, 0o666);
          const refused = await _cli(["sync", "--config", cfg, "--json"]);
          assertEquals(refused.code, 1, refused.stderr);
          assertStringIncludes(syncJson(refused).document_error ?? "", "group- or world-writable");
          assert(!(await Deno.lstat(`${dir}/root/addons/p`).then(() => true, () => false)));
          // The same document with a safe mode is delivered: the refusal was the mode alone.
          await Deno.chmod(`${dir}/assignments.json`, 0o644);
          const ok = await _cli(["sync", "--config", cfg, "--json"]);
          assertEquals(ok.code, 0, ok.stderr);
        },
      );
    } finally {
      await cp.close();
    }
  });
});

Deno.test("run ignores a world-writable override: its /bin/sh helper never runs as root", async () => {
  await withTempDir(async (dir) => {
    const marker = `${dir}/root/addons/evil/data/owned`;
    await writeAssignments(dir, [await sidecar(dir, "good", "echo up; exec sleep 300")]);
    const override = `${dir}/addons.local.json`;
    await Deno.writeTextFile(
      override,
      JSON.stringify({
        addons: [{
          addon_id: "evil",
          version: "1",
          delivery: "os_package",
          supervision: "ephemeral_helper",
          binary_path: "/bin/sh",
          args: ["-c", 'id > "$ADDON_DATA_DIR/owned"'],
        }],
      }),
    );
    await Deno.chmod(override, 0o666);
    const cfg = await daemonConfig(dir, { config_dir: dir });
    await withAgent(dir, cfg, async (agent) => {
      await waitState(`${dir}/root`, agent, "good", "running");
      await waitFor(
        () =>
          agent.logs().some((l) =>
            l.msg.startsWith("local override is ignored") &&
            String(l.reason).includes("world-writable")
          ),
        { timeoutMs: 20_000, what: "the override refused", context: () => agent.tail() },
      );
      assert(
        !(await Deno.lstat(marker).then(() => true, () => false)),
        "the helper of a world-writable override ran",
      );
      // The same file with a safe mode is used: the refusal was the mode alone.
      await Deno.chmod(override, 0o644);
      await waitFor(() => Deno.lstat(marker).then(() => true, () => false), {
        timeoutMs: 20_000,
        what: "the helper of the fixed override ran",
        context: () => agent.tail(),
      });
    });
  });
});

// ---------------------------------------------------------------------------
// the reference control plane

Deno.test("the control plane answers 413 to an endless status report after 1 MiB", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/catalog.json`, JSON.stringify({ packages: {} }));
    const cp = await startControlPlane({ catalogPath: `${dir}/catalog.json` });
    try {
      // A raw chunked POST that never ends, written while the answer is read.
      const port = Number(new URL(cp.url).port);
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      const enc = new TextEncoder();
      let sent = 0;
      let answered = false;
      const writing = (async () => {
        await conn.write(enc.encode(
          "POST /v1/agents/a/addons/status HTTP/1.1\r\nhost: 127.0.0.1\r\n" +
            "content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        ));
        const chunk = enc.encode(`10000\r\n${" ".repeat(0x10000)}\r\n`);
        while (!answered && sent < 256 << 20) {
          await conn.write(chunk);
          sent += 0x10000;
        }
      })().catch(() => {}); // the server may close the connection under the writer
      const buf = new Uint8Array(4096);
      let head = "";
      // Without the limit the server would wait for the end of the body: give up after 30 s.
      let closed = false;
      const timer = setTimeout(() => {
        closed = true;
        conn.close();
      }, 30_000);
      try {
        while (!head.includes("\r\n\r\n")) {
          const n = await conn.read(buf);
          if (n === null) break;
          head += new TextDecoder().decode(buf.subarray(0, n));
        }
      } catch (e) {
        if (!closed) throw e;
      } finally {
        clearTimeout(timer);
      }
      answered = true;
      await writing;
      if (!closed) conn.close();
      assertStringIncludes(head, "HTTP/1.1 413");
      assert(sent < 64 << 20, `the server answered only after ${sent} bytes`);
    } finally {
      await cp.close();
    }
  });
});

Deno.test("control-plane refuses a catalog over 8 MiB (exit 2)", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(
      `${dir}/catalog.json`,
      `{"packages":{}}${" ".repeat(8 * 1024 * 1024)}`,
    );
    const run = await _cli(["control-plane", "--catalog", `${dir}/catalog.json`]);
    assertEquals(run.code, 2, run.stderr);
    assertStringIncludes(run.stderr, "larger than 8388608 bytes");
  });
});

Deno.test("control-plane off loopback needs --token-file, and then requires the bearer token", async (t) => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(
      `${dir}/catalog.json`,
      JSON.stringify({
        packages: { t: { version: "1", supervision: "config_toggle" } },
        assignments: { default: ["t"] },
      }),
    );
    await t.step("0.0.0.0 without a token exits 2", async () => {
      const run = await _cli([
        "control-plane",
        "--catalog",
        `${dir}/catalog.json`,
        "--listen",
        `0.0.0.0:${freePort()}`,
      ]);
      assertEquals(run.code, 2, run.stderr);
      assertStringIncludes(run.stderr, "--token-file");
    });
    await t.step("a token file others could write exits 2", async () => {
      await Deno.writeTextFile(`${dir}/token`, "s3cret\n");
      await Deno.chmod(`${dir}/token`, 0o666);
      const run = await _cli([
        "control-plane",
        "--catalog",
        `${dir}/catalog.json`,
        "--listen",
        `0.0.0.0:${freePort()}`,
        "--token-file",
        `${dir}/token`,
      ]);
      assertEquals(run.code, 2, run.stderr);
      assertStringIncludes(run.stderr, "world-writable");
    });
    await t.step("with --token-file: 401 without the token, 200 with it", async () => {
      await Deno.chmod(`${dir}/token`, 0o600);
      const port = freePort();
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--quiet",
          MAIN_TS,
          "control-plane",
          "--catalog",
          `${dir}/catalog.json`,
          "--listen",
          `0.0.0.0:${port}`,
          "--token-file",
          `${dir}/token`,
        ],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      try {
        const url = `http://127.0.0.1:${port}/v1/agents/a/addons?os=linux&arch=amd64`;
        const anonymous = await waitFor(async () => {
          try {
            const res = await fetch(url);
            await res.body?.cancel();
            return res.status;
          } catch {
            return null;
          }
        }, { timeoutMs: 20_000, what: "the control plane listening" });
        assertEquals(anonymous, 401);
        const res = await fetch(url, { headers: { authorization: "Bearer s3cret" } });
        assertEquals(res.status, 200);
        assertEquals((await res.json()).addons.length, 1);
      } finally {
        child.kill("SIGTERM");
        await child.status;
      }
    });
  });
});

Deno.test("sync refuses a NATS credential file others could write (exit 2), before connecting", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/nats.nk`, "SUAplanted\n");
    await Deno.chmod(`${dir}/nats.nk`, 0o666);
    const cfg = await _freshConfig(dir, {
      source: { kind: "nats" },
      object_store: { kind: "filesystem", root: `${dir}/store` },
      nats: { servers: [`nats://127.0.0.1:${freePort()}`], nkey_seed_file: `${dir}/nats.nk` },
    });
    const run = await _cli(["sync", "--config", cfg, "--json"]);
    assertEquals(run.code, 2, run.stderr);
    assertStringIncludes(run.stderr, `nats.nkey_seed_file ${dir}/nats.nk`);
    assertStringIncludes(run.stderr, "group- or world-writable");
  });
});
