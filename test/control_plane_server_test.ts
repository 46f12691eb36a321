import { type ControlPlane, startControlPlane } from "../src/control_plane/server.ts";
import {
  canonicalJson,
  decodeCatalog,
  documentFor,
  parseCatalog,
} from "../src/control_plane/catalog.ts";
import { decodeDocument } from "../src/protocol/assignment.ts";
import { DecodeError, type Json, type JsonObject } from "../src/protocol/decode.ts";
import { captureLog } from "../src/common/log.ts";
import { MAIN_TS, runDeno, withTempDir } from "./_helpers.ts";
import { assert, assertEquals, assertThrows } from "./_assert.ts";

function assertThrowsDecode(fn: () => unknown, path: string, includes = ""): DecodeError {
  const e = assertThrows(fn, DecodeError, includes);
  assertEquals(e.path, path, `path of "${e.message}"`);
  return e;
}

const SHA_A = "a".repeat(64);
const SHA_B = "b".repeat(64);
const SHA_C = "c".repeat(64);
const SIG = btoa(String.fromCharCode(...new Uint8Array(64).fill(7)));

function catalog(): JsonObject {
  return {
    packages: {
      "net-probe": {
        version: "1.4.2",
        delivery: "pushed_artifact",
        supervision: "agent_sidecar",
        binary_path: "/usr/lib/net-probe/net-probe",
        args: ["--interval", "10s"],
        env: { PROBE_MODE: "fast" },
        config: { targets: ["10.0.0.1"] },
        capabilities: ["CAP_NET_RAW"],
        artifacts: {
          "linux/amd64": {
            object_key: "net-probe/1.4.2/linux-amd64/net-probe",
            sha256: SHA_A,
            signature: SIG,
          },
          "darwin/arm64": { object_key: "net-probe/1.4.2/darwin-arm64/net-probe" },
        },
      },
      "fast-path": { version: "2", supervision: "config_toggle" },
      "log-shipper": {
        version: "0.9.0",
        delivery: "os_package",
        supervision: "systemd_service",
        binary_path: "/usr/bin/log-shipper",
      },
    },
    assignments: {
      default: ["net-probe", "fast-path"],
      agents: {
        "edge-01": [
          { addon_id: "net-probe", args: ["--interval", "1s"] },
          { addon_id: "fast-path", enabled: false },
          "log-shipper",
        ],
      },
    },
  };
}

interface Fixture {
  dir: string;
  catalogPath: string;
  cp: ControlPlane;
  logs: string[];
}

async function withServer(
  fn: (f: Fixture) => Promise<void>,
  opts: { token?: string; catalog?: JsonObject } = {},
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "cp-test-" });
  const logs: string[] = [];
  const restore = captureLog((line) => logs.push(line));
  let cp: ControlPlane | undefined;
  try {
    const catalogPath = `${dir}/catalog.json`;
    await Deno.writeTextFile(catalogPath, JSON.stringify(opts.catalog ?? catalog(), null, 2));
    cp = await startControlPlane({ catalogPath, token: opts.token });
    await fn({ dir, catalogPath, cp, logs });
  } finally {
    await cp?.close();
    restore();
    await Deno.remove(dir, { recursive: true });
  }
}

async function get(
  cp: ControlPlane,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; etag: string | null; body: Json | null }> {
  const res = await fetch(cp.url + path, { headers });
  const text = await res.text();
  return {
    status: res.status,
    etag: res.headers.get("etag"),
    body: text ? JSON.parse(text) : null,
  };
}

function addons(body: Json | null): JsonObject[] {
  return (body as { addons: JsonObject[] }).addons;
}

