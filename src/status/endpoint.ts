/**
 * The loopback status endpoint (SPEC 9): `GET /healthz`, `GET /status` (the
 * `status --json` document) and `GET /metrics` (Prometheus text format).
 * Only requests whose `Host` is a loopback address or `localhost` are
 * answered (421 otherwise), so DNS rebinding cannot read it (SPEC 12).
 *
 * @example
 * ```ts
 * import { type StatusSource, startStatusServer } from "./endpoint.ts";
 * declare const daemon: StatusSource;
 * const server = startStatusServer("127.0.0.1:7420", daemon);
 * await server.close();
 * ```
 *
 * @module
 */

import { log } from "../common/mod.ts";
import { isLoopbackHost } from "../config/mod.ts";
import { ADDON_STATE_NAMES } from "../runtime/mod.ts";
import type { StatusDocument } from "./status.ts";

/** What the endpoint reads from. */
export interface StatusSource {
  /** The current status document. */
  status(): Promise<StatusDocument>;
  /** Seconds since the agent started. */
  readonly uptimeSeconds: number;
}

/** A running status endpoint. */
export interface StatusServer {
  /** The bound port. */
  port: number;
  /** Stop serving and drop every open connection, finished or not. */
  close(): Promise<void>;
}

function _label(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** Render the Prometheus text exposition of a status document. */
export function renderMetrics(doc: StatusDocument, uptimeSeconds: number): string {
  const out: string[] = [
    "# HELP addon_agent_uptime_seconds Seconds since the agent started.",
    "# TYPE addon_agent_uptime_seconds gauge",
    `addon_agent_uptime_seconds ${uptimeSeconds.toFixed(3)}`,
    "# HELP addon_agent_addon_state 1 for the state each add-on is in.",
    "# TYPE addon_agent_addon_state gauge",
  ];
  for (const a of doc.addons) {
    for (const s of ADDON_STATE_NAMES) {
      out.push(
        `addon_agent_addon_state{addon_id="${_label(a.addon_id)}",state="${s}"} ${
          a.state === s ? 1 : 0
        }`,
      );
    }
  }
  out.push(
    "# HELP addon_agent_addon_restarts_total Restarts of each add-on.",
    "# TYPE addon_agent_addon_restarts_total counter",
  );
  for (const a of doc.addons) {
    out.push(`addon_agent_addon_restarts_total{addon_id="${_label(a.addon_id)}"} ${a.restarts}`);
  }
  out.push(
    "# HELP addon_agent_last_delivery_seconds Duration of the last delivery of each add-on.",
    "# TYPE addon_agent_last_delivery_seconds gauge",
  );
  for (const a of doc.addons) {
    if (a.last_delivery) {
      out.push(
        `addon_agent_last_delivery_seconds{addon_id="${_label(a.addon_id)}"} ${
          (a.last_delivery.duration_ms / 1000).toFixed(3)
        }`,
      );
    }
  }
  out.push(
    "# HELP addon_agent_last_delivery_bytes Bytes fetched by the last delivery of each add-on.",
    "# TYPE addon_agent_last_delivery_bytes gauge",
  );
  for (const a of doc.addons) {
    if (a.last_delivery) {
      out.push(
        `addon_agent_last_delivery_bytes{addon_id="${
          _label(a.addon_id)
        }"} ${a.last_delivery.bytes}`,
      );
    }
  }
  out.push(
    "# HELP addon_agent_addon_memory_bytes Memory in use by each add-on's cgroup (memory.current).",
    "# TYPE addon_agent_addon_memory_bytes gauge",
  );
  for (const a of doc.addons) {
    if (a.memory_bytes !== undefined) {
      out.push(
        `addon_agent_addon_memory_bytes{addon_id="${_label(a.addon_id)}"} ${a.memory_bytes}`,
      );
    }
  }
  out.push(
    "# HELP addon_agent_addon_cpu_seconds_total CPU time used by each add-on's cgroup (cpu.stat).",
    "# TYPE addon_agent_addon_cpu_seconds_total counter",
  );
  for (const a of doc.addons) {
    if (a.cpu_seconds !== undefined) {
      out.push(
        `addon_agent_addon_cpu_seconds_total{addon_id="${_label(a.addon_id)}"} ${
          a.cpu_seconds.toFixed(6)
        }`,
      );
    }
  }
  return out.join("\n") + "\n";
}

/**
 * Whether a `Host` header names a loopback address or `localhost` (with or
 * without a port); a missing header is refused.
 *
 * @example
 * ```ts
 * loopbackHostHeader("127.0.0.1:7420"); // true
 * loopbackHostHeader("[::1]:7420"); // true
 * loopbackHostHeader("attacker.example"); // false
 * ```
 */
export function loopbackHostHeader(host: string | null): boolean {
  if (host === null) return false;
  const h = host.trim().toLowerCase();
  const m = /^(\[[^\]]*\]|[^:]*)(?::\d{1,5})?$/.exec(h);
  return m !== null && isLoopbackHost(m[1]!);
}

/**
 * Serve the status endpoint on `listen` (a loopback `host:port`, decoded by the configuration;
 * port 0 takes a free one): `GET /healthz`, `/status` (JSON) and `/metrics` (Prometheus text).
 * A request whose `Host` is not loopback is answered 421 (DNS rebinding), any other method 405;
 * nothing is ever written. `close()` aborts open connections at once and resolves when the
 * server is down, so a client that never sends its request cannot hold up a stop.
 *
 * @throws {Deno.errors.AddrInUse} when the port is taken, or another error from listening.
 *
 * @example
 * ```ts
 * declare const source: StatusSource;
 * const server = startStatusServer("127.0.0.1:0", source);
 * console.log(`curl http://127.0.0.1:${server.port}/status`);
 * await server.close();
 * ```
 */
export function startStatusServer(listen: string, source: StatusSource): StatusServer {
  const i = listen.lastIndexOf(":");
  const hostname = listen.slice(0, i).replace(/^\[|\]$/g, "");
  const port = Number(listen.slice(i + 1));
  // Closing aborts every connection: a graceful shutdown waits for a request body that a
  // local user may never send, and SIGTERM must end `run` all the same.
  const halt = new AbortController();
  const server = Deno.serve(
    { hostname, port, onListen: () => {}, signal: halt.signal },
    async (req) => {
      if (!loopbackHostHeader(req.headers.get("host"))) {
        // DNS rebinding: a web page whose name resolves to 127.0.0.1 must not read the status.
        return new Response("misdirected request: Host must be a loopback address or localhost\n", {
          status: 421,
        });
      }
      const url = new URL(req.url);
      if (req.method !== "GET") return new Response("method not allowed\n", { status: 405 });
      switch (url.pathname) {
        case "/healthz":
          return new Response("ok\n");
        case "/status":
          return Response.json(await source.status());
        case "/metrics":
          return new Response(renderMetrics(await source.status(), source.uptimeSeconds), {
            headers: { "content-type": "text/plain; version=0.0.4" },
          });
        default:
          return new Response("not found\n", { status: 404 });
      }
    },
  );
  const addr = server.addr as Deno.NetAddr;
  log.info("status endpoint listening", { listen: `${addr.hostname}:${addr.port}` });
  return {
    port: addr.port,
    close: () => {
      halt.abort();
      return server.finished;
    },
  };
}
