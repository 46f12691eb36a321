/**
 * One line of the `doctor` checklist and its text form.
 *
 * @example
 * ```ts
 * import { formatCheck } from "./check.ts";
 * console.log(formatCheck({ status: "ok", title: "configuration decodes" }));
 * ```
 *
 * @module
 */

import { escapeControl } from "../common/mod.ts";

/** One line of the checklist: passed, failed (with what to change) or not applicable. */
export interface Check {
  status: "ok" | "fail" | "na";
  /** What was checked, and what was found. */
  title: string;
  /** For a failure: what to change (the file, the field, the command to run). */
  fix?: string;
}

/** A passed line. */
export const ok = (title: string): Check => ({ status: "ok", title });
/** A line that does not apply here. */
export const na = (title: string): Check => ({ status: "na", title });
/** A failed line with what to change. */
export const fail = (title: string, fix: string): Check => ({ status: "fail", title, fix });

/**
 * One line of text for `c`: `✔`, `✘` (followed by the fix on its own line) or `–`.
 * Control characters are escaped: a title may quote a store's or a source's error
 * text, which must not drive the operator's terminal (or add lines to the list).
 */
export function formatCheck(c: Check): string {
  const mark = c.status === "ok" ? "✔" : c.status === "fail" ? "✘" : "–";
  return `${mark} ${escapeControl(c.title)}${c.fix ? `\n    fix: ${escapeControl(c.fix)}` : ""}`;
}