Deno.test("startControlPlane() serves an agent its document with an ETag, then 304", async (t) => {
  await withServer(async ({ cp }) => {
    const path = "/v1/agents/host-7/addons?os=linux&arch=amd64";
    let etag = "";
    await t.step(
      "first poll: 200 with the SPEC 3 document and its config_version as ETag",
      async () => {
        const r = await get(cp, path);
        assertEquals(r.status, 200);
        const doc = r.body as { config_version: string; addons: JsonObject[] };
        assert(/^[0-9a-f]{32}$/.test(doc.config_version), doc.config_version);
        assertEquals(r.etag, `"${doc.config_version}"`);
        etag = r.etag ?? "";
        assertEquals(doc.addons.map((a) => a.addon_id), ["net-probe", "fast-path"]);
        assertEquals(doc.addons[0], {
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
          artifact_sha256: SHA_A,
          artifact_signature: SIG,
          target_os: "linux",
          target_arch: "amd64",
        });
      },
    );
    await t.step("the agent's own decoder accepts every entry", async () => {
      const r = await get(cp, path);
      const doc = decodeDocument(r.body as Json, { os: "linux", arch: "amd64" });
      for (const e of doc.entries) assert(e.ok, JSON.stringify(e));
    });
    await t.step(
      "a poll with If-None-Match of the current version: 304 with the ETag",
      async () => {
        const r = await get(cp, path, { "if-none-match": etag });
        assertEquals(r.status, 304);
        assertEquals(r.etag, etag);
        assertEquals(r.body, null);
      },
    );
    await t.step("weak and listed validators match too; a stale one does not", async () => {
      assertEquals((await get(cp, path, { "if-none-match": `W/${etag}` })).status, 304);
      assertEquals((await get(cp, path, { "if-none-match": `"old", ${etag}` })).status, 304);
      assertEquals((await get(cp, path, { "if-none-match": `"old"` })).status, 200);
    });
  });
});

Deno.test("startControlPlane() selects each agent's artifact by the os/arch it reports", async (t) => {
  await withServer(async ({ cp }) => {
    const amd = await get(cp, "/v1/agents/host-7/addons?os=linux&arch=amd64");
    await t.step(
      "linux/arm64 has no artifact: the entry has no reference and no target",
      async () => {
        const r = await get(cp, "/v1/agents/host-7/addons?os=linux&arch=arm64");
        assertEquals(r.status, 200);
        const probe = addons(r.body)[0] ?? {};
        for (const k of ["artifact_object_key", "artifact_sha256", "artifact_signature"]) {
          assert(!(k in probe), `${k} must not be emitted`);
        }
        assert(!("target_os" in probe) && !("target_arch" in probe));
        assert(r.etag !== amd.etag, "another document must have another config_version");
      },
    );
    await t.step("an artifact with an object key but no sha256 emits no reference", async () => {
      const r = await get(cp, "/v1/agents/host-7/addons?os=darwin&arch=arm64");
      const probe = addons(r.body)[0] ?? {};
      assert(!("artifact_object_key" in probe) && !("artifact_sha256" in probe));
    });
    await t.step("a config_toggle never carries a reference", () => {
      const toggle = addons(amd.body)[1] ?? {};
      assertEquals(toggle.supervision, "config_toggle");
      assert(!("artifact_object_key" in toggle) && !("delivery" in toggle));
    });
    await t.step("an unknown os or arch is a 400 that names it", async () => {
      const r = await get(cp, "/v1/agents/host-7/addons?os=plan9&arch=amd64");
      assertEquals(r.status, 400);
      assert(JSON.stringify(r.body).includes("plan9"));
      assertEquals((await get(cp, "/v1/agents/host-7/addons?os=linux&arch=x86_64")).status, 400);
    });
  });
});

Deno.test("startControlPlane() serves per-agent assignments, else the default list", async (t) => {
  await withServer(async ({ cp }) => {
    await t.step("an agent named in the catalog gets its own list with its overrides", async () => {
      const r = await get(cp, "/v1/agents/edge-01/addons?os=linux&arch=amd64");
      const list = addons(r.body);
      assertEquals(list.map((a) => a.addon_id), ["net-probe", "fast-path", "log-shipper"]);
      assertEquals(list[0]?.args, ["--interval", "1s"]);
      assertEquals(list[0]?.artifact_sha256, SHA_A);
      assertEquals(list[1]?.enabled, false);
      assertEquals(list[2]?.delivery, "os_package");
      assert(!("artifact_object_key" in (list[2] ?? {})));
    });
    await t.step("any other agent gets the default list", async () => {
      const a = await get(cp, "/v1/agents/edge-02/addons?os=linux&arch=amd64");
      const b = await get(cp, "/v1/agents/host-7/addons?os=linux&arch=amd64");
      assertEquals(addons(a.body).map((x) => x.addon_id), ["net-probe", "fast-path"]);
      assertEquals(addons(a.body)[0]?.args, ["--interval", "10s"]);
      assertEquals(a.etag, b.etag);
    });
  });
});

