/**
 * The reference control plane (SPEC 4 and 14): the catalog, the HTTP server, the publisher to NATS KV or S3 and the per-agent NATS permissions; only the `control-plane`, `publish`, `nats-permissions` and `dev` commands use it.
 *
 * @module
 */

export * from "./catalog.ts";
export * from "./server.ts";
export * from "./reports.ts";
export * from "./status_report.ts";
export * from "./nats_permissions.ts";
export * from "./publish.ts";
