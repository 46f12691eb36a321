/**
 * Delivery of one assignment: store → download (hash while writing) → verify → stage (SPEC 5, 6 and 15: one executable, or a bundle unpacked safely).
 *
 * @module
 */

export * from "./bundle_index.ts";
export * from "./deliverer.ts";
export * from "./delivery.ts";
export * from "./download.ts";
export * from "./unpack.ts";
