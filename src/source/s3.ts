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
import {
  GetObjectCommand,
  type GetObjectCommandOutput,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import {
  DEFAULT_IO_TIMEOUTS,
  describeS3Error,
  type IoTimeouts,
  s3Status,
  StallError,
} from "../common/mod.ts";
import type { S3SourceConfig } from "../config/mod.ts";
import { type Json, parseJson } from "../protocol/mod.ts";
import { type PollResult, type Source, SourceError, type StatusReport } from "./types.ts";

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

/** Polls one object with `If-None-Match`; puts status reports to another. */
export class S3Source implements Source {
  readonly #client: S3Client;
  #etag: string | null = null;

  /**
   * A source for the object `cfg.key` of `cfg.bucket`; documents over
   * `maxBytes` are refused; every request gets `timeouts` (SPEC 12: the
   * response within `connect_s`, a socket idle for `idle_s` fails it).
   */
  constructor(
    readonly cfg: S3SourceConfig,
    readonly maxBytes: number = MAX_DOCUMENT_BYTES,
    readonly timeouts: IoTimeouts = DEFAULT_IO_TIMEOUTS,
  ) {
    this.#client = new S3Client({
      region: cfg.region,
      forcePathStyle: cfg.force_path_style,
      ...(cfg.endpoint ? { endpoint: cfg.endpoint } : {}),
      maxAttempts: 2,
      requestHandler: {
        connectionTimeout: timeouts.connect_s * 1000,
        socketTimeout: timeouts.idle_s * 1000,
      },
    });
  }

  /**
   * Send `command` with the response due within `connect_s`; `signal` aborts
   * it at once, also while its body is read.
   */
  async #send<T>(
    send: (abortSignal: AbortSignal) => Promise<T>,
    signal: AbortSignal | undefined,
  ): Promise<T> {
    const ctl = new AbortController();
    const onAbort = () => ctl.abort(signal!.reason);
    if (signal?.aborted) ctl.abort(signal.reason);
    else signal?.addEventListener("abort", onAbort, { once: true });
    let stalled: StallError | null = null;
    const timer = setTimeout(() => {
      stalled = new StallError(
        `${this.describe}: no response within ${this.timeouts.connect_s} s (timeouts.connect_s)`,
      );
      ctl.abort(stalled);
    }, this.timeouts.connect_s * 1000);
    try {
      return await send(ctl.signal);
    } catch (e) {
      if (stalled) throw stalled;
      throw e;
    } finally {
      clearTimeout(timer);
    }
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
  async poll(signal?: AbortSignal): Promise<PollResult> {
    let res: GetObjectCommandOutput;
    try {
      res = await this.#send(
        (abortSignal) =>
          this.#client.send(
            new GetObjectCommand({
              Bucket: this.cfg.bucket,
              Key: this.cfg.key,
              ...(this.#etag !== null ? { IfNoneMatch: this.#etag } : {}),
            }),
            { abortSignal },
          ),
        signal,
      );
    } catch (e) {
      if (e instanceof StallError) {
        throw new SourceError(e.message, { kind: "unavailable", cause: e });
      }
      const status = s3Status(e);
      if (status === 304) return { kind: "not_modified" };
      throw new SourceError(
        `cannot get ${this.describe}: ${describeS3Error(e)}`,
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
  async report(body: StatusReport, signal?: AbortSignal): Promise<void> {
    try {
      await this.#send(
        (abortSignal) =>
          this.#client.send(
            new PutObjectCommand({
              Bucket: this.cfg.bucket,
              Key: this.cfg.status_key,
              Body: JSON.stringify(body),
              ContentType: "application/json",
            }),
            { abortSignal },
          ),
        signal,
      );
    } catch (e) {
      if (e instanceof StallError) {
        throw new SourceError(e.message, { kind: "unavailable", cause: e });
      }
      throw new SourceError(
        `status report to s3://${this.cfg.bucket}/${this.cfg.status_key} failed: ${
          describeS3Error(e)
        }`,
        { kind: "unavailable", cause: e },
      );
    }
  }

  /** Release the client's sockets. */
  close(): void {
    this.#client.destroy();
  }
}
