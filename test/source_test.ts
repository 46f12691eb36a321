// Tests of src/source/source.ts (SPEC 2 and 4): the control-plane source against
// real servers on 127.0.0.1:0 (plain HTTP and HTTPS with Deno.serve, mTLS
// with `node:https` running under Deno), the file source, and the
// "https:// except for loopback" rule of src/config/config.ts.
//
// Certificates are made with the `openssl` command at run time in a temp
// dir: a CA, a server certificate for 127.0.0.1 / localhost signed by it, a
// client certificate signed by it, and a self-signed "rogue" pair.
//
// mTLS server: Deno.serve / Deno.listenTls have no option to request or
// verify client certificates, but `node:https` createServer({ requestCert:
// true, rejectUnauthorized: true, ca }) does under Deno: it refuses a
// handshake without a certificate ("peer sent no certificates") or with one
// from another CA, and exposes the verified peer certificate to the handler.
// So the server is a real in-process HTTPS server, no `openssl s_server`.

import https from "node:https";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import { type AgentConfig, decodeConfig } from "../src/config/config.ts";
import { DecodeError } from "../src/protocol/decode.ts";
import type { Platform } from "../src/protocol/platform.ts";
import {
  ControlPlaneSource,
  FileSource,
  openSource,
  type Source,
  SourceError,
} from "../src/source/mod.ts";
import {
  assert,
  assertEquals,
  assertInstanceOf,
  assertMatch,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "./_assert.ts";
import { freePort, withTempDir } from "./_helpers.ts";

// ---------------------------------------------------------------------------
// helpers

/** A platform other than most CI hosts, to see it is the one passed in that is sent. */
const PLATFORM: Platform = { os: "linux", arch: "arm64" };
const AGENT = "edge-01";
const ADDONS_PATH = `/v1/agents/${AGENT}/addons`;
const STATUS_PATH = `${ADDONS_PATH}/status`;

function _doc(version: string): Record<string, unknown> {
  return { config_version: version, addons: [] };
}

/** Decode an agent.json at `<dir>/agent.json` with `source` and a filesystem store. */
function _config(dir: string, source: Record<string, unknown>): AgentConfig {
  return decodeConfig(
    { agent_id: AGENT, source, object_store: { kind: "filesystem", root: `${dir}/store` } },
    `${dir}/agent.json`,
  );
}

/** What a test server saw of one request. */
interface Seen {
  method: string;
  path: string;
  query: Record<string, string>;
  headers: Headers;
  body: string;
}

/** A real HTTP(S) server on 127.0.0.1:0 that records requests. */
interface TestServer {
  port: number;
  seen: Seen[];
  close(): Promise<void>;
}

type Handler = (req: Seen) => Response | Promise<Response>;

async function _record(req: Request): Promise<Seen> {
  const u = new URL(req.url);
  return {
    method: req.method,
    path: u.pathname,
    query: Object.fromEntries(u.searchParams),
    headers: new Headers(req.headers), // a copy: the live one is gone once answered (HTTP/2)
    body: await req.text(),
  };
}

/** Start Deno.serve on 127.0.0.1:0 (HTTPS when `tls` is given). */
function _serve(handler: Handler, tls?: { cert: string; key: string }): TestServer {
  const seen: Seen[] = [];
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen() {},
    onError: (e) => new Response(`handler error: ${e}`, { status: 599 }),
    ...(tls ?? {}),
  }, async (req) => {
    const s = await _record(req);
    seen.push(s);
    return await handler(s);
  });
  return { port: server.addr.port, seen, close: () => server.shutdown() };
}

/** Open a control-plane source for `url` with extra source keys. */
async function _open(
  dir: string,
  url: string,
  extra: Record<string, unknown> = {},
): Promise<ControlPlaneSource> {
  const src = await openSource(_config(dir, { kind: "control_plane", url, ...extra }), PLATFORM);
  if (!(src instanceof ControlPlaneSource)) {
    src.close();
    throw new Error(`openSource() gave a ${src.constructor.name}, expected a ControlPlaneSource`);
  }
  return src;
}

/** Run `fn` with a source, closing it afterwards. */
async function _using<S extends Source, T>(src: S, fn: (s: S) => Promise<T>): Promise<T> {
  try {
    return await fn(src);
  } finally {
    src.close();
  }
}

