/**
 * Fuzz tests of every decoder of untrusted input (SPEC 12): the configuration,
 * the assignments document, the local override, the catalog and the status
 * report. A few thousand generated inputs each — random JSON shapes, valid
 * inputs with one field made hostile (huge numbers, NUL, lone surrogates,
 * long strings, deep nesting, wrong types), and broken JSON text — must give
 * a valid value or a `DecodeError` naming a field path: never another
 * exception (a crash, a stack trace to the user) and never a hang.
 */

import fc from "fast-check";
import { decodeConfig } from "../src/config/config.ts";
import { decodeCatalog, documentFor, parseCatalog } from "../src/control_plane/catalog.ts";
import { decodeStatusReport } from "../src/control_plane/status_report.ts";
import { decodeDocument } from "../src/protocol/assignment.ts";
import { DecodeError, isObject, type Json, parseJson } from "../src/protocol/decode.ts";
import { applyOverride, markOverridden, parseOverride } from "../src/source/override.ts";
import { captureLog } from "../src/common/log.ts";
import { assert, fail } from "./_assert.ts";

const RUNS = 2500;
const LINUX = { os: "linux", arch: "amd64" } as const;
const KEY = "6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=";
const SIG = "A".repeat(86) + "==";

/** Values an attacker would try in any field. */
const hostile: fc.Arbitrary<Json> = fc.oneof(
  fc.constantFrom<Json>(
    1e308,
    -1e308,
    2 ** 53 + 1,
    3000000,
    99999,
    0,
    -1,
    0.5,
    "",
    "\0",
    "a\0b",
    "\ud800",
    "\udfff\ud800",
    "../../etc/shadow",
    "/usr/bin/sh",
    "A=B",
    "127.0.0.1:99999",
    "x".repeat(100_000),
    "__proto__",
    "constructor",
    true,
    null,
    [],
    {},
  ),
  fc.string({ unit: "binary", maxLength: 40 }),
  fc.integer(),
  fc.double(),
  fc.jsonValue({ maxDepth: 3 }) as fc.Arbitrary<Json>,
  fc.integer({ min: 1, max: 400 }).map((n) => _nested(n)),
);

/** `n` levels of arrays and objects inside each other. */
function _nested(n: number): Json {
  let v: Json = "deep";
  for (let i = 0; i < n; i++) v = i % 2 ? [v] : { addons: v };
  return v;
}

/** `base` with the value at one of `paths` (dotted) replaced by `value` (created if missing). */
function _mutate(base: Json, path: string, value: Json): Json {
  const copy = structuredClone(base) as Record<string, Json>;
  const keys = path.split(".");
  let o: Record<string, Json> = copy;
  for (const k of keys.slice(0, -1)) {
    if (!isObject(o[k]) && !Array.isArray(o[k])) o[k] = {};
    o = o[k] as Record<string, Json>;
  }
  o[keys[keys.length - 1]!] = value;
  return copy;
}

/** Valid inputs with one field (of `paths`, or a random key) replaced by a hostile value. */
function _mutants(base: Json, paths: string[]): fc.Arbitrary<Json> {
  return fc.tuple(
    fc.oneof(fc.constantFrom(...paths), fc.string({ unit: "binary", maxLength: 12 })),
    hostile,
  ).map(([p, v]) => _mutate(base, p, v));
}

/** Random JSON text: valid JSON, truncated JSON, or any string. */
function _texts(base: Json): fc.Arbitrary<string> {
  const text = JSON.stringify(base);
  return fc.oneof(
    fc.jsonValue().map((v) => JSON.stringify(v)),
    fc.nat(text.length).map((n) => text.slice(0, n)),
    fc.string({ unit: "binary" }),
    fc.integer({ min: 1, max: 5_000 }).map((n) => "[".repeat(n) + "]".repeat(n)),
    fc.integer({ min: 1, max: 5_000 }).map((n) => '{"addons":'.repeat(n) + "0" + "}".repeat(n)),
  );
}

/**
 * Run `decode` over `inputs`: it must return, or throw a DecodeError whose path is
 * non-empty unless the input as a whole is not the object it must be.
 */