Deno.test("startControlPlane() reloads the catalog when the file changes", async (t) => {
  await withServer(async ({ cp, catalogPath, logs }) => {
    const path = "/v1/agents/host-7/addons?os=linux&arch=amd64";
    const first = await get(cp, path);
    let current = first.etag ?? "";
    await t.step(
      "rotating an artifact's sha256 (rewritten in place) re-versions the document",
      async () => {
        const c = catalog();
        const text = JSON.stringify(c, null, 2);
        const rotated = text.replace(SHA_A, SHA_B);
        assertEquals(rotated.length, text.length);
        await Deno.writeTextFile(catalogPath, rotated);
        const r = await get(cp, path, { "if-none-match": current });
        assertEquals(r.status, 200);
        assert(r.etag !== current, "config_version must change");
        assertEquals(addons(r.body)[0]?.artifact_sha256, SHA_B);
        current = r.etag ?? "";
        assertEquals((await get(cp, path, { "if-none-match": current })).status, 304);
      },
    );
    await t.step("same-size edits in quick succession are each seen", async () => {
      const text = JSON.stringify(catalog(), null, 2);
      for (const sha of [SHA_C, SHA_B, SHA_C, SHA_B]) {
        await Deno.writeTextFile(catalogPath, text.replace(SHA_A, sha));
        const r = await get(cp, path);
        assertEquals(addons(r.body)[0]?.artifact_sha256, sha);
      }
      current = (await get(cp, path)).etag ?? "";
    });
    await t.step("a catalog replaced by rename is picked up too", async () => {
      const c = catalog();
      const tmp = `${catalogPath}.new`;
      await Deno.writeTextFile(tmp, JSON.stringify(c).replace(SHA_A, SHA_C));
      await Deno.rename(tmp, catalogPath);
      const r = await get(cp, path, { "if-none-match": current });
      assertEquals(r.status, 200);
      assertEquals(addons(r.body)[0]?.artifact_sha256, SHA_C);
      current = r.etag ?? "";
    });
    await t.step(
      "a broken catalog keeps the last good document and logs the field once",
      async () => {
        const c = catalog();
        (c.packages as JsonObject)["net-probe"] = {
          ...((c.packages as JsonObject)["net-probe"] as JsonObject),
          colour: "blue",
        };
        await Deno.writeTextFile(catalogPath, JSON.stringify(c));
        const r1 = await get(cp, path, { "if-none-match": current });
        assertEquals(r1.status, 304);
        await Deno.writeTextFile(catalogPath, "{ not json");
        const r2 = await get(cp, path, { "if-none-match": current });
        assertEquals(r2.status, 304);
        const r3 = await get(cp, path);
        assertEquals(addons(r3.body)[0]?.artifact_sha256, SHA_C);
        const warnings = logs.filter((l) => JSON.parse(l).level === "warn");
        assertEquals(warnings.length, 2, warnings.join("\n"));
        assert(warnings[0]?.includes("packages.net-probe.colour: unknown key"), warnings[0]);
        assert(warnings[1]?.includes("not valid JSON"), warnings[1]);
      },
    );
    await t.step("a missing catalog keeps the last good document", async () => {
      await Deno.remove(catalogPath);
      assertEquals((await get(cp, path, { "if-none-match": current })).status, 304);
    });
    await t.step("a fixed catalog is served again", async () => {
      await Deno.writeTextFile(catalogPath, JSON.stringify(catalog()));
      const r = await get(cp, path, { "if-none-match": current });
      assertEquals(r.status, 200);
      assertEquals(r.etag, first.etag, "the same emitted document has the same version");
    });
  });
});

