/**
 * The reference control plane (SPEC 4): serves each agent its assignments
 * document from a catalog file, answers conditional polls with `304`, keeps
 * the last status report per agent, and picks up catalog edits by itself.
 *
 * Routes:
 * - `GET /v1/agents/{id}/addons?os=linux&arch=amd64` → `200` + ETag, or `304`
 * - `POST /v1/agents/{id}/addons/status` → `204` (the report is kept as received)
 * - `GET /v1/agents/{id}/addons/status` → the last report, or `404`
 *
 * @example Start a control plane on a free loopback port
 * ```ts
 * const cp = await startControlPlane({ catalogPath: "/etc/addon-cp/catalog.json" });
 * console.log(cp.url); // http://127.0.0.1:41234
 * await cp.close();
 * ```
 *
 * @module
 */

import { timingSafeEqual } from "node:crypto";
import { type Catalog, documentFor, parseCatalog } from "./catalog.ts";
import { decodeStatusReport } from "./status_report.ts";
import { LastReports } from "./reports.ts";
import {
  ARCHES,
  DecodeError,
  isLoopbackHost,
  isSafeSegment,
  type JsonObject,
  OSES,
  parseJson,
} from "../protocol/mod.ts";
import { log, readFileBounded, readStreamBounded, TooLargeError } from "../common/mod.ts";

/** Options of {@linkcode startControlPlane}. */
export interface ControlPlaneOptions {
  /** The catalog file (docs/catalog.md); re-read when it changes. */
  catalogPath: string;
  /** `host:port` to listen on; default `127.0.0.1:0` (a free port). */
  listen?: string;
  /** When set, every request must carry `Authorization: Bearer <token>`. */
  token?: string;
  /** Bytes of status reports kept in all (default 256 MiB); the oldest go first. */
  maxReportsBytes?: number;
}

/** A running control plane. */
export interface ControlPlane {
  /** Base URL for agents, e.g. `http://127.0.0.1:41234`. */
  url: string;
  /** The port actually bound. */
  port: number;
  /** The last status report `agentId` posted, as received. */
  reports(agentId: string): JsonObject | undefined;
  /** Stop listening and wait for requests in flight. */
  close(): Promise<void>;
}

/** Largest request body (a status report) accepted, in bytes, counted while reading (SPEC 12). */
export const MAX_REQUEST_BYTES = 1 << 20;
/** Largest catalog file read, in bytes (the agent's default `limits.max_document_bytes`). */
export const MAX_CATALOG_BYTES = 8 * 1024 * 1024;
/** Re-read the file at least this often even when `stat` shows no change (coarse mtimes). */
const RECHECK_MS = 1000;
/** A file modified less than this before it was read is re-read on every check. */
const RACY_MS = 1000;
/** Documents cached per (agent, os, arch) before the cache is dropped. */
const MAX_CACHED_DOCS = 10_000;
const ROUTE = /^\/v1\/agents\/([^/]+)\/addons(\/status)?$/;

interface _Served {
  etag: string;
  body: string;
}

/**
 * Start the reference control plane.
 *
 * @throws {DecodeError} when the catalog does not decode or `listen` is not `host:port`
 * (the path names the field or `--listen`).
 * @throws {Deno.errors.NotFound} or {Deno.errors.PermissionDenied} when the catalog cannot
 * be read.
 */
export async function startControlPlane(opts: ControlPlaneOptions): Promise<ControlPlane> {
  const { hostname, port } = _parseListen(opts.listen ?? "127.0.0.1:0");
  if (opts.token !== undefined && opts.token.trim() === "") {
    throw new Error("the control plane's token must not be empty");
  }
  if (opts.token === undefined && !isLoopbackHost(hostname)) {
    // Every agent's document (its add-ons, env, config) would be served to the network.
    throw new DecodeError(
      "--listen",
      `${
        JSON.stringify(opts.listen)
      } is not a loopback address; listening there needs --token-file (SPEC 12)`,
    );
  }
  const source = new _CatalogSource(opts.catalogPath);
  await source.load();
  const reports = new LastReports(opts.maxReportsBytes);
  const handler = (req: Request): Promise<Response> =>
    _handle(req, { source, reports, token: opts.token });
  // Closing aborts every connection: a graceful shutdown waits for request bodies that a
  // client may never send, and the process must end on SIGTERM all the same.
  const halt = new AbortController();
  const server = Deno.serve(
    { hostname, port, onListen: () => {}, signal: halt.signal },
    async (req) => {
      const started = performance.now();
      const res = await handler(req).catch((e) => {
        log.error("control plane request failed", { error: e, path: new URL(req.url).pathname });
        return _json(500, { error: "internal error" });
      });
      log.debug("control plane request", {
        method: req.method,
        path: new URL(req.url).pathname,
        status: res.status,
        ms: Math.round((performance.now() - started) * 10) / 10,
      });
      return res;
    },
  );
  const addr = server.addr as Deno.NetAddr;
  const url = `http://${_urlHost(addr.hostname)}:${addr.port}`;
  log.info("control plane listening", { url, catalog: opts.catalogPath });
  let closed: Promise<void> | undefined;
  return {
    url,
    port: addr.port,
    reports: (agentId) => reports.get(agentId),
    close: () => {
      halt.abort();
      return closed ??= server.finished;
    },
  };
}

