/**
 * `last-good.json` (SPEC 8): the whole assignment of the last version that
 * reached `running`, so the add-on can run exactly as before when a new
 * assignment cannot be delivered — also after a reboot.
 *
 * @example
 * ```ts
 * import { type Assignment, hostPlatform } from "../protocol/mod.ts";
 * import { Layout } from "./runtime_root.ts";
 * declare const assignment: Assignment;
 * const layout = new Layout("/var/lib/addon-agent");
 * await writeLastGood(layout, assignment, { handshake: false });
 * const lg = await readLastGood(layout, "net-probe", hostPlatform());
 * ```
 *
 * @module
 */

import {
  type Assignment,
  decodeAssignment,
  encodeAssignment,
  type JsonObject,
  jsonSyntaxError,
  type Platform,
} from "../protocol/mod.ts";
import { ensureRealDir, removeIfExists, writeFileAtomic } from "./fs_atomic.ts";
import { log } from "../common/mod.ts";
import type { Layout } from "./runtime_root.ts";

/** What `last-good.json` holds. */
export interface LastGood {
  assignment: Assignment;
  /** Whether that version spoke the go-plugin handshake. */
  handshake: boolean;
  recorded_at: string;
}

/** Record `a` as the last good assignment of its add-on. */
export async function writeLastGood(
  layout: Layout,
  a: Assignment,
  opts: { handshake: boolean },
): Promise<void> {
  await ensureRealDir(layout.addonDir(a.addon_id));
  const body: JsonObject = {
    assignment: encodeAssignment(a),
    handshake: opts.handshake,
    recorded_at: new Date().toISOString(),
  };
  await writeFileAtomic(layout.lastGood(a.addon_id), JSON.stringify(body, null, 2) + "\n", 0o600);
}

/** Read the last good assignment of `addonId`, or null when there is none or it is unreadable. */
export async function readLastGood(
  layout: Layout,
  addonId: string,
  platform: Platform,
): Promise<LastGood | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(layout.lastGood(addonId));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  try {
    const raw = JSON.parse(text) as {
      assignment: JsonObject;
      handshake?: boolean;
      recorded_at?: string;
    };
    return {
      assignment: decodeAssignment(raw.assignment, "assignment", platform),
      handshake: raw.handshake === true,
      recorded_at: raw.recorded_at ?? "",
    };
  } catch (e) {
    log.warn("last-good.json is unreadable; ignoring it", {
      addon_id: addonId,
      // JSON.parse's own message would quote the text (env values) around the error.
      error: e instanceof SyntaxError ? jsonSyntaxError(text) : e as Error,
    });
    return null;
  }
}

/** Remove the record (the assignment is gone). */
export async function removeLastGood(layout: Layout, addonId: string): Promise<void> {
  await removeIfExists(layout.lastGood(addonId));
}