Deno.test("startControlPlane() keeps the last status report per agent", async (t) => {
  await withServer(async ({ cp }) => {
    const url = `${cp.url}/v1/agents/edge-01/addons/status`;
    const report = {
      agent_id: "edge-01",
      config_version: "abc",
      reported_at: "2025-01-01T00:00:00Z",
      addons: [{ addon_id: "net-probe", version: "1.4.2", state: "running", pid: 42 }],
    };
    await t.step("no report yet: 404", async () => {
      assertEquals((await get(cp, "/v1/agents/edge-01/addons/status")).status, 404);
    });
    await t.step("POST stores the report; GET serves it as received", async () => {
      const res = await fetch(url, { method: "POST", body: JSON.stringify(report) });
      await res.body?.cancel();
      assertEquals(res.status, 204);
      const r = await get(cp, "/v1/agents/edge-01/addons/status");
      assertEquals(r.status, 200);
      assertEquals(r.body, report);
      assertEquals(cp.reports("edge-01"), report);
      assertEquals(cp.reports("edge-02"), undefined);
    });
    await t.step("a later report replaces the earlier one", async () => {
      const next = { ...report, addons: [] };
      const res = await fetch(url, { method: "POST", body: JSON.stringify(next) });
      await res.body?.cancel();
      assertEquals(cp.reports("edge-01"), next);
    });
    await t.step("reports that are not an object with an addons array are refused", async () => {
      for (const body of ["[]", "{nope", JSON.stringify({ addons: {} }), JSON.stringify({})]) {
        const res = await fetch(url, { method: "POST", body });
        await res.body?.cancel();
        assertEquals(res.status, 400, body);
      }
      const other = { ...report, agent_id: "edge-99" };
      const res = await fetch(url, { method: "POST", body: JSON.stringify(other) });
      assertEquals(res.status, 400);
      assert((await res.text()).includes("edge-99"));
      assertEquals(cp.reports("edge-01")?.addons, []);
    });
  });
});

Deno.test("startControlPlane() requires the bearer token when started with one", async (t) => {
  await withServer(async ({ cp }) => {
    const path = "/v1/agents/edge-01/addons?os=linux&arch=amd64";
    await t.step("no or a wrong token: 401", async () => {
      assertEquals((await get(cp, path)).status, 401);
      assertEquals((await get(cp, path, { authorization: "Bearer wrong" })).status, 401);
      assertEquals((await get(cp, path, { authorization: "Basic s3cret" })).status, 401);
      const res = await fetch(`${cp.url}/v1/agents/edge-01/addons/status`, {
        method: "POST",
        body: JSON.stringify({ addons: [] }),
      });
      await res.body?.cancel();
      assertEquals(res.status, 401);
      assertEquals(cp.reports("edge-01"), undefined);
    });
    await t.step("the right token: 200", async () => {
      assertEquals((await get(cp, path, { authorization: "Bearer s3cret" })).status, 200);
    });
  }, { token: "s3cret" });
});

Deno.test("startControlPlane() answers unknown routes, methods and agent ids", async (t) => {
  await withServer(async ({ cp }) => {
    await t.step("unknown route: 404", async () => {
      assertEquals((await get(cp, "/v2/agents/edge-01/addons")).status, 404);
      assertEquals((await get(cp, "/v1/agents/edge-01/other")).status, 404);
    });
    await t.step("wrong method: 405 with Allow", async () => {
      const res = await fetch(`${cp.url}/v1/agents/edge-01/addons`, { method: "DELETE" });
      await res.body?.cancel();
      assertEquals(res.status, 405);
      assertEquals(res.headers.get("allow"), "GET");
      const res2 = await fetch(`${cp.url}/v1/agents/edge-01/addons/status`, { method: "PUT" });
      await res2.body?.cancel();
      assertEquals(res2.status, 405);
    });
    await t.step("an agent id that is not a safe name: 400", async () => {
      assertEquals((await get(cp, "/v1/agents/..%2Fx/addons")).status, 400);
      assertEquals((await get(cp, "/v1/agents/%E0%A4%A/addons")).status, 400);
      assertEquals((await get(cp, "/v1/agents/-x/addons")).status, 400);
    });
  });
});

