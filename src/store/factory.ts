/**
 * The factory that picks an object store implementation from the
 * configuration; each implementation (and the S3 SDK) is imported only when
 * it is used.
 *
 * @example Open the configured store
 * ```ts
 * import { openObjectStore } from "./factory.ts";
 * const store = await openObjectStore({ kind: "filesystem", root: "/srv/artifacts" });
 * ```
 *
 * @module
 */

import type { AgentConfig, NatsConfig, ObjectStoreConfig } from "../config/mod.ts";
import type { IoTimeouts } from "../common/mod.ts";
import type { ObjectStore } from "./types.ts";

/** What a store needs beyond its own section: the shared NATS connection, the timeouts. */
export interface StoreContext {
  /** The top-level `nats` section (required for kind `nats`). */
  nats?: NatsConfig;
  /** Fail a read that delivers nothing for this long (`timeouts.idle_s`). */
  idleMs?: number;
  /** `timeouts` for every request of a network store (SPEC 12). */
  timeouts?: IoTimeouts;
}

/** The {@linkcode StoreContext} of a whole configuration: its `nats` section and `timeouts`. */
export function storeContextOf(cfg: AgentConfig): StoreContext {
  return {
    ...(cfg.nats ? { nats: cfg.nats } : {}),
    idleMs: cfg.timeouts.idle_s * 1000,
    timeouts: cfg.timeouts,
  };
}

/**
 * Build the configured object store (the S3 SDK and the NATS client are
 * imported only when used); a network store applies the timeouts to every
 * request (SPEC 12).
 */
export async function openObjectStore(
  cfg: ObjectStoreConfig,
  ctx: StoreContext = {},
): Promise<ObjectStore> {
  if (cfg.kind === "filesystem") {
    const { FilesystemStore } = await import("./filesystem.ts");
    return new FilesystemStore(cfg.root);
  }
  if (cfg.kind === "nats") {
    if (!ctx.nats) throw new Error("object_store kind nats needs the nats section");
    const { NatsStore } = await import("./nats.ts");
    const { acquireNats } = await import("../common/mod.ts");
    return new NatsStore(
      cfg.bucket,
      acquireNats(ctx.nats),
      ctx.idleMs,
      ctx.timeouts ? ctx.timeouts.connect_s * 1000 : undefined,
    );
  }
  const { S3Store } = await import("./s3.ts");
  return new S3Store(cfg, ctx.timeouts);
}
