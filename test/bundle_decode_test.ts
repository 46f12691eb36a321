/**
 * `artifact_format` and `entrypoint` (SPEC 15) in assignments and in the
 * reference control plane's catalog: decoded once, refused with the field
 * path, and carried through `encodeAssignment` and the served document.
 */

import { assertEquals, assertThrows } from "./_assert.ts";
import { decodeAssignment, DecodeError, encodeAssignment, type Json } from "../src/protocol/mod.ts";
import { documentFor, parseCatalog } from "../src/control_plane/mod.ts";

const LINUX = { os: "linux", arch: "amd64" } as const;
const BASE = {
  addon_id: "probe",
  version: "1.0.0",
  delivery: "pushed_artifact",
  supervision: "agent_sidecar",
  artifact_object_key: "probe/1.0.0/probe.tar.gz",
  artifact_sha256: "a".repeat(64),
};

Deno.test("decodeAssignment() reads a bundle's format and entrypoint", () => {
  const a = decodeAssignment(
    { ...BASE, artifact_format: "tar.zst", entrypoint: "bin/probe" },
    "addons[0]",
    LINUX,
  );
  assertEquals(a.artifact?.bundle, { format: "tar.zst", entrypoint: "bin/probe" });
  const again = decodeAssignment(encodeAssignment(a) as Json, "x", LINUX);
  assertEquals(again.artifact?.bundle, a.artifact?.bundle);
  assertEquals(decodeAssignment({ ...BASE }, "x", LINUX).artifact?.bundle, undefined);
  assertEquals(
    decodeAssignment({ ...BASE, artifact_format: "binary" }, "x", LINUX).artifact?.bundle,
    undefined,
  );
});

Deno.test("decodeAssignment() refuses bad bundle fields, naming the field", async (t) => {
  const cases: [string, Record<string, unknown>, string, string][] = [
    ["an unknown format", { artifact_format: "zip" }, "artifact_format", 'must be one of "binary"'],
    ["a bundle without entrypoint", { artifact_format: "tar.gz" }, "entrypoint", "is required"],
    ["entrypoint for one binary", { entrypoint: "bin/x" }, "entrypoint", "is only for bundles"],
    [
      "an absolute entrypoint",
      { artifact_format: "tar.gz", entrypoint: "/usr/bin/x" },
      "entrypoint",
      "is absolute",
    ],
    ["a .. entrypoint", { artifact_format: "tar.gz", entrypoint: "../x" }, "entrypoint", '".."'],
    ["a ./ entrypoint", { artifact_format: "tar.gz", entrypoint: "./x" }, "entrypoint", '"."'],
    ["a doubled /", { artifact_format: "tar.gz", entrypoint: "bin//x" }, "entrypoint", "empty"],
    [
      "the agent's own record",
      { artifact_format: "tar.gz", entrypoint: "artifact.json" },
      "entrypoint",
      "the agent's own record",
    ],
  ];
  for (const [what, extra, field, reason] of cases) {
    await t.step(what, () => {
      const e = assertThrows(
        () => decodeAssignment({ ...BASE, ...extra } as Json, "addons[2]", LINUX),
        DecodeError,
        reason,
      );
      assertEquals(e.path, `addons[2].${field}`);
    });
  }
});

Deno.test("the catalog serves a build's format and entrypoint, and refuses bad ones", async (t) => {
  const catalog = (art: Record<string, unknown>) =>
    JSON.stringify({
      packages: {
        probe: {
          version: "1.0.0",
          delivery: "pushed_artifact",
          supervision: "agent_sidecar",
          artifacts: { "linux/amd64": { object_key: "k", sha256: "b".repeat(64), ...art } },
        },
      },
      assignments: { default: ["probe"] },
    });
  await t.step("served as artifact_format and entrypoint", () => {
    const c = parseCatalog(catalog({ format: "tar.gz", entrypoint: "bin/probe" }));
    const doc = documentFor(c, "any", "linux", "amd64");
    assertEquals(
      [doc.addons[0]?.artifact_format, doc.addons[0]?.entrypoint],
      ["tar.gz", "bin/probe"],
    );
  });
  const refused: [string, Record<string, unknown>, string][] = [
    ["no entrypoint", { format: "tar.zst" }, "is required"],
    ["entrypoint without a format", { entrypoint: "bin/x" }, "is only for bundles"],
    ["an escaping entrypoint", { format: "tar.gz", entrypoint: "../../x" }, '".."'],
    ["an unknown format", { format: "rar", entrypoint: "x" }, "must be one of"],
  ];
  for (const [what, art, reason] of refused) {
    await t.step(what, () => {
      const e = assertThrows(() => parseCatalog(catalog(art), "catalog.json"), DecodeError, reason);
      assertEquals(e.path.startsWith("packages.probe.artifacts.linux/amd64."), true, e.path);
    });
  }
});
