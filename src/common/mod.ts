/**
 * Cross-cutting helpers with no knowledge of the pipeline: a clock, JSON-line logging, a wakeable sleep, file hashing, bounded reads, trusted files, request timeouts and the agent's version.
 *
 * @module
 */

export * from "./bounded_read.ts";
export * from "./clock.ts";
export * from "./log.ts";
export * from "./sha256_file.ts";
export * from "./trusted_file.ts";
export * from "./version.ts";
export * from "./wake_sleep.ts";
export * from "./suggest.ts";
export * from "./nats_connection.ts";
export * from "./io_timeouts.ts";
