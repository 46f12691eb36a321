/**
 * The runtime root on disk (SPEC 6 and 8): its layout and start-up checks,
 * atomic writes, `state.json`, last-good, versions and their links, the
 * staged-bytes re-check, add-on uids and garbage collection. It never
 * fetches: delivery stages into it.
 *
 * @example Open the runtime root and read the agent state
 * ```ts
 * import { loadState, openRuntimeRoot } from "./mod.ts";
 * const root = await openRuntimeRoot("/var/lib/addon-agent"); // locked: one agent per root
 * const state = await loadState(root);
 * console.log(Object.keys(state.addons), root.versionsDir("net-probe"));
 * ```
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
