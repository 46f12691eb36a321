// Tests of src/config/config.ts (agent.json, SPEC 2) and of the runtime root checks
// in src/runtime/runtime_root.ts (SPEC 2 and 6), with real files and directories.

import { type AgentConfig, ConfigError, decodeConfig, loadConfig } from "../src/config/config.ts";
import { DecodeError } from "../src/protocol/decode.ts";
import {
  checkRuntimeRootOwnership,
  cleanTmp,
  Layout,
  openRuntimeRoot,
  RuntimeRootError,
} from "../src/runtime/runtime_root.ts";
import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "./_assert.ts";
import { exists } from "./_helpers.ts";

// ---------------------------------------------------------------------------
// helpers

const FILE = "/etc/addon-agent/agent.json";
/** Public keys of the seeds 32×07 and 32×09: real curve points (SPEC 12 refuses others). */
const KEY_A = "6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=";
const KEY_B = "/RckOFqgx1tk+3jNYC+h2ZH96/drE8WO1wLqyDXp9hg=";

// deno-lint-ignore no-explicit-any
type _Obj = Record<string, any>;

/** A minimal valid agent.json: the three required keys only. */
function _minimal(): _Obj {
  return {
    agent_id: "edge-01",
    source: { kind: "control_plane", url: "https://cp.example.net:8443" },
    object_store: { kind: "s3", bucket: "addons" },
  };
}

/** `_minimal()` with `patch` applied: top-level keys replaced, `undefined` deletes. */
function _with(patch: _Obj): _Obj {
  const out = _minimal();
  for (const [k, v] of Object.entries(patch)) {
    if (v === undefined) delete out[k];
    else out[k] = v;
  }
  return out;
}

/** Decode and expect a DecodeError naming the file and `path`, with `reason` in it. */
function _refused(value: unknown, path: string, reason?: string): DecodeError {
  const e = assertThrows(() => decodeConfig(value, FILE), DecodeError);
  assertEquals(e.path, path, `path of ${e.message}`);
  assertEquals(e.file, FILE);
  assertStringIncludes(e.message, FILE);
  assertStringIncludes(e.message, path);
  if (reason !== undefined) assertStringIncludes(e.message, reason);
  return e;
}

async function _withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "addon-agent-config-test-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

// ---------------------------------------------------------------------------
// decodeConfig: defaults

