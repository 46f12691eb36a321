/**
 * The SPEC 14 parts of `agent.json`: the `nats` section and the `nats` and
 * `s3` kinds, their defaults, and every refusal with its field path.
 */

import { assertEquals, assertThrows } from "./_assert.ts";
import { decodeConfig } from "../src/config/mod.ts";
import { DecodeError } from "../src/protocol/mod.ts";
import { permissionNeeds } from "../src/config/mod.ts";

const FILE = "/etc/addon-agent/agent.json";
const NATS_SOURCE = { kind: "nats" };
const NATS_STORE = { kind: "nats" };

function cfg(extra: Record<string, unknown>) {
  return decodeConfig({
    agent_id: "edge.01",
    source: NATS_SOURCE,
    object_store: NATS_STORE,
    nats: { servers: ["nats://127.0.0.1:4222"] },
    ...extra,
  }, FILE);
}

Deno.test("`decodeConfig()` gives the nats kinds their SPEC 14 defaults", () => {
  const c = cfg({});
  assertEquals(c.source, {
    kind: "nats",
    bucket: "addon-assignments",
    status_bucket: "addon-status",
    resync_interval_s: 600,
  });
  assertEquals(c.object_store, { kind: "nats", bucket: "addon-artifacts" });
  // A '.' of the agent id would split the inbox subject: written as '~'.
  assertEquals(c.nats, { servers: ["nats://127.0.0.1:4222"], inbox_prefix: "_INBOX_edge~01" });
  const files = cfg({ nats: { servers: ["tls://nats.example:4443"], creds_file: "agent.creds" } });
  assertEquals(files.nats?.creds_file, "/etc/addon-agent/agent.creds");
  const needs = permissionNeeds(files).map((n) => `${n.kind}:${n.value}`);
  assertEquals(needs.includes("net:nats.example:4443"), true);
  assertEquals(needs.includes("read:/etc/addon-agent/agent.creds"), true);
});

Deno.test("`decodeConfig()` refuses bad fleet settings, naming the field", async (t) => {
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ["nats kinds without a nats section", { nats: undefined }, /nats: is required/],
    ["no servers", { nats: { servers: [] } }, /nats\.servers: must name at least one/],
    [
      "plain nats:// to a remote host",
      { nats: { servers: ["nats://nats.example:4222"] } },
      /nats\.servers\[0\]: must be tls:\/\//,
    ],
    [
      "credentials in the URL",
      { nats: { servers: ["nats://u:p@127.0.0.1:4222"] } },
      /must not carry credentials/,
    ],
    [
      "not a nats URL",
      { nats: { servers: ["http://127.0.0.1:4222"] } },
      /must be nats:\/\/HOST:PORT/,
    ],
    [
      "user without password_file",
      { nats: { servers: ["nats://127.0.0.1"], user: "a" } },
      /nats\.user: user and password_file/,
    ],
    [
      "two ways to authenticate",
      { nats: { servers: ["nats://127.0.0.1"], creds_file: "/a", nkey_seed_file: "/b" } },
      /give one of nkey_seed_file/,
    ],
    [
      "an inbox prefix with a wildcard",
      { nats: { servers: ["nats://127.0.0.1"], inbox_prefix: "_INBOX.>" } },
      /nats\.inbox_prefix: must be a subject/,
    ],
    ["a bucket with a dot", { source: { kind: "nats", bucket: "a.b" } }, /source\.bucket/],
    [
      "resync out of range",
      { source: { kind: "nats", resync_interval_s: 0 } },
      /source\.resync_interval_s: must be at least 1/,
    ],
    ["unknown nats key", { nats: { servers: ["nats://127.0.0.1"], sever: 1 } }, /nats\.sever/],
    [
      "s3 source over plain HTTP to a remote host",
      { source: { kind: "s3", bucket: "b", endpoint: "http://s3.example" } },
      /source\.endpoint: must be https:\/\//,
    ],
    [
      "s3 source key leaving its prefix",
      { source: { kind: "s3", bucket: "b", key: "../{agent_id}.json" } },
      /source\.key: must be a relative key/,
    ],
  ];
  for (const [name, extra, re] of cases) {
    await t.step(name, () => {
      const e = assertThrows(() => cfg(extra), DecodeError);
      if (!re.test(e.message)) throw new Error(`${e.message} does not match ${re}`);
    });
  }
});

Deno.test("`decodeConfig()` substitutes {agent_id} in the s3 source's keys", () => {
  const c = cfg({
    source: { kind: "s3", bucket: "fleet", key: "docs/{agent_id}", endpoint: "http://127.0.0.1:9" },
    object_store: { kind: "filesystem", root: "/srv" },
    nats: undefined,
  });
  assertEquals(c.source, {
    kind: "s3",
    bucket: "fleet",
    key: "docs/edge.01",
    status_key: "status/edge.01.json",
    poll_interval_s: 30,
    region: "us-east-1",
    force_path_style: false,
    endpoint: "http://127.0.0.1:9",
  });
});