function _holds<T>(inputs: fc.Arbitrary<T>, decode: (v: T) => unknown, root: (v: T) => boolean) {
  fc.assert(
    fc.property(inputs, (v) => {
      try {
        decode(v);
      } catch (e) {
        if (!(e instanceof DecodeError)) {
          fail(`not a DecodeError: ${(e as Error)?.stack ?? e}`);
        }
        assert(e.reason.length > 0, "a reason");
        assert(!/\[object Object\]|undefined/.test(e.message), e.message);
        if (e.path === "") assert(root(v), `no field path for ${e.message}`);
      }
    }),
    { numRuns: RUNS },
  );
}

/** Whether `v` is not an object (then an error about the whole value has the empty path). */
const notObject = (v: Json) => !isObject(v);

// ---------------------------------------------------------------------------

const CONFIG: Json = {
  agent_id: "edge-01",
  runtime_root: "/var/lib/addon-agent",
  source: {
    kind: "control_plane",
    url: "https://cp.example.net:8443",
    poll_interval_s: 30,
    token_file: "/etc/addon-agent/token",
  },
  object_store: { kind: "s3", bucket: "addons", endpoint: "https://s3.example.net" },
  trust: { public_keys: [KEY], require_signature: true },
  limits: { max_artifact_bytes: 268435456, keep_versions: 3, max_document_bytes: 8388608 },
  status: { listen: "127.0.0.1:7420" },
  host_binaries: { allow: ["/usr/sbin/nft", "/opt/vendor/bin/*"] },
  timeouts: { connect_s: 10, idle_s: 60 },
};
const CONFIG_PATHS = [
  "agent_id",
  "runtime_root",
  "config_dir",
  "source",
  "source.kind",
  "source.url",
  "source.poll_interval_s",
  "source.token_file",
  "source.path",
  "object_store",
  "object_store.kind",
  "object_store.endpoint",
  "object_store.root",
  "trust.public_keys",
  "trust.public_keys.0",
  "trust.require_signature",
  "limits.max_artifact_bytes",
  "limits.keep_versions",
  "limits.max_document_bytes",
  "status.listen",
  "host_binaries.allow",
  "host_binaries.allow.0",
  "timeouts.connect_s",
  "timeouts.idle_s",
  "systemd.unit_dir",
  "isolation",
];

Deno.test("fuzz: decodeConfig() gives a config or a DecodeError with a field path", () => {
  const decode = (v: Json) => decodeConfig(v, "/etc/addon-agent/agent.json");
  decode(CONFIG); // the base is valid
  _holds(fc.oneof(_mutants(CONFIG, CONFIG_PATHS), hostile), decode, notObject);
  _holds(
    _texts(CONFIG),
    (t) => decode(parseJson(t, "agent.json")),
    () => true, // broken JSON text is an error about the whole file
  );
});

const ENTRY: Json = {
  addon_id: "net-probe",
  version: "1.4.2",
  enabled: true,
  delivery: "pushed_artifact",
  supervision: "ephemeral_helper",
  binary_path: "/usr/lib/net-probe/net-probe",
  args: ["--interval", "10s"],
  env: { PROBE_MODE: "fast" },
  config: { targets: ["10.0.0.1"] },
  capabilities: ["CAP_NET_RAW"],
  artifact_object_key: "net-probe/1.4.2/linux-amd64/net-probe",
  artifact_sha256: "ab".repeat(32),
  artifact_signature: SIG,
  target_os: "linux",
  target_arch: "amd64",
  schedule: "*-*-* *:0/5:00",
  timeout_s: 60,
};
const ENTRY_PATHS = Object.keys(ENTRY as object).concat(["env.A", "resources", "entrypoint"]);
const DOCUMENT: Json = { config_version: "v1", addons: [ENTRY] };

Deno.test("fuzz: decodeDocument() refuses a document or an entry with a field path, never crashes", () => {
  const decode = (v: Json) => {
    const doc = decodeDocument(v, LINUX);
    for (const e of doc.entries) {
      if (!e.ok) assert(e.path.startsWith("addons["), `entry refusal without a path: ${e.error}`);
    }
  };
  decode(DOCUMENT);
  const entries = _mutants(ENTRY, ENTRY_PATHS).map((e): Json => ({
    config_version: "v",
    addons: [e, { ...(ENTRY as object), addon_id: "other" }],
  }));
  _holds(
    fc.oneof(entries, _mutants(DOCUMENT, ["config_version", "addons", "addons.0"]), hostile),
    decode,
    notObject,
  );
});