Deno.test("decodeConfig() fills in the SPEC 2 defaults", async (t) => {
  await t.step("a minimal control-plane config", () => {
    const cfg = decodeConfig(_minimal(), FILE);
    const expected: AgentConfig = {
      file: FILE,
      agent_id: "edge-01",
      runtime_root: "/var/lib/addon-agent",
      config_dir: "/etc/addon-agent",
      source: { kind: "control_plane", url: "https://cp.example.net:8443", poll_interval_s: 30 },
      object_store: {
        kind: "s3",
        bucket: "addons",
        region: "us-east-1",
        force_path_style: false,
        prefix: "",
      },
      trust: { public_keys: [], require_signature: false },
      limits: {
        max_artifact_bytes: 268435456,
        keep_versions: 3,
        max_unpacked_bytes: 1073741824,
        max_document_bytes: 8388608,
      },
      systemd: { unit_dir: "/etc/systemd/system" },
      timeouts: { connect_s: 10, idle_s: 60 },
      isolation: {
        users: Deno.uid() === 0 ? "per_addon" : "none",
        uid_range: [61000, 61999],
        cgroup: "auto",
        allowed_capabilities: [
          "CAP_NET_RAW",
          "CAP_NET_ADMIN",
          "CAP_NET_BIND_SERVICE",
          "CAP_BPF",
          "CAP_PERFMON",
        ],
      },
      host_binaries: { allow: [] },
    };
    assertEquals(cfg, expected);
    assert(!("status" in cfg), "status is absent unless configured");
  });

  await t.step("poll_interval_s is 5 for a file source", () => {
    const cfg = decodeConfig(
      _with({ source: { kind: "file", path: "/srv/assignments.json" } }),
      FILE,
    );
    assertEquals(cfg.source, { kind: "file", path: "/srv/assignments.json", poll_interval_s: 5 });
  });

  await t.step("poll_interval_s given is kept", () => {
    const cfg = decodeConfig(
      _with({ source: { kind: "control_plane", url: "https://cp", poll_interval_s: 2.5 } }),
      FILE,
    );
    assertEquals((cfg.source as { poll_interval_s: number }).poll_interval_s, 2.5);
  });

  await t.step("limits: each key may be given alone", () => {
    assertEquals(
      decodeConfig(_with({ limits: { max_artifact_bytes: 1024 } }), FILE).limits,
      {
        max_artifact_bytes: 1024,
        keep_versions: 3,
        max_unpacked_bytes: 1073741824,
        max_document_bytes: 8388608,
      },
    );
    assertEquals(
      decodeConfig(_with({ limits: { keep_versions: 5 } }), FILE).limits,
      {
        max_artifact_bytes: 268435456,
        keep_versions: 5,
        max_unpacked_bytes: 1073741824,
        max_document_bytes: 8388608,
      },
    );
    assertEquals(
      decodeConfig(
        _with({ limits: { max_unpacked_bytes: 4096, max_document_bytes: 8388608 } }),
        FILE,
      ).limits,
      {
        max_artifact_bytes: 268435456,
        keep_versions: 3,
        max_unpacked_bytes: 4096,
        max_document_bytes: 8388608,
      },
    );
    assertEquals(
      decodeConfig(_with({ limits: {} }), FILE).limits,
      {
        max_artifact_bytes: 268435456,
        keep_versions: 3,
        max_unpacked_bytes: 1073741824,
        max_document_bytes: 8388608,
      },
    );
    assertEquals(
      decodeConfig(_with({ limits: { free_space_margin_bytes: 0 } }), FILE).limits,
      {
        max_artifact_bytes: 268435456,
        keep_versions: 3,
        max_unpacked_bytes: 1073741824,
        max_document_bytes: 8388608,
        free_space_margin_bytes: 0,
      },
    );
    assertThrows(
      () => decodeConfig(_with({ limits: { free_space_margin_bytes: -1 } }), FILE),
      Error,
      "limits.free_space_margin_bytes",
    );
  });

  await t.step("trust: each key may be given alone", () => {
    assertEquals(
      decodeConfig(_with({ trust: { require_signature: true } }), FILE).trust,
      { public_keys: [], require_signature: true },
    );
    assertEquals(
      decodeConfig(_with({ trust: { public_keys: [KEY_A, KEY_B] } }), FILE).trust,
      { public_keys: [KEY_A, KEY_B], require_signature: false },
    );
  });

  await t.step("s3: region, force_path_style and prefix given are kept verbatim", () => {
    const cfg = decodeConfig(
      _with({
        object_store: {
          kind: "s3",
          bucket: "b",
          region: "eu-west-3",
          endpoint: "https://s3.example.net",
          force_path_style: true,
          prefix: "fleet/",
        },
      }),
      FILE,
    );
    assertEquals(cfg.object_store, {
      kind: "s3",
      bucket: "b",
      region: "eu-west-3",
      endpoint: "https://s3.example.net",
      force_path_style: true,
      prefix: "fleet/",
    });
  });

  await t.step("config_dir defaults to the directory of the file", () => {
    assertEquals(decodeConfig(_minimal(), "/opt/x/y/agent.json").config_dir, "/opt/x/y");
    assertEquals(decodeConfig(_minimal(), "/agent.json").config_dir, "/");
    assertEquals(
      decodeConfig(_minimal(), "conf/agent.json").config_dir,
      `${Deno.cwd()}/conf`,
    );
    assertEquals(decodeConfig(_minimal(), "agent.json").config_dir, Deno.cwd());
    assertEquals(
      decodeConfig(_with({ config_dir: "/etc/other" }), FILE).config_dir,
      "/etc/other",
    );
  });

  await t.step("relative file names resolve against config_dir", () => {
    const cfg = decodeConfig(
      _with({
        source: {
          kind: "control_plane",
          url: "https://cp",
          token_file: "token",
          ca_file: "/pki/ca.pem",
        },
        object_store: { kind: "filesystem", root: "artifacts" },
      }),
      FILE,
    );
    assertEquals(cfg.source, {
      kind: "control_plane",
      url: "https://cp",
      poll_interval_s: 30,
      token_file: "/etc/addon-agent/token",
      ca_file: "/pki/ca.pem",
    });
    assertEquals(cfg.object_store, { kind: "filesystem", root: "/etc/addon-agent/artifacts" });
  });

  await t.step("a full SPEC 2 example decodes", () => {
    const cfg = decodeConfig(
      {
        agent_id: "edge-01",
        runtime_root: "/var/lib/addon-agent/",
        config_dir: "/etc/addon-agent",
        source: {
          kind: "control_plane",
          url: "https://cp.example.net:8443/",
          poll_interval_s: 30,
          token_file: "/etc/addon-agent/token",
          ca_file: "/etc/addon-agent/ca.pem",
          cert_file: "/etc/addon-agent/agent.pem",
          key_file: "/etc/addon-agent/agent-key.pem",
        },
        object_store: {
          kind: "s3",
          bucket: "addons",
          region: "us-east-1",
          endpoint: "https://s3.example.net",
          force_path_style: true,
          prefix: "",
        },
        trust: { public_keys: [KEY_A], require_signature: false },
        limits: { max_artifact_bytes: 268435456, keep_versions: 3, max_unpacked_bytes: 1073741824 },
        status: { listen: "127.0.0.1:7420" },
      },
      FILE,
    );
    assertEquals(cfg.runtime_root, "/var/lib/addon-agent", "trailing slash dropped");
    assertEquals(
      cfg.source.kind === "control_plane" && cfg.source.url,
      "https://cp.example.net:8443",
    );
    assertEquals(cfg.status, { listen: "127.0.0.1:7420" });
  });
});

