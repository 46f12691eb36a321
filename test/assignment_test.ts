// Tests of src/protocol/assignment.ts: the assignments document (SPEC 3), one verdict
// per entry, whole-document refusals, and the encode/decode round trip.

import {
  type Assignment,
  decodeAssignment,
  decodeDocument,
  encodeAssignment,
  type Entry,
} from "../src/protocol/assignment.ts";
import { DecodeError, type Json, type JsonObject } from "../src/protocol/decode.ts";
import type { Platform } from "../src/protocol/platform.ts";
import { assert, assertEquals, assertStringIncludes, assertThrows, fail } from "./_assert.ts";

// ---------------------------------------------------------------------------
// helpers

const LINUX_AMD64: Platform = { os: "linux", arch: "amd64" };
const SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const SIG = "A".repeat(86) + "==";

/** A minimal valid entry; `patch` replaces keys, `undefined` deletes them. */
function _entry(patch: Record<string, Json | undefined> = {}): JsonObject {
  const out: JsonObject = {
    addon_id: "net-probe",
    version: "1.4.2",
    delivery: "pushed_artifact",
    supervision: "agent_sidecar",
  };
  for (const [k, v] of Object.entries(patch)) {
    if (v === undefined) delete out[k];
    else out[k] = v;
  }
  return out;
}

/** The full SPEC 3 example entry. */
function _full(): JsonObject {
  return {
    addon_id: "net-probe",
    version: "1.4.2",
    enabled: true,
    delivery: "pushed_artifact",
    supervision: "agent_sidecar",
    binary_path: "/usr/lib/net-probe/net-probe",
    args: ["--interval", "10s"],
    env: { PROBE_MODE: "fast" },
    config: { targets: ["10.0.0.1"] },
    capabilities: ["CAP_NET_RAW"],
    artifact_object_key: "net-probe/1.4.2/linux-amd64/net-probe",
    artifact_sha256: SHA,
    artifact_signature: SIG,
    target_os: "linux",
    target_arch: "amd64",
    schedule: "*-*-* *:0/5:00",
  };
}

/** Decode one entry inside a document and return its verdict. */
function _verdict(entry: Json): Entry {
  const doc = decodeDocument({ config_version: "v1", addons: [entry] }, LINUX_AMD64);
  assertEquals(doc.entries.length, 1);
  return doc.entries[0]!;
}

/** Decode one entry and expect it accepted. */
function _ok(entry: Json): Assignment {
  const v = _verdict(entry);
  if (!v.ok) return fail(`expected the entry to be accepted, got ${v.path}: ${v.error}`);
  return v.assignment;
}

/** Decode one entry and expect it refused at `path` (below `addons[0]`). */
function _refused(entry: Json, path: string, reason?: string): void {
  const v = _verdict(entry);
  if (v.ok) return fail(`expected a refusal at ${path}, got ${JSON.stringify(v.assignment)}`);
  assertEquals(v.path, path, `path of ${v.error}`);
  assertStringIncludes(v.error, path);
  if (reason !== undefined) assertStringIncludes(v.error, reason);
}

// ---------------------------------------------------------------------------
// defaults and the full example

Deno.test("decodeDocument() fills in the SPEC 3 defaults", async (t) => {
  await t.step("a minimal entry", () => {
    const expected: Assignment = {
      addon_id: "net-probe",
      version: "1.4.2",
      enabled: true,
      delivery: "pushed_artifact",
      supervision: "agent_sidecar",
      binary_name: "net-probe",
      args: [],
      env: {},
      config: {},
      capabilities: [],
    };
    assertEquals(_ok(_entry()), expected);
  });

  await t.step("config_version is kept, and defaults to empty", () => {
    assertEquals(decodeDocument({ config_version: "abc", addons: [] }, LINUX_AMD64), {
      config_version: "abc",
      entries: [],
    });
    assertEquals(decodeDocument({ addons: [] }, LINUX_AMD64).config_version, "");
  });

  await t.step("enabled: false is kept", () => {
    assertEquals(_ok(_entry({ enabled: false })).enabled, false);
  });

  await t.step("the full SPEC 3 example decodes into typed values", () => {
    const expected: Assignment = {
      addon_id: "net-probe",
      version: "1.4.2",
      enabled: true,
      delivery: "pushed_artifact",
      supervision: "agent_sidecar",
      binary_path: "/usr/lib/net-probe/net-probe",
      binary_name: "net-probe",
      args: ["--interval", "10s"],
      env: { PROBE_MODE: "fast" },
      config: { targets: ["10.0.0.1"] },
      capabilities: ["CAP_NET_RAW"],
      artifact: {
        object_key: "net-probe/1.4.2/linux-amd64/net-probe",
        sha256: SHA,
        signature: SIG,
      },
      target_os: "linux",
      target_arch: "amd64",
      schedule: "*-*-* *:0/5:00",
    };
    assertEquals(_ok(_full()), expected);
  });

  await t.step("every known supervision decodes", () => {
    for (
      const s of ["agent_sidecar", "systemd_service", "ephemeral_helper", "config_toggle"] as const
    ) {
      assertEquals(_ok(_entry({ supervision: s })).supervision, s);
    }
    assertEquals(
      _ok(_entry({ supervision: "systemd_timer", schedule: "daily" })).supervision,
      "systemd_timer",
    );
  });
});

