/**
 * Unpacking bundles (SPEC 15): every refusal with an archive built in the
 * test, checking that the refused entry is named and nothing was written
 * outside the directory being unpacked; good archives made by the real `tar`
 * round-trip with their links and safe modes.
 */

import { assert, assertEquals, assertInstanceOf, assertRejects } from "./_assert.ts";
import { exists, listTree, withTempDir } from "./_helpers.ts";
import {
  compress,
  hostileBundle,
  type RawEntry,
  rawTar,
  tarDir,
  writeHelloTree,
} from "./_bundles.ts";
import { BundleEntryError, unpackBundle, type UnpackOptions } from "../src/delivery/mod.ts";

interface _Setup {
  dir: string;
  archive: string;
  dest: string;
  outside: string;
}

/** `<dir>/v/stage` is unpacked into; `<dir>/outside` must stay empty. */
async function _setup(dir: string, bytes: Uint8Array): Promise<_Setup> {
  const archive = `${dir}/bundle.archive`;
  await Deno.writeFile(archive, bytes);
  await Deno.mkdir(`${dir}/v/stage`, { recursive: true });
  await Deno.mkdir(`${dir}/outside`);
  return { dir, archive, dest: `${dir}/v/stage`, outside: `${dir}/outside` };
}

const OPTS: UnpackOptions = { format: "tar.gz", entrypoint: "bin/run", maxBytes: 1 << 20 };
const RUN: RawEntry = { name: "bin/run", body: "#!/bin/sh\necho hi\n", mode: 0o755 };

async function _refused(
  entries: RawEntry[],
  entry: string | null,
  reason: string,
  opts: Partial<UnpackOptions> = {},
): Promise<_Setup> {
  return await withTempDir(async (dir) => {
    const s = await _setup(dir, await hostileBundle(entries, opts.format ?? "tar.gz"));
    const e = await assertRejects(
      () => unpackBundle(s.archive, s.dest, { ...OPTS, ...opts }),
      BundleEntryError,
      reason,
    );
    assertEquals(e.entry, entry);
    assertEquals(await listTree(s.outside), [], "nothing was written outside");
    assertEquals(
      await listTree(`${dir}/v`).then((t) => t.filter((p) => !p.startsWith("stage"))),
      [],
    );
    return s;
  });
}

Deno.test("unpackBundle() refuses absolute paths and .. components, naming the entry", async (t) => {
  await t.step("an absolute path", async () => {
    await _refused([RUN, { name: "/tmp/evil", body: "x" }], "/tmp/evil", "is absolute");
  });
  await t.step("a .. component", async () => {
    await _refused([RUN, { name: "../../outside/evil", body: "x" }], "../../outside/evil", '".."');
  });
  await t.step("a name no file system takes (a segment over 255 bytes)", async () => {
    const long = `lib/${"x".repeat(256)}`;
    await _refused([RUN, { name: long, body: "x" }], long, "longer than 255 bytes");
  });
  await t.step("a .. in the middle", async () => {
    await _refused([RUN, { name: "bin/../../x", body: "x" }], "bin/../../x", '".."');
  });
});

Deno.test("unpackBundle() refuses symlinks that leave the version directory", async (t) => {
  await t.step("an absolute target", async () => {
    await _refused([RUN, { name: "etc", type: "symlink", linkname: "/etc" }], "etc", "absolute");
  });
  await t.step("a relative target above the tree", async () => {
    await _refused(
      [RUN, { name: "sub/up", type: "symlink", linkname: "../../outside" }],
      "sub/up",
      "leaves the version directory",
    );
  });
  await t.step("a target that leaves only through another symlink of the bundle", async () => {
    // `a -> .` and `b -> a/..` each stay inside lexically; the kernel resolves b to the parent.
    await _refused(
      [
        RUN,
        { name: "d/a", type: "symlink", linkname: ".." },
        { name: "b", type: "symlink", linkname: "d/a/.." },
      ],
      "b",
      "through the bundle's symlinks",
    );
  });
  await t.step("a symlink loop", async () => {
    await _refused(
      [
        RUN,
        { name: "x", type: "symlink", linkname: "y/z" },
        { name: "y", type: "symlink", linkname: "x" },
      ],
      "x",
      "loops",
    );
  });
});

