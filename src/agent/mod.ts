/**
 * The agent itself: the daemon, one-shot sync and the reconciler that drives delivery and supervision per add-on.
 *
 * @module
 */

export * from "./daemon.ts";
export * from "./launch.ts";
export * from "./probation.ts";
export * from "./reconciler.ts";
export * from "./sync.ts";
