/**
 * `addon-agent doctor`: print the checklist (SPEC 16); exit 0 when nothing
 * failed, 1 otherwise.
 *
 * @module
 */

import { formatCheck, runDoctor } from "../doctor/mod.ts";
import { EXIT } from "./common.ts";

/** Run `doctor` for the configuration at `config`; returns the exit code. */
export async function doctorCommand(opts: { config: string }): Promise<number> {
  const checks = await runDoctor(opts.config);
  for (const c of checks) console.log(formatCheck(c));
  const failed = checks.filter((c) => c.status === "fail").length;
  console.log(failed === 0 ? "\nno problems found" : `\n${failed} problem(s) found`);
  return failed === 0 ? EXIT.ok : EXIT.failure;
}
