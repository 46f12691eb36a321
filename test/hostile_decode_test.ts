/**
 * Hostile inputs, decoding half (SPEC 12): numbers out of range, names that are
 * not names, NULs, relative host binaries, small-order trust keys and malleable
 * signature encodings are refused where they are decoded, with the field path.
 * The same attacks against the real CLI: `hostile_cli_test.ts`.
 */

import { decodeConfig } from "../src/config/config.ts";
import { decodeCatalog } from "../src/control_plane/catalog.ts";
import { decodeDocument, type Entry } from "../src/protocol/assignment.ts";
import {
  DecodeError,
  joinPath,
  type Json,
  type JsonObject,
  MAX_JSON_DEPTH,
  parseJson,
} from "../src/protocol/decode.ts";
import { decodeBase64, encodeBase64, trustKeyProblem } from "../src/protocol/signature.ts";
import { assert, assertEquals, assertStringIncludes, assertThrows, fail } from "./_assert.ts";
import { newKey, publicKeyB64, signFor } from "./_helpers.ts";

const FILE = "/etc/addon-agent/agent.json";
const LINUX: { os: "linux"; arch: "amd64" } = { os: "linux", arch: "amd64" };
/** A real public key (seed 32×07). */
const KEY = "6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=";

/** Every encoding of a point of small order (canonical or not, both sign bits). */
const SMALL_ORDER_HEX = [
  "0100000000000000000000000000000000000000000000000000000000000000", // identity
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // order 2
  "0000000000000000000000000000000000000000000000000000000000000000", // order 4
  "0000000000000000000000000000000000000000000000000000000000000080", // order 4
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // order 8
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85", // order 8
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa", // order 8
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p (= 0)
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p + 1 (= 1)
  "0100000000000000000000000000000000000000000000000000000000000080", // identity, sign bit
];

function _hex(h: string): Uint8Array {
  return Uint8Array.from(h.match(/../g)!.map((b) => parseInt(b, 16)));
}

function _config(patch: Record<string, unknown>): Record<string, unknown> {
  return {
    agent_id: "edge-01",
    source: { kind: "control_plane", url: "https://cp.example.net:8443" },
    object_store: { kind: "s3", bucket: "addons" },
    ...patch,
  };
}

function _configRefused(value: unknown, path: string, reason?: string): void {
  const e = assertThrows(() => decodeConfig(value, FILE), DecodeError);
  assertEquals(e.path, path, e.message);
  assertStringIncludes(e.message, `${FILE}: ${path}`);
  if (reason !== undefined) assertStringIncludes(e.message, reason);
}

function _entry(patch: Record<string, Json | undefined> = {}): JsonObject {
  const out: JsonObject = {
    addon_id: "net-probe",
    version: "1.4.2",
    delivery: "pushed_artifact",
    supervision: "ephemeral_helper",
  };
  for (const [k, v] of Object.entries(patch)) {
    if (v === undefined) delete out[k];
    else out[k] = v;
  }
  return out;
}

function _verdict(entry: Json): Entry {
  return decodeDocument({ config_version: "v", addons: [entry] }, LINUX).entries[0]!;
}

function _entryRefused(entry: Json, path: string, reason?: string): void {
  const v = _verdict(entry);
  if (v.ok) return fail(`accepted: ${JSON.stringify(entry)}`);
  assertEquals(v.path, `addons[0].${path}`, v.error);
  assertStringIncludes(v.error, `addons[0].${path}`);
  if (reason !== undefined) assertStringIncludes(v.error, reason);
}

function _entryOk(entry: Json): void {
  const v = _verdict(entry);
  if (!v.ok) fail(`refused: ${v.error}`);
}

/** A signature text with the unused bits of its last character set: the same bytes, other text. */
function _malleate(sig: string): string {
  const ALPHA = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const i = sig.length - 3;
  return sig.slice(0, i) + ALPHA[ALPHA.indexOf(sig[i]!) ^ 1] + sig.slice(i + 1);
}

// ---------------------------------------------------------------------------
// numbers

