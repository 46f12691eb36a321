/**
 * Delivery of one assignment: store → download (hash while writing) → verify
 * → stage (SPEC 5, 6 and 15: one executable, or a bundle unpacked safely),
 * behind the {@linkcode Deliverer} the reconciler is given. Nothing unverified
 * is ever staged.
 *
 * @example Deliver and activate one assignment
 * ```ts
 * import { deliveryContext, storeDeliverer } from "./mod.ts";
 * import type { AgentConfig } from "../config/mod.ts";
 * import type { Assignment, Platform } from "../protocol/mod.ts";
 * import type { Layout } from "../runtime/mod.ts";
 * declare const cfg: AgentConfig, layout: Layout, platform: Platform, a: Assignment;
 * const deliverer = storeDeliverer(await deliveryContext(cfg, layout, platform));
 * await deliverer.deliver(a, {}); // throws DeliveryError (its kind says why)
 * await deliverer.activate(a.addon_id, a.version);
 * ```
 *
 * @module
 */

export * from "./bundle_index.ts";
export * from "./deliverer.ts";
export * from "./delivery.ts";
export * from "./download.ts";
export * from "./unpack.ts";
