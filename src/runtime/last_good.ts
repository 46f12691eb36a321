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

/**
 * Record `a` as the last good assignment of its add-on (`handshake`: it handshook, so a
 * rollback to it waits for a handshake again). The file is replaced atomically (mode 0600):
 * a reader sees the old record or the new one, never a part.
 *
 * @throws {NotADirectoryError} when `addons/<id>` is not a real directory (a planted link).
 * @throws {Deno.errors.PermissionDenied} (or another I/O error, e.g. a full disk) when the file
 * cannot be written; the old record then stays as it was.
 */
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

/**
 * Read the last good assignment of `addonId`, decoded for `platform`; null when there is none,
 * or (warned) when its content is not a record that decodes (a hand-edited or truncated file).
 *
 * @throws {Deno.errors.PermissionDenied} (or another I/O error) when the file exists but cannot
 * be read.
 */
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

/**
 * The sha256 that `last-good.json` of `addonId` records for `version`, or null (no record,
 * another version, no artifact, or an unreadable file: nothing is known). Self-healing
 * (SPEC 8) uses it to tell an `artifact.json` altered on disk (damage, fetched again) from a
 * version published twice with other bytes (a conflict, refused).
 *
 * @example
 * ```ts
 * import { Layout } from "./runtime_root.ts";
 * const sha = await lastGoodSha256(new Layout("/var/lib/addon-agent"), "net-probe", "1.4.2");
 * if (sha !== null) console.log(`1.4.2 ran with ${sha}`);
 * ```
 */
export async function lastGoodSha256(
  layout: Layout,
  addonId: string,
  version: string,
): Promise<string | null> {
  try {
    const raw = JSON.parse(await Deno.readTextFile(layout.lastGood(addonId))) as {
      assignment?: { version?: unknown; artifact_sha256?: unknown };
    } | null;
    const a = raw?.assignment;
    if (a?.version !== version || typeof a.artifact_sha256 !== "string") return null;
    return a.artifact_sha256.toLowerCase();
  } catch {
    return null;
  }
}
