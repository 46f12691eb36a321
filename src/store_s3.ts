/**
 * An S3-compatible object store through `@aws-sdk/client-s3` (endpoint,
 * region, path-style addressing, key prefix; credentials from the SDK's
 * default chain). Ranged GETs let an interrupted download resume.
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

/** Reads objects from one bucket of an S3-compatible store. */
export class S3Store implements ObjectStore {
  readonly #client: S3Client;

  /** Connect to the bucket described by `cfg`. */
  constructor(readonly cfg: S3Config) {
    this.#client = new S3Client({
      region: cfg.region,
      forcePathStyle: cfg.force_path_style,
      ...(cfg.endpoint ? { endpoint: cfg.endpoint } : {}),
      maxAttempts: 2,
    });
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
      res = await this.#client.send(
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
      res.Body && (res.Body as unknown as { destroy?: () => void }).destroy?.();
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
        body.destroy?.();
        abort.abort();
      },
    };
  }
}
