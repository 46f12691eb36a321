// Tests of src/store/filesystem.ts with real files, symlinks, a FIFO and
// directories: keys never leave the root, only regular files are served.

import { FilesystemStore } from "../src/store/filesystem.ts";
import { type OpenedObject, StoreError, type StoreErrorKind } from "../src/store/types.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes, fail } from "./_assert.ts";

// ---------------------------------------------------------------------------
// helpers

/** A temp dir with `store/` (the root) and `outside/` beside it; removed afterwards. */
async function _withStore(
  fn: (store: FilesystemStore, root: string, outside: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "addon-agent-store-test-" });
  try {
    const root = `${dir}/store`;
    const outside = `${dir}/outside`;
    await Deno.mkdir(root);
    await Deno.mkdir(outside);
    await fn(new FilesystemStore(root), root, outside);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Deterministic bytes that differ at every offset modulo 251. */
function _bytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = i % 251;
  return b;
}

async function _readAll(obj: OpenedObject): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let n = 0;
  for await (const c of obj.body) {
    chunks.push(c);
    n += c.length;
  }
  const out = new Uint8Array(n);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

async function _write(path: string, data: Uint8Array): Promise<void> {
  await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  await Deno.writeFile(path, data);
}

/** Expect `store.open(key)` to fail with a StoreError of `kind` whose message includes `includes`. */
async function _refused(
  store: FilesystemStore,
  key: string,
  includes: string,
  kind: StoreErrorKind,
): Promise<StoreError> {
  const e = await assertRejects(() => store.open(key, 0), StoreError, includes);
  assertEquals(e.kind, kind, `kind of ${e.message}`);
  return e;
}

// ---------------------------------------------------------------------------
// reading

Deno.test("FilesystemStore reads objects whole and from an offset", async (t) => {
  await _withStore(async (store, root) => {
    const small = _bytes(1000);
    const big = _bytes(2_500_000); // spans several 1 MiB chunks
    await _write(`${root}/net-probe/1.4.2/linux-amd64/net-probe`, small);
    await _write(`${root}/big`, big);
    await _write(`${root}/empty`, new Uint8Array());

    await t.step("the whole object; size is its size", async () => {
      const obj = await store.open("net-probe/1.4.2/linux-amd64/net-probe", 0);
      assertEquals(obj.size, 1000);
      assertEquals(await _readAll(obj), small);
    });

    await t.step("from an offset, size is still the whole size", async () => {
      const obj = await store.open("net-probe/1.4.2/linux-amd64/net-probe", 400);
      assertEquals(obj.size, 1000);
      assertEquals(await _readAll(obj), small.subarray(400));
    });

    await t.step("from the end: nothing to read", async () => {
      const obj = await store.open("net-probe/1.4.2/linux-amd64/net-probe", 1000);
      assertEquals(obj.size, 1000);
      assertEquals(await _readAll(obj), new Uint8Array());
    });

    await t.step(
      "a multi-chunk object, whole and from an offset inside a later chunk",
      async () => {
        const whole = await store.open("big", 0);
        assertEquals(whole.size, big.length);
        assertEquals(await _readAll(whole), big);
        const tail = await store.open("big", 1_500_001);
        assertEquals(tail.size, big.length);
        assertEquals(await _readAll(tail), big.subarray(1_500_001));
      },
    );

    await t.step("an empty object", async () => {
      const obj = await store.open("empty", 0);
      assertEquals(obj.size, 0);
      assertEquals(await _readAll(obj), new Uint8Array());
    });

    await t.step("close() before reading, twice, is fine", async () => {
      const obj = await store.open("big", 0);
      obj.close();
      obj.close();
    });

    await t.step("describe() names the file", () => {
      assertEquals(store.describe("a/b"), `${root}/a/b`);
      assertEquals(new FilesystemStore(`${root}/`).describe("a/b"), `${root}/a/b`);
    });
  });
});

