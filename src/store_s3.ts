/**
 * An S3-compatible object store through `@aws-sdk/client-s3` (endpoint,
 * region, path-style addressing, key prefix; credentials from the SDK's
 * default chain). Ranged GETs let an interrupted download resume.
 *
 * Requests go through Deno's native `fetch` (the SDK still builds, signs,
 * retries and parses them): its body is a byte stream that the download
 * reads straight into its own buffers, several times faster and with far
 * less memory than the SDK's default `node:http` handler under Deno. That
 * handler is kept when a proxy variable (`HTTP_PROXY`, `HTTPS_PROXY`,
 * `ALL_PROXY`) is set, because `fetch` would honour it and the SDK does not,
 * and for keys with `.` path segments, which a URL would collapse.
 *
 * @example
 * ```ts
 * const store = new S3Store({ kind: "s3", bucket: "addons", region: "us-east-1", force_path_style: true, prefix: "" });
 * const obj = await store.open("net-probe/1.4.2/linux-amd64/net-probe", 0);
 * ```
 *
 * @module
 */

import { GetObjectCommand, S3Client } from "@aws-sdk/client-s3";
import type { ObjectStoreConfig } from "./config.ts";
import { type ObjectStore, type OpenedObject, StoreError } from "./object_store.ts";

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

function _emptyStream(): ReadableStream<Uint8Array> {
  return new ReadableStream({ type: "bytes", start: (c) => c.close() });
}

/** An SDK request handler on Deno's `fetch`: bodies are byte streams, never decompressed. */
class _FetchHandler {
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
    const res = await fetch(url, {
      method: request.method,
      headers,
      ...(hasBody ? { body: request.body as BodyInit, duplex: "half" } : {}),
      ...(signal ? { signal } : {}),
    });
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
  /** Through `fetch`; null when a proxy is configured. */
  readonly #fast: S3Client | null;
  /** Through the SDK's default handler, made when first needed. */
  #default: S3Client | null = null;

  /** Connect to the bucket described by `cfg`. */
  constructor(readonly cfg: S3Config) {
    this.#fast = _proxyConfigured() ? null : this.#newClient(new _FetchHandler());
  }

  #newClient(requestHandler?: _FetchHandler): S3Client {
    return new S3Client({
      region: this.cfg.region,
      forcePathStyle: this.cfg.force_path_style,
      ...(this.cfg.endpoint ? { endpoint: this.cfg.endpoint } : {}),
      maxAttempts: 2,
      ...(requestHandler ? { requestHandler } : {}),
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

  /** GET the object (ranged from `offset`); errors name the object and the store's reason. */
  async open(key: string, offset: number): Promise<OpenedObject> {
    const abort = new AbortController();
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
      const err = e as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
      const status = err.$metadata?.httpStatusCode;
      throw new StoreError(
        `cannot get ${this.describe(key)}: ${err.name ?? "error"}${
          status ? ` (HTTP ${status})` : ""
        }${err.message && err.message !== err.name ? `: ${err.message}` : ""}`,
        status !== 404 && status !== 403,
      );
    }
    let size: number;
    const range = res.ContentRange ? /\/(\d+)$/.exec(res.ContentRange) : null;
    if (range) {
      size = Number(range[1]);
    } else if (offset > 0) {
      _release(res.Body, abort);
      throw new StoreError(`${this.describe(key)}: the store ignored the Range request`);
    } else {
      size = res.ContentLength ?? -1;
    }
    const body = res.Body as unknown as AsyncIterable<Uint8Array> & { destroy?: () => void };
    if (!body) throw new StoreError(`${this.describe(key)}: empty response`);
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
