/**
 * The object store interface the delivery pipeline reads artifacts through,
 * and the factory that picks an implementation from the configuration.
 *
 * @example Read an object from byte 100 on
 * ```ts
 * const store = await openObjectStore(cfg.object_store);
 * const obj = await store.open("net-probe/1.4.2/linux-amd64/net-probe", 100);
 * for await (const chunk of obj.body) console.log(chunk.length);
 * ```
 *
 * @module
 */

/** An open object: its total size and a stream of its bytes from the requested offset. */
export interface OpenedObject {
  /** Size of the whole object in bytes. */
  size: number;
  /** The bytes from the requested offset to the end. */
  body: AsyncIterable<Uint8Array>;
  /** Release the connection or file early (safe to call twice). */
  close(): void;
}

/**
 * Where artifacts are read from.
 *
 * Contract: `open` never returns bytes from outside the store (no key may
 * escape it) and fails with a {@linkcode StoreError} that names the key.
 */
export interface ObjectStore {
  /** Human-readable location of `key`, for messages (`s3://bucket/key`). */
  describe(key: string): string;
  /** Open `key` for reading from byte `offset` (0 for the whole object). */
  open(key: string, offset: number): Promise<OpenedObject>;
}

/** A failure to read from the store (network, missing object, refused key). */
export class StoreError extends Error {
  /** Make a store error; `transient` marks errors a retry may cure. */
  constructor(message: string, readonly transient = true) {
    super(message);
    this.name = "StoreError";
  }
}
