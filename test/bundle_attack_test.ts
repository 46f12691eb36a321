/**
 * Bundles from a hostile store or a stolen publisher key (SPEC 15): archives
 * whose signature verifies, built in the test to attack the unpacker itself
 * rather than the path checks — a symlink chain deep enough to overflow the
 * resolver, a zstd frame that asks for a huge window, and a refusal that
 * kept the deleted archive open in the daemon — each against the real CLI.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { waitFor } from "./_agent_process.ts";
import { daemonConfig, waitAddon, withAgent } from "./_daemon_fixtures.ts";
import {
  exists,
  listTree,
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
import { compress, hostileBundle, type RawEntry, rawTar } from "./_bundles.ts";
import zlib from "node:zlib";

const ID = "hostile";
const RUN: RawEntry = { name: "bin/run", body: "#!/bin/sh\necho hi\n", mode: 0o755 };

async function _signed(
  key: Awaited<ReturnType<typeof newKey>>,
  version: string,
  bytes: Uint8Array,
  format = "tar.gz",
) {
  return {
    addon_id: ID,
    version,
    delivery: "pushed_artifact",
    supervision: "agent_sidecar",
    artifact_object_key: `${ID}/${version}/bundle`,
    artifact_format: format,
    entrypoint: "bin/run",
    ...(await signFor(key, ID, version, bytes)),
  };
}

Deno.test("sync refuses, naming the entry, what the unpacker itself cannot survive; current keeps its tree", async (t) => {
  await withTempDir(async (dir) => {
    const key = await newKey();
    const root = `${dir}/root`;
    const cfg = await writeConfig(dir, {
      object_store: { kind: "filesystem", root: `${dir}/store` },
      trust: { public_keys: [key.publicBase64], require_signature: true },
    });
    const good = await hostileBundle([RUN]);
    await publishFs(dir, `${ID}/1.0.0/bundle`, good);
    await writeAssignments(dir, [await _signed(key, "1.0.0", good)]);
    assertEquals((await runAgent(["sync", "--config", cfg])).code, 0);

    const refused = async (version: string, bytes: Uint8Array, format: string, reason: RegExp) => {
      await publishFs(dir, `${ID}/${version}/bundle`, bytes);
      await writeAssignments(dir, [await _signed(key, version, bytes, format)]);
      const run = await runAgent(["sync", "--config", cfg, "--json"]);
      assertEquals(run.code, 1, run.stderr);
      const r = syncJson(run).results[0];
      assertMatch(r?.message ?? "", reason);
      assertMatch(r?.message ?? "", /nothing was staged/);
      assertEquals(await Deno.readLink(`${root}/addons/${ID}/current`), "versions/1.0.0");
      assert(!(await exists(`${root}/addons/${ID}/versions/${version}`)));
      // A refusal, not "retry later": the archive is not kept for a next try that cannot succeed.
      assertEquals(await listTree(`${root}/tmp`), [], "nothing left in tmp/");
    };

    await t.step("a chain of 9,000 symlinks (overflowed the resolver's stack)", async () => {
      const chain: RawEntry[] = [RUN];
      for (let i = 0; i < 9000; i++) {
        chain.push({ name: `l${i}`, type: "symlink", linkname: `l${i + 1}` });
      }
      await refused(
        "2.0.0",
        await hostileBundle(chain),
        "tar.gz",
        /"l0" is a symlink to l1 that goes through more than 40 symlinks/,
      );
    });

    await t.step(
      "a zstd frame asking for a 128 MiB window (held 200 MiB for a 10 KB archive)",
      async () => {
        const tar = await rawTar([RUN, { name: "zeros", body: new Uint8Array(1 << 20) }]);
        const bytes = new Uint8Array(
          zlib.zstdCompressSync(tar, { params: { [zlib.constants.ZSTD_c_windowLog]: 27 } }),
        );
        await refused("3.0.0", bytes, "tar.zst", /zstd window over 8 MiB/);
      },
    );

    await t.step(
      "a setuid entrypoint and a sticky, world-writable directory lose those bits",
      async () => {
        const bytes = await hostileBundle([
          { name: "lib/", type: "directory", mode: 0o7777 },
          { name: "bin/run", body: "#!/bin/sh\necho hi\n", mode: 0o6777 },
          { name: "lib/x", body: "x", mode: 0o4777 },
        ]);
        await publishFs(dir, `${ID}/4.0.0/bundle`, bytes);
        await writeAssignments(dir, [await _signed(key, "4.0.0", bytes)]);
        const run = await runAgent(["sync", "--config", cfg]);
        assertEquals(run.code, 0, run.stderr);
        const v = `${root}/addons/${ID}/versions/4.0.0`;
        for (const p of ["bin/run", "lib", "lib/x"]) {
          const mode = (await Deno.lstat(`${v}/${p}`)).mode! & 0o7777;
          assertEquals(mode & ~0o755, 0, `${p} has mode ${mode.toString(8)}`);
        }
      },
    );
  });
});

Deno.test("run: a bundle refused mid-file leaves no descriptor on its deleted archive", async () => {
  await withTempDir(async (dir) => {
    const root = `${dir}/root`;
    // 64 MiB of zeros, refused once 1 MiB is written: the decompressor still holds the archive's
    // one chunk when the refusal stops it.
    const big = new Uint8Array(64 << 20);
    const tar = await rawTar([RUN, { name: "big", body: big }]);
    const bytes = compress(tar, "tar.gz");
    await publishFs(dir, `${ID}/1.0.0/bundle`, bytes);
    await writeAssignments(dir, [{
      addon_id: ID,
      version: "1.0.0",
      delivery: "pushed_artifact",
      supervision: "agent_sidecar",
      artifact_object_key: `${ID}/1.0.0/bundle`,
      artifact_sha256: sha256Hex(bytes),
      artifact_format: "tar.gz",
      entrypoint: "bin/run",
    }]);
    const cfg = await daemonConfig(dir, { limits: { max_unpacked_bytes: 1 << 20 } });
    await withAgent(dir, cfg, async (agent) => {
      const a = await waitAddon(
        root,
        agent,
        ID,
        "the bundle refused",
        (a) => /"big" takes the bundle past limits\.max_unpacked_bytes/.test(a.message ?? ""),
      );
      assertMatch(a.message ?? "", /nothing was staged/);
      assertEquals(await listTree(`${root}/tmp`), []);
      const tmp = await Deno.realPath(`${root}/tmp`);
      // The refusal is reported before the agent lets go of the archive; poll for the
      // descriptor to go (it never did: the read waited on a write the destroyed decompressor
      // would never finish).
      await waitFor(() => {
        const open = _openBelow(agent.pid, tmp);
        return open.length === 0 ? true : null;
      }, {
        timeoutMs: 5_000,
        what: "the agent to close the refused archive",
        context: () => _openBelow(agent.pid, tmp).join("\n"),
      });
    });
  });
});

/** The targets of `pid`'s descriptors that lie below `dir` (deleted files included). */
function _openBelow(pid: number, dir: string): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      const target = Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`);
      if (target.startsWith(`${dir}/`)) out.push(target);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}
