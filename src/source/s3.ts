/**
 * `source` kind `s3` (SPEC 14): the document is one object of an
 * S3-compatible bucket (`assignments/{agent_id}.json` by default), fetched
 * every `poll_interval_s` with `If-None-Match` so an unchanged document
 * costs a 304 and no body; status reports are put to `status_key`.
 * Credentials come from the AWS default chain, as for the S3 store.
 *
 * @example Poll once
 * ```ts
 * import { S3Source } from "./s3.ts";
 * const source = new S3Source({
 *   kind: "s3", bucket: "fleet", key: "assignments/edge-01.json",
 *   status_key: "status/edge-01.json", poll_interval_s: 30,
 *   region: "us-east-1", force_path_style: true, endpoint: "http://127.0.0.1:4568",
 * });
 * const r = await source.poll();
 * source.close();
 * ```
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { GetObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import type { S3SourceConfig } from "../config/mod.ts";
import { type Json, parseJson } from "../protocol/mod.ts";
import { type PollResult, type Source, SourceError, type StatusReport } from "./source.ts";

const REQUEST_TIMEOUT_MS = 30_000;
/** Documents larger than this are refused without reading further (SPEC 12's default). */
export const MAX_DOCUMENT_BYTES = 8 << 20;

/** The body as UTF-8 text, refusing it once it passes `max` bytes. */
async function _readCapped(
  body: AsyncIterable<Uint8Array> | undefined,
  what: string,
  max: number,
): Promise<string> {
  if (!body) return "";
  const parts: Uint8Array[] = [];
  let n = 0;
  for await (const chunk of body) {
    n += chunk.length;
    if (n > max) {
      (body as { destroy?: () => void }).destroy?.();
      throw new SourceError(
        `${what} is larger than ${max} bytes (limits.max_document_bytes); refused without reading further`,
        { kind: "invalid" },
      );
    }
    parts.push(chunk);
  }
  return new TextDecoder().decode(Buffer.concat(parts));
}

interface _SdkError {
  name?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
}

/** Polls one object with `If-None-Match`; puts status reports to another. */
export class S3Source implements Source {
  readonly #client: S3Client;
  #etag: string | null = null;

  /** A source for the object `cfg.key` of `cfg.bucket`; documents over `maxBytes` are refused. */
  constructor(readonly cfg: S3SourceConfig, readonly maxBytes: number = MAX_DOCUMENT_BYTES) {
    this.#client = new S3Client({
      region: cfg.region,
      forcePathStyle: cfg.force_path_style,
      ...(cfg.endpoint ? { endpoint: cfg.endpoint } : {}),
      maxAttempts: 2,
    });
  }

  /** `s3://bucket/key`. */
  get describe(): string {
    return `s3://${this.cfg.bucket}/${this.cfg.key}`;
  }

  /** Seconds between polls. */
  get intervalS(): number {
    return this.cfg.poll_interval_s;
  }

  /** GET the document unless its ETag is unchanged (then `not_modified`). */
  async poll(): Promise<PollResult> {
    let res;
    try {
      res = await this.#client.send(
        new GetObjectCommand({
          Bucket: this.cfg.bucket,
          Key: this.cfg.key,
          ...(this.#etag !== null ? { IfNoneMatch: this.#etag } : {}),
        }),
        { abortSignal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) },
      );
    } catch (e) {
      const err = e as _SdkError;
      const status = err.$metadata?.httpStatusCode;
      if (status === 304) return { kind: "not_modified" };
      throw new SourceError(
        `cannot get ${this.describe}: ${err.name ?? "error"}${status ? ` (HTTP ${status})` : ""}${
          err.message && err.message !== err.name ? `: ${err.message}` : ""
        }`,
        { kind: status !== undefined && status < 500 ? "refused" : "unavailable", cause: e },
      );
    }
    let text: string;
    try {
      text = await _readCapped(
        res.Body as AsyncIterable<Uint8Array> | undefined,
        this.describe,
        this.maxBytes,
      );
    } catch (e) {
      if (e instanceof SourceError) throw e;
      throw new SourceError(`cannot read ${this.describe}: ${(e as Error).message}`, {
        kind: "unavailable",
        cause: e,
      });
    }
    let json: Json;
    try {
      json = parseJson(text, this.describe);
    } catch (e) {
      throw new SourceError((e as Error).message, { kind: "invalid", cause: e });
    }
    this.#etag = res.ETag ?? null;
    return this.#etag !== null
      ? { kind: "document", json, etag: this.#etag }
      : { kind: "document", json };
  }

  /** PUT the report to `status_key`. */
  async report(body: StatusReport): Promise<void> {
    try {
      await this.#client.send(
        new PutObjectCommand({
          Bucket: this.cfg.bucket,
          Key: this.cfg.status_key,
          Body: JSON.stringify(body),
          ContentType: "application/json",
        }),
        { abortSignal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) },
      );
    } catch (e) {
      const err = e as _SdkError;
      throw new SourceError(
        `status report to s3://${this.cfg.bucket}/${this.cfg.status_key} failed: ${
          err.name ?? "error"
        }${err.message && err.message !== err.name ? `: ${err.message}` : ""}`,
        { kind: "unavailable", cause: e },
      );
    }
  }

  /** Release the client's sockets. */
  close(): void {
    this.#client.destroy();
  }
}
