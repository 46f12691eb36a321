/**
 * The reference control plane as a publisher (SPEC 14): render every
 * agent's document from the catalog exactly as the HTTP server does (same
 * `config_version`) and write it where the agents read it — a NATS KV key
 * `<agent_id>`, or an S3 object `<prefix><agent_id>.json` — writing only the
 * documents that changed, again whenever the catalog changes. Also uploads
 * artifacts to either store (`addon-agent publish`).
 *
 * The agents published to are those the catalog names under
 * `assignments.agents` plus those that already have a document in the
 * target (an agent dropped from the catalog gets the default list, as the
 * HTTP server would serve it).
 *
 * @example Publish a catalog once to NATS
 * ```ts
 * import { openTarget, parsePublishUrl, publishCatalog } from "./publish.ts";
 * import { parseCatalog } from "./catalog.ts";
 * const target = await openTarget(parsePublishUrl("nats://127.0.0.1:4222/addon-assignments"), {});
 * const catalog = parseCatalog(await Deno.readTextFile("catalog.json"));
 * const r = await publishCatalog(target, catalog, { os: "linux", arch: "amd64" });
 * console.log(r.written);
 * await target.close();
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { NatsConfig } from "../config/mod.ts";
import { acquireNats, log, type NatsHandle } from "../common/mod.ts";
import { type Catalog, documentFor } from "./catalog.ts";

/** Where `--publish` / `--store` point: a NATS bucket or an S3 bucket and prefix. */
export type PublishUrl =
  | { kind: "nats"; server: string; bucket: string }
  | { kind: "s3"; bucket: string; prefix: string };

/** How to reach the target beyond its URL: NATS credentials and TLS, the S3 endpoint. */
export interface TargetOptions {
  /** NATS credentials and TLS (`servers` and `inbox_prefix` come from the URL). */
  nats?: Omit<NatsConfig, "servers" | "inbox_prefix">;
  /** NATS: the KV bucket agents put status reports to, created when missing (`addon-status`). */
  statusBucket?: string;
  /** S3: endpoint URL (default: AWS), region (default `us-east-1`), path-style addressing. */
  s3?: { endpoint?: string; region?: string; force_path_style?: boolean };
}

/** A bad `--publish` or `--store` URL; the CLI exits 2. */
export class PublishUrlError extends Error {
  /** Make the error, naming the URL and what is wrong. */
  constructor(message: string) {
    super(message);
    this.name = "PublishUrlError";
  }
}

/** Parse `nats://HOST:PORT/BUCKET` (or `tls://…`) or `s3://BUCKET/PREFIX`. */
export function parsePublishUrl(url: string): PublishUrl {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new PublishUrlError(`${JSON.stringify(url)} is not a URL`);
  }
  if (u.protocol === "nats:" || u.protocol === "tls:") {
    const bucket = u.pathname.replace(/^\/+|\/+$/g, "");
    if (!/^[A-Za-z0-9_-]+$/.test(bucket)) {
      throw new PublishUrlError(
        `${url}: the path must be one bucket name (letters, digits, '_', '-'), like nats://127.0.0.1:4222/addon-assignments`,
      );
    }
    return { kind: "nats", server: `${u.protocol}//${u.host}`, bucket };
  }
  if (u.protocol === "s3:") {
    if (!u.hostname) throw new PublishUrlError(`${url}: no bucket, like s3://fleet/assignments/`);
    let prefix = decodeURIComponent(u.pathname.replace(/^\/+/, ""));
    if (prefix !== "" && !prefix.endsWith("/")) prefix += "/";
    return { kind: "s3", bucket: u.hostname, prefix };
  }
  throw new PublishUrlError(`${url}: must be nats://HOST:PORT/BUCKET or s3://BUCKET/PREFIX`);
}

/** Where documents and artifacts are written. */
export interface Target {
  /** For messages. */
  readonly describe: string;
  /** The agents that have a document there now, with its text. */
  documents(): Promise<Map<string, string>>;
  /** Write `agentId`'s document. */
  writeDocument(agentId: string, text: string): Promise<void>;
  /** Upload an artifact under `key`, telling `onProgress` the bytes sent so far; returns its size. */
  upload(
    key: string,
    file: string,
    onProgress?: (bytes: number, total: number) => void,
  ): Promise<number>;
  /** Release connections. */
  close(): Promise<void>;
}

