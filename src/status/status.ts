/**
 * The status document (`addon-agent status --json`, `GET /status`): what is
 * staged, what `current` and `previous` are, what runs, and why anything
 * failed; and its table form for people.
 *
 * @example
 * ```ts
 * import { Layout, loadState } from "../runtime/mod.ts";
 * const layout = new Layout("/var/lib/addon-agent");
 * const doc = await buildStatus(layout, await loadState(layout));
 * console.log(formatStatusTable(doc));
 * ```
 *
 * @module
 */

import {
  type AddonState,
  type AgentState,
  emptyAddonState,
  findAddonState,
  type Layout,
  linkedVersion,
  type StagedArtifact,
} from "../runtime/mod.ts";
import { escapeControl, readRegularFileBounded } from "../common/mod.ts";

/** An `artifact.json` is a few hundred bytes; anything larger is not one. */
const MAX_RECORD_BYTES = 1 << 20;

/** One add-on in the status document. */
export interface AddonStatus extends Omit<AddonState, "pgid_identity"> {
  current: string | null;
  previous: string | null;
  staged: {
    version: string;
    sha256: string | null;
    key: string | null;
    staged_at: string | null;
    /** `binary`, or a bundle's archive format (SPEC 15). */
    format: "binary" | "tar.gz" | "tar.zst";
    /** Regular files staged: 1 for a binary, a bundle's count; null when unknown. */
    files: number | null;
    /** A bundle's entrypoint; null for a binary. */
    entrypoint: string | null;
  }[];
}

/** The status document. */
export interface StatusDocument {
  agent_id: string | null;
  config_version: string | null;
  updated_at: string | null;
  addons: AddonStatus[];
  /** Why the agent cannot do its work now (e.g. `state.json` cannot be written); absent when fine. */
  error?: string;
}

async function _staged(layout: Layout, id: string): Promise<AddonStatus["staged"]> {
  const out: AddonStatus["staged"] = [];
  try {
    // A versions/ or artifact.json planted as a link (or a FIFO) is not read through.
    if ((await Deno.lstat(layout.versionsDir(id))).isSymlink) return out;
    for await (const e of Deno.readDir(layout.versionsDir(id))) {
      if (!e.isDirectory) continue;
      let art: Partial<StagedArtifact> = {};
      try {
        art = JSON.parse(
          await readRegularFileBounded(
            `${layout.versionDir(id, e.name)}/artifact.json`,
            MAX_RECORD_BYTES,
          ),
        ) as StagedArtifact;
      } catch {
        // a version without a readable record is shown without its digest
      }
      out.push({
        version: e.name,
        sha256: art.sha256 ?? null,
        key: art.key ?? null,
        staged_at: art.staged_at ?? null,
        format: art.format ?? "binary",
        files: art.format === undefined ? (art.sha256 === undefined ? null : 1) : art.files ?? null,
        entrypoint: art.entrypoint ?? null,
      });
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out.sort((a, b) => (a.staged_at ?? "").localeCompare(b.staged_at ?? ""));
}

/** Build the status document from the runtime root and the agent state. */
export async function buildStatus(layout: Layout, state: AgentState): Promise<StatusDocument> {
  const ids = new Set(Object.keys(state.addons));
  try {
    for await (const e of Deno.readDir(layout.addons)) if (e.isDirectory) ids.add(e.name);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const addons: AddonStatus[] = [];
  for (const id of [...ids].sort()) {
    const s = findAddonState(state, id);
    const { pgid_identity: _drop, ...rest } = s ??
      { ...emptyAddonState(id), state: "stopped" as const, message: "not assigned" };
    addons.push({
      ...rest,
      current: await linkedVersion(layout, id, "current"),
      previous: await linkedVersion(layout, id, "previous"),
      staged: await _staged(layout, id),
    });
  }
  return {
    agent_id: state.agent_id,
    config_version: state.config_version,
    updated_at: state.updated_at,
    addons,
  };
}

/** Render the status document as a table for people. */
export function formatStatusTable(doc: StatusDocument): string {
  const head = [
    "ADDON",
    "STATE",
    "VERSION",
    "DESIRED",
    "CURRENT",
    "PREVIOUS",
    "PID",
    "RESTARTS",
    "SINCE",
  ];
  const rows = doc.addons.map((a) => [
    a.addon_id,
    a.state,
    a.version ?? "-",
    a.desired_version ?? "-",
    a.current ?? "-",
    a.previous ?? "-",
    a.pid === null ? "-" : String(a.pid),
    String(a.restarts),
    a.since ?? "-",
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  const out = [
    `agent ${doc.agent_id ?? "-"}  config_version ${doc.config_version ?? "-"}  updated ${
      doc.updated_at ?? "-"
    }`,
    line(head),
    ...rows.map(line),
  ];
  for (const a of doc.addons) {
    const notes: string[] = [];
    if (a.message) notes.push(a.message);
    if (a.address) notes.push(`plugin address ${a.address}`);
    if (a.toggles) notes.push(`toggles ${a.toggles.join(", ")}`);
    if (a.uid !== undefined || a.containment !== undefined) {
      notes.push(
        `runs as uid ${a.uid ?? "of the agent"}, contained by ${a.containment ?? "process_group"}`,
      );
    }
    if (a.resources_not_enforced?.length) notes.push(a.resources_not_enforced.join(", "));
    if (a.staged.length) {
      notes.push(
        `staged: ${
          a.staged.map((s) =>
            `${s.version} (${s.sha256?.slice(0, 12) ?? "?"}${
              s.format === "binary" ? "" : `, ${s.format}, ${s.files ?? "?"} files`
            })`
          ).join(", ")
        }`,
      );
    }
    if (notes.length) out.push(`  ${a.addon_id}: ${notes.join("; ")}`);
  }
  // Messages quote stores' and sources' error texts, and config_version is the source's:
  // none may drive the terminal or start a line of its own.
  return out.map(escapeControl).join("\n");
}
