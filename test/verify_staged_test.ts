/**
 * `StagedVerifier`, `quarantineVersion`, `repairLinks` (SPEC 8, self-healing)
 * against real files: what counts as damaged, what is cached, and links that
 * point nowhere.
 */

import { assert, assertEquals, assertRejects, assertStringIncludes } from "./_assert.ts";
import { sha256Hex, withTempDir } from "./_helpers.ts";
import {
  activate,
  DamagedVersionError,
  Layout,
  MAX_REMEMBERED,
  quarantineVersion,
  RACY_MS,
  repairLinks,
  StagedVerifier,
} from "../src/runtime/mod.ts";

const ID = "probe";
const BYTES = "#!/bin/sh\necho fine\n";

async function _stage(layout: Layout, version: string, bytes = BYTES, id = ID): Promise<string> {
  const dir = layout.versionDir(id, version);
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/${id}`, bytes);
  await Deno.chmod(`${dir}/${id}`, 0o755);
  await Deno.writeTextFile(
    `${dir}/artifact.json`,
    JSON.stringify({ addon_id: id, version, sha256: sha256Hex(bytes), size: bytes.length }),
  );
  return `${dir}/${id}`;
}

/** A clock past {@linkcode RACY_MS} after the files of a test were written. */
const _later = () => Date.now() + 10 * RACY_MS;

function _want(version: string, bytes = BYTES) {
  return { version, binary_name: ID, sha256: sha256Hex(bytes) };
}

Deno.test("StagedVerifier.check() passes intact bytes and hashes them once while unchanged", async () => {
  await withTempDir(async (dir) => {
    const layout = new Layout(dir);
    const path = await _stage(layout, "1.0.0");
    // Just written: not trusted to show a rewrite in its timestamps yet, so hashed each time.
    const fresh = new StagedVerifier();
    assertEquals(await fresh.check(layout, ID, _want("1.0.0")), "intact");
    assertEquals(await fresh.check(layout, ID, _want("1.0.0")), "intact");
    assertEquals(fresh.hashes, 2, "a file changed within RACY_MS is hashed again");
    const v = new StagedVerifier(MAX_REMEMBERED, _later);
    assertEquals(await v.check(layout, ID, _want("1.0.0")), "intact");
    assertEquals(await v.check(layout, ID, _want("1.0.0")), "intact");
    assertEquals(v.hashes, 1, "a second check of an unchanged file hashes nothing");
    // Any change of identity (here mtime and ctime) makes it hash again.
    await Deno.utime(path, new Date(2020, 0, 1), new Date(2020, 0, 1));
    assertEquals(await v.check(layout, ID, _want("1.0.0")), "intact");
    assertEquals(v.hashes, 2);
  });
});

Deno.test("StagedVerifier.check() finds bytes overwritten after a successful check", async () => {
  await withTempDir(async (dir) => {
    const layout = new Layout(dir);
    const path = await _stage(layout, "1.0.0");
    const v = new StagedVerifier();
    assertEquals(await v.check(layout, ID, _want("1.0.0")), "intact");
    await Deno.writeTextFile(path, BYTES.replace("fine", "EVIL")); // same size
    const e = await assertRejects(() => v.check(layout, ID, _want("1.0.0")), DamagedVersionError);
    assertStringIncludes(e.message, "version 1.0.0 is damaged: probe has sha256 ");
    assertEquals(e.version, "1.0.0");
  });
});

Deno.test("StagedVerifier.check() calls a version damaged when its files are missing or garbage", async (t) => {
  const cases: [string, (dir: string) => Promise<void>, string][] = [
    [
      "garbage artifact.json",
      (d) => Deno.writeTextFile(`${d}/artifact.json`, "garbage{"),
      "artifact.json",
    ],
    ["missing artifact.json", (d) => Deno.remove(`${d}/artifact.json`), "artifact.json"],
    [
      "artifact.json without a sha256",
      (d) => Deno.writeTextFile(`${d}/artifact.json`, "{}"),
      "sha256",
    ],
    ["missing binary", (d) => Deno.remove(`${d}/${ID}`), `${ID} is missing`],
    ["binary replaced by a directory", async (d) => {
      await Deno.remove(`${d}/${ID}`);
      await Deno.mkdir(`${d}/${ID}`);
    }, "not a regular file"],
    ["binary replaced by a symlink", async (d) => {
      await Deno.remove(`${d}/${ID}`);
      await Deno.symlink("/bin/sh", `${d}/${ID}`);
    }, "not a regular file"],
    ["binary replaced by a FIFO", async (d) => {
      await Deno.remove(`${d}/${ID}`);
      const out = await new Deno.Command("mkfifo", { args: [`${d}/${ID}`] }).output();
      assert(out.success);
    }, "not a regular file"],
    ["binary no longer executable", (d) => Deno.chmod(`${d}/${ID}`, 0o644), "mode 0644"],
    ["binary writable by others", (d) => Deno.chmod(`${d}/${ID}`, 0o775), "mode 0775"],
    ["binary made setuid", (d) => Deno.chmod(`${d}/${ID}`, 0o4755), "mode 4755"],
  ];
  for (const [name, damage, says] of cases) {
    await t.step(name, async () => {
      await withTempDir(async (dir) => {
        const layout = new Layout(dir);
        await _stage(layout, "1.0.0");
        await damage(layout.versionDir(ID, "1.0.0"));
        const e = await assertRejects(
          () => new StagedVerifier().check(layout, ID, _want("1.0.0")),
          DamagedVersionError,
        );
        assertStringIncludes(e.message, "version 1.0.0 is damaged: ");
        assertStringIncludes(e.message, says);
      });
    });
  }
});

Deno.test("StagedVerifier.check() leaves absent versions and conflicts to delivery", async () => {
  await withTempDir(async (dir) => {
    const layout = new Layout(dir);
    const v = new StagedVerifier();
    assertEquals(await v.check(layout, ID, _want("9.9.9")), "absent");
    await _stage(layout, "1.0.0");
    assertEquals(await v.check(layout, ID, _want("1.0.0", "other bytes")), "conflict");
    assertEquals(await v.check(layout, ID, { ..._want("1.0.0"), format: "tar.gz" }), "conflict");
    assertEquals(await v.check(layout, ID, { ..._want("1.0.0"), format: "binary" }), "intact");
    await Deno.symlink("/etc", layout.versionDir(ID, "2.0.0"));
    assertEquals(await v.check(layout, ID, _want("2.0.0")), "conflict");
  });
});

Deno.test("StagedVerifier.check() calls an artifact.json rewritten to other bytes damaged when the version is known", async () => {
  await withTempDir(async (dir) => {
    const layout = new Layout(dir);
    const evil = BYTES.replace("fine", "EVIL");
    // Bytes and record rewritten together: consistent with each other, not with the assignment.
    await _stage(layout, "1.0.0", evil);
    const fresh = new StagedVerifier();
    assertEquals(await fresh.check(layout, ID, _want("1.0.0")), "conflict", "nothing known");
    const e = await assertRejects(
      () => fresh.check(layout, ID, { ..._want("1.0.0"), known: true }),
      DamagedVersionError,
    );
    assertStringIncludes(e.message, "its artifact.json names sha256 " + sha256Hex(evil));
    // Known because this verifier found the version intact before.
    await _stage(layout, "2.0.0");
    const v = new StagedVerifier();
    assertEquals(await v.check(layout, ID, _want("2.0.0")), "intact");
    await _stage(layout, "2.0.0", evil);
    await assertRejects(() => v.check(layout, ID, _want("2.0.0")), DamagedVersionError);
    // A version published again with other bytes stays a conflict.
    assertEquals(await v.check(layout, ID, _want("2.0.0", evil)), "intact");
    assertEquals(await v.check(layout, ID, _want("2.0.0")), "conflict");
  });
});

Deno.test("StagedVerifier.check() sees one overwrite of bytes hard-linked into several add-ons", async () => {
  await withTempDir(async (dir) => {
    const layout = new Layout(dir);
    const first = await _stage(layout, "1.0.0");
    const second = layout.versionDir("other", "1.0.0");
    await Deno.mkdir(second, { recursive: true });
    await Deno.link(first, `${second}/${ID}`);
    await Deno.copyFile(
      `${layout.versionDir(ID, "1.0.0")}/artifact.json`,
      `${second}/artifact.json`,
    );
    const v = new StagedVerifier();
    assertEquals(await v.check(layout, ID, _want("1.0.0")), "intact");
    assertEquals(await v.check(layout, "other", _want("1.0.0")), "intact");
    await Deno.writeTextFile(first, "#!/bin/sh\necho TAMPERED\n");
    await assertRejects(() => v.check(layout, ID, _want("1.0.0")), DamagedVersionError);
    await assertRejects(() => v.check(layout, "other", _want("1.0.0")), DamagedVersionError);
  });
});

Deno.test("quarantineVersion() takes the version out of versions/ and repairLinks() mends the links", async () => {
  await withTempDir(async (dir) => {
    const layout = new Layout(dir);
    await Deno.mkdir(layout.tmp, { recursive: true });
    await _stage(layout, "1.0.0");
    await _stage(layout, "2.0.0");
    await activate(layout, ID, "1.0.0");
    await activate(layout, ID, "2.0.0");
    await quarantineVersion(layout, ID, "2.0.0", "test");
    assertEquals([...Deno.readDirSync(layout.versionsDir(ID))].map((e) => e.name), ["1.0.0"]);
    assertEquals([...Deno.readDirSync(layout.tmp)], [], "nothing of it left in tmp/");
    // current dangles: activating another version must not make it `previous`.
    await activate(layout, ID, "1.0.0");
    assertEquals(await Deno.readLink(layout.current(ID)), "versions/1.0.0");
    assert(!(await Deno.lstat(layout.previous(ID)).then(() => true, () => false)));
    // Dangling links after a crash: current goes back to what the state says ran.
    await Deno.remove(layout.current(ID));
    await Deno.symlink("versions/2.0.0", layout.current(ID));
    await Deno.symlink("versions/3.0.0", layout.previous(ID));
    const done = await repairLinks(layout, ID, "1.0.0");
    assertEquals(done.length, 2, done.join("; "));
    assertEquals(await Deno.readLink(layout.current(ID)), "versions/1.0.0");
    assert(!(await Deno.lstat(layout.previous(ID)).then(() => true, () => false)));
    // Nothing staged to point at: the link goes.
    await Deno.remove(layout.current(ID));
    await Deno.symlink("versions/2.0.0", layout.current(ID));
    await repairLinks(layout, ID, "2.0.0");
    assert(!(await Deno.lstat(layout.current(ID)).then(() => true, () => false)));
    assertEquals(await repairLinks(layout, ID, null), []);
  });
});

Deno.test("StagedVerifier remembers only the most recently verified files", async () => {
  await withTempDir(async (dir) => {
    const layout = new Layout(dir);
    for (const v of ["1.0.0", "2.0.0", "3.0.0"]) await _stage(layout, v);
    const v = new StagedVerifier(2, _later);
    for (const ver of ["1.0.0", "2.0.0", "3.0.0"]) await v.check(layout, ID, _want(ver));
    assertEquals(v.hashes, 3);
    await v.check(layout, ID, _want("3.0.0"));
    await v.check(layout, ID, _want("2.0.0"));
    assertEquals(v.hashes, 3, "the two most recent are remembered");
    await v.check(layout, ID, _want("1.0.0"));
    assertEquals(v.hashes, 4, "the oldest was forgotten, so it is hashed again");
    assertEquals(MAX_REMEMBERED, 4096);
  });
});
