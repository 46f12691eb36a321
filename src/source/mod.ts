/**
 * Where assignments come from (SPEC 4 and 7): the control-plane and file sources and the local override.
 *
 * @module
 */

export * from "./desired_state.ts";
export * from "./override.ts";
export * from "./source.ts";
export * from "./types.ts";
export * from "./nats.ts";
