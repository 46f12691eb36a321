/**
 * A hostile HTTP/1.1 peer on a loopback TCP port, for the timeout tests
 * (SPEC 12): per request it answers normally, says nothing at all after
 * accepting, or sends the headers and the first bytes of a body and then
 * nothing. It speaks just enough HTTP for `fetch` and the S3 SDK (GET with
 * `Range`, POST bodies), one request per connection.
 *
 * @example
 * ```ts
 * const srv = startStallServer((req) => req.path.endsWith("/bad") ? { kind: "silent" } : {
 *   kind: "respond", status: 200, body: "ok",
 * });
 * await srv.close();
 * ```
 *
 * @module
 */

/** A request the server read. */
export interface SeenRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
}

/** How to answer one request. */
export type Reply =
  | {
    kind: "respond";
    status: number;
    headers?: Record<string, string>;
    body?: Uint8Array | string;
  }
  | { kind: "silent" }
  /** Headers announcing `body.length` bytes, the first `send` of them, then nothing. */
  | { kind: "trickle"; body: Uint8Array; send: number; status?: number };

/** A running stall server. */
export interface StallServer {
  port: number;
  /** `http://127.0.0.1:PORT`. */
  url: string;
  /** Every request so far, in order. */
  requests: SeenRequest[];
  /** Connections left hanging by `silent` and `trickle` replies that are still open. */
  hanging(): number;
  /** Change how requests are answered from now on. */
  setRoute(route: (req: SeenRequest) => Reply): void;
  close(): Promise<void>;
}

const enc = new TextEncoder();

/** Start the server on 127.0.0.1 (a free port) answering through `route`. */
export function startStallServer(route: (req: SeenRequest) => Reply): StallServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const requests: SeenRequest[] = [];
  const conns = new Set<Deno.Conn>();
  const held = new Set<Deno.Conn>();
  let current = route;
  const tasks: Promise<void>[] = [];

  const handle = async (conn: Deno.Conn) => {
    try {
      const req = await _readRequest(conn);
      if (!req) return;
      requests.push(req);
      const reply = current(req);
      if (reply.kind === "silent") {
        held.add(conn);
        return;
      }
      if (reply.kind === "trickle") {
        const total = reply.body.length;
        const range = /^bytes=(\d+)-$/.exec(req.headers["range"] ?? "");
        const from = range ? Number(range[1]) : 0;
        const head = range
          ? `HTTP/1.1 206 Partial Content\r\nContent-Range: bytes ${from}-${total - 1}/${total}\r\n`
          : `HTTP/1.1 ${reply.status ?? 200} OK\r\n`;
        await _writeAll(
          conn,
          enc.encode(
            `${head}Content-Length: ${
              total - from
            }\r\nContent-Type: application/octet-stream\r\n\r\n`,
          ),
        );
        await _writeAll(conn, reply.body.subarray(from, from + reply.send));
        held.add(conn);
        return;
      }
      const body = typeof reply.body === "string"
        ? enc.encode(reply.body)
        : reply.body ?? new Uint8Array();
      const headers = {
        "content-length": String(body.length),
        connection: "close",
        ...reply.headers,
      };
      const head = `HTTP/1.1 ${reply.status} X\r\n${
        Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("")
      }\r\n`;
      await _writeAll(conn, enc.encode(head));
      await _writeAll(conn, body);
      _close(conn, conns);
    } catch {
      _close(conn, conns);
    }
  };

  const accepting = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      tasks.push(handle(conn));
    }
  })().catch(() => {});

  return {
    port,
    url: `http://127.0.0.1:${port}`,
    requests,
    hanging: () => held.size,
    setRoute: (r) => {
      current = r;
    },
    close: async () => {
      listener.close();
      await accepting;
      for (const c of conns) _close(c, conns);
      await Promise.all(tasks);
    },
  };
}

/**
 * The range reply of an S3 GetObject for `body` (200, or 206 for `Range: bytes=N-`),
 * as s3rver would give it.
 */
export function s3Object(req: SeenRequest, body: Uint8Array): Reply {
  const range = /^bytes=(\d+)-$/.exec(req.headers["range"] ?? "");
  if (!range) {
    return {
      kind: "respond",
      status: 200,
      body,
      headers: { "content-type": "application/octet-stream" },
    };
  }
  const from = Number(range[1]);
  return {
    kind: "respond",
    status: 206,
    body: body.subarray(from),
    headers: {
      "content-type": "application/octet-stream",
      "content-range": `bytes ${from}-${body.length - 1}/${body.length}`,
    },
  };
}

function _close(conn: Deno.Conn, conns: Set<Deno.Conn>): void {
  conns.delete(conn);
  try {
    conn.close();
  } catch {
    // already closed
  }
}

async function _writeAll(conn: Deno.Conn, b: Uint8Array): Promise<void> {
  let off = 0;
  while (off < b.length) off += await conn.write(b.subarray(off));
}

/** Read one request (head, and a body of Content-Length bytes); null when the peer left. */
async function _readRequest(conn: Deno.Conn): Promise<SeenRequest | null> {
  let buf = new Uint8Array(0);
  const chunk = new Uint8Array(16384);
  let end = -1;
  while (end < 0) {
    const n = await conn.read(chunk);
    if (n === null) return null;
    const next = new Uint8Array(buf.length + n);
    next.set(buf);
    next.set(chunk.subarray(0, n), buf.length);
    buf = next;
    end = new TextDecoder().decode(buf).indexOf("\r\n\r\n");
  }
  const text = new TextDecoder().decode(buf);
  const [line, ...rest] = text.slice(0, end).split("\r\n");
  const [method, path] = line!.split(" ");
  const headers: Record<string, string> = {};
  for (const h of rest) {
    const i = h.indexOf(":");
    if (i > 0) headers[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
  }
  let have = buf.length - (enc.encode(text.slice(0, end)).length + 4);
  const want = Number(headers["content-length"] ?? 0);
  while (have < want) {
    const n = await conn.read(chunk);
    if (n === null) break;
    have += n;
  }
  return { method: method!, path: path!, headers };
}
