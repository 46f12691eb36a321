/**
 * The runtime root on disk (SPEC 6 and 8): its layout, atomic writes, `state.json`, last-good, versions and their links, garbage collection.
 *
 * @module
 */

export * from "./addon_users.ts";
export * from "./fs_atomic.ts";
export * from "./gc.ts";
export * from "./last_good.ts";
export { unsafeDirectory } from "./root_modes.ts";
export * from "./runtime_root.ts";
export * from "./state.ts";
export * from "./verify_staged.ts";
export * from "./versions.ts";