interface _Context {
  source: _CatalogSource;
  reports: LastReports;
  token: string | undefined;
}

async function _handle(req: Request, ctx: _Context): Promise<Response> {
  const url = new URL(req.url);
  const m = ROUTE.exec(url.pathname);
  if (!m) return _json(404, { error: `no route for ${url.pathname}` });
  if (ctx.token !== undefined && !_authorized(req, ctx.token)) {
    return _json(401, { error: "a valid Authorization: Bearer token is required" }, {
      "www-authenticate": 'Bearer realm="addon-agent"',
    });
  }
  const isStatus = m[2] !== undefined;
  const allowed = isStatus ? ["GET", "POST"] : ["GET"];
  if (!allowed.includes(req.method)) {
    return _json(405, { error: `${req.method} is not allowed here` }, {
      allow: allowed.join(", "),
    });
  }
  let agentId: string;
  try {
    agentId = decodeURIComponent(m[1] ?? "");
  } catch {
    agentId = "";
  }
  if (!isSafeSegment(agentId)) {
    return _json(400, { error: `${JSON.stringify(agentId)} is not a valid agent id` });
  }
  if (!isStatus) return await _getDocument(req, url, agentId, ctx);
  if (req.method === "GET") {
    const report = ctx.reports.get(agentId);
    if (!report) return _json(404, { error: `no status report from ${agentId} yet` });
    return _json(200, report);
  }
  return await _postStatus(req, agentId, ctx);
}

async function _getDocument(
  req: Request,
  url: URL,
  agentId: string,
  ctx: _Context,
): Promise<Response> {
  const os = url.searchParams.get("os") ?? "";
  const arch = url.searchParams.get("arch") ?? "";
  if (os !== "" && !(OSES as readonly string[]).includes(os)) {
    return _json(400, { error: `os must be one of ${OSES.join(", ")}, got ${JSON.stringify(os)}` });
  }
  if (arch !== "" && !(ARCHES as readonly string[]).includes(arch)) {
    return _json(400, {
      error: `arch must be one of ${ARCHES.join(", ")}, got ${JSON.stringify(arch)}`,
    });
  }
  const served = await ctx.source.document(agentId, os, arch);
  const headers = { etag: served.etag, "cache-control": "no-cache" };
  if (_matches(req.headers.get("if-none-match"), served.etag)) {
    return new Response(null, { status: 304, headers });
  }
  return new Response(served.body, {
    status: 200,
    headers: { ...headers, "content-type": "application/json" },
  });
}

async function _postStatus(req: Request, agentId: string, ctx: _Context): Promise<Response> {
  const tooLarge = () =>
    _json(413, { error: `a status report may be at most ${MAX_REQUEST_BYTES} bytes` }, {
      connection: "close",
    });
  const declared = Number(req.headers.get("content-length") ?? "0");
  if (declared > MAX_REQUEST_BYTES) {
    await req.body?.cancel().catch(() => {});
    return tooLarge();
  }
  let text: string;
  try {
    text = await readStreamBounded(req.body, MAX_REQUEST_BYTES, "the request body");
  } catch (e) {
    if (e instanceof TooLargeError) return tooLarge();
    throw e;
  }
  let report;
  try {
    report = parseJson(text);
  } catch (e) {
    return _json(400, { error: (e as Error).message });
  }
  try {
    report = decodeStatusReport(report, agentId);
  } catch (e) {
    if (!(e instanceof DecodeError)) throw e;
    return _json(400, { error: e.message });
  }
  ctx.reports.set(agentId, report, text.length);
  return new Response(null, { status: 204 });
}

/** Holds the last good catalog and re-reads the file when it changed. */
class _CatalogSource {
  #catalog: Catalog | undefined;
  #stamp = "";
  #text: string | undefined;
  #checkedAt = 0;
  /** The file changed so recently that a same-size edit could keep its timestamps. */
  #racy = false;
  #lastError = "";
  #reloading: Promise<void> | undefined;
  #cache = new Map<string, _Served>();

  constructor(readonly path: string) {}

