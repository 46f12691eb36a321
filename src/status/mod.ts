/**
 * What the agent reports (SPEC 4 and 9): the status document and the loopback endpoint.
 *
 * @module
 */

export * from "./endpoint.ts";
export * from "./status.ts";
