/**
 * The narrow view a per-add-on {@linkcode Slot} has of the rest of the agent:
 * where files live, how to deliver and run, the clock and timing, and the
 * few calls back into the reconciler. The reconciler implements it; tests
 * give a slot fakes through it.
 *
 * @example
 * ```ts
 * import type { SlotContext } from "./slot_context.ts";
 * function describe(ctx: SlotContext): string {
 *   return `${ctx.layout.addons}, keeping ${ctx.keepVersions} versions`;
 * }
 * ```
 *
 * @module
 */

import type { Launch, Runner, RunnerEvents } from "../supervise/mod.ts";
import type { AgentState } from "../runtime/mod.ts";
import type { LaunchContext } from "./launch.ts";
import type { ResilienceTiming } from "./probation.ts";

/** What a slot needs from the reconciler, and nothing more. */
export interface SlotContext extends LaunchContext {
  /** The agent state; the slot owns `state.addons[id]` of its add-on. */
  readonly state: AgentState;
  readonly resilience: ResilienceTiming;
  /** The longest sidecar backoff: a crash-looping version with nothing to roll back to restarts at it. */
  readonly backoffMaxMs: number;
  /** Versions kept per add-on (garbage collection after a switch). */
  readonly keepVersions: number;
  /** The agent is stopping: start nothing new. */
  readonly stopping: boolean;
  /** A runner for `launch` that reports to `events`; `helperDone` tells whether a helper already ran. */
  createRunner(
    launch: Launch,
    events: RunnerEvents,
    helperDone: (fingerprint: string) => boolean,
  ): Runner;
  /** The `version:sha256` the source itself assigns to `id`, if any. */
  pushedKey(id: string): string | undefined;
  /** Something in the add-on's state changed (persist it, report it). */
  onChange(id: string): void;
  /** The add-on was removed: forget its slot. */
  removed(id: string): void;
}
