/**
 * What the agent reports (SPEC 4 and 9): the status document, the loopback
 * endpoint and the reports to the control plane. It reads the runtime root;
 * it never delivers.
 *
 * @example Print the status table of a runtime root
 * ```ts
 * import { buildStatus, formatStatusTable } from "./mod.ts";
 * import { Layout, loadState } from "../runtime/mod.ts";
 * const layout = new Layout("/var/lib/addon-agent");
 * console.log(formatStatusTable(await buildStatus(layout, await loadState(layout))));
 * ```
 *
 * @module
 */

export * from "./endpoint.ts";
export * from "./reporter.ts";
export * from "./status.ts";