Deno.test("unpackBundle() refuses a path through a symlink of the bundle", async () => {
  const s = await _refused(
    [
      RUN,
      { name: "lib", type: "directory" },
      { name: "link", type: "symlink", linkname: "lib" },
      { name: "link/evil", body: "x" },
    ],
    "link/evil",
    "goes through link, a symlink of the bundle",
  );
  assert(!(await exists(`${s.dest}/lib/evil`)));
});

Deno.test("unpackBundle() allows hard links only to earlier regular files", async (t) => {
  await t.step("to a host file", async () => {
    await _refused(
      [RUN, { name: "pw", type: "link", linkname: "/etc/passwd" }],
      "pw",
      "not an earlier regular file",
    );
  });
  await t.step("out of the tree", async () => {
    await _refused(
      [RUN, { name: "pw", type: "link", linkname: "../../outside/x" }],
      "pw",
      "not an earlier regular file",
    );
  });
  await t.step("to a later file", async () => {
    await _refused(
      [{ name: "early", type: "link", linkname: "bin/run" }, RUN],
      "early",
      "not an earlier regular file",
    );
  });
  await t.step("to a symlink", async () => {
    await _refused(
      [RUN, { name: "s", type: "symlink", linkname: "bin/run" }, {
        name: "h",
        type: "link",
        linkname: "s",
      }],
      "h",
      "not an earlier regular file",
    );
  });
  await t.step("to a directory", async () => {
    await _refused(
      [RUN, { name: "h", type: "link", linkname: "bin" }],
      "h",
      "not an earlier regular file",
    );
  });
  await t.step("to an earlier file: the same inode", async () => {
    await withTempDir(async (dir) => {
      const s = await _setup(
        dir,
        await hostileBundle([RUN, { name: "again", type: "link", linkname: "bin/run" }]),
      );
      const out = await unpackBundle(s.archive, s.dest, OPTS);
      assertEquals(out.files, 2);
      assertEquals(
        (await Deno.stat(`${s.dest}/again`)).ino,
        (await Deno.stat(`${s.dest}/bin/run`)).ino,
      );
    });
  });
});

Deno.test("unpackBundle() refuses devices, FIFOs and other special files", async (t) => {
  for (const type of ["character-device", "block-device", "fifo"] as const) {
    await t.step(type, async () => {
      const s = await _refused([RUN, { name: "dev", type }], "dev", `is a ${type}`);
      assert(!(await exists(`${s.dest}/dev`)));
    });
  }
});

Deno.test("unpackBundle() refuses two entries with one path", async (t) => {
  await t.step("a file twice", async () => {
    await _refused([RUN, { name: "bin/run", body: "evil" }], "bin/run", "repeats the path");
  });
  await t.step("a file, then a symlink in its place", async () => {
    await _refused(
      [RUN, { name: "./bin/run", type: "symlink", linkname: "../x" }],
      "./bin/run",
      "repeats the path",
    );
  });
  await t.step("a directory of earlier entries, then a file", async () => {
    await _refused([RUN, { name: "bin", body: "x" }], "bin", "is a directory of earlier entries");
  });
});

Deno.test("unpackBundle() refuses the 10,001st entry", async () => {
  // Entries that write nothing ("./" again and again) keep this fast; each one counts, and so
  // does bin/, the directory bin/run implies.
  const entries: RawEntry[] = [RUN];
  for (let i = 2; i < 10_000; i++) entries.push({ name: "./", type: "directory" });
  // 10,000 entries are fine…
  await withTempDir(async (dir) => {
    const s = await _setup(dir, await hostileBundle(entries));
    assertEquals((await unpackBundle(s.archive, s.dest, OPTS)).entries, 10_000);
  });
  // …one more is refused, and it is the one named.
  await _refused([...entries, { name: "last", body: "" }], "last", "more than the 10000");
});

Deno.test("unpackBundle() counts the directories deep paths imply as entries", async () => {
  // Each entry implies 30 directories: the fourth goes past a limit of 100.
  const deep = (n: number) => ({ name: `d${n}/${"x/".repeat(29)}f`, body: "x" });
  const s = await _refused(
    [RUN, deep(1), deep(2), deep(3), deep(4)],
    `d4/${"x/".repeat(29)}f`,
    "more than the 100 entries (with its directories)",
    { maxEntries: 100 },
  );
  assert(!(await exists(`${s.dest}/d4`)), "no directory of the refused entry was made");
});