Deno.test("fuzz: the override is used whole or ignored, and the merged document decodes with paths", () => {
  const restore = captureLog(() => {}); // a malformed override is warned about, by design
  try {
    const override = { addons: [{ addon_id: "net-probe", args: ["x"] }, ENTRY] };
    fc.assert(
      fc.property(
        fc.oneof(
          _texts(override),
          _mutants(override, ["addons", "addons.0", "addons.0.addon_id", "addons.1"]).map((v) =>
            JSON.stringify(v)
          ),
        ),
        (text) => {
          const entries = parseOverride(text, "/etc/addon-agent/addons.local.json");
          assert(entries === null || Array.isArray(entries));
          const merged = applyOverride(DOCUMENT, entries);
          try {
            markOverridden(decodeDocument(merged, LINUX).entries, entries);
          } catch (e) {
            if (!(e instanceof DecodeError)) fail(`not a DecodeError: ${(e as Error).stack}`);
            assert(e.path !== "", e.message);
          }
        },
      ),
      { numRuns: RUNS },
    );
  } finally {
    restore();
  }
});

const CATALOG: Json = {
  packages: {
    "net-probe": {
      version: "1.4.2",
      delivery: "pushed_artifact",
      supervision: "agent_sidecar",
      binary_path: "/usr/lib/net-probe/net-probe",
      args: ["--interval", "10s"],
      env: { PROBE_MODE: "fast" },
      artifacts: {
        "linux/amd64": { object_key: "net-probe/1.4.2/net-probe", sha256: "ab".repeat(32) },
      },
    },
  },
  assignments: { default: ["net-probe"], agents: { "edge-01": [{ addon_id: "net-probe" }] } },
};
const CATALOG_PATHS = [
  "packages",
  "packages.net-probe",
  "packages.net-probe.version",
  "packages.net-probe.binary_path",
  "packages.net-probe.env",
  "packages.net-probe.env.A",
  "packages.net-probe.timeout_s",
  "packages.net-probe.artifacts",
  "packages.net-probe.artifacts.linux/amd64",
  "packages.net-probe.artifacts.linux/amd64.signature",
  "packages.net-probe.artifacts.linux/amd64.sha256",
  "assignments",
  "assignments.default",
  "assignments.agents",
  "assignments.agents.edge-01",
];

Deno.test("fuzz: decodeCatalog() gives a catalog whose documents decode, or a DecodeError with a path", () => {
  const decode = (v: Json) => {
    const c = decodeCatalog(v);
    // What the control plane serves from a catalog it accepted decodes on the agent.
    const doc = documentFor(c, "edge-01", "linux", "amd64");
    decodeDocument(doc as unknown as Json, LINUX);
  };
  decode(CATALOG);
  _holds(fc.oneof(_mutants(CATALOG, CATALOG_PATHS), hostile), decode, notObject);
  _holds(_texts(CATALOG), (t) => parseCatalog(t, "catalog.json"), () => true);
});

const REPORT: Json = {
  agent_id: "edge-01",
  config_version: "v1",
  reported_at: "2026-12-01T00:00:00Z",
  addons: [{
    addon_id: "net-probe",
    version: "1.4.2",
    desired_version: "1.4.2",
    state: "running",
    message: "",
    pid: 42,
    restarts: 0,
    since: "2026-12-01T00:00:00Z",
    progress: null,
  }],
};

Deno.test("fuzz: decodeStatusReport() gives the report or a DecodeError with a path", () => {
  const decode = (v: Json) => decodeStatusReport(v, "edge-01");
  decode(REPORT);
  const paths = [
    "agent_id",
    "config_version",
    "reported_at",
    "addons",
    "addons.0",
    "addons.0.addon_id",
    "addons.0.pid",
    "addons.0.restarts",
    "addons.0.progress",
    "addons.0.progress.bytes",
    "addons.0.state",
  ];
  _holds(fc.oneof(_mutants(REPORT, paths), hostile), decode, notObject);
});
