/**
 * The reference control plane (SPEC 4): the catalog and the HTTP server; only the `control-plane` and `dev` commands use it.
 *
 * @module
 */

export * from "./catalog.ts";
export * from "./server.ts";