Deno.test("FilesystemStore serves through symlinks that stay inside the root", async (t) => {
  await _withStore(async (store, root) => {
    const data = _bytes(300);
    await _write(`${root}/real/obj`, data);

    await t.step("a file symlink inside pointing inside", async () => {
      await Deno.symlink(`${root}/real/obj`, `${root}/alias`);
      assertEquals(await _readAll(await store.open("alias", 0)), data);
    });

    await t.step("a relative directory symlink inside pointing inside", async () => {
      await Deno.symlink("real", `${root}/dir-alias`);
      assertEquals(await _readAll(await store.open("dir-alias/obj", 10)), data.subarray(10));
    });

    await t.step("a root that is itself a symlink", async () => {
      const link = `${root}/../store-link`;
      await Deno.symlink(root, link);
      try {
        assertEquals(await _readAll(await new FilesystemStore(link).open("real/obj", 0)), data);
      } finally {
        await Deno.remove(link);
      }
    });
  });
});

// ---------------------------------------------------------------------------
// refusals

Deno.test("FilesystemStore refuses keys that leave the root", async (t) => {
  await _withStore(async (store, root, outside) => {
    await _write(`${outside}/secret`, new TextEncoder().encode("secret"));
    await _write(`${root}/a/obj`, _bytes(10));

    for (const key of ["../outside/secret", "a/../../outside/secret", "a/../obj", "..", "a/.."]) {
      await t.step(`${JSON.stringify(key)} (..) is refused`, async () => {
        await _refused(store, key, "may not leave the store", "refused");
      });
    }

    for (const key of [`${outside}/secret`, "/etc/passwd", "/"]) {
      await t.step(`absolute ${JSON.stringify(key)} is refused`, async () => {
        await _refused(store, key, "may not leave the store", "refused");
      });
    }

    for (const key of ["", "a//obj", "a/", "/a/obj"]) {
      await t.step(`empty segments in ${JSON.stringify(key)} are refused`, async () => {
        await _refused(store, key, "may not leave the store", "refused");
      });
    }

    await t.step("a file symlink inside pointing outside is refused", async () => {
      await Deno.symlink(`${outside}/secret`, `${root}/escape`);
      const e = await _refused(store, "escape", "resolves outside the store", "refused");
      assertStringIncludes(e.message, '"escape"');
    });

    await t.step("a directory symlink inside pointing outside is refused", async () => {
      await Deno.symlink(outside, `${root}/outdir`);
      await _refused(store, "outdir/secret", "resolves outside the store", "refused");
    });

    await t.step("a relative symlink climbing out is refused", async () => {
      await Deno.symlink("../../outside/secret", `${root}/a/climb`);
      await _refused(store, "a/climb", "resolves outside the store", "refused");
    });

    await t.step("a symlink to a sibling whose name starts like the root is refused", async () => {
      // `<dir>/store-evil` starts with `<dir>/store`: a plain prefix check would accept it.
      const evil = `${root}-evil`;
      await _write(`${evil}/f`, _bytes(5));
      try {
        await Deno.symlink(`${evil}/f`, `${root}/prefix-trick`);
        await _refused(store, "prefix-trick", "resolves outside the store", "refused");
      } finally {
        await Deno.remove(evil, { recursive: true });
      }
    });
  });
});

Deno.test("FilesystemStore serves regular files only", async (t) => {
  await _withStore(async (store, root) => {
    await t.step("a FIFO is refused quickly, without hanging", async () => {
      const fifo = `${root}/fifo`;
      const mk = await new Deno.Command("mkfifo", { args: [fifo], stderr: "piped" }).output();
      assert(mk.success, `mkfifo: ${new TextDecoder().decode(mk.stderr)}`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), 5000);
      });
      try {
        const result = await Promise.race([
          store.open("fifo", 0).then(
            (obj) => {
              obj.close();
              return "opened" as const;
            },
            (e: unknown) => e,
          ),
          timeout,
        ]);
        if (result === "timeout") {
          // Unblock the reader stuck in open() so the suite can go on, then fail.
          try {
            const w = await Deno.open(fifo, { write: true });
            w.close();
          } catch { /* best effort */ }
          fail("FilesystemStore.open() hung on a FIFO for 5 s");
        }
        if (result === "opened") fail("a FIFO was served as an object");
        assert(result instanceof StoreError, `a StoreError, got ${String(result)}`);
        assertStringIncludes(result.message, "not a regular file");
        assertStringIncludes(result.message, "fifo");
        assertEquals(result.kind, "refused");
      } finally {
        clearTimeout(timer);
      }
    });

    await t.step("a directory is refused", async () => {
      await Deno.mkdir(`${root}/dir/sub`, { recursive: true });
      await _refused(store, "dir", "not a regular file", "refused");
      await _refused(store, "dir/sub", "not a regular file", "refused");
    });

    await t.step("a symlink inside to a directory inside is refused", async () => {
      await Deno.symlink(`${root}/dir`, `${root}/dirlink`);
      await _refused(store, "dirlink", "not a regular file", "refused");
    });
  });
});