/** Open the target of `url` (creating the NATS bucket when it is not there). */
export function openTarget(url: PublishUrl, opts: TargetOptions): Promise<Target> {
  return url.kind === "nats"
    ? _NatsTarget.open(url, opts)
    : Promise.resolve(new _S3Target(url, opts));
}

class _NatsTarget implements Target {
  readonly describe: string;
  private constructor(
    readonly url: Extract<PublishUrl, { kind: "nats" }>,
    readonly nats: NatsHandle,
    readonly statusBucket: string | undefined,
  ) {
    this.describe = `${url.server}/${url.bucket}`;
  }

  static open(
    url: Extract<PublishUrl, { kind: "nats" }>,
    opts: TargetOptions,
  ): Promise<_NatsTarget> {
    const cfg: NatsConfig = { ...opts.nats, servers: [url.server], inbox_prefix: "_INBOX" };
    return Promise.resolve(new _NatsTarget(url, acquireNats(cfg), opts.statusBucket));
  }

  #kvp: Promise<import("@nats-io/kv").KV> | null = null;

  /** The bucket, created when missing (once per target). */
  #kv(): Promise<import("@nats-io/kv").KV> {
    this.#kvp ??= (async () => {
      const nc = await this.nats.connection(15_000);
      const { Kvm } = await import("@nats-io/kv");
      return await new Kvm(nc).create(this.url.bucket, { history: 5 });
    })();
    this.#kvp.catch(() => this.#kvp = null);
    return this.#kvp;
  }

  async documents(): Promise<Map<string, string>> {
    const kv = await this.#kv();
    if (this.statusBucket) {
      const { Kvm } = await import("@nats-io/kv");
      await new Kvm(await this.nats.connection(15_000)).create(this.statusBucket, { history: 1 });
    }
    const out = new Map<string, string>();
    for await (const k of await kv.keys()) {
      const e = await kv.get(k);
      if (e && e.operation === "PUT") out.set(k, e.string());
    }
    return out;
  }

  async writeDocument(agentId: string, text: string): Promise<void> {
    const kv = await this.#kv();
    await kv.put(agentId, text);
  }

  async upload(
    key: string,
    file: string,
    onProgress?: (bytes: number, total: number) => void,
  ): Promise<number> {
    const nc = await this.nats.connection(15_000);
    const { Objm } = await import("@nats-io/obj");
    const os = await new Objm(nc).create(this.url.bucket);
    const total = (await Deno.stat(file)).size;
    const f = await Deno.open(file, { read: true });
    let sent = 0;
    const counted = f.readable.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, c) {
          sent += chunk.length;
          onProgress?.(sent, total);
          c.enqueue(chunk);
        },
      }),
    );
    const info = await os.put({ name: key }, counted);
    return info.size;
  }

  async close(): Promise<void> {
    await this.nats.release();
  }
}

class _S3Target implements Target {
  readonly describe: string;
  #client: import("@aws-sdk/client-s3").S3Client | null = null;
  constructor(readonly url: Extract<PublishUrl, { kind: "s3" }>, readonly opts: TargetOptions) {
    this.describe = `s3://${url.bucket}/${url.prefix}`;
  }

