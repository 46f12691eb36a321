/**
 * Object stores artifacts are read from: the `ObjectStore` interface and `StoreError`, a factory, the filesystem and S3 stores. Stores know nothing of verification.
 *
 * @module
 */

export * from "./factory.ts";
export * from "./filesystem.ts";
export * from "./s3.ts";
export * from "./types.ts";
export * from "./nats.ts";