Deno.test("FilesystemStore names the key of a missing object", async (t) => {
  await _withStore(async (store, root) => {
    await t.step("a missing file", async () => {
      const e = await _refused(store, "net-probe/9.9.9/net-probe", "does not exist", "not_found");
      assertStringIncludes(e.message, "net-probe/9.9.9/net-probe");
      assertStringIncludes(e.message, root);
    });

    await t.step("a missing directory on the way", async () => {
      const e = await _refused(store, "nope/nope/obj", "does not exist", "not_found");
      assertStringIncludes(e.message, "nope/nope/obj");
    });

    await t.step("a dangling symlink", async () => {
      await Deno.symlink(`${root}/gone`, `${root}/dangling`);
      const e = await _refused(store, "dangling", "dangling", "not_found");
      assertStringIncludes(e.message, "does not exist");
    });

    await t.step("a missing root", async () => {
      const missing = new FilesystemStore(`${root}/no-such-root`);
      const e = await assertRejects(() => missing.open("obj", 0), StoreError);
      assertStringIncludes(e.message, `${root}/no-such-root`);
      assertEquals(e.kind, "unavailable", "a store that is not there may come back");
      assert(e.cause instanceof Deno.errors.NotFound, "the cause is kept");
    });

    await t.step("a file used as a directory", async () => {
      await _write(`${root}/file`, _bytes(3));
      const e = await assertRejects(() => store.open("file/obj", 0), StoreError);
      assertStringIncludes(e.message, "file/obj");
    });
  });
});

Deno.test("FilesystemStore never yields a file outside the root while a directory is swapped for a symlink", async () => {
  await _withStore(async (store, root, outside) => {
    const legit = _bytes(4096);
    const secret = new TextEncoder().encode("root:$6$secret-hash-of-the-host:19000:0:99999:7:::\n");
    const secretHex = [...new Uint8Array(await crypto.subtle.digest("SHA-256", secret))]
      .map((b) => b.toString(16).padStart(2, "0")).join("");
    await Deno.mkdir(`${root}/pkg/1`, { recursive: true });
    await Deno.writeFile(`${root}/pkg/1/shadow`, legit);
    await Deno.writeFile(`${outside}/shadow`, secret); // stands in for /etc/shadow
    // The attacker: swaps pkg/1 for a symlink to outside/ and back, as fast as it can.
    const swapper = `${outside}/../swapper.ts`;
    await Deno.writeTextFile(
      swapper,
      `const p = ${JSON.stringify(`${root}/pkg/1`)};
       const out = ${JSON.stringify(outside)};
       for (;;) {
         try {
           Deno.renameSync(p, p + ".real");
           Deno.symlinkSync(out, p);
           Deno.removeSync(p);
           Deno.renameSync(p + ".real", p);
         } catch { /* the test is cleaning up */ }
       }`,
    );
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", swapper],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    let served = 0;
    let refused = 0;
    try {
      for (let i = 0; i < 4000 && (refused < 50 || served < 50); i++) {
        let obj: OpenedObject;
        try {
          obj = await store.open("pkg/1/shadow", 0);
        } catch (e) {
          assert(e instanceof StoreError, `a StoreError: ${e}`);
          assert(!e.message.includes("secret") && !e.message.includes(secretHex), e.message);
          refused++;
          continue;
        }
        let got: Uint8Array;
        try {
          got = await _readAll(obj);
        } finally {
          obj.close();
        }
        assert(
          !new TextDecoder().decode(got).includes("secret-hash"),
          `attempt ${i}: a key yielded the bytes of a file outside the store`,
        );
        assertEquals(got.length, legit.length);
        served++;
      }
    } finally {
      child.kill("SIGKILL");
      await child.status;
    }
    assert(refused > 0, "the swap raced the opens (else this test proves nothing)");
    assert(served > 0, "the legitimate object was served between swaps");
  });
});