// ---------------------------------------------------------------------------
// decodeConfig: refusals

Deno.test("decodeConfig() names the file and field of a missing required key", async (t) => {
  for (const key of ["agent_id", "source", "object_store"]) {
    await t.step(key, () => {
      _refused(_with({ [key]: undefined }), key, "is required");
    });
  }
  const nested: [string, _Obj, string][] = [
    ["source.url", _with({ source: { kind: "control_plane" } }), "source.url"],
    ["source.kind", _with({ source: { url: "https://cp" } }), "source.kind"],
    ["source.path for a file source", _with({ source: { kind: "file" } }), "source.path"],
    ["object_store.bucket", _with({ object_store: { kind: "s3" } }), "object_store.bucket"],
    ["object_store.root", _with({ object_store: { kind: "filesystem" } }), "object_store.root"],
    ["status.listen", _with({ status: {} }), "status.listen"],
  ];
  for (const [name, value, path] of nested) {
    await t.step(name, () => {
      _refused(value, path, "is required");
    });
  }
  await t.step("a value that is not an object", () => {
    const e = assertThrows(() => decodeConfig([], FILE), DecodeError);
    assertStringIncludes(e.message, FILE);
    assertStringIncludes(e.message, "must be an object");
  });
});

Deno.test("decodeConfig() refuses unknown keys, naming their path", async (t) => {
  const cases: [string, _Obj, string][] = [
    ["top level", _with({ extra: 1 }), "extra"],
    ["a misspelt top-level key", _with({ runtime_rot: "/x" }), "runtime_rot"],
    [
      "source",
      _with({ source: { kind: "control_plane", url: "https://cp", extra: true } }),
      "source.extra",
    ],
    [
      "a file source with a control-plane key",
      _with({ source: { kind: "file", path: "/a.json", url: "https://cp" } }),
      "source.url",
    ],
    ["object_store", _with({ object_store: { kind: "s3", bucket: "b", x: 1 } }), "object_store.x"],
    [
      "a filesystem store with an s3 key",
      _with({ object_store: { kind: "filesystem", root: "/srv", bucket: "b" } }),
      "object_store.bucket",
    ],
    ["limits", _with({ limits: { foo: 1 } }), "limits.foo"],
    ["trust", _with({ trust: { public_keys: [], keys: [] } }), "trust.keys"],
    ["status", _with({ status: { listen: "127.0.0.1:1", tls: true } }), "status.tls"],
  ];
  for (const [name, value, path] of cases) {
    await t.step(name, () => {
      _refused(value, path, "unknown key");
    });
  }
});

