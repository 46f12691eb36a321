/**
 * Object stores artifacts are read from: the `ObjectStore` interface and
 * `StoreError`, a factory, the filesystem, S3 and NATS object stores. Stores
 * know nothing of verification: they hand out bytes, delivery checks them.
 *
 * @example Read an object from the configured store
 * ```ts
 * import { openObjectStore } from "./mod.ts";
 * const store = await openObjectStore({ kind: "filesystem", root: "/srv/artifacts" });
 * const obj = await store.open("net-probe/1.4.2/linux-amd64/net-probe", 0);
 * console.log(obj.size);
 * ```
 *
 * @module
 */

export * from "./factory.ts";
export * from "./filesystem.ts";
export * from "./s3.ts";
export * from "./types.ts";
export * from "./nats.ts";
