/**
 * The commands of `addon-agent` (SPEC 11), one file each: options in, exit
 * code out. `main.ts` parses the command line and loads only the file of the
 * command it runs (so `version` or `status` never load the S3 or NATS
 * clients); this module is the room's surface for everything else.
 *
 * @example Run one delivery pass and exit with its code
 * ```ts
 * import { syncCommand } from "./mod.ts";
 * Deno.exit(await syncCommand({ config: "/etc/addon-agent/agent.json", json: false }));
 * ```
 *
 * @module
 */

export { configFrom, EXIT, exitCodeFor, rootFrom, UsageError } from "./common.ts";
export { controlPlaneCommand } from "./control_plane.ts";
export { devCommand } from "./dev.ts";
export { diagnosticsCommand } from "./diagnostics.ts";
export { doctorCommand } from "./doctor.ts";
export { keygenCommand, signCommand, type StatementFlags, verifyCommand } from "./keys.ts";
export { natsPermissionsCommand } from "./nats_permissions.ts";
export { controlPlanePublish, publishCommand } from "./publish.ts";
export { runCommand } from "./run.ts";
export { statusCommand } from "./status.ts";
export { syncCommand } from "./sync.ts";