// ---------------------------------------------------------------------------
// unsafe names

Deno.test("decodeDocument() refuses only the entry with an unsafe addon_id or version", async (t) => {
  const unsafe: [string, string, string?][] = [
    ["../x", "../x"],
    ["a/b", "a/b"],
    [".hidden", ".hidden"],
    ["129 characters", "a".repeat(129)],
    ["empty", "", "must not be empty"],
    ["..", ".."],
    [".", "."],
    ["a leading dash", "-x"],
    ["a space", "net probe"],
    ["a trailing newline", "x\n"],
    ["a NUL", "x\0", "must not contain a NUL character"],
    ["non-ASCII", "prøbe"],
    ["__proto__", "__proto__"],
  ];
  for (const field of ["addon_id", "version"]) {
    for (const [name, value, reason] of unsafe) {
      await t.step(`${field}: ${name}`, () => {
        const good = _entry({ addon_id: "good" });
        const bad = field === "addon_id" ? _entry({ addon_id: value }) : _entry({ version: value });
        const doc = decodeDocument({ config_version: "v", addons: [good, bad] }, LINUX_AMD64);
        assertEquals(doc.entries.length, 2);
        assert(doc.entries[0]!.ok, "the good entry is accepted");
        const v = doc.entries[1]!;
        if (v.ok) return fail(`${JSON.stringify(value)} was accepted`);
        assertEquals(v.path, `addons[1].${field}`);
        assertStringIncludes(v.error, `addons[1].${field}`);
        assertStringIncludes(v.error, reason ?? "is not a safe name");
        // An unsafe addon_id is never handed on: callers use a refused entry's
        // addon_id as a path segment (to keep or remove that add-on's files).
        assertEquals(v.addon_id, field === "addon_id" ? undefined : "net-probe");
      });
    }
  }

  await t.step("a non-string addon_id is refused, with no addon_id reported", () => {
    const v = _verdict(_entry({ addon_id: 7 }));
    assert(!v.ok);
    assertEquals(v.path, "addons[0].addon_id");
    assertEquals(v.addon_id, undefined);
  });

  await t.step("a missing addon_id is refused", () => {
    _refused(_entry({ addon_id: undefined }), "addons[0].addon_id", "is required");
  });

  await t.step("128 characters and the allowed punctuation are fine", () => {
    const long = "a".repeat(128);
    assertEquals(_ok(_entry({ addon_id: long })).addon_id, long);
    assertEquals(_ok(_entry({ version: "1.4.2-rc.1+build_7" })).version, "1.4.2-rc.1+build_7");
    assertEquals(_ok(_entry({ addon_id: "0net.probe_x-y+z" })).addon_id, "0net.probe_x-y+z");
  });
});

