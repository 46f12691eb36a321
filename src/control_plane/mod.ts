/**
 * The reference control plane (SPEC 4 and 14): the catalog, the HTTP server,
 * status reports, the publisher to NATS KV or S3 and the per-agent NATS
 * permissions. Only the `control-plane`, `publish`, `nats-permissions` and
 * `dev` commands use it; the agent never does.
 *
 * @example The document one agent gets from a catalog
 * ```ts
 * import { documentFor, parseCatalog } from "./mod.ts";
 * const catalog = parseCatalog(await Deno.readTextFile("catalog.json"), "catalog.json");
 * const doc = documentFor(catalog, "edge-01", "linux", "amd64");
 * console.log(doc.config_version, doc.addons.length);
 * ```
 *
 * @module
 */

export * from "./catalog.ts";
export * from "./server.ts";
export * from "./reports.ts";
export * from "./status_report.ts";
export * from "./nats_permissions.ts";
export * from "./publish.ts";