Deno.test("decodeConfig() refuses wrong types, naming the path and the type", async (t) => {
  const cases: [string, _Obj, string, string][] = [
    [
      '"poll_interval_s": "30"',
      _with({ source: { kind: "control_plane", url: "https://cp", poll_interval_s: "30" } }),
      "source.poll_interval_s",
      "must be a number",
    ],
    [
      "limits.max_artifact_bytes as a string",
      _with({ limits: { max_artifact_bytes: "1024" } }),
      "limits.max_artifact_bytes",
      "must be a number",
    ],
    [
      "limits.max_unpacked_bytes as a string",
      _with({ limits: { max_unpacked_bytes: "1G" } }),
      "limits.max_unpacked_bytes",
      "must be a number",
    ],
    [
      "limits.keep_versions as a string",
      _with({ limits: { keep_versions: "3" } }),
      "limits.keep_versions",
      "must be a number",
    ],
    ["agent_id as a number", _with({ agent_id: 7 }), "agent_id", "must be a string"],
    [
      "trust.require_signature as a string",
      _with({ trust: { require_signature: "yes" } }),
      "trust.require_signature",
      "must be true or false",
    ],
    [
      "trust.public_keys as a string",
      _with({ trust: { public_keys: KEY_A } }),
      "trust.public_keys",
      "must be an array",
    ],
    ["limits as an array", _with({ limits: [] }), "limits", "must be an object"],
    ["source as a string", _with({ source: "https://cp" }), "source", "must be an object"],
    [
      "an unknown source.kind",
      _with({ source: { kind: "kafka", url: "https://cp" } }),
      "source.kind",
      "must be one of",
    ],
    ["a relative runtime_root", _with({ runtime_root: "var/lib/x" }), "runtime_root", "absolute"],
  ];
  for (const [name, value, path, reason] of cases) {
    await t.step(name, () => {
      _refused(value, path, reason);
    });
  }
});

Deno.test("decodeConfig() enforces limits.keep_versions >= 2", async (t) => {
  const refused: [number, string][] = [[1, "at least 2"], [0, "at least 2"], [2.5, "whole number"]];
  for (const [keep_versions, reason] of refused) {
    await t.step(`${keep_versions} is refused`, () => {
      _refused(_with({ limits: { keep_versions } }), "limits.keep_versions", reason);
    });
  }
  await t.step("2 is accepted", () => {
    assertEquals(
      decodeConfig(_with({ limits: { keep_versions: 2 } }), FILE).limits.keep_versions,
      2,
    );
  });
  await t.step("max_artifact_bytes 0 is refused", () => {
    _refused(_with({ limits: { max_artifact_bytes: 0 } }), "limits.max_artifact_bytes");
  });
});

Deno.test("decodeConfig() checks timeouts against 1-3600 s, naming the field", async (t) => {
  const refused: [string, unknown, string][] = [
    ["connect_s", 0, "at least 1"],
    ["connect_s", 0.5, "at least 1"],
    ["idle_s", 3601, "at most 3600"],
    ["idle_s", 3e6, "at most 3600"],
    ["idle_s", -1, "at least 1"],
    ["connect_s", "10", "must be a number"],
  ];
  for (const [key, value, reason] of refused) {
    await t.step(`${key} ${JSON.stringify(value)} is refused`, () => {
      _refused(_with({ timeouts: { [key]: value } }), `timeouts.${key}`, reason);
    });
  }
  await t.step("an unknown key is refused", () => {
    _refused(_with({ timeouts: { read_s: 5 } }), "timeouts.read_s");
  });
  await t.step("each key may be given alone; the bounds are accepted", () => {
    assertEquals(decodeConfig(_with({ timeouts: { idle_s: 1 } }), FILE).timeouts, {
      connect_s: 10,
      idle_s: 1,
    });
    assertEquals(decodeConfig(_with({ timeouts: { connect_s: 3600 } }), FILE).timeouts, {
      connect_s: 3600,
      idle_s: 60,
    });
  });
});