  /** First load: any error is thrown (the server does not start). */
  async load(): Promise<void> {
    const st = await Deno.stat(this.path);
    const text = await _readCatalog(this.path);
    this.#catalog = parseCatalog(text, this.path);
    this.#stamp = _stamp(st);
    this.#text = text;
    this.#checkedAt = Date.now();
    this.#racy = _isRacy(st, this.#checkedAt);
  }

  /** The served form of one agent's document, from the current catalog. */
  async document(agentId: string, os: string, arch: string): Promise<_Served> {
    await this.#refresh();
    const key = `${agentId}\0${os}\0${arch}`;
    let served = this.#cache.get(key);
    if (!served) {
      const doc = documentFor(this.#catalog as Catalog, agentId, os, arch);
      served = { etag: `"${doc.config_version}"`, body: JSON.stringify(doc) };
      if (this.#cache.size >= MAX_CACHED_DOCS) this.#cache.clear();
      this.#cache.set(key, served);
    }
    return served;
  }

  #refresh(): Promise<void> {
    return this.#reloading ??= this.#check().finally(() => {
      this.#reloading = undefined;
    });
  }

  async #check(): Promise<void> {
    let st: Deno.FileInfo;
    try {
      st = await Deno.stat(this.path);
    } catch (e) {
      this.#warn(`cannot read the catalog: ${(e as Error).message}`);
      return;
    }
    const stamp = _stamp(st);
    const now = Date.now();
    if (stamp === this.#stamp && !this.#racy && now - this.#checkedAt < RECHECK_MS) return;
    this.#stamp = stamp;
    this.#checkedAt = now;
    this.#racy = _isRacy(st, now);
    let text: string;
    try {
      text = await _readCatalog(this.path);
    } catch (e) {
      this.#warn(`cannot read the catalog: ${(e as Error).message}`);
      return;
    }
    if (text === this.#text) return;
    this.#text = text;
    try {
      this.#catalog = parseCatalog(text, this.path);
    } catch (e) {
      if (!(e instanceof DecodeError)) throw e;
      this.#warn(e.message);
      return;
    }
    this.#cache.clear();
    this.#lastError = "";
    log.info("control plane catalog reloaded", { catalog: this.path });
  }

  #warn(error: string): void {
    if (error === this.#lastError) return;
    this.#lastError = error;
    log.warn("control plane catalog not reloaded; serving the last good one", {
      catalog: this.path,
      error,
    });
  }
}

/** The catalog's text; a catalog over {@linkcode MAX_CATALOG_BYTES} is a `DecodeError`. */
async function _readCatalog(path: string): Promise<string> {
  try {
    return await readFileBounded(path, MAX_CATALOG_BYTES);
  } catch (e) {
    if (e instanceof TooLargeError) throw new DecodeError("", e.message, path);
    throw e;
  }
}

/**
 * Whether `st` is too fresh to trust its timestamps: file times are coarse
 * (a kernel tick), so an edit in the same tick would leave the stamp as it
 * is. Such a file is re-read (and compared) on every check until it settles.
 */
function _isRacy(st: Deno.FileInfo, now: number): boolean {
  const t = Math.max(st.mtime?.getTime() ?? 0, st.ctime?.getTime() ?? 0);
  return now - t < RACY_MS;
}

function _stamp(st: Deno.FileInfo): string {
  return `${st.ino}:${st.size}:${st.mtime?.getTime()}:${st.ctime?.getTime()}`;
}

function _authorized(req: Request, token: string): boolean {
  const h = req.headers.get("authorization") ?? "";
  const m = /^Bearer\s+(.+)$/i.exec(h);
  if (!m) return false;
  const a = new TextEncoder().encode(m[1]?.trim());
  const b = new TextEncoder().encode(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

function _matches(ifNoneMatch: string | null, etag: string): boolean {
  if (ifNoneMatch === null) return false;
  return ifNoneMatch.split(",").some((t) => {
    const tag = t.trim().replace(/^W\//, "");
    return tag === "*" || tag === etag;
  });
}

function _json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

function _parseListen(listen: string): { hostname: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(listen) ?? /^()()(\d{1,5})$/.exec(listen);
  const port = Number(m?.[3]);
  if (!m || !Number.isInteger(port) || port > 65535) {
    throw new DecodeError(
      "--listen",
      `${JSON.stringify(listen)} must be host:port, [ipv6]:port or port`,
    );
  }
  const hostname = m[1] || m[2] || "127.0.0.1";
  return { hostname, port };
}

function _urlHost(hostname: string): string {
  if (hostname === "0.0.0.0") return "127.0.0.1";
  if (hostname === "::") return "[::1]";
  return hostname.includes(":") ? `[${hostname}]` : hostname;
}