Deno.test("decodeDocument() derives a safe staged file name", async (t) => {
  const cases: [string, string | undefined, string][] = [
    ["the basename of binary_path", "/usr/lib/net-probe/probe-bin", "probe-bin"],
    ["addon_id without binary_path", undefined, "net-probe"],
    ["addon_id for a hidden basename", "/usr/lib/x/.probe", "net-probe"],
    ["addon_id for a trailing slash", "/usr/lib/x/", "net-probe"],
    ["addon_id for a .. basename", "/usr/lib/..", "net-probe"],
    ["addon_id for a basename with a space", "/opt/my probe", "net-probe"],
    ["addon_id for a 129-character basename", `/opt/${"b".repeat(129)}`, "net-probe"],
  ];
  for (const [name, binary_path, expected] of cases) {
    await t.step(name, () => {
      const a = _ok(_entry({ binary_path }));
      assertEquals(a.binary_name, expected);
      assertEquals(a.binary_path, binary_path);
    });
  }
});

// ---------------------------------------------------------------------------
// artifact fields

Deno.test("decodeDocument() checks the artifact reference", async (t) => {
  await t.step("artifact_object_key without artifact_sha256 is refused", () => {
    _refused(
      _entry({ artifact_object_key: "k/net-probe" }),
      "addons[0].artifact_sha256",
      "must be given together",
    );
  });

  await t.step("artifact_sha256 without artifact_object_key is refused", () => {
    _refused(
      _entry({ artifact_sha256: SHA }),
      "addons[0].artifact_object_key",
      "must be given together",
    );
  });

  await t.step("neither is fine: no artifact (binary_path fallback)", () => {
    const a = _ok(_entry({ binary_path: "/usr/bin/net-probe" }));
    assertEquals(a.artifact, undefined);
  });

  await t.step("an uppercase sha256 is lowercased", () => {
    const a = _ok(_entry({ artifact_object_key: "k", artifact_sha256: SHA.toUpperCase() }));
    assertEquals(a.artifact, { object_key: "k", sha256: SHA });
  });

  for (
    const [name, sha] of [
      ["63 characters", SHA.slice(1)],
      ["65 characters", SHA + "0"],
      ["non-hex", "g".repeat(64)],
      ["a 0x prefix", "0x" + SHA.slice(2)],
      ["whitespace", ` ${SHA.slice(1)}`],
    ]
  ) {
    await t.step(`a sha256 of ${name} is refused`, () => {
      _refused(
        _entry({ artifact_object_key: "k", artifact_sha256: sha }),
        "addons[0].artifact_sha256",
        "64 hex characters",
      );
    });
  }

  for (const key of ["../x", "a/../../x", "a/..", "..", "a/../b"]) {
    await t.step(`object key ${JSON.stringify(key)} is refused`, () => {
      _refused(
        _entry({ artifact_object_key: key, artifact_sha256: SHA }),
        "addons[0].artifact_object_key",
        "..",
      );
    });
  }

  await t.step("object keys with dots inside a segment are fine", () => {
    const a = _ok(_entry({ artifact_object_key: "a/..b/c..d/net-probe", artifact_sha256: SHA }));
    assertEquals(a.artifact?.object_key, "a/..b/c..d/net-probe");
  });

  await t.step("a signature must be base64 of 64 bytes", () => {
    _refused(
      _entry({ artifact_object_key: "k", artifact_sha256: SHA, artifact_signature: "AAAA" }),
      "addons[0].artifact_signature",
    );
    _refused(
      _entry({
        artifact_object_key: "k",
        artifact_sha256: SHA,
        artifact_signature: "*" + SIG.slice(1),
      }),
      "addons[0].artifact_signature",
    );
  });

  for (
    const [name, sig] of [
      ["88 characters of 66 bytes", "A".repeat(88)],
      ["88 characters of 65 bytes", "A".repeat(87) + "="],
      ["base64url", "-" + SIG.slice(1)],
      ["empty", ""],
    ]
  ) {
    await t.step(`a signature of ${name} is refused`, () => {
      _refused(
        _entry({ artifact_object_key: "k", artifact_sha256: SHA, artifact_signature: sig }),
        "addons[0].artifact_signature",
      );
    });
  }

  await t.step("a signature without an artifact is refused", () => {
    _refused(_entry({ artifact_signature: SIG }), "addons[0].artifact_signature");
  });
});

