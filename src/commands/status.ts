/**
 * `addon-agent status`: what is staged, current, running, failed, and why.
 * Reads the runtime root without taking its lock, so it works beside a
 * running agent.
 *
 * @module
 */

import { loadConfig } from "../config.ts";
import { Layout } from "../runtime_root.ts";
import { loadState } from "../state.ts";
import { buildStatus, formatStatusTable } from "../status.ts";
import { EXIT } from "./common.ts";

/** Print the status document (a table, or JSON with `--json`); returns the exit code. */
export async function statusCommand(
  opts: { config?: string; runtimeRoot?: string; json: boolean },
): Promise<number> {
  const root = opts.runtimeRoot ?? (await loadConfig(opts.config!)).runtime_root;
  const layout = new Layout(root);
  const doc = await buildStatus(layout, await loadState(layout));
  console.log(opts.json ? JSON.stringify(doc, null, 2) : formatStatusTable(doc));
  return EXIT.ok;
}
