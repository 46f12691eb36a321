/**
 * An S3-compatible object store through `@aws-sdk/client-s3` (endpoint,
 * region, path-style addressing, key prefix; credentials from the SDK's
 * default chain). Ranged GETs let an interrupted download resume.
 *
 * Requests go through Deno's native `fetch` (the SDK still builds, signs,
 * retries and parses them): its body is a byte stream that the download
 * reads straight into its own buffers, several times faster and with far
 * less memory than the SDK's default `node:http` handler under Deno. That
 * handler is kept where `fetch` would behave differently: when a proxy
 * variable (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`) is set (`fetch` honours
 * it, the SDK does not), for an endpoint on a port `fetch` refuses, and for
 * keys with `.` path segments, which a URL would collapse.
 *
 * @example Open an object
 * ```ts
 * const store = new S3Store({ kind: "s3", bucket: "addons", region: "us-east-1", force_path_style: true, prefix: "" });
 * const obj = await store.open("net-probe/1.4.2/linux-amd64/net-probe", 0);
 * ```
 *
 * @module
 */

import { GetObjectCommand, HeadObjectCommand, S3Client } from "@aws-sdk/client-s3";
import type { ObjectStoreConfig } from "../config/mod.ts";
import {
  DEFAULT_IO_TIMEOUTS,
  describeS3Error,
  fetchWithTimeouts,
  type IoTimeouts,
  s3Status,
} from "../common/mod.ts";
import { type ObjectStore, type OpenedObject, type OpenOptions, StoreError } from "./types.ts";

type S3Config = Extract<ObjectStoreConfig, { kind: "s3" }>;

const _PROXY_VARIABLES = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"];

/** The part of the SDK's HTTP request a handler reads. */
interface _Request {
  method: string;
  protocol: string;
  hostname: string;
  port?: number;
  path: string;
  query?: Record<string, string | string[] | null>;
  fragment?: string;
  username?: string;
  password?: string;
  headers: Record<string, string>;
  body?: unknown;
}

/** The SDK's HTTP response. */
interface _Response {
  statusCode: number;
  reason?: string;
  headers: Record<string, string>;
  body: ReadableStream<Uint8Array>;
}

/** Whether a proxy variable is set (or the environment cannot be read). */
function _proxyConfigured(): boolean {
  try {
    return _PROXY_VARIABLES.some((v) => !!(Deno.env.get(v) || Deno.env.get(v.toLowerCase())));
  } catch {
    return true;
  }
}

/** Whether `key` survives URL parsing unchanged (no `.` or `..` segment). */
function _urlSafeKey(key: string): boolean {
  return !key.split("/").some((s) => s === "." || s === "..");
}

