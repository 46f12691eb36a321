/**
 * Bundles through `addon-agent sync` (SPEC 15): the real CLI in a
 * subprocess, a filesystem store, archives made by the real `tar`; a hostile
 * bundle is refused naming its entry while the previous tree stays current,
 * and a kill -9 while unpacking never leaves a partial tree behind `current`.
 */

import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertStringIncludes,
} from "./_assert.ts";
import {
  exists,
  listTree,
  MAIN_TS,
  newKey,
  publishFs,
  runAgent,
  sha256Hex,
  signFor,
  syncJson,
  withTempDir,
  writeAssignments,
  writeConfig,
} from "./_helpers.ts";
import { hostileBundle, tarDir, writeHelloTree } from "./_bundles.ts";
import { DamagedVersionError, Layout, StagedVerifier } from "../src/runtime/mod.ts";
import { hostPlatform } from "../src/protocol/mod.ts";

const ID = "hello";

async function _bundle(dir: string, greeting: string, format: "tar.gz" | "tar.zst") {
  const src = `${dir}/src-${crypto.randomUUID().slice(0, 8)}`;
  await writeHelloTree(src, greeting);
  const out = `${src}.${format}`;
  await tarDir(src, out, format);
  return await Deno.readFile(out);
}

async function _entry(
  key: Awaited<ReturnType<typeof newKey>>,
  version: string,
  bytes: Uint8Array,
  extra: Record<string, unknown> = {},
) {
  return {
    addon_id: ID,
    version,
    delivery: "pushed_artifact",
    supervision: "agent_sidecar",
    artifact_object_key: `${ID}/${version}/bundle`,
    artifact_format: "tar.gz",
    entrypoint: "bin/hello",
    ...(await signFor(key, ID, version, bytes)),
    ...extra,
  };
}

/** Run the staged entrypoint as the daemon would: cwd data/, until its first lines. */
async function _runEntrypoint(root: string, entrypoint: string): Promise<string> {
  const data = `${root}/addons/${ID}/data`;
  await Deno.mkdir(data, { recursive: true });
  const out = await new Deno.Command("timeout", {
    args: ["2", `${root}/addons/${ID}/current/${entrypoint}`],
    cwd: data,
    stdout: "piped",
    stderr: "null",
  }).output();
  return new TextDecoder().decode(out.stdout);
}

Deno.test("sync stages a signed tar.gz and tar.zst bundle and its entrypoint runs", async (t) => {
  await withTempDir(async (dir) => {
    const key = await newKey();
    const root = `${dir}/root`;
    const cfg = await writeConfig(dir, {
      object_store: { kind: "filesystem", root: `${dir}/store` },
      trust: { public_keys: [key.publicBase64], require_signature: true },
    });
    const v1 = await _bundle(dir, "hi from 1.0.0", "tar.gz");
    const v2 = await _bundle(dir, "hi from 2.0.0", "tar.zst");
    await publishFs(dir, `${ID}/1.0.0/bundle`, v1);
    await publishFs(dir, `${ID}/2.0.0/bundle`, v2);

    await t.step("1.0.0 (tar.gz) becomes current; its entrypoint runs with cwd data/", async () => {
      await writeAssignments(dir, [await _entry(key, "1.0.0", v1)]);
      const run = await runAgent(["sync", "--config", cfg, "--json"]);
      assertEquals(run.code, 0, run.stderr);
      assertEquals(syncJson(run).results.map((r) => r.outcome), ["current"]);
      assertEquals(await Deno.readLink(`${root}/addons/${ID}/current`), "versions/1.0.0");
      const out = await _runEntrypoint(root, "bin/hello");
      assertEquals(out.split("\n").slice(0, 2), [
        "hi from 1.0.0",
        `cwd=${await Deno.realPath(`${root}/addons/${ID}/data`)}`,
      ]);
      const art = JSON.parse(
        await Deno.readTextFile(`${root}/addons/${ID}/versions/1.0.0/artifact.json`),
      );
      assertEquals(art.format, "tar.gz");
      assertEquals(art.entrypoint, "bin/hello");
      assertEquals(art.files, 2);
      assertEquals(art.key, key.publicBase64);
      assertEquals(await listTree(`${root}/tmp`), [], "the verified archive is gone");
    });

    await t.step("2.0.0 (tar.zst) switches current, 1.0.0 becomes previous", async () => {
      await writeAssignments(dir, [await _entry(key, "2.0.0", v2, { artifact_format: "tar.zst" })]);
      const run = await runAgent(["sync", "--config", cfg, "--json"]);
      assertEquals(run.code, 0, run.stderr);
      assertEquals(await Deno.readLink(`${root}/addons/${ID}/current`), "versions/2.0.0");
      assertEquals(await Deno.readLink(`${root}/addons/${ID}/previous`), "versions/1.0.0");
      assertEquals((await _runEntrypoint(root, "bin/hello")).split("\n")[0], "hi from 2.0.0");
    });

    await t.step("status shows each version's format and number of files", async () => {
      const run = await runAgent(["status", "--config", cfg, "--json"]);
      assertEquals(run.code, 0, run.stderr);
      const staged = JSON.parse(run.stdout).addons[0].staged;
      assertEquals(
        staged.map((s: Record<string, unknown>) => [s.version, s.format, s.files, s.entrypoint]),
        [["1.0.0", "tar.gz", 2, "bin/hello"], ["2.0.0", "tar.zst", 2, "bin/hello"]],
      );
      const table = await runAgent(["status", "--config", cfg]);
      assertMatch(table.stdout, /2\.0\.0 \([0-9a-f]{12}, tar\.zst, 2 files\)/);
    });

    await t.step("a second sync fetches nothing", async () => {
      await writeAssignments(dir, [await _entry(key, "2.0.0", v2, { artifact_format: "tar.zst" })]);
      const report = syncJson(await runAgent(["sync", "--config", cfg, "--json"]));
      assertEquals(report.results[0]?.fetched_bytes, 0);
    });

    await t.step("self-healing re-checks the entrypoint's bytes, not the archive's", async () => {
      const v = new StagedVerifier();
      const want = { version: "2.0.0", binary_name: ID, sha256: sha256Hex(v2) };
      const layout = new Layout(root);
      assertEquals(await v.check(layout, ID, want), "intact");
      const ep = `${root}/addons/${ID}/versions/2.0.0/bin/hello`;
      await Deno.writeTextFile(ep, "#!/bin/sh\necho tampered\n");
      const e = await assertRejects(() => v.check(layout, ID, want), DamagedVersionError);
      assertMatch(
        e.message,
        /version 2\.0\.0 is damaged: bin\/hello has sha256 [0-9a-f]{64}, artifact\.json says/,
      );
    });

    await t.step("the same version as another format is a conflict, not a re-stage", async () => {
      await writeAssignments(dir, [await _entry(key, "2.0.0", v2, { artifact_format: "tar.gz" })]);
      const run = await runAgent(["sync", "--config", cfg, "--json"]);
      assertEquals(run.code, 1);
      assertStringIncludes(syncJson(run).results[0]?.message ?? "", "is staged as artifact_format");
    });
  });
});