/** The files `_makePki` writes. */
interface Pki {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  rogueCert: string;
  rogueKey: string;
}

async function _openssl(dir: string, args: string[]): Promise<void> {
  const out = await new Deno.Command("openssl", {
    args,
    cwd: dir,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `openssl ${args.join(" ")} failed (${out.code}): ${new TextDecoder().decode(out.stderr)}`,
    );
  }
}

/** Make a CA, a server cert (127.0.0.1, localhost) and a client cert signed by it, and a rogue self-signed pair. */
async function _makePki(dir: string): Promise<Pki> {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  await Deno.writeTextFile(
    `${dir}/server.ext`,
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n" +
      "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
  );
  await Deno.writeTextFile(
    `${dir}/client.ext`,
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n" +
      "extendedKeyUsage=clientAuth\n",
  );
  const ca = (name: string, cn: string) =>
    _openssl(dir, [
      "req",
      "-x509",
      ...ec,
      "-keyout",
      `${name}-key.pem`,
      "-out",
      `${name}.pem`,
      "-days",
      "2",
      "-subj",
      `/CN=${cn}`,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    ]);
  const leaf = async (name: string, cn: string) => {
    await _openssl(dir, [
      "req",
      ...ec,
      "-keyout",
      `${name}-key.pem`,
      "-out",
      `${name}.csr`,
      "-subj",
      `/CN=${cn}`,
    ]);
    await _openssl(dir, [
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca-key.pem",
      "-set_serial",
      String(Date.now() + name.length),
      "-out",
      `${name}.pem`,
      "-days",
      "2",
      "-extfile",
      `${name}.ext`,
    ]);
  };
  await Promise.all([ca("ca", "addon-agent test CA"), ca("rogue", "rogue")]);
  await Promise.all([leaf("server", "127.0.0.1"), leaf("client", AGENT)]);
  return {
    ca: `${dir}/ca.pem`,
    serverCert: `${dir}/server.pem`,
    serverKey: `${dir}/server-key.pem`,
    clientCert: `${dir}/client.pem`,
    clientKey: `${dir}/client-key.pem`,
    rogueCert: `${dir}/rogue.pem`,
    rogueKey: `${dir}/rogue-key.pem`,
  };
}

// ---------------------------------------------------------------------------
// plain HTTP

Deno.test("ControlPlaneSource.poll() sends If-None-Match after the first answer and maps 304 to not_modified", async (t) => {
  await withTempDir(async (dir) => {
    let current = "v1";
    const srv = _serve((req) => {
      const etag = `"${current}"`;
      if (req.headers.get("if-none-match") === etag) return new Response(null, { status: 304 });
      return Response.json(_doc(current), { headers: { etag } });
    });
    try {
      await _using(await _open(dir, `http://127.0.0.1:${srv.port}`), async (src) => {
        await t.step(
          "the first poll has no If-None-Match and returns the document and ETag",
          async () => {
            const r = await src.poll();
            assertEquals(r, { kind: "document", json: _doc("v1"), etag: '"v1"' });
            assertEquals(srv.seen.length, 1);
            const req = srv.seen[0]!;
            assertEquals(req.method, "GET");
            assertEquals(req.path, ADDONS_PATH);
            assertEquals(req.headers.get("if-none-match"), null);
          },
        );

        await t.step(
          'the second poll sends If-None-Match: "v1" and a 304 is not_modified',
          async () => {
            const r = await src.poll();
            assertEquals(r, { kind: "not_modified" });
            assertEquals(srv.seen.length, 2);
            assertEquals(srv.seen[1]!.headers.get("if-none-match"), '"v1"');
          },
        );

        await t.step("a changed document is fetched and its new ETag is sent next", async () => {
          current = "v2";
          assertEquals(await src.poll(), { kind: "document", json: _doc("v2"), etag: '"v2"' });
          assertEquals(srv.seen[2]!.headers.get("if-none-match"), '"v1"');
          assertEquals(await src.poll(), { kind: "not_modified" });
          assertEquals(srv.seen[3]!.headers.get("if-none-match"), '"v2"');
        });
      });
    } finally {
      await srv.close();
    }
  });
});