Deno.test("unpackBundle() refuses names and symlink targets longer than 1024 bytes", async (t) => {
  const long = `${"abcdefgh/".repeat(114)}x`;
  await t.step("a long name", async () => {
    await _refused([RUN, { name: long, body: "x" }], long, "longer than 1024 bytes");
  });
  await t.step("a long symlink target", async () => {
    await _refused(
      [RUN, { name: "s", type: "symlink", linkname: `${"./".repeat(600)}bin` }],
      "s",
      "target is longer than 1024 bytes",
    );
  });
});

Deno.test("unpackBundle() counts unpacked bytes as it writes them, across entries", async (t) => {
  await t.step("two files that fit alone but not together", async () => {
    const s = await _refused(
      [RUN, { name: "a", body: new Uint8Array(600) }, { name: "b", body: new Uint8Array(600) }],
      "b",
      "limits.max_unpacked_bytes (1000 bytes)",
      { maxBytes: 1000 },
    );
    assert(!(await exists(`${s.dest}/b`)));
  });
  for (const format of ["tar.gz", "tar.zst"] as const) {
    await t.step(`a ${format} bomb stops at the limit`, async () => {
      // 128 MiB of zeros compress to ~128 KB; the limit is 4 MiB.
      const tar = await rawTar([RUN, { name: "zeros", body: new Uint8Array(128 << 20) }]);
      const bomb = compress(tar, format);
      assert(bomb.byteLength < 200_000, `bomb is ${bomb.byteLength} bytes`);
      await withTempDir(async (dir) => {
        const s = await _setup(dir, bomb);
        await assertRejects(
          () => unpackBundle(s.archive, s.dest, { ...OPTS, format, maxBytes: 4 << 20 }),
          BundleEntryError,
          "max_unpacked_bytes",
        );
        // Refused before a byte of it is written: its header says 128 MiB.
        assert(!(await exists(`${s.dest}/zeros`)));
      });
    });
  }
  await t.step("a header that hides its size behind many small files still stops", async () => {
    const entries: RawEntry[] = [RUN];
    for (let i = 0; i < 40; i++) entries.push({ name: `z${i}`, body: new Uint8Array(1 << 20) });
    await withTempDir(async (dir) => {
      const s = await _setup(dir, await hostileBundle(entries));
      await assertRejects(
        () => unpackBundle(s.archive, s.dest, { ...OPTS, maxBytes: 8 << 20 }),
        BundleEntryError,
        "max_unpacked_bytes",
      );
      let total = 0;
      for (const p of await listTree(s.dest)) {
        const st = await Deno.lstat(`${s.dest}/${p}`);
        if (st.isFile) total += st.size;
      }
      assert(total <= 8 << 20, `wrote ${total} bytes`);
    });
  });
});

Deno.test("unpackBundle() bounds the tar itself: entries without content still count", async () => {
  // 1,000 directory entries: 512 KiB of tar headers and not one byte of content.
  const entries: RawEntry[] = [RUN];
  for (let i = 0; i < 1000; i++) entries.push({ name: `d${i}/`, type: "directory" });
  await _refused(entries, null, "more than 131072 bytes of tar", {
    maxBytes: 64 << 10,
    tarOverheadBytes: 64 << 10,
  });
});

Deno.test("unpackBundle() refuses an entrypoint that is not a regular file of the bundle", async (t) => {
  await t.step("missing", async () => {
    await _refused([{ name: "bin/other", body: "x" }], "bin/run", "is not in the bundle");
  });
  await t.step("a symlink", async () => {
    await _refused(
      [{ name: "bin/real", body: "x" }, { name: "bin/run", type: "symlink", linkname: "real" }],
      "bin/run",
      "is a symlink",
    );
  });
  await t.step("a directory", async () => {
    await _refused([{ name: "bin/run/", type: "directory" }], "bin/run", "is a directory");
  });
  await t.step("reached only through a symlink", async () => {
    await _refused(
      [{ name: "real/run", body: "x" }, { name: "bin", type: "symlink", linkname: "real" }],
      "bin/run",
      "is not in the bundle",
    );
  });
});

