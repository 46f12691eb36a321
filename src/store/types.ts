/**
 * The object store interface the delivery pipeline reads artifacts through,
 * and the error every store throws; `factory.ts` picks an implementation.
 *
 * @example Read an object from byte 100 on
 * ```ts
 * import { openObjectStore } from "./factory.ts";
 * const store = await openObjectStore({ kind: "filesystem", root: "/srv/addon-store" });
 * const obj = await store.open("net-probe/1.4.2/linux-amd64/net-probe", 100);
 * for await (const chunk of obj.body) console.log(chunk.length);
 * ```
 *
 * @module
 */

import { KindedError } from "../common/mod.ts";

/** An open object: its total size and a stream of its bytes from the requested offset. */
export interface OpenedObject {
  /** Size of the whole object in bytes. */
  size: number;
  /** The bytes from the requested offset to the end. */
  body: AsyncIterable<Uint8Array>;
  /** Release the connection or file early (safe to call twice). */
  close(): void;
}

/** What the caller knows about the object it opens. */
export interface OpenOptions {
  /**
   * The sha256 (hex) the bytes must have: a store that keeps its own digest
   * (NATS) refuses the object before reading it when the two disagree.
   */
  sha256?: string;
  /** Aborts the request, and later a read of the body at once (the agent is stopping). */
  signal?: AbortSignal;
}

/**
 * Where artifacts are read from.
 *
 * Contract: `open` never returns bytes from outside the store (no key may
 * escape it) and fails with a {@linkcode StoreError} that names the key.
 * Reading the body may fail with any error (a connection reset mid-stream).
 */
export interface ObjectStore {
  /** Human-readable location of `key`, for messages (`s3://bucket/key`). */
  describe(key: string): string;
  /**
   * Open `key` for reading from byte `offset` (0 for the whole object).
   *
   * `opts.signal` aborts a request still waiting for the store, and interrupts
   * a read of the body that waits for bytes (the agent is stopping).
   *
   * @throws {StoreError} `not_found` when there is no such object, `refused` when the key
   * or the object may not be read, `unavailable` when the store could not answer.
   */
  open(key: string, offset: number, opts?: OpenOptions): Promise<OpenedObject>;
  /**
   * The size of `key` without a byte of its body (an S3 HEAD), for `doctor`. Absent
   * where {@linkcode ObjectStore.open} itself reads no body (a file, a NATS object's info).
   *
   * @throws {StoreError} as `open` does.
   */
  stat?(key: string): Promise<{ size: number }>;
}

/**
 * Why a store could not give an object:
 * - `unavailable`: the store, the network or the disk failed; a later attempt may succeed.
 * - `not_found`: no object under that key (it may still be published).
 * - `refused`: the key or the object may not be read (it leaves the store, it is not a
 *   regular file, access is denied); only a change by the publisher or operator helps.
 */
export type StoreErrorKind = "unavailable" | "not_found" | "refused";

/** The kind of a {@linkcode StoreError} and the error that caused it. */
export interface StoreErrorOptions {
  kind: StoreErrorKind;
  cause?: unknown;
}

/**
 * A failure to read from the store, naming the object.
 *
 * @example Tell a missing object from a store that is down
 * ```ts
 * const e = new StoreError("object /srv/store/a/1/a does not exist", { kind: "not_found" });
 * if (e.kind === "not_found") console.log("not published yet:", e.message);
 * ```
 */
export class StoreError extends KindedError<StoreErrorKind> {
  override readonly name = "StoreError";
}
