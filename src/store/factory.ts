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

import type { ObjectStoreConfig } from "../config/mod.ts";
import type { ObjectStore } from "./types.ts";

/** Build the configured object store (the S3 SDK is imported only when used). */
export async function openObjectStore(cfg: ObjectStoreConfig): Promise<ObjectStore> {
  if (cfg.kind === "filesystem") {
    const { FilesystemStore } = await import("./filesystem.ts");
    return new FilesystemStore(cfg.root);
  }
  const { S3Store } = await import("./s3.ts");
  return new S3Store(cfg);
}