  async #s3() {
    const sdk = await import("@aws-sdk/client-s3");
    const o = this.opts.s3 ?? {};
    this.#client ??= new sdk.S3Client({
      region: o.region ?? "us-east-1",
      forcePathStyle: o.force_path_style ?? false,
      ...(o.endpoint ? { endpoint: o.endpoint } : {}),
      // No aws-chunked body with a trailing checksum for streamed uploads: not every
      // S3-compatible store understands it (s3rver stores the framing as the object).
      requestChecksumCalculation: "WHEN_REQUIRED",
    });
    return { sdk, client: this.#client };
  }

  async documents(): Promise<Map<string, string>> {
    const { sdk, client } = await this.#s3();
    const out = new Map<string, string>();
    let token: string | undefined;
    do {
      const r = await client.send(
        new sdk.ListObjectsV2Command({
          Bucket: this.url.bucket,
          Prefix: this.url.prefix,
          ...(token ? { ContinuationToken: token } : {}),
        }),
      );
      for (const o of r.Contents ?? []) {
        const rest = (o.Key ?? "").slice(this.url.prefix.length);
        const m = /^([A-Za-z0-9][A-Za-z0-9._-]{0,127})\.json$/.exec(rest);
        if (!m) continue;
        const g = await client.send(
          new sdk.GetObjectCommand({ Bucket: this.url.bucket, Key: o.Key }),
        );
        out.set(m[1]!, (await g.Body?.transformToString("utf-8")) ?? "");
      }
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  async writeDocument(agentId: string, text: string): Promise<void> {
    const { sdk, client } = await this.#s3();
    await client.send(
      new sdk.PutObjectCommand({
        Bucket: this.url.bucket,
        Key: `${this.url.prefix}${agentId}.json`,
        Body: text,
        ContentType: "application/json",
      }),
    );
  }

  async upload(
    key: string,
    file: string,
    onProgress?: (bytes: number, total: number) => void,
  ): Promise<number> {
    const { sdk, client } = await this.#s3();
    const { createReadStream } = await import("node:fs");
    const { Transform } = await import("node:stream");
    // Streamed from the file (an artifact may be GiBs), with its length up front as S3 wants.
    const size = (await Deno.stat(file)).size;
    let sent = 0;
    // Counted on the way through (a "data" listener would start the stream before the SDK reads).
    const body = createReadStream(file).pipe(
      new Transform({
        transform(chunk: Uint8Array, _enc, done) {
          sent += chunk.length;
          onProgress?.(sent, size);
          done(null, chunk);
        },
      }),
    );
    await client.send(
      new sdk.PutObjectCommand({
        Bucket: this.url.bucket,
        Key: `${this.url.prefix}${key}`,
        Body: body,
        ContentLength: size,
      }),
    );
    return size;
  }

  close(): Promise<void> {
    this.#client?.destroy();
    return Promise.resolve();
  }
}

/** Documents written at once by {@linkcode publishCatalog}. */
export const WRITES_IN_FLIGHT = 64;

/** What one publishing pass did. */
export interface PublishResult {
  /** Agents whose document was written. */
  written: string[];
  /** Agents whose document was already current. */
  unchanged: string[];
}

/**
 * Render and write every agent's document; `known` (agent → text last seen
 * in the target) is read from the target when not given, and updated.
 */
export async function publishCatalog(
  target: Target,
  catalog: Catalog,
  platform: { os: string; arch: string },
  known?: Map<string, string>,
): Promise<PublishResult> {
  const have = known ?? await target.documents();
  const agents = new Set([...catalog.agents.keys(), ...have.keys()]);
  const out: PublishResult = { written: [], unchanged: [] };
  const todo: [string, string][] = [];
  for (const id of [...agents].sort()) {
    const text = JSON.stringify(documentFor(catalog, id, platform.os, platform.arch));
    if (have.get(id) === text) out.unchanged.push(id);
    else todo.push([id, text]);
  }
  // Writes go out WRITES_IN_FLIGHT at a time: a fleet-wide change is not 10,000 round trips in a row.
  let next = 0;
  let failed: unknown = null;
  const worker = async () => {
    while (failed === null && next < todo.length) {
      const [id, text] = todo[next++]!;
      try {
        await target.writeDocument(id, text);
        have.set(id, text);
      } catch (e) {
        failed ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(WRITES_IN_FLIGHT, todo.length) }, worker));
  if (failed !== null) throw failed;
  out.written = todo.map(([id]) => id);
  log.info("catalog published", {
    target: target.describe,
    written: out.written.length,
    unchanged: out.unchanged.length,
  });
  return out;
}

/** sha256 of `text`, for noticing a changed catalog. */
export function textDigest(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}