Deno.test("decodeDocument() refuses a target platform other than the host's", async (t) => {
  await t.step("target_os mismatch", () => {
    _refused(_entry({ target_os: "darwin" }), "addons[0].target_os", "this host is linux/amd64");
  });
  await t.step("target_arch mismatch", () => {
    _refused(_entry({ target_arch: "arm64" }), "addons[0].target_arch", "built for linux/arm64");
  });
  await t.step("matching os and arch are fine, alone or together", () => {
    _ok(_entry({ target_os: "linux" }));
    _ok(_entry({ target_arch: "amd64" }));
    _ok(_entry({ target_os: "linux", target_arch: "amd64" }));
  });
  await t.step("the platform passed in decides", () => {
    const doc = decodeDocument(
      { addons: [_entry({ target_os: "darwin", target_arch: "arm64" })] },
      { os: "darwin", arch: "arm64" },
    );
    assert(doc.entries[0]!.ok);
  });
});

// ---------------------------------------------------------------------------
// whole-document refusals

Deno.test("decodeDocument() refuses the whole document", async (t) => {
  await t.step("two entries with one addon_id", () => {
    const e = assertThrows(
      () =>
        decodeDocument(
          { config_version: "v", addons: [_entry(), _entry({ addon_id: "other" }), _entry()] },
          LINUX_AMD64,
        ),
      DecodeError,
      "duplicate addon_id",
    );
    assertEquals(e.path, "addons[2].addon_id");
    assertStringIncludes(e.message, "addons[0]");
  });

  await t.step("duplicates are found even when one entry is otherwise bad", () => {
    assertThrows(
      () => decodeDocument({ addons: [_entry({ version: "../x" }), _entry()] }, LINUX_AMD64),
      DecodeError,
      "duplicate",
    );
  });

  for (
    const [name, addons] of [
      ["an object", {}],
      ["a string", "[]"],
      ["null", null],
      ["missing", undefined],
    ] as [string, Json | undefined][]
  ) {
    await t.step(`addons is ${name}`, () => {
      const doc: JsonObject = { config_version: "v" };
      if (addons !== undefined) doc.addons = addons;
      const e = assertThrows(() => decodeDocument(doc, LINUX_AMD64), DecodeError, "array");
      assertEquals(e.path, "addons");
    });
  }

  await t.step("a document that is not an object", () => {
    assertThrows(() => decodeDocument([], LINUX_AMD64), DecodeError, "must be an object");
    assertThrows(() => decodeDocument(null, LINUX_AMD64), DecodeError);
  });

  await t.step("an entry that is not an object refuses only itself", () => {
    const doc = decodeDocument({ addons: [_entry(), 7, null] }, LINUX_AMD64);
    assert(doc.entries[0]!.ok);
    for (const i of [1, 2]) {
      const v = doc.entries[i]!;
      assert(!v.ok, `entry ${i} refused`);
      assertEquals(v.path, `addons[${i}]`);
    }
  });
});

// ---------------------------------------------------------------------------
// supervision specifics

Deno.test("decodeDocument() lets config_toggle ignore delivery, binary_path and artifacts", async (t) => {
  await t.step("bad values in the ignored fields do not refuse the entry", () => {
    const a = _ok({
      addon_id: "feature-x",
      version: "2",
      supervision: "config_toggle",
      delivery: "carrier_pigeon",
      binary_path: 42,
      artifact_object_key: "../../etc/passwd",
      artifact_sha256: "not a digest",
      artifact_signature: "???",
      config: { on: true },
    });
    const expected: Assignment = {
      addon_id: "feature-x",
      version: "2",
      enabled: true,
      delivery: null,
      supervision: "config_toggle",
      binary_name: "feature-x",
      args: [],
      env: {},
      config: { on: true },
      capabilities: [],
    };
    assertEquals(a, expected);
  });

  await t.step("delivery is not required", () => {
    const a = _ok({ addon_id: "feature-x", version: "2", supervision: "config_toggle" });
    assertEquals(a.delivery, null);
  });

  await t.step("other supervisions require delivery", () => {
    _refused(_entry({ delivery: undefined }), "addons[0].delivery", "is required");
    _refused(_entry({ delivery: "carrier_pigeon" }), "addons[0].delivery", "must be one of");
  });
});

