/**
 * What a {@linkcode Slot}'s runner reports, turned into the add-on's state:
 * pid and process group, the handshake, exits (restarts, or the rollback a
 * crash loop on probation earns), a helper's completion and last-good
 * writes. Events of a runner that no longer runs (a newer start replaced it)
 * change nothing.
 *
 * @example Give a runner the events of what a slot starts
 * ```ts
 * import { type RunningAddon, runnerEvents, type SlotEventsHost } from "./slot_events.ts";
 * import type { Launch } from "../supervise/mod.ts";
 * declare const host: SlotEventsHost;
 * declare const running: RunningAddon;
 * declare const launch: Launch;
 * running.runner = host.ctx.createRunner(launch, runnerEvents(host, running, launch), () => false);
 * ```
 *
 * @module
 */

import type { Assignment } from "../protocol/mod.ts";
import type { Launch, Runner, RunnerEvents } from "../supervise/mod.ts";
import {
  type AddonState,
  type AddonStateName,
  clearProcess,
  writeLastGood,
} from "../runtime/mod.ts";
import { log } from "../common/mod.ts";
import type { Probation } from "./probation.ts";
import type { SlotContext } from "./slot_context.ts";

/** What a slot started, and how. */
export interface RunningAddon {
  assignment: Assignment;
  /** The launch fingerprint; "" when it must be prepared again. */
  fp: string;
  runner: Runner;
  /** Running the last known good instead of the desired assignment. */
  fallback: boolean;
  /** The sidecar handshook (it announced its address). */
  handshake: boolean;
}

/** The part of a slot its runner's events may touch. */
export interface SlotEventsHost {
  readonly id: string;
  readonly ctx: SlotContext;
  /** The add-on's entry in the agent state. */
  readonly st: AddonState;
  /** The probation of the version being started, or null when it is not on probation. */
  probation(): Probation | null;
  /** `running` is still what the slot runs (events of a replaced runner are dropped). */
  isCurrent(running: RunningAddon): boolean;
  /** Set the add-on's state (logged, reported). */
  set(state: AddonStateName, message: string, extra?: Partial<AddonState>): void;
  /** Queue the rollback of the version on probation, for `reason`. */
  rollBackLater(reason: string): void;
}

/**
 * The events for the runner of `running`, started from `launch`: they must
 * be given to that runner only, and change `host`'s state only while
 * `host.isCurrent(running)`.
 */
export function runnerEvents(
  host: SlotEventsHost,
  running: RunningAddon,
  launch: Launch,
): RunnerEvents {
  const a = running.assignment;
  return {
    started: (pid, pgid, identity) => {
      if (!host.isCurrent(running)) return;
      Object.assign(host.st, { pid, pgid, pgid_identity: identity });
      host.ctx.onChange(host.id);
    },
    running: (address) => {
      if (!host.isCurrent(running)) return;
      if (address !== undefined) {
        running.handshake = true;
        host.st.address = address;
      } else if (host.probation()?.needsHandshake && !running.fallback) {
        return; // wait for the handshake
      }
      _onRunning(host, running);
    },
    exited: (code, signal, restartInMs, error) => {
      if (!host.isCurrent(running)) return;
      const s = host.st;
      s.pid = null;
      delete s.address;
      s.restarts = running.runner.restarts + 1;
      const why = error ?? (signal ? `killed by ${signal}` : `exited with code ${code}`);
      log.warn("add-on exited; restarting", {
        addon_id: host.id,
        code,
        signal,
        restart_in_ms: restartInMs,
      });
      const p = host.probation();
      if (p && !running.fallback) {
        const rollBackFor = p.exited(why);
        if (rollBackFor !== null) {
          host.rollBackLater(rollBackFor);
          return;
        }
      }
      if (s.state !== "failed" && s.state !== "fallback" && s.state !== "rolled_back") {
        host.set("starting", `${why}; restarting in ${Math.round(restartInMs / 1000)} s`);
      } else {
        host.ctx.onChange(host.id);
      }
    },
    completed: (ok, message, code) => {
      if (!host.isCurrent(running)) return;
      clearProcess(host.st);
      host.set(ok ? "completed" : "failed", message, {
        exit_code: code,
        ...(ok && a.schedule === undefined ? { helper_fingerprint: launch.fingerprint } : {}),
      });
      if (ok && !running.fallback && !a.local) {
        writeLastGood(host.ctx.layout, a, { handshake: false }).catch(() => {});
      }
    },
    failed: (reason) => {
      if (!host.isCurrent(running)) return;
      host.set("failed", reason);
    },
  };
}

function _onRunning(host: SlotEventsHost, running: RunningAddon): void {
  const a = running.assignment;
  if (running.fallback) {
    if (host.st.state === "starting") host.set("fallback", host.st.message);
    host.ctx.onChange(host.id);
    return;
  }
  const s = host.st;
  if (s.state !== "running" && s.state !== "failed") {
    host.set("running", a.supervision === "config_toggle" ? "acknowledged" : "", {
      // Names only: toggle values may be secrets and the status is readable by more people.
      ...(a.supervision === "config_toggle" ? { toggles: Object.keys(a.config).sort() } : {}),
    });
  } else if (s.state === "failed") {
    host.ctx.onChange(host.id);
    return;
  }
  if (a.local) return; // an override is never the last known good
  writeLastGood(host.ctx.layout, a, { handshake: running.handshake }).catch((e) =>
    log.error("could not write last-good.json", { addon_id: host.id, error: e as Error })
  );
}
