/**
 * What the agent reports (SPEC 4 and 9): the status document, the loopback endpoint and the reports to the control plane.
 *
 * @module
 */

export * from "./endpoint.ts";
export * from "./reporter.ts";
export * from "./status.ts";
