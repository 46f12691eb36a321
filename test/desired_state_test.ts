/**
 * The one desired-state path (`src/source/desired_state.ts`) the daemon and
 * `sync` share: the source's document with the local override (SPEC 7), the
 * override's assignments marked `local`, and the versions the source itself
 * assigns.
 */

import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { acceptDocument, desiredState } from "../src/source/mod.ts";
import { DecodeError, hostPlatform, type Json } from "../src/protocol/mod.ts";

const PLATFORM = hostPlatform();
const PATH = "/etc/addon-agent/addons.local.json";
const SHA1 = "1".repeat(64);
const SHA2 = "2".repeat(64);

function _doc(...addons: Json[]): Json {
  return { config_version: "v7", addons };
}

function _pushed(id: string, version: string, sha: string): Json {
  return {
    addon_id: id,
    version,
    delivery: "pushed_artifact",
    supervision: "agent_sidecar",
    artifact_object_key: `${id}/${version}/${id}`,
    artifact_sha256: sha,
  };
}

function _summary(d: ReturnType<typeof desiredState>): string[] {
  return d.entries.map((e) =>
    e.ok
      ? `${e.assignment.addon_id} ${e.assignment.version}${e.assignment.local ? " local" : ""}`
      : `refused ${e.addon_id}`
  );
}

Deno.test("desiredState() without an override: the source's entries, none local", () => {
  const source = acceptDocument(_doc(_pushed("probe", "1.0.0", SHA1)), PLATFORM);
  const d = desiredState(source, null, PATH, PLATFORM);
  assertEquals(_summary(d), ["probe 1.0.0"]);
  assertEquals(d.config_version, "v7");
  assertEquals([...d.pushedKeys], [["probe", `1.0.0:${SHA1}`]]);
  // Decoded once: the accepted document's own entries, not a second decode.
  assert(d.entries === source.document.entries, "the document was decoded again");
});

Deno.test("desiredState() keys differ when only who named a binary_path differs", () => {
  const host = {
    addon_id: "tool",
    version: "1.0.0",
    delivery: "os_package",
    supervision: "ephemeral_helper",
    binary_path: "/usr/bin/true",
  };
  const plain = desiredState(_doc(host), null, PATH, PLATFORM);
  const named = desiredState(
    _doc(host),
    JSON.stringify({ addons: [{ addon_id: "tool", binary_path: "/usr/bin/true" }] }),
    PATH,
    PLATFORM,
  );
  assert(plain.key !== named.key, "the same key: the operator's binary_path would not apply");
});

Deno.test("desiredState() marks what the override patches or adds as local, and its binary_path", () => {
  const override = JSON.stringify({
    addons: [
      { addon_id: "probe", version: "2.0.0", artifact_sha256: SHA2 },
      {
        addon_id: "mine",
        version: "0.1.0",
        delivery: "os_package",
        supervision: "agent_sidecar",
        binary_path: "/usr/bin/true",
      },
    ],
  });
  const d = desiredState(
    _doc(_pushed("probe", "1.0.0", SHA1), _pushed("other", "3.0.0", SHA1)),
    override,
    PATH,
    PLATFORM,
  );
  assertEquals(_summary(d), ["probe 2.0.0 local", "other 3.0.0", "mine 0.1.0 local"]);
  // A binary_path the operator named (SPEC 12) is marked as theirs; nothing else is.
  assertEquals(
    d.entries.map((e) => e.ok && e.assignment.binary_from_override === true),
    [false, false, true],
  );
  // What the source assigns, not what the override makes of it: a rolled-back 1.0.0 stays
  // refused while the source assigns it.
  assertEquals(Object.fromEntries(d.pushedKeys), {
    probe: `1.0.0:${SHA1}`,
    other: `3.0.0:${SHA1}`,
  });
});

Deno.test("desiredState() treats a malformed override as absent", () => {
  for (const text of ["{not json", '{"addons": {}}', '{"addons": [{"addon_id": 7}]}']) {
    const d = desiredState(_doc(_pushed("probe", "1.0.0", SHA1)), text, PATH, PLATFORM);
    assertEquals(_summary(d), ["probe 1.0.0"], text);
  }
});

Deno.test("desiredState() refuses what is not a document, override or not; refused entries are verdicts", () => {
  const broken = _doc({ ..._pushed("probe", "1.0.0", SHA1) as object, version: 7 } as Json);
  // A document whose entries are refused one by one still decodes (verdict per entry) …
  assertEquals(_summary(desiredState(broken, null, PATH, PLATFORM)), ["refused probe"]);
  // … one that is not a document at all is refused as a whole, override or not.
  const e = assertThrows(
    () => desiredState({ addons: "none" }, JSON.stringify({ addons: [] }), PATH, PLATFORM),
    DecodeError,
  );
  assertEquals(e.message.startsWith("addons"), true, e.message);
});