Deno.test("decodeConfig() allows http:// only for loopback control planes", async (t) => {
  const cfgFor = (url: string) =>
    decodeConfig(_with({ source: { kind: "control_plane", url } }), FILE);
  const allowed = [
    "https://cp.example.net",
    "https://10.0.0.1:8443",
    "http://127.0.0.1",
    "http://127.0.0.1:8080",
    "http://127.3.4.5:8080",
    "http://localhost",
    "http://localhost:8080",
    "http://[::1]",
    "http://[::1]:8080",
  ];
  for (const url of allowed) {
    await t.step(`${url} is allowed`, () => {
      const cfg = cfgFor(url);
      assert(cfg.source.kind === "control_plane");
      assertEquals(cfg.source.url, url);
    });
  }
  const refused = [
    "http://cp.example.net",
    "http://10.0.0.1:8080",
    "http://0.0.0.0:8080",
    "http://localhost.example.net",
    "http://127.0.0.1.example.net",
    "http://[::2]:8080",
    "ftp://127.0.0.1",
  ];
  for (const url of refused) {
    await t.step(`${url} is refused`, () => {
      _refused(_with({ source: { kind: "control_plane", url } }), "source.url", "https://");
    });
  }
  await t.step("a string that is not a URL is refused", () => {
    _refused(_with({ source: { kind: "control_plane", url: "cp:443" } }), "source.url");
    _refused(_with({ source: { kind: "control_plane", url: "not a url" } }), "source.url");
  });
});

Deno.test("decodeConfig() refuses bad trust.public_keys, naming the index", async (t) => {
  const bad = [
    ["not base64", "not-base64!"],
    ["31 bytes", btoa("x".repeat(31))],
    ["33 bytes", btoa("x".repeat(33))],
    ["unpadded", KEY_A.replace(/=+$/, "")],
    ["empty", ""],
    ["hex instead of base64", "07".repeat(32)],
  ];
  for (const [name, key] of bad) {
    await t.step(`${name} at [0]`, () => {
      _refused(_with({ trust: { public_keys: [key] } }), "trust.public_keys[0]");
    });
  }
  await t.step("the index of the bad key is named", () => {
    _refused(_with({ trust: { public_keys: [KEY_A, "AAAA"] } }), "trust.public_keys[1]");
  });
  await t.step("a non-string key", () => {
    _refused(_with({ trust: { public_keys: [7] } }), "trust.public_keys[0]", "must be a string");
  });
});

Deno.test("decodeConfig() checks status.listen is loopback", async (t) => {
  for (const listen of ["127.0.0.1:7420", "localhost:7420", "[::1]:7420"]) {
    await t.step(`${listen} is allowed`, () => {
      assertEquals(decodeConfig(_with({ status: { listen } }), FILE).status, { listen });
    });
  }
  for (const listen of ["0.0.0.0:7420", "10.0.0.1:7420", "127.0.0.1", ":7420"]) {
    await t.step(`${listen} is refused`, () => {
      _refused(_with({ status: { listen } }), "status.listen", "loopback");
    });
  }
});

// ---------------------------------------------------------------------------
// loadConfig

