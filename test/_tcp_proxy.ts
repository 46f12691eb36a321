/**
 * A loopback TCP proxy in front of a real server, for tests of slow and
 * broken networks: it forwards both ways, and in the server → client
 * direction it can pace the bytes (`bytesPerSecond`) and cut each connection
 * after a number of bytes (`cutAfterBytes`), as a flaky link would.
 *
 * @example Cut every response after 1 MiB
 * ```ts
 * const proxy = startTcpProxy(9000, { cutAfterBytes: 1 << 20 });
 * console.log(proxy.endpoint); // http://127.0.0.1:<port>
 * await proxy.close();
 * ```
 *
 * @module
 */

/** How the proxy treats the server → client direction. */
export interface TcpProxyOptions {
  /** At most this many bytes a second (a token bucket); unlimited when absent. */
  bytesPerSecond?: number;
  /** Close each connection (both sides) after this many bytes; never when absent. */
  cutAfterBytes?: number;
}

/** A running proxy. */
export interface TcpProxy {
  /** `http://127.0.0.1:<port>` of the proxy. */
  endpoint: string;
  /** The proxy's port. */
  port: number;
  /** Bytes forwarded server → client so far, over all connections. */
  readonly bytesDown: number;
  /** Stop accepting, close every connection and wait for the copies to end. */
  close(): Promise<void>;
}

function _closeQuietly(c: { close(): void }): void {
  try {
    c.close();
  } catch { /* already closed */ }
}

/** Start a proxy on a free loopback port that forwards to `127.0.0.1:targetPort`. */
export function startTcpProxy(targetPort: number, opts: TcpProxyOptions = {}): TcpProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  let closed = false;
  let bytesDown = 0;

  /** Copy `from` → `to`; `down` paces and cuts as the options say. */
  const pump = async (from: Deno.Conn, to: Deno.Conn, down: boolean): Promise<void> => {
    const buf = new Uint8Array(64 * 1024);
    const rate = down ? opts.bytesPerSecond : undefined;
    const limit = down ? opts.cutAfterBytes : undefined;
    let sent = 0;
    let next = performance.now();
    for (;;) {
      const n = await from.read(buf);
      if (n === null) break;
      const m = limit === undefined ? n : Math.min(n, limit - sent);
      let off = 0;
      while (off < m) off += await to.write(buf.subarray(off, m));
      sent += m;
      if (down) bytesDown += m;
      if (limit !== undefined && sent >= limit) throw new Error("cut");
      if (rate === undefined) continue;
      const now = performance.now();
      next = Math.max(next, now - 20) + (m * 1000) / rate;
      if (next > now) await new Promise((r) => setTimeout(r, next - now));
    }
    await to.closeWrite().catch(() => {});
  };

  const handle = async (client: Deno.Conn): Promise<void> => {
    let upstream: Deno.Conn;
    try {
      upstream = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
    } catch {
      _closeQuietly(client);
      return;
    }
    open.add(upstream);
    const both = () => {
      _closeQuietly(client);
      _closeQuietly(upstream);
    };
    // When either direction fails or is cut, end the other one too.
    await Promise.all([
      pump(client, upstream, false).catch(both),
      pump(upstream, client, true).catch(both),
    ]);
    both();
    open.delete(client);
    open.delete(upstream);
  };

  const accepting = (async () => {
    try {
      for await (const client of listener) {
        if (closed) {
          _closeQuietly(client);
          break;
        }
        open.add(client);
        const t = handle(client);
        tasks.add(t);
        t.finally(() => tasks.delete(t));
      }
    } catch { /* the listener was closed */ }
  })();

  const port = (listener.addr as Deno.NetAddr).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    get bytesDown() {
      return bytesDown;
    },
    close: async () => {
      closed = true;
      _closeQuietly(listener);
      await accepting;
      for (const c of open) _closeQuietly(c);
      await Promise.all([...tasks]);
    },
  };
}