Deno.test("decodeDocument() reports an unknown supervision as unsupported", async (t) => {
  await t.step("the entry decodes with {unsupported}", () => {
    const a = _ok(_entry({ supervision: "kubernetes_pod" }));
    assertEquals(a.supervision, { unsupported: "kubernetes_pod" });
  });
  await t.step("other entries are not affected", () => {
    const doc = decodeDocument(
      { addons: [_entry({ addon_id: "a", supervision: "k8s" }), _entry({ addon_id: "b" })] },
      LINUX_AMD64,
    );
    assert(doc.entries[0]!.ok && doc.entries[1]!.ok);
    assertEquals(doc.entries[1]!.assignment.supervision, "agent_sidecar");
  });
  await t.step("supervision is required", () => {
    _refused(_entry({ supervision: undefined }), "addons[0].supervision", "is required");
  });
});

Deno.test("decodeDocument() checks field types and model-specific requirements", async (t) => {
  const cases: [string, JsonObject, string, string][] = [
    ["args of numbers", _entry({ args: [1] }), "addons[0].args[0]", "must be a string"],
    ["env of numbers", _entry({ env: { A: 1 } }), "addons[0].env.A", "must be a string"],
    ["config as an array", _entry({ config: [] }), "addons[0].config", "must be an object"],
    ["enabled as a string", _entry({ enabled: "yes" }), "addons[0].enabled", "true or false"],
    [
      "a capability name",
      _entry({ capabilities: ["CAP_NET_RAW", "net_admin"] }),
      "addons[0].capabilities[1]",
      "capability",
    ],
    [
      "os_package without binary_path",
      _entry({ delivery: "os_package" }),
      "addons[0].binary_path",
      "os_package",
    ],
    [
      "systemd_timer without schedule",
      _entry({ supervision: "systemd_timer" }),
      "addons[0].schedule",
      "is required",
    ],
    [
      "resources with a fractional memory limit",
      _entry({ resources: { memory_max_bytes: 1.5 } }),
      "addons[0].resources.memory_max_bytes",
      "whole number",
    ],
    [
      "resources with a zero cpu share",
      _entry({ resources: { cpu_max_percent: 0 } }),
      "addons[0].resources.cpu_max_percent",
      "at least 1",
    ],
    [
      "resources with a negative pids_max",
      _entry({ resources: { pids_max: -1 } }),
      "addons[0].resources.pids_max",
      "at least 1",
    ],
    [
      // 1e300 is a whole number to JavaScript; written out it is "1e+300", which neither
      // memory.max nor systemd's MemoryMax= reads as a limit.
      "resources with a memory limit beyond exact integers",
      _entry({ resources: { memory_max_bytes: 1e300 } }),
      "addons[0].resources.memory_max_bytes",
      "at most 9007199254740991",
    ],
    [
      "resources with an unknown limit",
      _entry({ resources: { memory_high: 1 } }),
      "addons[0].resources.memory_high",
      "unknown key",
    ],
  ];
  for (const [name, entry, path, reason] of cases) {
    await t.step(name, () => _refused(entry, path, reason));
  }
});

// ---------------------------------------------------------------------------
// round trip

Deno.test("encodeAssignment() round-trips through decodeAssignment()", async (t) => {
  const entries: [string, JsonObject][] = [
    ["the full example", _full()],
    ["a minimal entry", _entry()],
    [
      "a disabled os_package",
      _entry({ delivery: "os_package", binary_path: "/usr/bin/p", enabled: false }),
    ],
    [
      "an uppercase sha256",
      _entry({ artifact_object_key: "k", artifact_sha256: SHA.toUpperCase() }),
    ],
    ["a config_toggle", { addon_id: "t", version: "1", supervision: "config_toggle" }],
    ["an unsupported supervision", _entry({ supervision: "k8s" })],
    [
      "an ephemeral helper with a timeout",
      _entry({ supervision: "ephemeral_helper", timeout_s: 30 }),
    ],
    [
      "resources (SPEC 13)",
      _entry({ resources: { memory_max_bytes: 67108864, cpu_max_percent: 50, pids_max: 64 } }),
    ],
  ];
  for (const [name, entry] of entries) {
    await t.step(name, () => {
      const a = decodeAssignment(entry, "addons[0]", LINUX_AMD64);
      const encoded = encodeAssignment(a);
      const again = decodeAssignment(JSON.parse(JSON.stringify(encoded)), "x", LINUX_AMD64);
      assertEquals(again, a);
      assertEquals(encodeAssignment(again), encoded);
    });
  }
});
