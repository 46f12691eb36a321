/**
 * Delivery of one assignment: store → download (hash while writing) → verify → stage (SPEC 5 and 6).
 *
 * @module
 */

export * from "./delivery.ts";
export * from "./download.ts";