Deno.test("loadConfig() reads a file and reports errors as ConfigError naming it", async (t) => {
  await _withTempDir(async (dir) => {
    await t.step("a valid file loads; config_dir is its directory", async () => {
      const path = `${dir}/agent.json`;
      await Deno.writeTextFile(path, JSON.stringify(_minimal(), null, 2));
      const cfg = await loadConfig(path);
      assertEquals(cfg.file, path);
      assertEquals(cfg.config_dir, dir);
      assertEquals(cfg.agent_id, "edge-01");
    });

    await t.step("malformed JSON is a ConfigError naming the file", async () => {
      const path = `${dir}/broken.json`;
      await Deno.writeTextFile(path, '{"agent_id": "edge-01",');
      const e = await assertRejects(() => loadConfig(path), ConfigError);
      assertStringIncludes(e.message, path);
      assertStringIncludes(e.message, "not valid JSON");
    });

    await t.step("malformed JSON is located by line and column, and quoted nowhere", async () => {
      const path = `${dir}/unquoted.json`;
      // JSON.parse's own message quotes the text around the error: the value left unquoted.
      await Deno.writeTextFile(path, '{\n  "agent_id": hunter2x}');
      const e = await assertRejects(() => loadConfig(path), ConfigError);
      assertStringIncludes(e.message, "not valid JSON at line 2 column 15");
      assert(!e.message.includes("hunter"), e.message);
    });

    await t.step("a decode error is a ConfigError naming the file and field", async () => {
      const path = `${dir}/unknown.json`;
      await Deno.writeTextFile(path, JSON.stringify(_with({ limits: { foo: 1 } })));
      const e = await assertRejects(() => loadConfig(path), ConfigError);
      assertMatch(e.message, new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: `));
      assertStringIncludes(e.message, "limits.foo");
    });

    await t.step("a missing file is a ConfigError naming it", async () => {
      const path = `${dir}/missing.json`;
      const e = await assertRejects(() => loadConfig(path), ConfigError);
      assertStringIncludes(e.message, path);
    });
  });
});

// ---------------------------------------------------------------------------
// runtime root

Deno.test("checkRuntimeRootOwnership() refuses unsafe runtime roots", async (t) => {
  await _withTempDir(async (dir) => {
    const root = `${dir}/root`;
    await Deno.mkdir(root);

    await t.step("mode 0700 and 0755 owned by this user are fine", async () => {
      await Deno.chmod(root, 0o700);
      await checkRuntimeRootOwnership(root);
      await Deno.chmod(root, 0o755);
      await checkRuntimeRootOwnership(root);
    });

    for (const mode of [0o775, 0o757, 0o777, 0o720, 0o702]) {
      await t.step(`mode ${mode.toString(8)} is refused as group- or world-writable`, async () => {
        await Deno.chmod(root, mode);
        try {
          const e = await assertRejects(() => checkRuntimeRootOwnership(root), RuntimeRootError);
          assertStringIncludes(e.message, "group- or world-writable");
          assertEquals(e.kind, "refused");
          assertStringIncludes(e.message, root);
          await assertRejects(() => openRuntimeRoot(root), RuntimeRootError, "writable");
        } finally {
          await Deno.chmod(root, 0o755);
        }
      });
    }

    await t.step({
      name: "a root owned by another uid is refused (chown needs root)",
      ignore: Deno.uid() !== 0,
      fn: async () => {
        await Deno.chown(root, 65534, 65534);
        try {
          const e = await assertRejects(() => checkRuntimeRootOwnership(root), RuntimeRootError);
          assertStringIncludes(e.message, "owned by uid 65534");
          await assertRejects(() => openRuntimeRoot(root), RuntimeRootError, "owned by");
          assert(!(await exists(`${root}/agent.lock`)), "no lock taken in a refused root");
        } finally {
          await Deno.chown(root, 0, 0);
        }
      },
    });

    await t.step("a symlink as root is refused", async () => {
      const link = `${dir}/link`;
      await Deno.symlink(root, link);
      await assertRejects(
        () => checkRuntimeRootOwnership(link),
        RuntimeRootError,
        "real directory",
      );
    });

    await t.step("a file as root is refused", async () => {
      const file = `${dir}/file`;
      await Deno.writeTextFile(file, "");
      await assertRejects(
        () => checkRuntimeRootOwnership(file),
        RuntimeRootError,
        "real directory",
      );
    });
  });
});

Deno.test("openRuntimeRoot() creates the layout and holds agent.lock", async (t) => {
  await _withTempDir(async (dir) => {
    const rootPath = `${dir}/var/lib/addon-agent`;

    await t.step("a missing root is created with tmp/ and addons/", async () => {
      const root = await openRuntimeRoot(rootPath);
      try {
        for (const d of [rootPath, root.tmp, root.addons]) {
          const st = await Deno.lstat(d);
          assert(st.isDirectory && !st.isSymlink, `${d} is a real directory`);
        }
        assert((await Deno.lstat(`${rootPath}/agent.lock`)).isFile, "agent.lock exists");
        assertEquals((await Deno.stat(rootPath)).mode! & 0o022, 0, "root not group/world-writable");
        assertEquals((await Deno.stat(root.tmp)).mode! & 0o077, 0, "tmp/ is private");
        assertEquals(root.addonDir("x"), `${rootPath}/addons/x`);
        assertEquals(root.partial("ab"), `${rootPath}/tmp/ab.partial`);
      } finally {
        root.release();
      }
    });

    await t.step("a second open in the same process fails on agent.lock", async () => {
      const first = await openRuntimeRoot(rootPath);
      try {
        const e = await assertRejects(() => openRuntimeRoot(rootPath), RuntimeRootError);
        assertStringIncludes(e.message, "agent.lock");
        assertEquals(e.kind, "locked", "a held lock is not a configuration problem");
        assertStringIncludes(e.message, rootPath);
      } finally {
        first.release();
      }
      // After release the root can be opened again.
      const again = await openRuntimeRoot(rootPath);
      again.release();
      again.release(); // releasing twice is harmless
    });

    await t.step("a symlinked tmp/ is refused and the lock is released", async () => {
      const elsewhere = `${dir}/elsewhere`;
      await Deno.mkdir(elsewhere);
      await Deno.writeTextFile(`${elsewhere}/f`, "x");
      await Deno.symlink(elsewhere, `${rootPath}/tmp-link`);
      await Deno.remove(`${rootPath}/tmp`, { recursive: true });
      await Deno.rename(`${rootPath}/tmp-link`, `${rootPath}/tmp`);
      try {
        await assertRejects(() => openRuntimeRoot(rootPath), Error, "symlink");
        assertEquals(
          await Deno.readTextFile(`${elsewhere}/f`),
          "x",
          "not cleaned through the link",
        );
      } finally {
        await Deno.remove(`${rootPath}/tmp`);
      }
      const again = await openRuntimeRoot(rootPath); // the failed open left no lock behind
      again.release();
    });

    await t.step("another process cannot take the lock while it is held", async () => {
      const first = await openRuntimeRoot(rootPath);
      const script = `
        import { openRuntimeRoot } from ${
        JSON.stringify(new URL("../src/runtime/runtime_root.ts", import.meta.url).href)
      };
        try {
          const r = await openRuntimeRoot(${JSON.stringify(rootPath)});
          r.release();
          console.log("opened");
        } catch (e) {
          console.log("refused: " + e.message);
        }
      `;
      try {
        const out = await new Deno.Command(Deno.execPath(), {
          args: ["eval", "--no-lock", script],
          stdout: "piped",
          stderr: "piped",
        }).output();
        const text = new TextDecoder().decode(out.stdout).trim();
        assert(out.success, new TextDecoder().decode(out.stderr));
        assertMatch(text, /^refused: .*agent\.lock/);
      } finally {
        first.release();
      }
    });
  });
});

Deno.test("openRuntimeRoot() cleans tmp/, keeping only <sha256>.partial files", async (t) => {
  await _withTempDir(async (dir) => {
    const rootPath = `${dir}/root`;
    const outside = `${dir}/outside`;
    await Deno.mkdir(`${rootPath}/tmp`, { recursive: true, mode: 0o700 });
    await Deno.chmod(rootPath, 0o755);
    await Deno.mkdir(outside);
    await Deno.writeTextFile(`${outside}/precious`, "keep me");
    const tmp = `${rootPath}/tmp`;
    const sha1 = "a".repeat(64);
    const sha2 = "0123456789abcdef".repeat(4);
    const keep = [`${sha1}.partial`, `${sha2}.partial`];
    const remove = [
      `${"A".repeat(64)}.partial`, // uppercase: not a name the agent writes
      `${"a".repeat(63)}.partial`,
      `${sha1}.partial.tmp`,
      `${sha1}`,
      "abc.partial",
      ".hidden",
      "download-1234.tmp",
    ];
    for (const name of [...keep, ...remove]) await Deno.writeTextFile(`${tmp}/${name}`, name);
    // Not regular files: removed even when named like a partial.
    const sha3 = "b".repeat(64);
    await Deno.mkdir(`${tmp}/${sha3}.partial/nested`, { recursive: true });
    await Deno.writeTextFile(`${tmp}/${sha3}.partial/nested/f`, "x");
    await Deno.mkdir(`${tmp}/somedir`);
    const sha4 = "c".repeat(64);
    await Deno.symlink(outside, `${tmp}/${sha4}.partial`);
    await Deno.symlink(outside, `${tmp}/link-to-outside`);

    await t.step("at open", async () => {
      const root = await openRuntimeRoot(rootPath);
      try {
        const names: string[] = [];
        for await (const e of Deno.readDir(root.tmp)) names.push(e.name);
        assertEquals(names.sort(), [...keep].sort());
        assertEquals(await Deno.readTextFile(`${tmp}/${sha1}.partial`), `${sha1}.partial`);
      } finally {
        root.release();
      }
    });

    await t.step("symlinks were removed, not followed", async () => {
      assertEquals(await Deno.readTextFile(`${outside}/precious`), "keep me");
    });

    await t.step("cleanTmp() with a keep predicate drops partials it does not want", async () => {
      await cleanTmp(new Layout(rootPath), (sha) => sha === sha2);
      const names: string[] = [];
      for await (const e of Deno.readDir(tmp)) names.push(e.name);
      assertEquals(names, [`${sha2}.partial`]);
    });
  });
});

// ---------------------------------------------------------------------------
// decodeConfig: isolation (SPEC 13)

Deno.test("decodeConfig() decodes isolation and refuses bad values naming the field", async (t) => {
  await t.step("shared with a user, a custom range, cgroup off", () => {
    const cfg = decodeConfig(
      _with({
        isolation: {
          users: "shared",
          user: "addons",
          uid_range: [70000, 70010],
          cgroup: "off",
          allowed_capabilities: ["CAP_NET_RAW"],
        },
      }),
      FILE,
    );
    assertEquals(cfg.isolation, {
      users: "shared",
      user: "addons",
      uid_range: [70000, 70010],
      cgroup: "off",
      allowed_capabilities: ["CAP_NET_RAW"],
    });
  });
  const cases: [string, _Obj, string, string][] = [
    ["an unknown mode", { users: "root" }, "isolation.users", "must be one of"],
    ["shared without user", { users: "shared" }, "isolation.user", "required"],
    ["user without shared", { users: "none", user: "x" }, "isolation.user", "only used"],
    ["a user name with a slash", { users: "shared", user: "a/b" }, "isolation.user", "not a"],
    ["a shared user root", { users: "shared", user: "root" }, "isolation.user", "as root"],
    ["a shared user uid 0", { users: "shared", user: "0" }, "isolation.user", "as root"],
    ["a range of one number", { uid_range: [61000] }, "isolation.uid_range", "two whole"],
    ["a range into system uids", { uid_range: [0, 10] }, "isolation.uid_range", "1000 <="],
    ["a reversed range", { uid_range: [62000, 61000] }, "isolation.uid_range", "first <= last"],
    ["an unknown cgroup mode", { cgroup: "yes" }, "isolation.cgroup", "must be one of"],
    [
      "a lower-case capability",
      { allowed_capabilities: ["cap_net_raw"] },
      "isolation.allowed_capabilities[0]",
      "not a capability name",
    ],
    ["an unknown key", { cgroups: "auto" }, "isolation.cgroups", "unknown key"],
  ];
  for (const [name, isolation, path, reason] of cases) {
    await t.step(name, () => {
      _refused(_with({ isolation }), path, reason);
    });
  }
});