Deno.test("sync refuses a hostile bundle naming the entry, stages nothing, keeps current", async (t) => {
  await withTempDir(async (dir) => {
    const key = await newKey();
    const root = `${dir}/root`;
    const cfg = await writeConfig(dir, {
      object_store: { kind: "filesystem", root: `${dir}/store` },
      trust: { public_keys: [key.publicBase64], require_signature: true },
      limits: { max_unpacked_bytes: 1 << 20 },
    });
    const good = await _bundle(dir, "good", "tar.gz");
    await publishFs(dir, `${ID}/1.0.0/bundle`, good);
    await writeAssignments(dir, [await _entry(key, "1.0.0", good)]);
    assertEquals((await runAgent(["sync", "--config", cfg])).code, 0);
    const before = await listTree(root);
    const RUN = { name: "bin/hello", body: "#!/bin/sh\necho evil\n", mode: 0o755 };
    const cases: [string, Parameters<typeof hostileBundle>[0], RegExp][] = [
      [
        "a .. entry",
        [RUN, { name: "../../../../escaped", body: "x" }],
        /"\.\.\/\.\.\/\.\.\/\.\.\/escaped"/,
      ],
      [
        "a symlink out",
        [RUN, { name: "etc", type: "symlink", linkname: "/etc" }],
        /"etc" is a symlink/,
      ],
      [
        "a bomb",
        [RUN, { name: "zeros", body: new Uint8Array(8 << 20) }],
        /"zeros" takes the bundle past limits\.max_unpacked_bytes/,
      ],
      [
        "no entrypoint",
        [{ name: "bin/other", body: "x" }],
        /"bin\/hello" is the entrypoint but is not in the bundle/,
      ],
    ];
    let n = 2;
    for (const [what, entries, reason] of cases) {
      await t.step(what, async () => {
        const version = `${n++}.0.0`;
        const bytes = await hostileBundle(entries);
        await publishFs(dir, `${ID}/${version}/bundle`, bytes);
        await writeAssignments(dir, [await _entry(key, version, bytes)]);
        const run = await runAgent(["sync", "--config", cfg, "--json"]);
        assertEquals(run.code, 1, run.stderr);
        assertMatch(syncJson(run).results[0]?.message ?? "", reason);
        assertEquals(await Deno.readLink(`${root}/addons/${ID}/current`), "versions/1.0.0");
        assert(!(await exists(`${root}/addons/${ID}/versions/${version}`)));
        assertEquals(await listTree(`${root}/tmp`), [], "nothing left in tmp/");
        assertEquals(
          (await listTree(root)).filter((p) => p !== "state.json" && p !== "agent.lock"),
          before.filter((p) => p !== "state.json" && p !== "agent.lock"),
        );
        assert(!(await exists(`${dir}/escaped`)) && !(await exists("/escaped")));
      });
    }
  });
});

