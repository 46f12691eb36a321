/**
 * `addon-agent nats-permissions --agent-id ID`: print the nats-server
 * permissions block for one agent (SPEC 14).
 *
 * @module
 */

import { natsPermissions, renderNatsPermissions } from "../control_plane/mod.ts";
import { EXIT, UsageError } from "./common.ts";

const _ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const _BUCKET = /^[A-Za-z0-9_-]+$/;

/** Print the block (or its JSON with `json`). */
export function natsPermissionsCommand(opts: {
  agentId: string;
  bucket?: string;
  statusBucket?: string;
  artifactBucket?: string;
  inboxPrefix?: string;
  json: boolean;
}): Promise<number> {
  if (!_ID.test(opts.agentId)) {
    throw new UsageError(`--agent-id must be letters, digits, '.', '_' or '-'`);
  }
  for (
    const [flag, v] of [
      ["--bucket", opts.bucket],
      ["--status-bucket", opts.statusBucket],
      ["--artifact-bucket", opts.artifactBucket],
    ] as const
  ) {
    if (v !== undefined && !_BUCKET.test(v)) {
      throw new UsageError(`${flag} must be letters, digits, '_' or '-'`);
    }
  }
  if (opts.inboxPrefix !== undefined && !/^[^\s.*>]+(\.[^\s.*>]+)*$/.test(opts.inboxPrefix)) {
    throw new UsageError("--inbox-prefix must be a subject without spaces, '*' or '>'");
  }
  const p = natsPermissions({
    agentId: opts.agentId,
    ...(opts.bucket ? { bucket: opts.bucket } : {}),
    ...(opts.statusBucket ? { statusBucket: opts.statusBucket } : {}),
    ...(opts.artifactBucket ? { artifactBucket: opts.artifactBucket } : {}),
    ...(opts.inboxPrefix ? { inboxPrefix: opts.inboxPrefix } : {}),
  });
  console.log(
    opts.json
      ? JSON.stringify({ permissions: p }, null, 2)
      : renderNatsPermissions(p, opts.agentId),
  );
  return Promise.resolve(EXIT.ok);
}
