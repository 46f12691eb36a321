/**
 * `object_store` kind `nats` (SPEC 14): artifacts in a JetStream object
 * store (stream `OBJ_<bucket>`), read over the agent's shared NATS
 * connection.
 *
 * Not through the client's `os.get()`, which pushes every chunk into an
 * unbounded stream (over 1 GB of memory for a 1 GiB object read slowly)
 * and never ends once the server is gone. Instead:
 *
 * - the object's metadata (`$O.<bucket>.M.<base64url(key)>`) is read with a
 *   direct get; a deleted object or a link is refused;
 * - its digest (`SHA-256=<base64url>`) must equal the `artifact_sha256`
 *   the caller expects, before any chunk is read (the delivery then checks
 *   the bytes' own sha256 and the signature as for every store);
 * - chunks (`$O.<bucket>.C.<nuid>`) are read by direct gets too, at most
 *   {@linkcode MAX_CHUNKS_IN_FLIGHT} at once, so memory stays bounded
 *   however slow the disk, and each answer must name the chunk subject and
 *   the sequence asked for. No consumer: an agent needs no right to create
 *   one (a consumer's `deliver_subject` would let any agent publish stored
 *   messages on any subject, and durable ones would pile up on the server),
 *   and the server keeps no state per reader;
 * - a read from `offset` starts at the chunk that holds it (chunks are
 *   `max_chunk_size` bytes, stored one after another), so an interrupted
 *   download resumes where it stopped;
 * - when no chunk arrives for `idleMs` (`timeouts.idle_s`, 60 s by
 *   default) the read fails as transient, keeping the partial for a resume.
 *
 * @example Read an object
 * ```ts
 * import { NatsStore } from "./nats.ts";
 * import { acquireNats } from "../common/mod.ts";
 * const nats = acquireNats({ servers: ["nats://127.0.0.1:4222"], inbox_prefix: "_INBOX_edge-01" });
 * const store = new NatsStore("addon-artifacts", nats);
 * const obj = await store.open("net-probe/1.4.2/linux-amd64/net-probe", 0);
 * for await (const chunk of obj.body) console.log(chunk.length);
 * ```
 *
 * @module
 */

import type { NatsHandle } from "../common/mod.ts";
import { type ObjectStore, type OpenedObject, type OpenOptions, StoreError } from "./types.ts";
import type { Msg, NatsConnection } from "@nats-io/nats-core";

/** Chunks asked for at once (128 KiB each by default): the memory bound of one read. */
export const MAX_CHUNKS_IN_FLIGHT = 32;
/** Default stall timeout when `timeouts.idle_s` is not configured. */
export const DEFAULT_IDLE_MS = 60_000;
/** Default request timeout when `timeouts.connect_s` is not given. */
export const DEFAULT_REQUEST_MS = 10_000;

/** The metadata an object store keeps per object (the fields the reader uses). */
export interface NatsObjectInfo {
  name: string;
  size: number;
  chunks: number;
  nuid: string;
  digest: string;
  deleted?: boolean;
  options?: { max_chunk_size?: number; link?: unknown };
}

/** `name` as the object store encodes it in subjects: base64url with padding. */
export function encodeObjectName(name: string): string {
  const bytes = new TextEncoder().encode(name);
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_");
}

/** The object store's digest text for a lowercase hex sha256: `SHA-256=` + base64url with padding. */
export function objectDigest(sha256Hex: string): string {
  const bytes = sha256Hex.match(/../g)!.map((h) => parseInt(h, 16));
  return "SHA-256=" +
    btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_");
}

/** Reads objects of one JetStream object store bucket. */
export class NatsStore implements ObjectStore {
  readonly #stream: string;

  /** A store on `bucket`, over `nats` (stalls fail after `idleMs`, requests after `requestMs`). */
  constructor(
    readonly bucket: string,
    readonly nats: NatsHandle,
    readonly idleMs: number = DEFAULT_IDLE_MS,
    readonly requestMs: number = DEFAULT_REQUEST_MS,
  ) {
    this.#stream = `OBJ_${bucket}`;
  }

  /** `nats://<bucket>/<key>`. */
  describe(key: string): string {
    return `nats object ${this.bucket}/${key}`;
  }

