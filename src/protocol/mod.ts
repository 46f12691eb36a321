/**
 * The wire formats every other room speaks: JSON decoding with field paths, the assignments document, platforms, signatures and calendar schedules.
 *
 * @module
 */

export * from "./assignment.ts";
export * from "./calendar.ts";
export * from "./decode.ts";
export * from "./hosts.ts";
export * from "./json_syntax.ts";
export * from "./limits.ts";
export * from "./platform.ts";
export * from "./signature.ts";