Deno.test("unpackBundle() refuses the agent's own artifact.json and a corrupt archive", async (t) => {
  await t.step("artifact.json at the top", async () => {
    await _refused([RUN, { name: "./artifact.json", body: "{}" }], "./artifact.json", "own record");
  });
  await t.step("a truncated archive", async () => {
    await withTempDir(async (dir) => {
      const tar = await rawTar([RUN, { name: "big", body: new Uint8Array(100_000) }]);
      const s = await _setup(dir, compress(tar.subarray(0, 20_000), "tar.gz"));
      const e = await assertRejects(
        () => unpackBundle(s.archive, s.dest, OPTS),
        BundleEntryError,
        "is not a valid tar.gz archive",
      );
      assertEquals(e.entry, null);
    });
  });
  await t.step("not gzip at all", async () => {
    await withTempDir(async (dir) => {
      const s = await _setup(dir, new TextEncoder().encode("#!/bin/sh\necho not a bundle\n"));
      await assertRejects(
        () => unpackBundle(s.archive, s.dest, OPTS),
        BundleEntryError,
        "is not a valid tar.gz archive",
      );
    });
  });
});

Deno.test("unpackBundle() drops setuid, setgid and sticky bits and keeps modes within 0755", async () => {
  await withTempDir(async (dir) => {
    const s = await _setup(
      dir,
      await hostileBundle([
        { name: "bin/", type: "directory", mode: 0o1777 },
        { name: "bin/run", body: "#!/bin/sh\n", mode: 0o4777 },
        { name: "lib/", type: "directory", mode: 0o2775 },
        { name: "lib/data", body: "d", mode: 0o2666 },
        { name: "lib/ro", body: "r", mode: 0o444 },
      ]),
    );
    await unpackBundle(s.archive, s.dest, OPTS);
    const mode = async (p: string) => (await Deno.lstat(`${s.dest}/${p}`)).mode! & 0o7777;
    assertEquals(await mode("bin"), 0o755);
    assertEquals(await mode("bin/run"), 0o755);
    assertEquals(await mode("lib"), 0o755);
    assertEquals(await mode("lib/data"), 0o644);
    assertEquals(await mode("lib/ro"), 0o444);
  });
});

Deno.test("unpackBundle() unpacks what the real tar made: files, links, modes", async (t) => {
  for (const format of ["tar.gz", "tar.zst"] as const) {
    await t.step(format, async () => {
      await withTempDir(async (dir) => {
        await writeHelloTree(`${dir}/src`, "hello there");
        await Deno.link(`${dir}/src/lib/greeting.txt`, `${dir}/src/lib/hard.txt`);
        await Deno.writeFile(`${dir}/src/lib/blob`, crypto.getRandomValues(new Uint8Array(60_000)));
        await tarDir(`${dir}/src`, `${dir}/b.${format}`, format);
        await Deno.mkdir(`${dir}/out`);
        const out = await unpackBundle(`${dir}/b.${format}`, `${dir}/out`, {
          format,
          entrypoint: "bin/hello",
          maxBytes: 1 << 20,
        });
        assertEquals(await listTree(`${dir}/out`), await listTree(`${dir}/src`));
        assertEquals(out.files, 4);
        assertEquals(await Deno.readLink(`${dir}/out/greeting`), "lib/greeting.txt");
        assertEquals(await Deno.readTextFile(`${dir}/out/greeting`), "hello there\n");
        assertEquals(
          await Deno.readFile(`${dir}/out/lib/blob`),
          await Deno.readFile(`${dir}/src/lib/blob`),
        );
        assertEquals((await Deno.stat(`${dir}/out/bin/hello`)).mode! & 0o7777, 0o755);
        assertEquals(
          (await Deno.stat(`${dir}/out/lib/hard.txt`)).ino,
          (await Deno.stat(`${dir}/out/lib/greeting.txt`)).ino,
        );
      });
    });
  }
});

Deno.test("BundleEntryError names the entry in its message", () => {
  const e = new BundleEntryError("../x", 'has a ".." segment');
  assertInstanceOf(e, Error);
  assertEquals(e.message, 'bundle entry "../x" has a ".." segment');
});