/** RFC 3986 escaping, as the SDK's signer applies it to query strings. */
function _escape(s: string): string {
  return encodeURIComponent(s).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/** The query string exactly as the SDK signed it (sorted keys, RFC 3986 escapes). */
function _queryString(query: Record<string, string | string[] | null>): string {
  const parts: string[] = [];
  for (const key of Object.keys(query).sort()) {
    const value = query[key];
    const k = _escape(key);
    if (Array.isArray(value)) {
      for (const v of value) parts.push(`${k}=${_escape(v)}`);
    } else {
      parts.push(typeof value === "string" ? `${k}=${_escape(value)}` : k);
    }
  }
  return parts.join("&");
}

/** Node error codes (which the SDK's retry policy knows) for fetch's connection failures. */
const _ERROR_CODES: [RegExp, string][] = [
  [/connection refused/i, "ECONNREFUSED"],
  [/connection reset|connection closed before message completed/i, "ECONNRESET"],
  [/broken pipe/i, "EPIPE"],
  [/timed out/i, "ETIMEDOUT"],
  [/no route to host/i, "EHOSTUNREACH"],
  [/network is unreachable/i, "ENETUNREACH"],
  [/temporary failure in name resolution/i, "EAI_AGAIN"],
  [/dns error|failed to lookup address/i, "ENOTFOUND"],
];

/**
 * A failed `fetch` as the SDK's Node handler would have reported it: the
 * underlying reason (not just "fetch failed") and, where it is one, the Node
 * error code, so the same failures are retried. Aborts pass through.
 */
function _networkError(e: unknown): unknown {
  if (!(e instanceof TypeError)) return e;
  let reason = e.message;
  for (let c = e.cause; c instanceof Error; c = c.cause) reason = c.message;
  const err: Error & { code?: string } = new Error(reason, { cause: e });
  const code = _ERROR_CODES.find(([re]) => re.test(reason))?.[1];
  if (code) err.code = code;
  return err;
}

/** Ports `fetch` refuses to connect to (the Fetch standard's "bad ports"). */
const _BAD_PORTS = new Set(
  (
    "1 7 9 11 13 15 17 19 20 21 22 23 25 37 42 43 53 69 77 79 87 95 101 102 103 104 109 110 111 " +
    "113 115 117 119 123 135 137 139 143 161 179 389 427 465 512 513 514 515 526 530 531 532 540 " +
    "548 554 556 563 587 601 636 989 990 993 995 1719 1720 1723 2049 3659 4045 4190 5060 5061 " +
    "6000 6566 6665 6666 6667 6668 6669 6679 6697 10080"
  ).split(" ").map(Number),
);

/** Whether `fetch` can reach `endpoint` (none: the AWS default, on 443). */
function _fetchablePort(endpoint: string | undefined): boolean {
  if (!endpoint) return true;
  try {
    const port = new URL(endpoint).port; // "" for the scheme's default port
    return port === "" || !_BAD_PORTS.has(Number(port));
  } catch {
    return false;
  }
}

/** The body of a response that has none. */
function _emptyStream(): ReadableStream<Uint8Array> {
  return new ReadableStream({ type: "bytes", start: (c) => c.close() });
}

/**
 * An SDK request handler on Deno's `fetch`: bodies are byte streams, never
 * decompressed; headers must come within `connect_s` and the body may not
 * stall for `idle_s` (SPEC 12).
 */
class _FetchHandler {
  /** Send every request with `timeouts`. */
  constructor(readonly timeouts: IoTimeouts) {}

  /** Send the signed request; the response body stays a stream. */
  async handle(
    request: _Request,
    options?: { abortSignal?: unknown },
  ): Promise<{ response: _Response }> {
    const query = _queryString(request.query ?? {});
    const auth = request.username != null || request.password != null
      ? `${request.username ?? ""}:${request.password ?? ""}@`
      : "";
    const url = `${request.protocol}//${auth}${request.hostname}${
      request.port ? `:${request.port}` : ""
    }${request.path}${query ? `?${query}` : ""}${request.fragment ? `#${request.fragment}` : ""}`;
    const headers = new Headers(request.headers);
    // fetch would otherwise ask for gzip and inflate it: the bytes must be the object's own.
    if (!headers.has("accept-encoding")) headers.set("accept-encoding", "identity");
    const hasBody = request.method !== "GET" && request.method !== "HEAD" &&
      request.body != null;
    const signal = options?.abortSignal instanceof AbortSignal ? options.abortSignal : undefined;
    let res: Response;
    try {
      res = await fetchWithTimeouts(
        url,
        {
          method: request.method,
          headers,
          ...(hasBody ? { body: request.body as BodyInit, duplex: "half" } : {}),
          ...(signal ? { signal } : {}),
        },
        this.timeouts,
        `${request.protocol}//${request.hostname}${
          request.port ? `:${request.port}` : ""
        }${request.path}`,
        // A stalled object ends where it stopped: the download keeps those bytes for a resume.
        { interrupted: "end" },
      );
    } catch (e) {
      throw _networkError(e);
    }
    const out: Record<string, string> = {};
    for (const [name, value] of res.headers) out[name] = value;
    return {
      response: {
        statusCode: res.status,
        reason: res.statusText,
        headers: out,
        body: res.body ?? _emptyStream(),
      },
    };
  }

  /** Nothing to configure. */
  updateHttpClientConfig(): void {}

  /** No configuration. */
  httpHandlerConfigs(): Record<string, never> {
    return {};
  }

  /** Nothing to release: fetch pools its own connections. */
  destroy(): void {}
}

/** Let go of a response body: a Node stream is destroyed, a web stream cancelled, the request aborted. */
function _release(body: unknown, abort: AbortController): void {
  if (body instanceof ReadableStream) {
    if (!body.locked) body.cancel().catch(() => {});
  } else {
    (body as { destroy?: () => void } | undefined)?.destroy?.();
  }
  abort.abort();
}

/** Reads objects from one bucket of an S3-compatible store. */
export class S3Store implements ObjectStore {
  /** Through `fetch`; null where `fetch` would behave differently (a proxy, a refused port). */
  readonly #fast: S3Client | null;
  /** Through the SDK's default handler, made when first needed. */
  #default: S3Client | null = null;

  /** Connect to the bucket described by `cfg`; every request gets `timeouts` (SPEC 12). */
  constructor(readonly cfg: S3Config, readonly timeouts: IoTimeouts = DEFAULT_IO_TIMEOUTS) {
    this.#fast = _proxyConfigured() || !_fetchablePort(cfg.endpoint)
      ? null
      : this.#newClient(new _FetchHandler(timeouts));
  }

  #newClient(requestHandler?: _FetchHandler): S3Client {
    return new S3Client({
      region: this.cfg.region,
      forcePathStyle: this.cfg.force_path_style,
      ...(this.cfg.endpoint ? { endpoint: this.cfg.endpoint } : {}),
      maxAttempts: 2,
      // The SDK's own handler: a connection timeout, and a socket idle for idle_s fails the read.
      requestHandler: requestHandler ?? {
        connectionTimeout: this.timeouts.connect_s * 1000,
        socketTimeout: this.timeouts.idle_s * 1000,
      },
    });
  }

  #client(key: string): S3Client {
    if (this.#fast && _urlSafeKey(key)) return this.#fast;
    return this.#default ??= this.#newClient();
  }

  /** `s3://bucket/prefix+key`. */
  describe(key: string): string {
    return `s3://${this.cfg.bucket}/${this.cfg.prefix}${key}`;
  }

  #error(verb: string, key: string, e: unknown): StoreError {
    const status = s3Status(e);
    return new StoreError(
      `cannot ${verb} ${this.describe(key)}: ${describeS3Error(e)}`,
      {
        kind: status === 404 ? "not_found" : status === 403 ? "refused" : "unavailable",
        cause: e,
      },
    );
  }

  /** HEAD the object: its size, and no byte of its body on the wire. */
  async stat(key: string): Promise<{ size: number }> {
    try {
      const res = await this.#client(this.cfg.prefix + key).send(
        new HeadObjectCommand({ Bucket: this.cfg.bucket, Key: this.cfg.prefix + key }),
      );
      return { size: res.ContentLength ?? -1 };
    } catch (e) {
      throw this.#error("stat", key, e);
    }
  }

  /**
   * GET the object (ranged from `offset`); errors name the object and the
   * store's reason. `opts.signal` aborts the request, and later a read of the body.
   */
  async open(key: string, offset: number, opts: OpenOptions = {}): Promise<OpenedObject> {
    const signal = opts.signal;
    const abort = new AbortController();
    if (signal?.aborted) abort.abort(signal.reason);
    else signal?.addEventListener("abort", () => abort.abort(signal.reason), { once: true });
    let res;
    try {
      res = await this.#client(this.cfg.prefix + key).send(
        new GetObjectCommand({
          Bucket: this.cfg.bucket,
          Key: this.cfg.prefix + key,
          ...(offset > 0 ? { Range: `bytes=${offset}-` } : {}),
        }),
        { abortSignal: abort.signal },
      );
    } catch (e) {
      throw this.#error("get", key, e);
    }
    let size: number;
    const range = res.ContentRange ? /\/(\d+)$/.exec(res.ContentRange) : null;
    if (range) {
      size = Number(range[1]);
    } else if (offset > 0) {
      _release(res.Body, abort);
      throw new StoreError(`${this.describe(key)}: the store ignored the Range request`, {
        kind: "unavailable",
      });
    } else {
      size = res.ContentLength ?? -1;
    }
    const body = res.Body as unknown as AsyncIterable<Uint8Array> & { destroy?: () => void };
    if (!body) {
      throw new StoreError(`${this.describe(key)}: empty response`, { kind: "unavailable" });
    }
    let closed = false;
    return {
      size,
      body,
      close: () => {
        if (closed) return;
        closed = true;
        _release(body, abort);
      },
    };
  }
}
