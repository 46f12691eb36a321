/**
 * SPEC 12 "The runtime root": every directory of the root is checked at
 * start (none group- or world-writable or owned by someone else; an add-on's
 * `data/` excepted), other users lose their bits on `tmp/`, `addons/<id>/`
 * and the files that hold secrets, and a `tmp/<sha256>.partial` planted as a
 * symlink (even in a race) never makes the agent write outside.
 */

import { assert, assertEquals, assertRejects, assertStringIncludes } from "./_assert.ts";
import { runAgent, sha256Hex, withTempDir, writeAssignments, writeConfig } from "./_helpers.ts";
import { openRuntimeRoot, RuntimeRootError } from "../src/runtime/runtime_root.ts";
import { Layout } from "../src/runtime/runtime_root.ts";
import { DownloadError, Downloads } from "../src/delivery/download.ts";
import { FilesystemStore } from "../src/store/filesystem.ts";

const NOBODY = 65534;

async function _mode(path: string): Promise<string> {
  return ((await Deno.lstat(path)).mode! & 0o7777).toString(8);
}

async function _root(dir: string): Promise<string> {
  const root = `${dir}/root`;
  await Deno.mkdir(`${root}/tmp`, { recursive: true, mode: 0o700 });
  await Deno.mkdir(`${root}/addons/app/versions/1.0.0`, { recursive: true, mode: 0o750 });
  await Deno.mkdir(`${root}/addons/app/data`, { mode: 0o700 });
  await Deno.chmod(root, 0o755);
  await Deno.chmod(`${root}/addons`, 0o755);
  return root;
}

Deno.test("openRuntimeRoot() refuses a directory of the root that others may write or own", async (t) => {
  const cases: [string, string, (p: string) => Promise<void>][] = [
    ["tmp/ world-writable", "tmp", (p) => Deno.chmod(p, 0o777)],
    ["addons/ group-writable", "addons", (p) => Deno.chmod(p, 0o775)],
    ["addons/<id>/ world-writable", "addons/app", (p) => Deno.chmod(p, 0o757)],
    ["versions/ owned by another user", "addons/app/versions", (p) => Deno.chown(p, NOBODY, null)],
    [
      "versions/<v>/ owned by another user",
      "addons/app/versions/1.0.0",
      (p) => Deno.chown(p, NOBODY, null),
    ],
  ];
  for (const [what, rel, spoil] of cases) {
    await t.step(what, async () => {
      await withTempDir(async (dir) => {
        const root = await _root(dir);
        await spoil(`${root}/${rel}`);
        const e = await assertRejects(() => openRuntimeRoot(root), RuntimeRootError);
        assertEquals(e.kind, "refused");
        assertStringIncludes(e.message, `${root}/${rel} `);
        assert(/chmod go-w|chown/.test(e.message), `says how to fix it: ${e.message}`);
      });
    });
  }
  await t.step("an add-on's own data/ (its uid, any mode) is the exception", async () => {
    await withTempDir(async (dir) => {
      const root = await _root(dir);
      await Deno.chown(`${root}/addons/app/data`, NOBODY, null);
      await Deno.chmod(`${root}/addons/app/data`, 0o777);
      await Deno.mkdir(`${root}/addons/app/data/x`, { mode: 0o777 });
      await Deno.chmod(`${root}/addons/app/data/x`, 0o777);
      (await openRuntimeRoot(root)).release();
    });
  });
});

Deno.test("openRuntimeRoot() takes other users' bits from tmp/, addons/<id>/ and files holding secrets", async () => {
  await withTempDir(async (dir) => {
    const root = await _root(dir);
    await Deno.chmod(`${root}/tmp`, 0o755);
    await Deno.chmod(`${root}/addons/app`, 0o755);
    for (const f of ["state.json", "addons/app/last-good.json", "addons/app/config.json"]) {
      await Deno.writeTextFile(`${root}/${f}`, "{}");
      await Deno.chmod(`${root}/${f}`, 0o644);
    }
    (await openRuntimeRoot(root)).release();
    assertEquals(await _mode(`${root}/tmp`), "750");
    assertEquals(await _mode(`${root}/addons/app`), "750");
    assertEquals(await _mode(`${root}/addons`), "755", "addons/ stays traversable");
    for (const f of ["state.json", "addons/app/last-good.json", "addons/app/config.json"]) {
      assertEquals(await _mode(`${root}/${f}`), "640", f);
    }
  });
});

Deno.test("sync refuses a runtime root whose tmp/ anyone may write (exit 2, naming it)", async () => {
  await withTempDir(async (dir) => {
    const cfg = await writeConfig(dir, {
      object_store: { kind: "filesystem", root: `${dir}/store` },
    });
    await writeAssignments(dir, []);
    await Deno.mkdir(`${dir}/root/tmp`, { mode: 0o700 });
    await Deno.chmod(`${dir}/root/tmp`, 0o1777);
    const run = await runAgent(["sync", "--config", cfg]);
    assertEquals(run.code, 2, run.stderr);
    assertStringIncludes(run.stderr, `${dir}/root/tmp is group- or world-writable`);
    assertStringIncludes(run.stderr, "chmod go-w");
  });
});

Deno.test("Downloads.fetch() never writes through a tmp/<sha256>.partial planted as a symlink, even in a race", async () => {
  await withTempDir(async (dir) => {
    const layout = new Layout(`${dir}/root`);
    await Deno.mkdir(layout.tmp, { recursive: true });
    const bytes = new Uint8Array(64 * 1024).map((_, i) => i % 7);
    const sha = sha256Hex(bytes);
    await Deno.mkdir(`${dir}/store/a/1`, { recursive: true });
    await Deno.writeFile(`${dir}/store/a/1/a`, bytes);
    const victim = `${dir}/victim`;
    await Deno.writeTextFile(victim, "the attacker's target\n");
    await Deno.chmod(victim, 0o600);
    const partial = layout.partial(sha);
    // The attacker: plants the link whenever the name is free, as fast as it can.
    await Deno.writeTextFile(
      `${dir}/planter.ts`,
      `for (;;) { try { Deno.symlinkSync(${JSON.stringify(victim)}, ${
        JSON.stringify(partial)
      }); } catch { /* taken */ } }`,
    );
    const planter = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", `${dir}/planter.ts`],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const downloads = new Downloads();
    const store = new FilesystemStore(`${dir}/store`);
    let ok = 0;
    let refused = 0;
    try {
      for (let i = 0; i < 300; i++) {
        try {
          const lease = await downloads.fetch({
            store,
            layout,
            key: "a/1/a",
            sha256: sha,
            maxBytes: 1 << 20,
          });
          assertEquals(lease.size, bytes.length);
          await lease.release();
          ok++;
        } catch (e) {
          assert(e instanceof DownloadError, `a DownloadError: ${e}`);
          assertEquals(e.kind, "unavailable");
          refused++;
        }
        assertEquals(await Deno.readTextFile(victim), "the attacker's target\n", `attempt ${i}`);
      }
    } finally {
      planter.kill("SIGKILL");
      await planter.status;
    }
    assertEquals(await _mode(victim), "600", "the victim's mode is untouched");
    assert(refused + ok === 300, "every attempt ended");
  });
});