Deno.test("kill -9 while a bundle unpacks never leaves a partial tree behind current", async () => {
  await withTempDir(async (dir) => {
    const key = await newKey();
    const root = `${dir}/root`;
    const cfg = await writeConfig(dir, {
      object_store: { kind: "filesystem", root: `${dir}/store` },
      trust: { public_keys: [key.publicBase64], require_signature: true },
    });
    const old = await _bundle(dir, "old", "tar.gz");
    await publishFs(dir, `${ID}/1.0.0/bundle`, old);
    await writeAssignments(dir, [await _entry(key, "1.0.0", old)]);
    assertEquals((await runAgent(["sync", "--config", cfg])).code, 0);
    // A big bundle: 1,000 files of 16 KiB of random bytes (unpacking takes a while).
    const src = `${dir}/big`;
    await writeHelloTree(src, "new");
    for (let d = 0; d < 10; d++) {
      await Deno.mkdir(`${src}/data/${d}`, { recursive: true });
      for (let i = 0; i < 100; i++) {
        await Deno.writeFile(
          `${src}/data/${d}/${i}`,
          crypto.getRandomValues(new Uint8Array(16384)),
        );
      }
    }
    await tarDir(src, `${dir}/big.tar.gz`, "tar.gz");
    const big = await Deno.readFile(`${dir}/big.tar.gz`);
    await publishFs(dir, `${ID}/2.0.0/bundle`, big);
    await writeAssignments(dir, [await _entry(key, "2.0.0", big)]);
    const expected = await listTree(src);

    // Kill at several points: as soon as the staging tree appears, then after more and more files.
    for (const after of [0, 150, 600]) {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--quiet", MAIN_TS, "sync", "--config", cfg],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      const killed = await _killWhenStaging(root, child, after);
      await child.status;
      const current = await Deno.readLink(`${root}/addons/${ID}/current`);
      if (current === "versions/1.0.0") {
        assertEquals((await _runEntrypoint(root, "bin/hello")).split("\n")[0], "old");
      } else {
        // The rename happened before the kill: the whole new tree is there.
        assertEquals(current, "versions/2.0.0");
        const tree = (await listTree(`${root}/addons/${ID}/versions/2.0.0`))
          .filter((p) => p !== "artifact.json");
        assertEquals(tree, expected);
      }
      assert(killed || current === "versions/2.0.0", `killed during unpack at ${after} files`);
      if (current === "versions/2.0.0") break;
    }
    // The next run sweeps tmp/ and finishes the job.
    const run = await runAgent(["sync", "--config", cfg, "--json"]);
    assertEquals(run.code, 0, run.stderr);
    assertEquals(await Deno.readLink(`${root}/addons/${ID}/current`), "versions/2.0.0");
    const tree = (await listTree(`${root}/addons/${ID}/versions/2.0.0`))
      .filter((p) => p !== "artifact.json");
    assertEquals(tree, expected);
    assertEquals((await _runEntrypoint(root, "bin/hello")).split("\n")[0], "new");
    assertEquals(await listTree(`${root}/tmp`), []);
  });
});