Deno.test("ControlPlaneSource.poll() sends os, arch and the trimmed bearer token", async (t) => {
  await withTempDir(async (dir) => {
    const srv = _serve(() => Response.json(_doc("v1"), { headers: { etag: '"v1"' } }));
    const url = `http://127.0.0.1:${srv.port}`;
    try {
      await t.step("the query carries exactly os and arch of the platform passed in", async () => {
        await _using(await _open(dir, url), async (src) => {
          await src.poll();
        });
        const req = srv.seen.at(-1)!;
        assertEquals(req.path, ADDONS_PATH);
        assertEquals(req.query, { os: "linux", arch: "arm64" });
      });

      await t.step("a trailing slash on source.url does not double the path's slash", async () => {
        await _using(await _open(dir, `${url}/`), async (src) => {
          await src.poll();
        });
        assertEquals(srv.seen.at(-1)!.path, ADDONS_PATH);
      });

      await t.step(
        "Authorization is Bearer + token_file's content with whitespace trimmed",
        async () => {
          await Deno.writeTextFile(`${dir}/token`, "\n \t s3cr3t.Tok-en_42 \r\n\n");
          await _using(await _open(dir, url, { token_file: `${dir}/token` }), async (src) => {
            await src.poll();
            assertEquals(srv.seen.at(-1)!.headers.get("authorization"), "Bearer s3cr3t.Tok-en_42");
            await src.poll();
            assertEquals(
              srv.seen.at(-1)!.headers.get("authorization"),
              "Bearer s3cr3t.Tok-en_42",
              "the conditional poll keeps the token",
            );
            await src.report({ agent_id: AGENT });
            assertEquals(srv.seen.at(-1)!.path, STATUS_PATH);
            assertEquals(srv.seen.at(-1)!.headers.get("authorization"), "Bearer s3cr3t.Tok-en_42");
          });
        },
      );

      await t.step("a relative token_file is read from the config directory", async () => {
        await Deno.writeTextFile(`${dir}/rel-token`, "relative-token\n");
        await _using(await _open(dir, url, { token_file: "rel-token" }), async (src) => {
          await src.poll();
        });
        assertEquals(srv.seen.at(-1)!.headers.get("authorization"), "Bearer relative-token");
      });

      await t.step("no Authorization header without token_file (poll and report)", async () => {
        await _using(await _open(dir, url), async (src) => {
          await src.poll();
          assertEquals(srv.seen.at(-1)!.headers.get("authorization"), null);
          await src.report({ agent_id: AGENT });
          assertEquals(srv.seen.at(-1)!.headers.get("authorization"), null);
        });
      });

      await t.step("an unreadable token_file is a SourceError naming token_file", async () => {
        const e = await assertRejects(
          () =>
            openSource(_config(dir, { kind: "control_plane", url, token_file: "nope" }), PLATFORM),
          SourceError,
          "token_file",
        );
        assertStringIncludes(e.message, `${dir}/nope`);
      });
    } finally {
      await srv.close();
    }
  });
});

Deno.test("ControlPlaneSource.poll() turns failures into SourceErrors", async (t) => {
  await withTempDir(async (dir) => {
    let answer: () => Response = () => Response.json(_doc("v1"), { headers: { etag: '"v1"' } });
    const srv = _serve(() => answer());
    try {
      await _using(await _open(dir, `http://127.0.0.1:${srv.port}`), async (src) => {
        await src.poll(); // remember ETag "v1"

        await t.step("HTTP 500 is an unavailable SourceError naming the status", async () => {
          answer = () => new Response("database on fire", { status: 500 });
          const e = await assertRejects(() => src.poll(), SourceError, "500");
          assertStringIncludes(e.message, `127.0.0.1:${srv.port}`);
          assertEquals(e.kind, "unavailable");
        });

        await t.step("HTTP 404 is a refused SourceError naming the status", async () => {
          answer = () => new Response("no such agent", { status: 404 });
          const e = await assertRejects(() => src.poll(), SourceError, "404");
          assertEquals(e.kind, "refused");
        });

        await t.step("a 200 that is not JSON is a SourceError", async () => {
          answer = () =>
            new Response("<html>captive portal</html>", {
              headers: { etag: '"v9"', "content-type": "application/json" },
            });
          const e = await assertRejects(() => src.poll(), SourceError);
          assertMatch(e.message, /JSON/);
          assertEquals(e.kind, "invalid");
          assert(e.cause instanceof Error, "the decode error is kept as the cause");
          assert(e.cause.cause instanceof SyntaxError, "and JSON.parse's error under it");
        });

        await t.step(
          "failed polls keep the last good ETag (a bad answer does not replace it)",
          async () => {
            answer = () => new Response(null, { status: 304 });
            assertEquals(await src.poll(), { kind: "not_modified" });
            assertEquals(srv.seen.at(-1)!.headers.get("if-none-match"), '"v1"');
          },
        );
      });

      await t.step("an unreachable port is a SourceError saying unreachable", async () => {
        const port = freePort();
        await _using(await _open(dir, `http://127.0.0.1:${port}`), async (src) => {
          const e = await assertRejects(() => src.poll(), SourceError, "unreachable");
          assertStringIncludes(e.message, `127.0.0.1:${port}`);
          assertEquals(e.kind, "unavailable");
          assert(e.cause instanceof TypeError, "fetch's error is kept as the cause");
        });
      });
    } finally {
      await srv.close();
    }
  });
});

