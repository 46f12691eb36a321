/**
 * The nats-server `permissions` block for one agent (SPEC 14): it may read
 * its own assignment key, put its own status key, and read the artifact
 * object store; nothing else. Printed by `addon-agent nats-permissions`.
 *
 * Every grant names the agent's key *in the subject*: the direct get with
 * the key appended (`$JS.API.DIRECT.GET.KV_<bucket>.$KV.<bucket>.<id>`) and
 * the plain subscription to `$KV.<bucket>.<id>`. Never granted: a bare
 * `$JS.API.DIRECT.GET.KV_<bucket>`, `$JS.API.STREAM.MSG.GET.KV_<bucket>` or
 * a consumer on the KV stream — they carry the key in the request body, so
 * the server could not stop an agent from reading every other agent's
 * document. No consumer either, not even on the artifacts: a consumer's
 * `deliver_subject` publishes stored messages on any subject the creator
 * names (another agent's `$KV.<bucket>.<id>`), and a name in the create
 * subject makes a durable consumer that stays on the server for good.
 *
 * @example Print the block for edge-01
 * ```ts
 * import { natsPermissions, renderNatsPermissions } from "./nats_permissions.ts";
 * const p = natsPermissions({ agentId: "edge-01" });
 * console.log(renderNatsPermissions(p));
 * ```
 *
 * @module
 */

import { defaultInboxPrefix } from "../config/mod.ts";

/** Who the block is for and which buckets the fleet uses (defaults as in SPEC 14). */
export interface NatsPermissionsInput {
  agentId: string;
  bucket?: string;
  statusBucket?: string;
  artifactBucket?: string;
  inboxPrefix?: string;
}

/** A nats-server permissions block: subjects a user may publish and subscribe to. */
export interface NatsPermissions {
  publish: { allow: string[] };
  subscribe: { allow: string[] };
}

/** The permissions of one agent. */
export function natsPermissions(input: NatsPermissionsInput): NatsPermissions {
  const id = input.agentId;
  const kv = input.bucket ?? "addon-assignments";
  const status = input.statusBucket ?? "addon-status";
  const obj = input.artifactBucket ?? "addon-artifacts";
  const inbox = input.inboxPrefix ?? defaultInboxPrefix(id);
  return {
    publish: {
      allow: [
        // read the own document: the key is part of the subject
        `$JS.API.DIRECT.GET.KV_${kv}.$KV.${kv}.${id}`,
        // put the own status report
        `$KV.${status}.${id}`,
        // read artifacts, metadata and chunks alike, by direct gets (every agent may read
        // every artifact); no consumer: its deliver_subject would let an agent publish stored
        // messages on any subject, and durable ones would pile up on the server
        `$JS.API.DIRECT.GET.OBJ_${obj}`,
        `$JS.API.DIRECT.GET.OBJ_${obj}.>`,
      ],
    },
    subscribe: {
      allow: [
        // replies (direct gets, acks, chunks) come to the agent's own inbox
        `${inbox}.>`,
        // pushed updates of the own document
        `$KV.${kv}.${id}`,
      ],
    },
  };
}

/** The block as nats-server configuration text, to paste into a user entry. */
export function renderNatsPermissions(p: NatsPermissions, agentId?: string): string {
  const list = (xs: string[]) => xs.map((s) => `      ${JSON.stringify(s)}`).join("\n");
  return [
    ...(agentId
      ? [`# addon-agent ${agentId}: its own document and status, and the artifacts`]
      : []),
    "permissions: {",
    "  publish: {",
    "    allow: [",
    list(p.publish.allow),
    "    ]",
    "  }",
    "  subscribe: {",
    "    allow: [",
    list(p.subscribe.allow),
    "    ]",
    "  }",
    "}",
  ].join("\n");
}

/** What the fleet's account exports and the agents' account imports (see {@linkcode natsAccountLinks}). */
export interface NatsAccountLinks {
  /** `service` subjects (requests with an answer: direct gets, status puts). */
  services: string[];
  /** `stream` subjects (the pushed puts of the assignment keys). */
  streams: string[];
}

/**
 * The subjects that link the agents' account to the fleet's: the buckets
 * live in the fleet's account, and every agent user lives in an account of
 * its own with only these imports (plus its {@linkcode natsPermissions}).
 * Agents must not share the buckets' account: there, an agent's request
 * whose *reply* subject is `$KV.<bucket>.<other-id>` makes the server
 * publish its answer there, and the bucket stores it as the other agent's
 * document (permissions check the subjects a user publishes to, never reply
 * subjects). Across accounts that answer stays in the agents' account.
 *
 * @example The links for the default buckets
 * ```ts
 * import { natsAccountLinks } from "./nats_permissions.ts";
 * const links = natsAccountLinks({});
 * console.log(links.streams); // ["$KV.addon-assignments.>"]
 * ```
 */
export function natsAccountLinks(input: Omit<NatsPermissionsInput, "agentId">): NatsAccountLinks {
  const kv = input.bucket ?? "addon-assignments";
  const status = input.statusBucket ?? "addon-status";
  const obj = input.artifactBucket ?? "addon-artifacts";
  return {
    services: [
      `$JS.API.DIRECT.GET.KV_${kv}.$KV.${kv}.>`,
      `$KV.${status}.>`,
      `$JS.API.DIRECT.GET.OBJ_${obj}`,
      `$JS.API.DIRECT.GET.OBJ_${obj}.>`,
    ],
    streams: [`$KV.${kv}.>`],
  };
}

/**
 * The `exports` of the fleet's account and the `imports` of the agents'
 * account as nats-server configuration text, for an `accounts` block.
 */
export function renderNatsAccountLinks(
  links: NatsAccountLinks,
  fleetAccount = "FLEET",
): string {
  const q = JSON.stringify;
  return [
    `# in the account that holds the buckets (${fleetAccount}; JetStream enabled):`,
    "exports: [",
    ...links.services.map((s) => `  {service: ${q(s)}}`),
    ...links.streams.map((s) => `  {stream: ${q(s)}}`),
    "]",
    "# in the account of the agent users (never the buckets' account):",
    "imports: [",
    ...links.services.map((s) => `  {service: {account: ${q(fleetAccount)}, subject: ${q(s)}}}`),
    ...links.streams.map((s) => `  {stream: {account: ${q(fleetAccount)}, subject: ${q(s)}}}`),
    "]",
  ].join("\n");
}