/** SIGKILL `child` once a staging tree in tmp/ holds `after` entries; false if it finished first. */
async function _killWhenStaging(
  root: string,
  child: Deno.ChildProcess,
  after: number,
): Promise<boolean> {
  let exited = false;
  child.status.then(() => exited = true);
  const deadline = Date.now() + 60_000;
  while (!exited && Date.now() < deadline) {
    const stage = await _stagingDir(`${root}/tmp`);
    if (stage !== null) {
      const n = after === 0 ? 0 : (await listTree(stage).catch(() => [])).length;
      if (n >= after) {
        child.kill("SIGKILL");
        return true;
      }
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  return false;
}

async function _stagingDir(tmp: string): Promise<string | null> {
  try {
    for await (const e of Deno.readDir(tmp)) {
      if (e.isDirectory && e.name.startsWith("stage-")) return `${tmp}/${e.name}`;
    }
  } catch {
    // tmp/ not there yet
  }
  return null;
}

Deno.test("a bundle signed with `addon-agent sign` syncs, and old trees are collected", async () => {
  await withTempDir(async (dir) => {
    const root = `${dir}/root`;
    const keygen = await runAgent(["keygen", "--out", `${dir}/keys`]);
    assertEquals(keygen.code, 0, keygen.stderr);
    const pub = (await Deno.readTextFile(`${dir}/keys/signing.pub`)).trim();
    const cfg = await writeConfig(dir, {
      object_store: { kind: "filesystem", root: `${dir}/store` },
      trust: { public_keys: [pub], require_signature: true },
      limits: { keep_versions: 2 },
    });
    const platform = hostPlatform();
    for (const version of ["1.0.0", "2.0.0", "3.0.0"]) {
      // A read-only directory inside: the tree must still be removable once it is collected.
      const bytes = await hostileBundle([
        { name: "bin/hello", body: `#!/bin/sh\necho ${version}\n`, mode: 0o755 },
        { name: "ro/", type: "directory", mode: 0o555 },
        { name: "ro/data", body: version, mode: 0o444 },
      ]);
      const file = `${dir}/hello-${version}.tar.gz`;
      await Deno.writeFile(file, bytes);
      await publishFs(dir, `${ID}/${version}/bundle`, bytes);
      const signed = await runAgent([
        "sign",
        "--key",
        `${dir}/keys/signing.key`,
        "--addon-id",
        ID,
        "--version",
        version,
        "--os",
        platform.os,
        "--arch",
        platform.arch,
        file,
      ]);
      assertEquals(signed.code, 0, signed.stderr);
      await writeAssignments(dir, [{
        addon_id: ID,
        version,
        delivery: "pushed_artifact",
        supervision: "agent_sidecar",
        artifact_object_key: `${ID}/${version}/bundle`,
        artifact_format: "tar.gz",
        entrypoint: "bin/hello",
        ...JSON.parse(signed.stdout),
      }]);
      const run = await runAgent(["sync", "--config", cfg, "--json"]);
      assertEquals(run.code, 0, run.stderr);
    }
    assertEquals(
      await listTree(`${root}/addons/${ID}/versions`).then((t) =>
        t.filter((p) => !p.includes("/"))
      ),
      [
        "2.0.0",
        "3.0.0",
      ],
    );
    assertEquals(await Deno.readLink(`${root}/addons/${ID}/current`), "versions/3.0.0");
    assertEquals(await Deno.readTextFile(`${root}/addons/${ID}/current/ro/data`), "3.0.0");
  });
});

Deno.test("a full disk while unpacking keeps the verified archive, and the retry fetches nothing", async (t) => {
  await withTempDir(async (dir) => {
    const small = `${dir}/small`;
    await Deno.mkdir(small);
    const mount = await new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", small],
      stderr: "null",
    }).output();
    if (!mount.success) {
      console.log("skipped: cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)");
      return;
    }
    try {
      const key = await newKey();
      const root = `${small}/root`;
      const cfg = await writeConfig(dir, {
        runtime_root: root,
        object_store: { kind: "filesystem", root: `${dir}/store` },
        trust: { public_keys: [key.publicBase64], require_signature: true },
        limits: { free_space_margin_bytes: 0 },
      });
      // ~16 KB of archive, 16 MiB unpacked: the download fits the 8 MiB volume, the tree does not.
      const bytes = await hostileBundle([
        { name: "bin/hello", body: "#!/bin/sh\necho big\n", mode: 0o755 },
        { name: "zeros", body: new Uint8Array(16 << 20) },
      ]);
      await publishFs(dir, `${ID}/1.0.0/bundle`, bytes);
      await writeAssignments(dir, [await _entry(key, "1.0.0", bytes)]);

      await t.step(
        "the unpack fails on the full disk; only the verified archive stays",
        async () => {
          const run = await runAgent(["sync", "--config", cfg, "--json"]);
          assertEquals(run.code, 1, run.stderr);
          assertMatch(
            syncJson(run).results[0]?.message ?? "",
            /unpacking the bundle failed: .*; the verified archive is kept for the next try/,
          );
          assertEquals(await listTree(`${root}/tmp`), [`${sha256Hex(bytes)}.partial`]);
          assert(!(await exists(`${root}/addons/${ID}/versions/1.0.0`)));
        },
      );

      await t.step(
        "with room again, the retry unpacks the kept archive without fetching",
        async () => {
          const grow = await new Deno.Command("mount", {
            args: ["-o", "remount,size=64m", small],
          }).output();
          assert(grow.success, "remount with more room");
          const run = await runAgent(["sync", "--config", cfg, "--json"]);
          assertEquals(run.code, 0, run.stderr);
          assertEquals(syncJson(run).results[0]?.fetched_bytes, 0);
          assertEquals(await Deno.readLink(`${root}/addons/${ID}/current`), "versions/1.0.0");
          assertEquals(await listTree(`${root}/tmp`), []);
        },
      );
    } finally {
      await new Deno.Command("umount", { args: ["-l", small] }).output();
    }
  });
});
