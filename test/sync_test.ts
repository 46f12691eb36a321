/**
 * `addon-agent sync` end to end: the real CLI in a subprocess, a real S3
 * server (s3rver) or a filesystem store, real files.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import {
  listTree,
  newKey,
  publishFs,
  randomBytes,
  runAgent,
  s3SignedStore,
  scriptAddon,
  sha256Hex,
  signFor,
  startS3,
  syncJson,
  withTempDir,
  writeAssignments,
  writeConfig,
} from "./_helpers.ts";
import { openRuntimeRoot } from "../src/runtime/runtime_root.ts";
import { startTcpProxy } from "./_tcp_proxy.ts";
import { hostPlatform } from "../src/protocol/platform.ts";

const HOST = hostPlatform();
const OTHER_ARCH = HOST.arch === "amd64" ? "arm64" : "amd64";

async function _sha256File(path: string): Promise<string> {
  return sha256Hex(await Deno.readFile(path));
}

Deno.test("sync delivers a signed artifact from S3 and switches current", async (t) => {
  await withTempDir(async (dir) => {
    const s3 = await startS3(dir);
    try {
      const key = await newKey();
      const v1 = scriptAddon('echo "v1"');
      const v2 = scriptAddon('echo "v2"');
      await s3.put("net-probe/1.0.0/net-probe", v1);
      await s3.put("net-probe/2.0.0/net-probe", v2);
      const cfg = await writeConfig(dir, s3SignedStore(s3, key));
      const entry = async (version: string, bytes: string) => ({
        addon_id: "net-probe",
        version,
        delivery: "pushed_artifact",
        supervision: "agent_sidecar",
        binary_path: "/usr/lib/net-probe/net-probe",
        artifact_object_key: `net-probe/${version}/net-probe`,
        ...(await signFor(key, "net-probe", version, bytes)),
      });
      const root = `${dir}/root`;

      await t.step("first sync stages 1.0.0 and points current at it", async () => {
        await writeAssignments(dir, [await entry("1.0.0", v1)]);
        const run = await runAgent(["sync", "--config", cfg, "--json"]);
        const report = syncJson(run);
        assertEquals(run.code, 0, run.stderr);
        assertEquals(report.results.map((r) => r.outcome), ["current"]);
        assertEquals(await Deno.readLink(`${root}/addons/net-probe/current`), "versions/1.0.0");
        const bin = `${root}/addons/net-probe/versions/1.0.0/net-probe`;
        assertEquals(await Deno.readTextFile(bin), v1);
        assertEquals((await Deno.stat(bin)).mode! & 0o777, 0o750, "not world-readable (SPEC 13)");
        const art = JSON.parse(
          await Deno.readTextFile(`${root}/addons/net-probe/versions/1.0.0/artifact.json`),
        );
        assertEquals(art.sha256, sha256Hex(v1));
        assertEquals(art.key, key.publicBase64);
        assertEquals(art.object_key, "net-probe/1.0.0/net-probe");
      });

      await t.step("a second sync downloads nothing", async () => {
        const report = syncJson(await runAgent(["sync", "--config", cfg, "--json"]));
        assertEquals(report.results[0]?.fetched_bytes, 0);
        assertEquals(report.results[0]?.message, "already current");
      });

      await t.step("2.0.0 becomes current and 1.0.0 previous", async () => {
        await writeAssignments(dir, [await entry("2.0.0", v2)]);
        const run = await runAgent(["sync", "--config", cfg, "--json"]);
        assertEquals(run.code, 0, run.stderr);
        assertEquals(await Deno.readLink(`${root}/addons/net-probe/current`), "versions/2.0.0");
        assertEquals(await Deno.readLink(`${root}/addons/net-probe/previous`), "versions/1.0.0");
        assertEquals(await listTree(`${root}/tmp`), []);
      });

      await t.step("status shows what is staged, current and previous", async () => {
        const run = await runAgent(["status", "--config", cfg, "--json"]);
        assertEquals(run.code, 0, run.stderr);
        const doc = JSON.parse(run.stdout);
        const a = doc.addons[0];
        assertEquals(a.addon_id, "net-probe");
        assertEquals(a.current, "2.0.0");
        assertEquals(a.previous, "1.0.0");
        assertEquals(a.staged.map((s: { version: string }) => s.version).sort(), [
          "1.0.0",
          "2.0.0",
        ]);
        const table = await runAgent(["status", "--runtime-root", root]);
        assertMatch(table.stdout, /net-probe\s+staged\s+2\.0\.0/);
      });
    } finally {
      await s3.stop();
    }
  });
});

Deno.test("sync refuses bad input, names the reason, and keeps current", async (t) => {
  await withTempDir(async (dir) => {
    const key = await newKey();
    const stranger = await newKey();
    const good = scriptAddon('echo "good"');
    await publishFs(dir, "a/1.0.0/a", good);
    const root = `${dir}/root`;
    const baseCfg = {
      object_store: { kind: "filesystem", root: `${dir}/store` },
      trust: { public_keys: [key.publicBase64], require_signature: false },
    };
    const cfg = await writeConfig(dir, baseCfg);
    const base = {
      addon_id: "a",
      version: "1.0.0",
      delivery: "pushed_artifact",
      supervision: "agent_sidecar",
      artifact_object_key: "a/1.0.0/a",
    };
    await writeAssignments(dir, [{ ...base, ...(await signFor(key, "a", "1.0.0", good)) }]);
    assertEquals((await runAgent(["sync", "--config", cfg])).code, 0);
    const before = await listTree(root);
    const outside = `${dir}/outside`;
    await Deno.mkdir(outside);

    async function refused(
      entries: Record<string, unknown>[] | string,
      reason: RegExp,
      config = cfg,
    ): Promise<void> {
      if (typeof entries === "string") {
        await Deno.writeTextFile(`${dir}/assignments.json`, entries);
      } else {
        await writeAssignments(dir, entries);
      }
      const run = await runAgent(["sync", "--config", config, "--json"]);
      assertEquals(run.code, 1, `${run.stdout}\n${run.stderr}`);
      const report = syncJson(run);
      const text = [report.document_error ?? "", ...report.results.map((r) => r.message)].join(
        "\n",
      );
      assertMatch(text, reason);
      assertEquals(await Deno.readLink(`${root}/addons/a/current`), "versions/1.0.0");
      assertEquals(await _sha256File(`${root}/addons/a/current/a`), sha256Hex(good));
      assertEquals(await listTree(`${root}/tmp`), []);
      assertEquals(await listTree(outside), []);
    }

    const bad = scriptAddon('echo "bad"');
    await publishFs(dir, "a/2.0.0/a", bad);
    const v2 = { ...base, version: "2.0.0", artifact_object_key: "a/2.0.0/a" };

    await t.step("digest mismatch", async () => {
      await refused(
        [{ ...v2, artifact_sha256: sha256Hex("other bytes") }],
        /sha256 mismatch/,
      );
    });
    await t.step("signature by an untrusted key", async () => {
      await refused(
        [{ ...v2, ...(await signFor(stranger, "a", "2.0.0", bad)) }],
        /does not verify/,
      );
    });
    await t.step("a valid signature made for another add-on, version or platform", async () => {
      await refused([{ ...v2, ...(await signFor(key, "b", "2.0.0", bad)) }], /does not verify/);
      await refused([{ ...v2, ...(await signFor(key, "a", "2.0.1", bad)) }], /does not verify/);
      await refused(
        [{ ...v2, ...(await signFor(key, "a", "2.0.0", bad, `${HOST.os}/${OTHER_ARCH}`)) }],
        /does not verify/,
      );
    });
    await t.step("a signature while no key is configured", async () => {
      const noKeys = await writeConfig(dir, { ...baseCfg, trust: { public_keys: [] } });
      await refused([{ ...v2, ...(await signFor(key, "a", "2.0.0", bad)) }], /fail closed/, noKeys);
      await writeConfig(dir, baseCfg);
    });
    await t.step("unsigned while require_signature is true, also via binary_path", async () => {
      const strict = await writeConfig(dir, {
        ...baseCfg,
        trust: { public_keys: [key.publicBase64], require_signature: true },
      });
      await refused([{ ...v2, artifact_sha256: sha256Hex(bad) }], /unsigned/, strict);
      await refused(
        [{
          addon_id: "a",
          version: "2.0.0",
          delivery: "pushed_artifact",
          supervision: "agent_sidecar",
          binary_path: "/bin/sh",
        }],
        /require_signature/,
        strict,
      );
      await writeConfig(dir, baseCfg);
    });
    await t.step("a staged version whose key left the trust root", async () => {
      const rotated = await writeConfig(dir, {
        ...baseCfg,
        trust: { public_keys: [stranger.publicBase64] },
      });
      await refused(
        [{ ...base, ...(await signFor(key, "a", "1.0.0", good)) }],
        /does not verify|no longer/,
        rotated,
      );
      await writeConfig(dir, baseCfg);
    });
    await t.step("oversized artifact", async () => {
      const small = await writeConfig(dir, { ...baseCfg, limits: { max_artifact_bytes: 10 } });
      await refused([{ ...v2, artifact_sha256: sha256Hex(bad) }], /max_artifact_bytes/, small);
      await writeConfig(dir, baseCfg);
    });
    await t.step("traversal in addon_id, version and object key", async () => {
      await refused(
        [{ ...v2, addon_id: "../x", artifact_sha256: sha256Hex(bad) }],
        /not a safe name/,
      );
      await refused(
        [{ ...v2, version: "../../x", artifact_sha256: sha256Hex(bad) }],
        /not a safe name/,
      );
      await refused(
        [{ ...v2, artifact_object_key: "../outside/x", artifact_sha256: sha256Hex(bad) }],
        /may not/,
      );
    });
    await t.step("target platform mismatch", async () => {
      await refused(
        [{ ...v2, target_os: HOST.os, target_arch: OTHER_ARCH, artifact_sha256: sha256Hex(bad) }],
        /this host is/,
      );
    });
    await t.step("malformed JSON and duplicate ids refuse the document", async () => {
      await refused("{ not json", /not valid JSON/);
      await refused([
        { ...base, ...(await signFor(key, "a", "1.0.0", good)) },
        { ...base, ...(await signFor(key, "a", "1.0.0", good)) },
      ], /duplicate addon_id/);
    });
    await t.step("a version staged with other bytes is a conflict", async () => {
      await refused(
        [{ ...base, ...(await signFor(key, "a", "1.0.0", bad)), artifact_object_key: "a/2.0.0/a" }],
        /1\.0\.0 is staged with sha256 [0-9a-f]{64}; publish a new version/,
      );
    });
    await t.step("a planted symlink is not followed to write outside", async () => {
      await Deno.symlink(outside, `${root}/addons/a/versions/2.0.0`);
      await refused(
        [{ ...v2, ...(await signFor(key, "a", "2.0.0", bad)) }],
        /not a real directory/,
      );
      await Deno.remove(`${root}/addons/a/versions/2.0.0`);
    });
    await t.step("nothing changed in the runtime root but state.json", async () => {
      assertEquals(await listTree(root), before);
    });
    await t.step("unknown config keys exit 2 naming the key", async () => {
      const path = `${dir}/bad.json`;
      await Deno.writeTextFile(
        path,
        JSON.stringify({
          agent_id: "x",
          source: { kind: "file", path: "a", extra: 1 },
          object_store: { kind: "filesystem", root: "/" },
        }),
      );
      const run = await runAgent(["sync", "--config", path]);
      assertEquals(run.code, 2);
      assertMatch(run.stderr, /bad\.json: source\.extra: unknown key/);
    });
    await t.step("one bad entry refuses only itself", async () => {
      await publishFs(dir, "b/1.0.0/b", good);
      await writeAssignments(dir, [
        { ...base, ...(await signFor(key, "a", "1.0.0", good)) },
        { ...base, addon_id: "b", artifact_object_key: "b/1.0.0/b", artifact_sha256: "zz" },
        {
          ...base,
          addon_id: "c",
          artifact_object_key: "b/1.0.0/b",
          ...(await signFor(key, "c", "1.0.0", good)),
        },
      ]);
      const run = await runAgent(["sync", "--config", cfg, "--json"]);
      assertEquals(run.code, 1);
      const outcomes = Object.fromEntries(
        syncJson(run).results.map((r) => [r.addon_id, r.outcome]),
      );
      assertEquals(outcomes, { a: "current", b: "refused", c: "current" });
    });
  });
});

Deno.test("sync exits 1 with a clear error while another agent holds the lock", async () => {
  await withTempDir(async (dir) => {
    const cfg = await writeConfig(dir, { object_store: { kind: "filesystem", root: dir } });
    await writeAssignments(dir, []);
    const held = await openRuntimeRoot(`${dir}/root`);
    try {
      const run = await runAgent(["sync", "--config", cfg]);
      assertEquals(run.code, 1);
      assertMatch(run.stderr, /another addon-agent holds .*agent\.lock/);
    } finally {
      held.release();
    }
    assertEquals((await runAgent(["sync", "--config", cfg])).code, 0);
  });
});

Deno.test("sync resumes an interrupted download with a range request", async () => {
  await withTempDir(async (dir) => {
    const s3 = await startS3(dir);
    const port = Number(new URL(s3.endpoint).port);
    const proxy = startTcpProxy(port, { cutAfterBytes: 3 << 20 });
    try {
      const key = await newKey();
      const bytes = randomBytes(8 << 20);
      await s3.put("big/1.0.0/big", bytes);
      await writeAssignments(dir, [{
        addon_id: "big",
        version: "1.0.0",
        delivery: "pushed_artifact",
        supervision: "agent_sidecar",
        artifact_object_key: "big/1.0.0/big",
        ...(await signFor(key, "big", "1.0.0", bytes)),
      }]);
      const store = (endpoint: string) => ({
        object_store: { kind: "s3", bucket: "addons", endpoint, force_path_style: true },
        trust: { public_keys: [key.publicBase64] },
      });
      const cfg = await writeConfig(dir, store(`http://127.0.0.1:${proxy.port}`));
      const first = await runAgent(["sync", "--config", cfg, "--json"]);
      assertEquals(first.code, 1, first.stderr);
      assertMatch(syncJson(first).results[0]!.message, /cut short|download failed/);
      const partial = `${dir}/root/tmp/${sha256Hex(bytes)}.partial`;
      const kept = (await Deno.stat(partial)).size;
      assert(kept > 0 && kept < bytes.length, `partial holds ${kept} bytes`);

      await writeConfig(dir, store(s3.endpoint));
      const second = await runAgent(["sync", "--config", cfg, "--json"]);
      assertEquals(second.code, 0, second.stderr);
      const r = syncJson(second).results[0]!;
      assertEquals(r.fetched_bytes, bytes.length - kept);
      assertEquals(
        await _sha256File(`${dir}/root/addons/big/current/big`),
        sha256Hex(bytes),
      );
      assertEquals(await listTree(`${dir}/root/tmp`), []);
    } finally {
      await proxy.close();
      await s3.stop();
    }
  });
});

Deno.test("sync killed with SIGKILL at any moment leaves current whole", async () => {
  await withTempDir(async (dir) => {
    const key = await newKey();
    const v1 = randomBytes(1 << 20);
    const v2 = randomBytes(96 << 20);
    await publishFs(dir, "big/1/big", v1);
    await publishFs(dir, "big/2/big", v2);
    const digests = new Set([sha256Hex(v1), sha256Hex(v2)]);
    const cfg = await writeConfig(dir, {
      object_store: { kind: "filesystem", root: `${dir}/store` },
      trust: { public_keys: [key.publicBase64] },
    });
    const entry = async (version: string, bytes: Uint8Array) => ({
      addon_id: "big",
      version,
      delivery: "pushed_artifact",
      supervision: "agent_sidecar",
      artifact_object_key: `big/${version}/big`,
      ...(await signFor(key, "big", version, bytes)),
    });
    await writeAssignments(dir, [await entry("1", v1)]);
    assertEquals((await runAgent(["sync", "--config", cfg])).code, 0);
    await writeAssignments(dir, [await entry("2", v2)]);
    const current = `${dir}/root/addons/big/current/big`;
    let killedMidway = 0;
    for (const delayMs of [150, 300, 450, 600, 800, 1000]) {
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--quiet",
          new URL("../main.ts", import.meta.url).pathname,
          "sync",
          "--config",
          cfg,
        ],
        stdout: "null",
        stderr: "null",
      }).spawn();
      await new Promise((r) => setTimeout(r, delayMs));
      try {
        child.kill("SIGKILL");
      } catch {
        // it finished first
      }
      await child.status;
      assert(
        digests.has(await _sha256File(current)),
        `current is whole after a kill at ${delayMs} ms`,
      );
      if ((await Deno.readLink(`${dir}/root/addons/big/current`)) === "versions/2") break;
      killedMidway++;
    }
    assert(killedMidway > 0, "at least one kill landed before the switch");
    const run = await runAgent(["sync", "--config", cfg, "--json"]);
    assertEquals(run.code, 0, run.stderr);
    assertEquals(await _sha256File(current), sha256Hex(v2));
    assertEquals(await listTree(`${dir}/root/tmp`), []);
  });
});
