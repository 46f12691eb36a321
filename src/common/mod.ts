/**
 * Cross-cutting helpers with no knowledge of the pipeline: a clock, JSON-line
 * logging, a wakeable sleep, file hashing, bounded reads and the no-follow
 * open, trusted files, request timeouts, suggestions, the agent's version and
 * the one shared NATS connection. Nothing here imports another room.
 *
 * @example Hash a file and log about one add-on
 * ```ts
 * import { log, sha256File } from "./mod.ts";
 * const sha256 = await sha256File("/var/lib/addon-agent/addons/net-probe/current/net-probe");
 * log.info("hashed", { addon_id: "net-probe", sha256 });
 * ```
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
export * from "./s3_error.ts";
export * from "./kinded_error.ts";
