/**
 * Host names and addresses: which ones are loopback (SPEC 2, 9 and 12).
 *
 * @example
 * ```ts
 * import { isLoopbackHost } from "./hosts.ts";
 * isLoopbackHost("127.0.0.1"); // true
 * isLoopbackHost("0.0.0.0"); // false: every interface
 * ```
 *
 * @module
 */

/** Whether `host` is a loopback host name or address (`127.0.0.0/8`, `::1`, `localhost`). */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "");
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}
