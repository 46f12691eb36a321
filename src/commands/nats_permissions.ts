/**
 * `addon-agent nats-permissions --agent-id ID`: print the nats-server
 * permissions block for one agent (SPEC 14).
 *
 * @module
 */

import {
  natsAccountLinks,
  natsPermissions,
  renderNatsAccountLinks,
  renderNatsPermissions,
} from "../control_plane/mod.ts";
import { EXIT, UsageError } from "./common.ts";

const _ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const _BUCKET = /^[A-Za-z0-9_-]+$/;

/** Print the block (or its JSON with `json`). */
export function natsPermissionsCommand(opts: {
  /** Absent with `accounts`: print the account links only. */
  agentId?: string;
  /** Print the exports/imports linking the agents' account to the buckets' account NAME. */
  accounts?: string;
  bucket?: string;
  statusBucket?: string;
  artifactBucket?: string;
  inboxPrefix?: string;
  json: boolean;
}): Promise<number> {
  if (opts.accounts !== undefined && !/^[A-Za-z0-9_-]+$/.test(opts.accounts)) {
    throw new UsageError("--accounts must name an account: letters, digits, '_' or '-'");
  }
  if (opts.agentId === undefined && opts.accounts === undefined) {
    throw new UsageError("--agent-id is required (or --accounts FLEET)");
  }
  if (opts.agentId !== undefined && !_ID.test(opts.agentId)) {
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
  const buckets = {
    ...(opts.bucket ? { bucket: opts.bucket } : {}),
    ...(opts.statusBucket ? { statusBucket: opts.statusBucket } : {}),
    ...(opts.artifactBucket ? { artifactBucket: opts.artifactBucket } : {}),
  };
  if (opts.agentId === undefined) {
    const links = natsAccountLinks(buckets);
    console.log(
      opts.json
        ? JSON.stringify({ account: opts.accounts, ...links }, null, 2)
        : renderNatsAccountLinks(links, opts.accounts),
    );
    return Promise.resolve(EXIT.ok);
  }
  const p = natsPermissions({
    agentId: opts.agentId,
    ...buckets,
    ...(opts.inboxPrefix ? { inboxPrefix: opts.inboxPrefix } : {}),
  });
  console.log(
    opts.json
      ? JSON.stringify({ permissions: p }, null, 2)
      : renderNatsPermissions(p, opts.agentId),
  );
  return Promise.resolve(EXIT.ok);
}