  async #connection(key: string): Promise<NatsConnection> {
    try {
      return await this.nats.connection(this.requestMs);
    } catch (e) {
      throw new StoreError(`cannot get ${this.describe(key)}: ${(e as Error).message}`, {
        kind: "unavailable",
        cause: e,
      });
    }
  }

  /**
   * A direct get of `key`'s `subject` (`what` names the part, for messages), within
   * `timeoutMs`; null when there is no such message.
   *
   * @throws {StoreError} `unavailable` when no answer came or the server failed, `refused`
   * when it answered 403.
   */
  async #get(
    nc: NatsConnection,
    key: string,
    subject: string,
    body?: unknown,
    { timeoutMs = this.requestMs, what = "" }: { timeoutMs?: number; what?: string } = {},
  ): Promise<Msg | null> {
    let m: Msg;
    try {
      m = await nc.request(subject, body === undefined ? undefined : JSON.stringify(body), {
        timeout: timeoutMs,
      });
    } catch (e) {
      throw new StoreError(`cannot get ${what}${this.describe(key)}: ${(e as Error).message}`, {
        kind: "unavailable",
        cause: e,
      });
    }
    const code = m.headers?.code ?? 0;
    if (code === 404) return null;
    if (code !== 0) {
      throw new StoreError(
        `cannot get ${what}${this.describe(key)}: the server answered ${code} ${
          m.headers?.description ?? ""
        }`,
        { kind: code === 403 ? "refused" : "unavailable" },
      );
    }
    return m;
  }

  /** The object's metadata; a missing or deleted object is a (permanent) error. */
  async info(key: string): Promise<NatsObjectInfo> {
    const nc = await this.#connection(key);
    const meta = `$O.${this.bucket}.M.${encodeObjectName(key)}`;
    const m = await this.#get(nc, key, `$JS.API.DIRECT.GET.${this.#stream}.${meta}`);
    if (m === null) {
      throw new StoreError(`${this.describe(key)} does not exist`, { kind: "not_found" });
    }
    let info: NatsObjectInfo;
    try {
      info = m.json<NatsObjectInfo>();
    } catch {
      throw new StoreError(`${this.describe(key)}: its metadata is not JSON`, { kind: "refused" });
    }
    if (info.deleted) {
      throw new StoreError(`${this.describe(key)} was deleted`, { kind: "not_found" });
    }
    if (info.options?.link) {
      throw new StoreError(`${this.describe(key)} is a link; links are not followed`, {
        kind: "refused",
      });
    }
    if (
      !Number.isSafeInteger(info.size) || info.size < 0 || !Number.isSafeInteger(info.chunks) ||
      typeof info.nuid !== "string" || !/^[A-Za-z0-9]+$/.test(info.nuid)
    ) {
      throw new StoreError(`${this.describe(key)}: its metadata is malformed`, { kind: "refused" });
    }
    return info;
  }

  /** The stream sequence of the first and last chunk, or null for an object with none. */
  async #chunkRange(
    nc: NatsConnection,
    key: string,
    chunks: string,
  ): Promise<{ first: number; last: number } | null> {
    const first = await this.#get(nc, key, `$JS.API.DIRECT.GET.${this.#stream}`, {
      seq: 1,
      next_by_subj: chunks,
    });
    const last = await this.#get(nc, key, `$JS.API.DIRECT.GET.${this.#stream}.${chunks}`);
    if (first === null || last === null) return null;
    return {
      first: Number(first.headers?.get("Nats-Sequence")),
      last: Number(last.headers?.get("Nats-Sequence")),
    };
  }

  /**
   * Chunk `seq` (the first chunk of the object's subject at or after it) by a
   * direct get, waiting at most `idleMs`; null past the last chunk.
   */
  async #chunkAt(
    nc: NatsConnection,
    key: string,
    chunkSubject: string,
    seq: number,
  ): Promise<{ seq: number; data: Uint8Array } | null> {
    const m = await this.#get(
      nc,
      key,
      `$JS.API.DIRECT.GET.${this.#stream}`,
      { seq, next_by_subj: chunkSubject },
      { timeoutMs: this.idleMs, what: "a chunk of " },
    );
    if (m === null) return null;
    const got = Number(m.headers?.get("Nats-Sequence"));
    if (
      m.headers?.get("Nats-Subject") !== chunkSubject || !Number.isSafeInteger(got) || got < seq
    ) {
      throw new StoreError(
        `${
          this.describe(key)
        }: the server answered a chunk request for ${chunkSubject} #${seq} with ${
          JSON.stringify(m.headers?.get("Nats-Subject"))
        } #${m.headers?.get("Nats-Sequence")}`,
        { kind: "unavailable" },
      );
    }
    return { seq: got, data: m.data };
  }

  /** Open `key` from byte `offset`; with `opts.sha256`, the object's digest must match it. */
  async open(key: string, offset: number, opts: OpenOptions = {}): Promise<OpenedObject> {
    const info = await this.info(key);
    if (opts.sha256 !== undefined) {
      const want = objectDigest(opts.sha256.toLowerCase());
      if (info.digest !== want) {
        throw new StoreError(
          `${
            this.describe(key)
          }: the object's digest ${info.digest} does not match artifact_sha256 ${opts.sha256} (${want}); refused before reading it`,
          { kind: "refused" },
        );
      }
    }
    if (offset >= info.size || info.size === 0) {
      return { size: info.size, body: (async function* () {})(), close: () => {} };
    }
    // Nothing is asked of the server until the body is first read: opening (as `doctor` does,
    // to learn the size) transfers no chunk.
    // Closing (or `opts.signal`) ends a read waiting on a silent server at once, not after idle_s.
    let closed = false;
    let cancel: (() => void) | null = null;
    const close = () => {
      closed = true;
      cancel?.();
    };
    if (opts.signal?.aborted) close();
    else opts.signal?.addEventListener("abort", close, { once: true });
    const closedError = () =>
      new StoreError(`${this.describe(key)}: the read was closed`, { kind: "unavailable" });
    const unlessClosed = <T>(p: Promise<T>): Promise<T> => {
      p.catch(() => {});
      if (closed) return Promise.reject(closedError());
      return new Promise<T>((resolve, reject) => {
        const mine = () => reject(closedError());
        cancel = mine;
        p.then(resolve, reject).finally(() => {
          if (cancel === mine) cancel = null;
        });
      });
    };
    const chunkSubject = `$O.${this.bucket}.C.${info.nuid}`;
    const chunkSize = info.options?.max_chunk_size ?? 128 * 1024;
    const size = info.size;
    const describe = this.describe(key);
    const idleS = Math.round(this.idleMs / 1000);
    const connection = () => this.#connection(key);
    const chunkRange = (nc: NatsConnection) => this.#chunkRange(nc, key, chunkSubject);
    const chunkAt = (nc: NatsConnection, seq: number) => this.#chunkAt(nc, key, chunkSubject, seq);
    async function* body(): AsyncGenerator<Uint8Array> {
      if (closed) return;
      const nc = await unlessClosed(connection());
      const range = await unlessClosed(chunkRange(nc));
      if (range === null) {
        throw new StoreError(`${describe}: its chunks are missing`, { kind: "unavailable" });
      }
      // Chunks of one put are stored one after another: then chunk k is at first + k, and
      // up to MAX_CHUNKS_IN_FLIGHT of them are asked for at once. Otherwise (two puts that
      // interleaved) one after another from the first.
      const contiguous = range.last - range.first + 1 === info.chunks && chunkSize > 0;
      const skipChunks = contiguous ? Math.floor(offset / chunkSize) : 0;
      let skipBytes = offset - skipChunks * chunkSize;
      let done = offset;
      const stalled = (e: unknown) =>
        e instanceof StoreError && /timeout/i.test(e.message)
          ? new StoreError(
            `${describe}: no data for ${idleS} s after ${done} of ${size} bytes; the next attempt resumes`,
            { kind: "unavailable", cause: e },
          )
          : e;
      const inFlight: Promise<{ seq: number; data: Uint8Array } | null>[] = [];
      let next = range.first + skipChunks;
      let expect = next;
      const ask = () => {
        const p = chunkAt(nc, next++);
        p.catch(() => {});
        inFlight.push(p);
      };
      try {
        if (contiguous) {
          while (inFlight.length < MAX_CHUNKS_IN_FLIGHT && next <= range.last) ask();
        } else {
          ask();
        }
        while (done < size && !closed) {
          const p = inFlight.shift();
          if (p === undefined) {
            throw new StoreError(
              `${describe}: the chunks ended after ${done} of ${size} bytes`,
              { kind: "unavailable" },
            );
          }
          const chunk = await unlessClosed(p.catch((e) => {
            throw stalled(e);
          }));
          if (chunk === null || chunk.seq > range.last) {
            throw new StoreError(
              `${describe}: the chunks ended after ${done} of ${size} bytes`,
              { kind: "unavailable" },
            );
          }
          if (contiguous) {
            if (chunk.seq !== expect++) {
              throw new StoreError(`${describe}: chunk #${chunk.seq} came out of order`, {
                kind: "unavailable",
              });
            }
            if (next <= range.last) ask();
          } else {
            next = chunk.seq + 1;
            if (next <= range.last) ask();
          }
          let data = chunk.data;
          if (skipBytes > 0) {
            const cut = Math.min(skipBytes, data.length);
            skipBytes -= cut;
            data = data.subarray(cut);
          }
          if (data.length === 0) continue;
          if (done + data.length > size) data = data.subarray(0, size - done);
          done += data.length;
          yield data;
        }
      } finally {
        close();
        opts.signal?.removeEventListener("abort", close);
      }
    }
    return { size, body: body(), close };
  }
}