Deno.test("decodeConfig() refuses durations and ports out of their SPEC 12 range", async (t) => {
  for (const kind of ["control_plane", "file"]) {
    const source = (v: unknown) =>
      kind === "file"
        ? { kind, path: "/srv/a.json", poll_interval_s: v }
        : { kind, url: "https://cp", poll_interval_s: v };
    for (const bad of [0, 0.5, 86401, 3000000, -1]) {
      await t.step(`${kind} poll_interval_s ${bad}`, () => {
        _configRefused(_config({ source: source(bad) }), "source.poll_interval_s");
      });
    }
    await t.step(`${kind} poll_interval_s 1 and 86400 are fine`, () => {
      const poll = (v: number) =>
        (decodeConfig(_config({ source: source(v) }), FILE).source as { poll_interval_s: number })
          .poll_interval_s;
      assertEquals(poll(1), 1);
      assertEquals(poll(86400), 86400);
    });
  }
  for (const listen of ["127.0.0.1:99999", "127.0.0.1:65536"]) {
    await t.step(`status.listen ${listen}`, () => {
      _configRefused(_config({ status: { listen } }), "status.listen", "1–65535");
    });
  }
  await t.step("status.listen 127.0.0.1:65535 is fine", () => {
    assertEquals(
      decodeConfig(_config({ status: { listen: "127.0.0.1:65535" } }), FILE).status,
      { listen: "127.0.0.1:65535" },
    );
  });
  await t.step("port 0 in source.url and object_store.endpoint", () => {
    _configRefused(
      _config({ source: { kind: "control_plane", url: "http://127.0.0.1:0" } }),
      "source.url",
    );
    _configRefused(
      _config({ object_store: { kind: "s3", bucket: "b", endpoint: "http://127.0.0.1:0" } }),
      "object_store.endpoint",
    );
  });
});

Deno.test("decodeDocument() refuses a timeout_s out of 1–604800 and keeps the other entries", () => {
  for (const bad of [0, 604801, 3000000, 1.5]) {
    _entryRefused(_entry({ timeout_s: bad }), "timeout_s");
  }
  _entryOk(_entry({ timeout_s: 604800 }));
  const doc = decodeDocument({
    config_version: "v",
    addons: [_entry({ timeout_s: 3000000 }), _entry({ addon_id: "other" })],
  }, LINUX);
  assertEquals(doc.entries.map((e) => e.ok), [false, true]);
});

// ---------------------------------------------------------------------------
// names

Deno.test("decodeDocument() refuses env keys that are not variable names", async (t) => {
  for (const key of ["A=B", "", "1X", "A B", "A-B", "Ä", "A\nB"]) {
    await t.step(JSON.stringify(key), () => {
      _entryRefused(
        _entry({ env: { GOOD: "x", [key]: "c" } }),
        joinPath("env", key),
        "variable name",
      );
    });
  }
  await t.step("_X, x1 and LONG_NAME_2 are fine", () => {
    _entryOk(_entry({ env: { _X: "1", x1: "2", LONG_NAME_2: "3" } }));
  });
});

Deno.test("decoders refuse a NUL in any string, naming the field", async (t) => {
  const cases: [string, JsonObject, string][] = [
    ["args", _entry({ args: ["ok", "a\0b"] }), "args[1]"],
    ["env value", _entry({ env: { K: "a\0" } }), "env.K"],
    ["binary_path", _entry({ binary_path: "/usr/bin/x\0y" }), "binary_path"],
    ["schedule", _entry({ schedule: "daily\0" }), "schedule"],
    [
      "artifact_object_key",
      _entry({ artifact_object_key: "k\0", artifact_sha256: "a".repeat(64) }),
      "artifact_object_key",
    ],
  ];
  for (const [name, entry, path] of cases) {
    await t.step(`document: ${name}`, () => _entryRefused(entry, path, "NUL"));
  }
  await t.step("config: runtime_root and token_file", () => {
    _configRefused(_config({ runtime_root: "/var/lib/a\0b" }), "runtime_root", "NUL");
    _configRefused(
      _config({ source: { kind: "control_plane", url: "https://cp", token_file: "/t\0" } }),
      "source.token_file",
      "NUL",
    );
  });
  await t.step("catalog: args", () => {
    const e = assertThrows(
      () =>
        decodeCatalog({
          packages: {
            p: { version: "1", delivery: "os_package", supervision: "agent_sidecar", args: ["\0"] },
          },
        }),
      DecodeError,
    );
    assertEquals(e.path, "packages.p.args[0]");
  });
});

Deno.test("decodeDocument() and decodeCatalog() refuse a relative binary_path", async (t) => {
  for (const delivery of ["os_package", "pushed_artifact"]) {
    await t.step(delivery, () => {
      _entryRefused(_entry({ delivery, binary_path: "sh" }), "binary_path", "absolute");
      _entryRefused(_entry({ delivery, binary_path: "bin/probe" }), "binary_path", "absolute");
    });
  }
  await t.step("catalog", () => {
    const e = assertThrows(
      () =>
        decodeCatalog({
          packages: {
            p: {
              version: "1",
              delivery: "os_package",
              supervision: "agent_sidecar",
              binary_path: "sh",
            },
          },
        }),
      DecodeError,
    );
    assertEquals(e.path, "packages.p.binary_path");
  });
});

// ---------------------------------------------------------------------------
// keys and signatures

Deno.test("trustKeyProblem() refuses every encoding of a small-order point", async (t) => {
  for (const hex of SMALL_ORDER_HEX) {
    await t.step(hex.slice(0, 8) + "…" + hex.slice(-2), () => {
      assertStringIncludes(trustKeyProblem(_hex(hex)) ?? "accepted", "small order");
    });
  }
  await t.step("real keys are accepted", async () => {
    for (let i = 0; i < 20; i++) {
      assertEquals(trustKeyProblem(decodeBase64(publicKeyB64(await newKey()))!), null);
    }
  });
});