Deno.test("ControlPlaneSource.report() POSTs JSON to the status path", async (t) => {
  await withTempDir(async (dir) => {
    let status = 204;
    const srv = _serve(() => new Response(null, { status }));
    const report = {
      agent_id: AGENT,
      config_version: "v1",
      reported_at: "2025-01-01T00:00:00.000Z",
      addons: [{
        addon_id: "net-probe",
        version: "1.4.2",
        desired_version: "1.4.2",
        state: "running",
        message: "ok ✓",
        pid: 4242,
        restarts: 0,
        since: "2025-01-01T00:00:00.000Z",
        progress: null,
      }],
    };
    try {
      await _using(await _open(dir, `http://127.0.0.1:${srv.port}`), async (src) => {
        await t.step(
          "the body is the JSON report, sent to /v1/agents/{id}/addons/status",
          async () => {
            await src.report(report);
            assertEquals(srv.seen.length, 1);
            const req = srv.seen[0]!;
            assertEquals(req.method, "POST");
            assertEquals(req.path, STATUS_PATH);
            assertMatch(req.headers.get("content-type"), /^application\/json\b/);
            assertEquals(JSON.parse(req.body), report);
          },
        );

        await t.step("a 500 rejects with a SourceError naming the status", async () => {
          status = 500;
          await assertRejects(() => src.report(report), SourceError, "500");
        });
      });

      await t.step("an unreachable status endpoint rejects with a SourceError", async () => {
        await _using(await _open(dir, `http://127.0.0.1:${freePort()}`), async (src) => {
          await assertRejects(() => src.report(report), SourceError);
        });
      });
    } finally {
      await srv.close();
    }
  });
});

// ---------------------------------------------------------------------------
// TLS

Deno.test("ControlPlaneSource over HTTPS trusts the CA pinned by ca_file", async (t) => {
  await withTempDir(async (dir) => {
    const pki = await _makePki(dir);
    const srv = _serve(
      () => Response.json(_doc("tls"), { headers: { etag: '"tls"' } }),
      {
        cert: await Deno.readTextFile(pki.serverCert),
        key: await Deno.readTextFile(pki.serverKey),
      },
    );
    try {
      await t.step("with ca_file the poll succeeds (127.0.0.1 and localhost)", async () => {
        for (const host of ["127.0.0.1", "localhost"]) {
          await _using(
            await _open(dir, `https://${host}:${srv.port}`, { ca_file: pki.ca }),
            async (src) => {
              assertEquals(await src.poll(), {
                kind: "document",
                json: _doc("tls"),
                etag: '"tls"',
              });
              assertEquals(await src.poll(), {
                kind: "document",
                json: _doc("tls"),
                etag: '"tls"',
              });
            },
          );
        }
        assertEquals(srv.seen.at(-1)!.headers.get("if-none-match"), '"tls"');
      });

      let noCa: SourceError | undefined;
      await t.step(
        "without ca_file the poll fails with a SourceError (unknown issuer)",
        async () => {
          const before = srv.seen.length;
          await _using(await _open(dir, `https://127.0.0.1:${srv.port}`), async (src) => {
            noCa = await assertRejects(() => src.poll(), SourceError);
          });
          assertEquals(srv.seen.length, before, "no request got through");
        },
      );

      await t.step("with another CA in ca_file the poll fails with a SourceError", async () => {
        await _using(
          await _open(dir, `https://127.0.0.1:${srv.port}`, { ca_file: pki.rogueCert }),
          async (src) => {
            await assertRejects(() => src.poll(), SourceError);
          },
        );
      });

      await t.step("the SourceError says why: the certificate's issuer is unknown", () => {
        assert(noCa, "the previous step produced no error");
        assertMatch(noCa.message, /UnknownIssuer|unknown issuer|certificate/i);
      });

      await t.step("an unreadable ca_file is a SourceError naming ca_file", async () => {
        await assertRejects(
          () => _open(dir, `https://127.0.0.1:${srv.port}`, { ca_file: `${dir}/missing.pem` }),
          SourceError,
          "ca_file",
        );
      });
    } finally {
      await srv.close();
    }
  });
});

