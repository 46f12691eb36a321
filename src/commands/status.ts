/**
 * `addon-agent status`: what is staged, current, running, failed, and why.
 * Reads the runtime root without taking its lock, so it works beside a
 * running agent.
 *
 * @module
 */

import { loadConfig } from "../config/mod.ts";
import { Layout, loadState } from "../runtime/mod.ts";
import { buildStatus, formatStatusTable } from "../status/mod.ts";
import { EXIT, UsageError } from "./common.ts";

/** Print the status document (a table, or JSON with `--json`); returns the exit code. */
export async function statusCommand(
  opts: { config?: string; runtimeRoot?: string; json: boolean },
): Promise<number> {
  const root = opts.runtimeRoot ?? (await loadConfig(opts.config!)).runtime_root;
  try {
    if (!(await Deno.stat(root)).isDirectory) throw new Error("not a directory");
  } catch (e) {
    throw new UsageError(
      `${opts.runtimeRoot ? "--runtime-root" : "runtime_root"} ${root}: ${(e as Error).message}`,
    );
  }
  const layout = new Layout(root);
  const doc = await buildStatus(layout, await loadState(layout));
  console.log(opts.json ? JSON.stringify(doc, null, 2) : formatStatusTable(doc));
  return EXIT.ok;
}
