/**
 * What the reconciler asks of delivery, as one interface it can be given
 * (a fake in tests): deliver an assignment, switch `current` to a version,
 * roll `current` back, and the downloads under way.
 *
 * @example
 * ```ts
 * import { storeDeliverer } from "./deliverer.ts";
 * import type { DeliveryContext } from "./delivery.ts";
 * import type { Assignment } from "../protocol/mod.ts";
 * declare const ctx: DeliveryContext;
 * declare const a: Assignment;
 * const d = storeDeliverer(ctx);
 * const got = await d.deliver(a, {});
 * if (got.source !== "host_binary") await d.activate(a.addon_id, a.version);
 * ```
 *
 * @module
 */

import type { Assignment } from "../protocol/mod.ts";
import { activate, rollBack } from "../runtime/mod.ts";
import { deliver, type Delivered, type DeliveryContext } from "./delivery.ts";

/** Progress callbacks of one delivery. */
export type DeliveryHooks = Pick<DeliveryContext, "onPhase" | "onProgress" | "signal">;

/** Delivery as the reconciler sees it. */
export interface Deliverer {
  /** Deliver `a`: reuse its staged version or download, verify and stage it (see {@linkcode deliver}). */
  deliver(a: Assignment, hooks: DeliveryHooks): Promise<Delivered>;
  /** Point `current` at `version`; `changed` is false when it already pointed there. */
  activate(addonId: string, version: string): Promise<{ changed: boolean }>;
  /** Point `current` back at `previous`; the version now current, or null when there was none. */
  rollBack(addonId: string): Promise<string | null>;
  /** Stop every download (shutdown); their partial files stay for a resume. */
  abortAll(): void;
  /** sha256 digests being downloaded now. */
  downloading(): Iterable<string>;
}

/** The real deliverer over a delivery context (store, downloads, trust, runtime root). */
export function storeDeliverer(ctx: DeliveryContext): Deliverer {
  return {
    deliver: (a, hooks) => deliver({ ...ctx, ...hooks }, a),
    activate: (addonId, version) => activate(ctx.layout, addonId, version),
    rollBack: (addonId) => rollBack(ctx.layout, addonId),
    abortAll: () => ctx.downloads.abortAll(),
    downloading: () => ctx.downloads.active(),
  };
}
