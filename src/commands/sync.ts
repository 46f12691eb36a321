/**
 * `addon-agent sync`: one delivery pass, no supervision.
 *
 * @module
 */

import { syncOnce } from "../agent/mod.ts";
import { escapeControl } from "../common/mod.ts";
import { configFrom, EXIT, rootFrom } from "./common.ts";
import { ProgressLines } from "./progress.ts";

/** Run `sync`; prints a summary (JSON with `--json`) and returns the exit code. */
export async function syncCommand(opts: { config: string; json: boolean }): Promise<number> {
  const cfg = await configFrom(opts.config);
  const root = await rootFrom(cfg);
  try {
    const progress = ProgressLines.forTerminal(opts.json);
    let report;
    try {
      report = await syncOnce(cfg, root, undefined, {
        onProgress: (id, version, bytes, total) => progress?.update(id, version, bytes, total),
        onResult: (r) => r.addon_id && progress?.finish(r.addon_id, r.outcome),
      });
    } finally {
      progress?.stop();
    }
    if (opts.json) {
      console.log(JSON.stringify(report, null, 2));
    } else {
      // Escaped: ids, versions and messages may carry a source's or a store's text.
      if (report.document_error) {
        console.log(escapeControl(`document refused: ${report.document_error}`));
      }
      for (const r of report.results) {
        console.log(escapeControl(
          `${(r.addon_id ?? "?").padEnd(24)} ${(r.version ?? "-").padEnd(12)} ${
            r.outcome.padEnd(11)
          } ${r.message}`,
        ));
      }
    }
    return report.ok ? EXIT.ok : EXIT.failure;
  } finally {
    root.release();
  }
}