/** A `node:https` server that requires a client certificate signed by `pki.ca`. */
async function _mtlsServer(pki: Pki): Promise<
  { port: number; peers: (string | null)[]; handshakeErrors: string[]; close(): Promise<void> }
> {
  const peers: (string | null)[] = [];
  const handshakeErrors: string[] = [];
  const server = https.createServer({
    cert: await Deno.readTextFile(pki.serverCert),
    key: await Deno.readTextFile(pki.serverKey),
    ca: await Deno.readTextFile(pki.ca),
    requestCert: true,
    rejectUnauthorized: true,
  }, (req, res) => {
    const sock = req.socket as TLSSocket;
    const cn = sock.authorized ? sock.getPeerCertificate().subject?.CN ?? null : null;
    peers.push(typeof cn === "string" ? cn : null);
    req.resume();
    req.on("end", () => {
      if (req.url?.endsWith("/status")) {
        res.writeHead(204).end();
      } else {
        res.writeHead(200, { "content-type": "application/json", etag: '"mtls"' })
          .end(JSON.stringify(_doc("mtls")));
      }
    });
  });
  server.on("tlsClientError", (e: Error) => handshakeErrors.push(e.message));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    peers,
    handshakeErrors,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

Deno.test("ControlPlaneSource presents the client certificate from cert_file/key_file (mTLS)", async (t) => {
  await withTempDir(async (dir) => {
    const pki = await _makePki(dir);
    const srv = await _mtlsServer(pki);
    const url = `https://127.0.0.1:${srv.port}`;
    try {
      await t.step(
        "with cert_file/key_file the server accepts the agent's certificate",
        async () => {
          await _using(
            await _open(dir, url, {
              ca_file: pki.ca,
              cert_file: pki.clientCert,
              key_file: pki.clientKey,
            }),
            async (src) => {
              assertEquals(await src.poll(), {
                kind: "document",
                json: _doc("mtls"),
                etag: '"mtls"',
              });
              await src.report({ agent_id: AGENT });
            },
          );
          assertEquals(srv.peers, [AGENT, AGENT], "the server saw the verified client certificate");
        },
      );

      let noCert: SourceError | undefined;
      await t.step(
        "without a client certificate the handshake is refused: SourceError",
        async () => {
          const before = srv.peers.length;
          await _using(await _open(dir, url, { ca_file: pki.ca }), async (src) => {
            noCert = await assertRejects(() => src.poll(), SourceError);
            await assertRejects(() => src.report({ agent_id: AGENT }), SourceError);
          });
          assertEquals(srv.peers.length, before, "no request reached the handler");
          assert(
            srv.handshakeErrors.some((m) => /no certificate/i.test(m)),
            `the server refused for a missing certificate: ${JSON.stringify(srv.handshakeErrors)}`,
          );
        },
      );

      await t.step("a client certificate from another CA is refused: SourceError", async () => {
        const before = srv.peers.length;
        await _using(
          await _open(dir, url, {
            ca_file: pki.ca,
            cert_file: pki.rogueCert,
            key_file: pki.rogueKey,
          }),
          async (src) => {
            await assertRejects(() => src.poll(), SourceError);
          },
        );
        assertEquals(srv.peers.length, before, "no request reached the handler");
      });

      await t.step("the SourceError says why: the server required a certificate", () => {
        assert(noCert, "the previous step produced no error");
        assertMatch(noCert.message, /CertificateRequired|certificate/i);
      });

      await t.step("an unreadable key_file is a SourceError naming key_file", async () => {
        await assertRejects(
          () =>
            _open(dir, url, {
              ca_file: pki.ca,
              cert_file: pki.clientCert,
              key_file: `${dir}/missing-key.pem`,
            }),
          SourceError,
          "key_file",
        );
      });
    } finally {
      await srv.close();
    }
  });
});

// ---------------------------------------------------------------------------
// config: https:// except for loopback

Deno.test("decodeConfig() requires https:// for source.url except for loopback hosts", async (t) => {
  const FILE = "/etc/addon-agent/agent.json";
  const cfg = (url: string) =>
    decodeConfig({
      agent_id: AGENT,
      source: { kind: "control_plane", url },
      object_store: { kind: "filesystem", root: "/srv/artifacts" },
    }, FILE);

  await t.step("http:// to a remote host is refused, naming the file and source.url", () => {
    for (
      const url of [
        "http://cp.example.net",
        "http://cp.example.net:8080/",
        "http://10.0.0.5:8080",
        "http://127.0.0.1.example.net",
        "http://localhost.example.net",
        "ftp://127.0.0.1",
      ]
    ) {
      const e = assertThrows(() => cfg(url), DecodeError, undefined, url);
      assertEquals(e.path, "source.url", url);
      assertStringIncludes(e.message, FILE);
      assertStringIncludes(e.message, "source.url");
      assertStringIncludes(e.message, "https://");
    }
  });

  await t.step("http:// to loopback hosts is allowed", () => {
    for (
      const url of [
        "http://127.0.0.1:8080",
        "http://127.3.2.1",
        "http://localhost:7000",
        "http://[::1]:8080",
      ]
    ) {
      const c = cfg(url);
      assert(c.source.kind === "control_plane");
      assertEquals(c.source.url, url);
    }
  });

  await t.step("https:// is allowed for any host, and a trailing slash is dropped", () => {
    const c = cfg("https://cp.example.net:8443/");
    assert(c.source.kind === "control_plane");
    assertEquals(c.source.url, "https://cp.example.net:8443");
  });
});

// ---------------------------------------------------------------------------
// file source

Deno.test("FileSource.poll() reports not_modified for unchanged text and the document when it changes", async (t) => {
  await withTempDir(async (dir) => {
    const path = `${dir}/assignments.json`;
    await Deno.writeTextFile(path, JSON.stringify(_doc("f1")));
    const src = await openSource(
      _config(dir, { kind: "file", path: "assignments.json" }),
      PLATFORM,
    );
    try {
      await t.step("openSource() gives a FileSource on the path in the config dir", () => {
        assertInstanceOf(src, FileSource);
        assertEquals(src.path, path);
        assertEquals(src.describe, path);
        assertEquals(src.intervalS, 5);
      });

      await t.step("the first poll returns the document", async () => {
        assertEquals(await src.poll(), { kind: "document", json: _doc("f1") });
      });

      await t.step("unchanged text is not_modified", async () => {
        assertEquals(await src.poll(), { kind: "not_modified" });
        await Deno.writeTextFile(path, JSON.stringify(_doc("f1"))); // rewritten, same text
        assertEquals(await src.poll(), { kind: "not_modified" });
      });

      await t.step("changed text is a new document", async () => {
        await Deno.writeTextFile(path, JSON.stringify(_doc("f2"), null, 2));
        assertEquals(await src.poll(), { kind: "document", json: _doc("f2") });
        assertEquals(await src.poll(), { kind: "not_modified" });
      });

      await t.step("invalid JSON is a SourceError naming the file", async () => {
        await Deno.writeTextFile(path, "{ not json");
        const e = await assertRejects(() => src.poll(), SourceError, path);
        assertMatch(e.message, /JSON/);
      });

      await t.step("a missing file is a SourceError naming the file", async () => {
        await Deno.remove(path);
        await assertRejects(() => src.poll(), SourceError, path);
      });

      await t.step("the last good text coming back is still not_modified", async () => {
        await Deno.writeTextFile(path, JSON.stringify(_doc("f2"), null, 2));
        assertEquals(await src.poll(), { kind: "not_modified" });
      });

      await t.step("report() is a no-op that resolves", async () => {
        await src.report({ agent_id: AGENT });
      });
    } finally {
      src.close();
    }
  });
});