Deno.test("startControlPlane() refuses to start on a catalog that does not decode", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "cp-test-" });
  try {
    const catalogPath = `${dir}/catalog.json`;
    await t.step("the error names the file and the field path", async () => {
      const c = catalog();
      (c.assignments as JsonObject).default = ["net-probe", "nope"];
      await Deno.writeTextFile(catalogPath, JSON.stringify(c));
      try {
        await startControlPlane({ catalogPath });
        throw new Error("should not start");
      } catch (e) {
        assert(e instanceof DecodeError, String(e));
        assertEquals(e.file, catalogPath);
        assertEquals(e.path, "assignments.default[1]");
        assert(e.message.includes('unknown package "nope"'), e.message);
      }
    });
    await t.step("a bad listen address is refused by name", async () => {
      await Deno.writeTextFile(catalogPath, JSON.stringify(catalog()));
      let err: unknown;
      await startControlPlane({ catalogPath, listen: "localhost" }).catch((e) => err = e);
      assert(err instanceof DecodeError, `a DecodeError (the CLI exits 2 on it), got ${err}`);
      assertEquals(err.path, "--listen");
      assert(err.message.includes("must be host:port"), err.message);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("decodeCatalog() names the field path of every error", async (t) => {
  const cases: [string, (c: JsonObject) => void, string, string][] = [
    ["unknown top-level key", (c) => c.extra = 1, "extra", "unknown key"],
    [
      "unknown package key",
      (c) => _pkg(c).sha = "x",
      "packages.net-probe.sha",
      "unknown key",
    ],
    ["missing version", (c) => delete _pkg(c).version, "packages.net-probe.version", "required"],
    [
      "unsafe version",
      (c) => _pkg(c).version = "../1",
      "packages.net-probe.version",
      "not a safe version",
    ],
    [
      "unknown supervision",
      (c) => _pkg(c).supervision = "cron",
      "packages.net-probe.supervision",
      "must be one of",
    ],
    [
      "delivery missing",
      (c) => delete _pkg(c).delivery,
      "packages.net-probe.delivery",
      "is required",
    ],
    [
      "artifact key not os/arch",
      (c) => (_pkg(c).artifacts as JsonObject)["linux/x86_64"] = {},
      "packages.net-probe.artifacts.linux/x86_64",
      "os/arch",
    ],
    [
      "artifact sha256 not hex",
      (c) => _art(c).sha256 = "xyz",
      "packages.net-probe.artifacts.linux/amd64.sha256",
      "64 hex",
    ],
    [
      "artifact signature not 64 bytes",
      (c) => _art(c).signature = "AAAA",
      "packages.net-probe.artifacts.linux/amd64.signature",
      "64 bytes",
    ],
    [
      "artifact object key leaving the store",
      (c) => _art(c).object_key = "a/../../etc/passwd",
      "packages.net-probe.artifacts.linux/amd64.object_key",
      "..",
    ],
    [
      "unknown artifact key",
      (c) => _art(c).sha = SHA_A,
      "packages.net-probe.artifacts.linux/amd64.sha",
      "unknown key",
    ],
    [
      "capability",
      (c) => _pkg(c).capabilities = ["NET_RAW"],
      "packages.net-probe.capabilities[0]",
      "capability",
    ],
    [
      "unknown package assigned to an agent",
      (c) => _agents(c)["edge-01"] = ["ghost"],
      "assignments.agents.edge-01[0]",
      'unknown package "ghost"',
    ],
    [
      "the same add-on assigned twice",
      (c) => _agents(c)["edge-01"] = ["net-probe", { addon_id: "net-probe" }],
      "assignments.agents.edge-01[1]",
      "assigned twice",
    ],
    [
      "an item that is neither a name nor an object",
      (c) => _agents(c)["edge-01"] = [7],
      "assignments.agents.edge-01[0]",
      "package name",
    ],
    [
      "an unknown override",
      (c) => _agents(c)["edge-01"] = [{ addon_id: "net-probe", versoin: "2" }],
      "assignments.agents.edge-01[0].versoin",
      "unknown key",
    ],
    [
      "a version override without artifacts",
      (c) => _agents(c)["edge-01"] = [{ addon_id: "net-probe", version: "1.5.0" }],
      "assignments.agents.edge-01[0].artifacts",
      "builds of 1.4.2",
    ],
    [
      "an override that leaves an entry incomplete",
      (c) => _agents(c)["edge-01"] = [{ addon_id: "log-shipper", supervision: "systemd_timer" }],
      "assignments.agents.edge-01[0].schedule",
      "required",
    ],
    [
      "a bad agent id",
      (c) => _agents(c)["../x"] = [],
      'assignments.agents["../x"]',
      "not a valid agent id",
    ],
    [
      "a default that is not a list",
      (c) => (c.assignments as JsonObject).default = "net-probe",
      "assignments.default",
      "array",
    ],
    ["packages missing", (c) => delete c.packages, "packages", "required"],
  ];
  for (const [name, mutate, path, includes] of cases) {
    await t.step(name, () => {
      const c = catalog();
      mutate(c);
      assertThrowsDecode(() => decodeCatalog(c as Json), path, includes);
    });
  }
  await t.step("parseCatalog() attributes errors to the file", () => {
    const e = assertThrowsDecode(() => parseCatalog("[]", "/etc/cp/catalog.json"), "", "object");
    assert(e.message.startsWith("/etc/cp/catalog.json: "), e.message);
  });
});

Deno.test("documentFor() versions exactly what it emits", async (t) => {
  const base = documentFor(decodeCatalog(catalog() as Json), "host-7", "linux", "amd64");
  await t.step("the key order of the catalog does not matter", () => {
    const c = catalog();
    const reordered = JSON.parse(canonicalJson(c as Json)) as Json;
    const doc = documentFor(decodeCatalog(reordered), "host-7", "linux", "amd64");
    assertEquals(doc.config_version, base.config_version);
  });
  await t.step("rotating a signature re-versions the document", () => {
    const c = catalog();
    _art(c).signature = btoa(String.fromCharCode(...new Uint8Array(64).fill(8)));
    const doc = documentFor(decodeCatalog(c as Json), "host-7", "linux", "amd64");
    assert(doc.config_version !== base.config_version);
  });
  await t.step("a change outside the agent's list does not", () => {
    const c = catalog();
    (_agents(c)["edge-01"] as Json[]).push({ addon_id: "net-probe", enabled: false });
    (_agents(c)["edge-01"] as Json[]).splice(0, 1);
    const doc = documentFor(decodeCatalog(c as Json), "host-7", "linux", "amd64");
    assertEquals(doc.config_version, base.config_version);
  });
  await t.step("an agent without os/arch gets no references", () => {
    const doc = documentFor(decodeCatalog(catalog() as Json), "host-7", "", "");
    assert(doc.addons.every((a) => !("artifact_sha256" in a)));
  });
  await t.step("sha256 is emitted in lowercase", () => {
    const c = catalog();
    _art(c).sha256 = "ABCDEF".padEnd(64, "0");
    const doc = documentFor(decodeCatalog(c as Json), "host-7", "linux", "amd64");
    assertEquals(doc.addons[0]?.artifact_sha256, "abcdef".padEnd(64, "0"));
  });
});

function _pkg(c: JsonObject): JsonObject {
  return (c.packages as JsonObject)["net-probe"] as JsonObject;
}

function _art(c: JsonObject): JsonObject {
  return (_pkg(c).artifacts as JsonObject)["linux/amd64"] as JsonObject;
}

function _agents(c: JsonObject): JsonObject {
  return (c.assignments as JsonObject).agents as JsonObject;
}

Deno.test("control-plane exits 2 naming the flag for a bad --listen or an unreadable --catalog", async (t) => {
  await withTempDir(async (dir) => {
    const catalogPath = `${dir}/catalog.json`;
    await Deno.writeTextFile(catalogPath, JSON.stringify(catalog()));
    const cp = (args: string[]) =>
      runDeno(["run", "-A", "--quiet", MAIN_TS, "control-plane", ...args], {
        env: { NO_COLOR: "1" },
      });

    await t.step("--listen without a port", async () => {
      const r = await cp(["--catalog", catalogPath, "--listen", "localhost"]);
      assertEquals(r.code, 2, r.stderr);
      assert(r.stderr.includes("--listen") && r.stderr.includes("host:port"), r.stderr);
    });

    await t.step("a --catalog that does not exist", async () => {
      const r = await cp(["--catalog", `${dir}/missing.json`, "--listen", "127.0.0.1:0"]);
      assertEquals(r.code, 2, r.stderr);
      assert(r.stderr.includes(`--catalog ${dir}/missing.json`), r.stderr);
    });
  });
});