Deno.test("decodeConfig() refuses a small-order or non-canonical trust key, naming its index", async (t) => {
  for (const hex of SMALL_ORDER_HEX) {
    await t.step(hex.slice(0, 8), () => {
      _configRefused(
        _config({ trust: { public_keys: [KEY, encodeBase64(_hex(hex))] } }),
        "trust.public_keys[1]",
        "small order",
      );
    });
  }
  await t.step("changed padding bits", () => {
    // KEY ends in "w=": "x=" decodes to the same 32 bytes with a non-zero unused bit.
    const other = KEY.slice(0, -2) + "x=";
    assertEquals(atob(other), atob(KEY), "the test's premise: the same bytes");
    _configRefused(
      _config({ trust: { public_keys: [other] } }),
      "trust.public_keys[0]",
      "canonical",
    );
  });
  await t.step("a byte string that is not a curve point", () => {
    _configRefused(
      _config({ trust: { public_keys: [encodeBase64(new Uint8Array(32).fill(7))] } }),
      "trust.public_keys[0]",
      "not a point",
    );
  });
});

Deno.test("decodeDocument() and decodeCatalog() refuse a signature whose padding bits were changed", async () => {
  const key = await newKey();
  const { artifact_signature, artifact_sha256 } = await signFor(key, "net-probe", "1.4.2", "x");
  const bent = _malleate(artifact_signature);
  assert(bent !== artifact_signature);
  assertEquals(atob(bent), atob(artifact_signature), "the test's premise: the same 64 bytes");
  const entry = (sig: string) =>
    _entry({
      artifact_object_key: "k",
      artifact_sha256,
      artifact_signature: sig,
    });
  _entryOk(entry(artifact_signature));
  _entryRefused(entry(bent), "artifact_signature", "canonical");
  _entryRefused(entry(artifact_signature.slice(0, -2)), "artifact_signature");
  const e = assertThrows(
    () =>
      decodeCatalog({
        packages: {
          p: {
            version: "1",
            delivery: "pushed_artifact",
            supervision: "agent_sidecar",
            artifacts: {
              "linux/amd64": { object_key: "k", sha256: artifact_sha256, signature: bent },
            },
          },
        },
      }),
    DecodeError,
  );
  assertEquals(e.path, "packages.p.artifacts.linux/amd64.signature");
});

// ---------------------------------------------------------------------------
// host_binaries

Deno.test("decodeConfig() decodes host_binaries.allow and refuses entries that are not paths", async (t) => {
  await t.step("default: nothing allowed", () => {
    assertEquals(decodeConfig(_config({}), FILE).host_binaries, { allow: [] });
  });
  await t.step("paths and dir/* are kept", () => {
    const allow = ["/usr/sbin/nft", "/opt/vendor/bin/*"];
    assertEquals(decodeConfig(_config({ host_binaries: { allow } }), FILE).host_binaries, {
      allow,
    });
  });
  for (const bad of ["sh", "/opt/*/bin", "/usr/bin/", "/a/../b", "/*", "/a//b", "*", "/a/b*"]) {
    await t.step(JSON.stringify(bad), () => {
      _configRefused(
        _config({ host_binaries: { allow: ["/ok", bad] } }),
        "host_binaries.allow[1]",
      );
    });
  }
  await t.step("unknown keys", () => {
    _configRefused(_config({ host_binaries: { allw: [] } }), "host_binaries.allw");
  });
});

// ---------------------------------------------------------------------------
// shapes

Deno.test("parseJson() refuses a value nested deeper than MAX_JSON_DEPTH", () => {
  const deep = (n: number) => "[".repeat(n) + "]".repeat(n);
  assertEquals(parseJson(deep(MAX_JSON_DEPTH)) !== undefined, true);
  const e = assertThrows(() => parseJson(deep(1_000_000), "doc.json"), DecodeError);
  assertStringIncludes(e.message, `doc.json: nested deeper than ${MAX_JSON_DEPTH} levels`);
});

Deno.test("parseJson() refuses a million unclosed brackets as invalid JSON, not a stack overflow", () => {
  const e = assertThrows(() => parseJson("[".repeat(1_000_000), "doc.json"), DecodeError);
  assertStringIncludes(e.message, "doc.json: not valid JSON");
});

Deno.test("joinPath() names fields whose keys an attacker chose", () => {
  assertEquals(joinPath("env", "A=B"), "env.A=B");
  assertEquals(joinPath("", ""), '[""]');
  assertEquals(joinPath("env", "a.b"), 'env["a.b"]');
  assertEquals(joinPath("env", "A\nB"), 'env["A\\nB"]');
  const e = assertThrows(() => decodeConfig(_config({ "": 1 }), FILE), DecodeError);
  assertEquals(e.path, '[""]');
});
