// Tests of src/runtime/addon_users.ts (SPEC 13): uid allocation recorded in state.json and
// the ownership and modes of an add-on's files, checked with real processes running as
// the add-on's uid (setpriv) — what an add-on can and cannot read or write.

import {
  allocateUid,
  foreignUidOwner,
  resolveUser,
  secureAddonTree,
  UidRangeExhaustedError,
} from "../src/runtime/addon_users.ts";
import { Layout, openRuntimeRoot } from "../src/runtime/runtime_root.ts";
import { decodeConfig } from "../src/config/config.ts";
import { decodeAssignment } from "../src/protocol/assignment.ts";
import { deliver, deliveryContext } from "../src/delivery/delivery.ts";
import { emptyState } from "../src/runtime/state.ts";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { publishFs, sha256Hex, withTempDir } from "./_helpers.ts";
import { waitFor } from "./_agent_process.ts";

/** Run `sh -c script` as `uid`/`uid` with no capabilities; true when it exits 0. */
async function _as(uid: number, script: string): Promise<boolean> {
  const o = await new Deno.Command("setpriv", {
    args: [
      "--reuid",
      String(uid),
      "--regid",
      String(uid),
      "--clear-groups",
      "--bounding-set",
      "-all",
      "--inh-caps",
      "-all",
      "--no-new-privs",
      "--",
      "/bin/sh",
      "-c",
      script,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).output();
  return o.success;
}

async function _root(dir: string): Promise<Layout> {
  await Deno.chmod(dir, 0o755);
  const layout = new Layout(`${dir}/root`);
  await Deno.mkdir(layout.addons, { recursive: true, mode: 0o755 });
  return layout;
}

/** Stage a version of `id` the way delivery does (root-owned, 0750/0640), plus config and data. */
async function _stage(layout: Layout, id: string): Promise<void> {
  const v = layout.versionDir(id, "1");
  await Deno.mkdir(v, { recursive: true, mode: 0o750 });
  await Deno.writeTextFile(`${v}/${id}`, "#!/bin/sh\necho hi\n");
  await Deno.chmod(`${v}/${id}`, 0o750);
  await Deno.writeTextFile(`${v}/artifact.json`, "{}", { mode: 0o640 });
  await Deno.writeTextFile(layout.configFile(id), '{"secret":1}', { mode: 0o640 });
  await Deno.mkdir(layout.dataDir(id), { mode: 0o750 });
}

Deno.test("allocateUid() gives each add-on its own stable uid, recorded in state", async () => {
  await withTempDir(async (dir) => {
    const layout = await _root(dir);
    const state = emptyState();
    const a = await allocateUid(layout, state, "a", [64100, 64101]);
    const b = await allocateUid(layout, state, "b", [64100, 64101]);
    assertEquals([a, b], [64100, 64101]);
    assertEquals(await allocateUid(layout, state, "a", [64100, 64101]), a, "stable");
    assertEquals(state.uids, { a: 64100, b: 64101 });
  });
});

Deno.test("allocateUid() gives add-ons prepared at the same time different uids", async () => {
  await withTempDir(async (dir) => {
    const layout = await _root(dir);
    const state = emptyState();
    const ids = ["a", "b", "c", "d"];
    const uids = await Promise.all(ids.map((id) => allocateUid(layout, state, id, [64100, 64199])));
    assertEquals(new Set(uids).size, ids.length, `distinct: ${uids}`);
  });
});

Deno.test("allocateUid() never hands out a uid while its first owner's files exist", async () => {
  await withTempDir(async (dir) => {
    const layout = await _root(dir);
    const state = emptyState();
    await allocateUid(layout, state, "a", [64100, 64100]);
    await Deno.mkdir(layout.dataDir("a"), { recursive: true });
    const e = await assertRejects(
      () => allocateUid(layout, state, "b", [64100, 64100]),
      UidRangeExhaustedError,
    );
    assert(e.message.includes("uid_range"), e.message);
    // Unrecorded (state.json lost) but files still owned by the uid: still taken.
    await Deno.chown(layout.dataDir("a"), 64100, 64100);
    await assertRejects(
      () => allocateUid(layout, emptyState(), "b", [64100, 64100]),
      UidRangeExhaustedError,
    );
    await Deno.remove(layout.addonDir("a"), { recursive: true });
    assertEquals(await allocateUid(layout, state, "b", [64100, 64100]), 64100, "freed");
    assertEquals(state.uids, { b: 64100 });
  });
});

Deno.test("allocateUid() skips a uid that a user, group or running process already has", async () => {
  await withTempDir(async (dir) => {
    const layout = await _root(dir);
    const state = emptyState();
    // Debian's nobody/nogroup is 65534: an add-on given it could read nobody's files.
    assertEquals(await foreignUidOwner(65534), "user nobody");
    assertEquals(await allocateUid(layout, state, "a", [65534, 65535]), 65535);
    // A service's process (or an escaped process of a removed add-on) runs as 64150.
    const other = new Deno.Command("setpriv", {
      args: ["--reuid", "64150", "--regid", "64150", "--clear-groups", "sleep", "60"],
      stdin: "null",
    }).spawn();
    try {
      await waitFor(async () => (await foreignUidOwner(64150)) === `process ${other.pid}`, {
        timeoutMs: 10_000,
        what: "the other process to run as 64150",
      });
      assertEquals(await allocateUid(layout, state, "b", [64150, 64151]), 64151);
      await assertRejects(
        () => allocateUid(layout, state, "c", [64150, 64150]),
        UidRangeExhaustedError,
      );
      assertEquals(state.uids, { a: 65535, b: 64151 }, "nothing recorded for the refused pick");
    } finally {
      other.kill("SIGKILL");
      await other.status;
    }
  });
});

Deno.test("secureAddonTree() lets an add-on read its files and write only its data", async () => {
  await withTempDir(async (dir) => {
    const layout = await _root(dir);
    await _stage(layout, "a");
    await _stage(layout, "b");
    await Deno.writeTextFile(layout.stateFile, "{}", { mode: 0o600 });
    const A = 61700, B = 61701;
    await secureAddonTree(layout, "a", "1", { uid: A, gid: A });
    await secureAddonTree(layout, "b", "1", { uid: B, gid: B });

    const st = await Deno.lstat(layout.addonDir("a"));
    assertEquals([st.uid, st.gid, st.mode! & 0o777], [0, A, 0o750]);
    const bin = await Deno.lstat(`${layout.versionDir("a", "1")}/a`);
    assertEquals([bin.uid, bin.gid, bin.mode! & 0o777], [0, A, 0o750]);
    const cfg = await Deno.lstat(layout.configFile("a"));
    assertEquals([cfg.uid, cfg.gid, cfg.mode! & 0o777], [0, A, 0o640]);
    const data = await Deno.lstat(layout.dataDir("a"));
    assertEquals([data.uid, data.gid, data.mode! & 0o777], [A, A, 0o700]);

    const a = layout.addonDir("a");
    assert(await _as(A, `${a}/versions/1/a`), "runs its own binary");
    assert(await _as(A, `cat ${a}/config.json`), "reads its config.json");
    assert(await _as(A, `touch ${a}/data/x`), "writes its data/");
    assert(!(await _as(A, `touch ${a}/config.json`)), "cannot change its config.json");
    assert(!(await _as(A, `touch ${a}/versions/1/new`)), "cannot write its staged files");
    assert(!(await _as(A, `cat ${layout.configFile("b")}`)), "cannot read b's config");
    assert(!(await _as(A, `ls ${layout.addonDir("b")}`)), "cannot list b's directory");
    assert(!(await _as(A, `${layout.versionDir("b", "1")}/b`)), "cannot run b's binary");
    assert(!(await _as(A, `cat ${layout.stateFile}`)), "cannot read state.json");
    assert(!(await _as(65534, `ls ${a}`)), "nobody cannot traverse a's directory");
  });
});

Deno.test("deliver() stages identical bytes for two add-ons as two inodes", async () => {
  await withTempDir(async (dir) => {
    const bytes = "#!/bin/sh\nexec sleep 300\n";
    await publishFs(dir, "same", bytes);
    const cfg = decodeConfig(
      {
        agent_id: "h",
        runtime_root: `${dir}/root`,
        source: { kind: "file", path: `${dir}/a.json` },
        object_store: { kind: "filesystem", root: `${dir}/store` },
      },
      `${dir}/agent.json`,
    );
    const root = await openRuntimeRoot(cfg.runtime_root);
    try {
      const platform = { os: "linux", arch: "amd64" } as const;
      const ctx = await deliveryContext(cfg, root, platform);
      const inodes: number[] = [];
      for (const id of ["one", "two"]) {
        const a = decodeAssignment(
          {
            addon_id: id,
            version: "1",
            delivery: "pushed_artifact",
            supervision: "agent_sidecar",
            artifact_object_key: "same",
            artifact_sha256: sha256Hex(bytes),
          },
          "addons[0]",
          platform,
        );
        const d = await deliver(ctx, a);
        const st = await Deno.lstat(d.binary);
        assertEquals(st.mode! & 0o777, 0o750, "staged executable is 0750, not world-readable");
        assertEquals(st.nlink, 1, "no other name for the staged bytes");
        inodes.push(st.ino!);
      }
      assert(inodes[0] !== inodes[1], `two inodes, got ${inodes}`);
    } finally {
      root.release();
    }
  });
});

Deno.test("resolveUser() finds a shared user by name or number", async () => {
  assertEquals(await resolveUser("nobody"), { uid: 65534, gid: 65534 });
  assertEquals(
    await resolveUser("61234"),
    { uid: 61234, gid: 61234 },
    "no passwd entry: gid = uid",
  );
  await assertRejects(() => resolveUser("no-such-user-x"), Error, "isolation.user");
});
