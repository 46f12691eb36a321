/**
 * `host_binaries` (SPEC 12): a host binary that an assignment source names
 * runs only when its real path is allowed; the local override may name any.
 * The attack of issue #9 — `os_package` `/usr/bin/sh -c …` as an
 * `ephemeral_helper` from the source — is run against the agent under its
 * real permission set.
 */

import { checkHostBinary, hostBinaryAllowed } from "../src/agent/host_binaries.ts";
import { DeliveryError } from "../src/delivery/mod.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "./_assert.ts";
import { readAgentState, waitFor } from "./_agent_process.ts";
import { syncJson, withTempDir, writeAssignments } from "./_helpers.ts";
import {
  baseEnv,
  runUnderSet,
  sandbox,
  sandboxConfig,
  spawnUnderSet,
} from "./_permission_sandbox.ts";
import { MAIN_TS } from "./_helpers.ts";

async function _tree(dir: string): Promise<Record<string, string>> {
  await Deno.mkdir(`${dir}/allowed/sub`, { recursive: true });
  await Deno.mkdir(`${dir}/other`, { recursive: true });
  const files: Record<string, string> = {
    tool: `${dir}/allowed/tool`,
    deep: `${dir}/allowed/sub/deep`,
    outside: `${dir}/other/outside`,
  };
  for (const f of Object.values(files)) {
    await Deno.writeTextFile(f, "#!/bin/sh\nexit 0\n");
    await Deno.chmod(f, 0o755);
  }
  // A link inside the allowed directory that leads out of it, and one outside leading in.
  await Deno.symlink(files.outside!, `${dir}/allowed/escape`);
  await Deno.symlink(files.tool!, `${dir}/other/into`);
  // A directory reached through a symlinked parent (like /sbin -> /usr/sbin).
  await Deno.symlink(`${dir}/allowed`, `${dir}/alias`);
  return { ...files, escape: `${dir}/allowed/escape`, into: `${dir}/other/into` };
}

Deno.test("hostBinaryAllowed() compares the real path with exact entries and dir/*", async (t) => {
  await withTempDir(async (dir) => {
    const f = await _tree(dir);
    const real = (p: string) => Deno.realPath(p);
    const cases: [string, string, string[], boolean][] = [
      ["an exact entry", f.tool!, [f.tool!], true],
      ["a file directly in dir/*", f.tool!, [`${dir}/allowed/*`], true],
      ["a file below dir/* (not directly in it)", f.deep!, [`${dir}/allowed/*`], false],
      ["a link in dir/* leading out", f.escape!, [`${dir}/allowed/*`], false],
      ["a link outside leading into dir/*", f.into!, [`${dir}/allowed/*`], true],
      ["an entry written through a symlinked directory", f.tool!, [`${dir}/alias/tool`], true],
      ["dir/* written through a symlinked directory", f.tool!, [`${dir}/alias/*`], true],
      ["another file", f.outside!, [f.tool!, `${dir}/allowed/*`], false],
      ["nothing allowed", f.tool!, [], false],
    ];
    for (const [name, path, allow, expected] of cases) {
      await t.step(name, async () => {
        assertEquals(await hostBinaryAllowed(await real(path), allow), expected);
      });
    }
  });
});

Deno.test("checkHostBinary() refuses a source's binary outside the allowlist; the override may name any", async (t) => {
  await withTempDir(async (dir) => {
    const f = await _tree(dir);
    await t.step("refused, naming the path, its real path and the setting", async () => {
      const e = await assertRejects(
        () =>
          checkHostBinary(f.escape!, "binary_path", {
            allow: [`${dir}/allowed/*`],
            fromOverride: false,
          }),
        DeliveryError,
      );
      assertEquals(e.kind, "refused");
      assertStringIncludes(e.message, `host binary ${f.escape} (really ${f.outside})`);
      assertStringIncludes(e.message, "is not allowed by host_binaries");
    });
    await t.step("allowed: its real path is what runs, not the link as named", async () => {
      assertEquals(
        await checkHostBinary(f.into!, "binary_path", {
          allow: [`${dir}/allowed/*`],
          fromOverride: false,
        }),
        await Deno.realPath(f.tool!),
      );
    });
    await t.step("named by the override: any executable path", async () => {
      assertEquals(
        await checkHostBinary(f.outside!, "binary_path", { allow: [], fromOverride: true }),
        f.outside,
      );
    });
    await t.step("the override still needs an executable file", async () => {
      await assertRejects(
        () => checkHostBinary(`${dir}/nope`, "binary_path", { allow: [], fromOverride: true }),
        DeliveryError,
        "does not exist",
      );
    });
  });
});

const SH_HELPER = {
  addon_id: "pwn",
  version: "1",
  delivery: "os_package",
  supervision: "ephemeral_helper",
  binary_path: "/usr/bin/sh",
  args: ["-c", 'id > "$ADDON_DATA_DIR/owned"'],
};

Deno.test("run under the real permission set: a source's /usr/bin/sh helper is refused unless allowed", async (t) => {
  await withTempDir(async (dir) => {
    const sb = await sandbox(dir);
    const marker = `${sb.root}/addons/pwn/data/owned`;
    const run = async (extra: Record<string, unknown>, until: (s: string) => boolean) => {
      const cfg = await sandboxConfig(sb, {
        source: { kind: "file", path: `${sb.etc}/assignments.json`, poll_interval_s: 1 },
        object_store: { kind: "filesystem", root: `${sb.etc}/store` },
        trust: { public_keys: [], require_signature: true },
        ...extra,
      });
      const agent = spawnUnderSet(sb, ["run", "--config", cfg]);
      const stderr = new Response(agent.stderr).text();
      try {
        return await waitFor(async () => {
          const st = (await readAgentState(sb.root))?.addons.pwn;
          return st && until(st.state) ? st : null;
        }, { timeoutMs: 30_000, what: "pwn settled" });
      } finally {
        agent.kill("SIGTERM");
        const status = await agent.status;
        await agent.stdout.cancel();
        assertEquals(status.code, 0, await stderr);
      }
    };
    await Deno.mkdir(`${sb.etc}/store`);
    await writeAssignments(sb.etc, [SH_HELPER]);

    await t.step("not in host_binaries: failed, and the shell never ran", async () => {
      const st = await run({}, (s) => s === "failed");
      assertStringIncludes(st.message, "host binary /usr/bin/sh");
      assertStringIncludes(st.message, "is not allowed by host_binaries");
      assert(!(await Deno.lstat(marker).then(() => true, () => false)), "the shell ran");
    });

    await t.step("allowed by host_binaries: it runs (the refusal was the allowlist)", async () => {
      const st = await run({ host_binaries: { allow: ["/usr/bin/sh"] } }, (s) => s === "completed");
      assertEquals(st.state, "completed");
      assert(await Deno.lstat(marker).then(() => true, () => false), "the helper ran");
    });
  });
});

Deno.test("sync under the real permission set refuses a host fallback the source names", async () => {
  await withTempDir(async (dir) => {
    const sb = await sandbox(dir);
    await Deno.mkdir(`${sb.etc}/store`);
    await writeAssignments(sb.etc, [{
      addon_id: "fallback",
      version: "1",
      delivery: "pushed_artifact",
      supervision: "agent_sidecar",
      binary_path: "/usr/bin/sh",
    }]);
    const sync = async (extra: Record<string, unknown>) => {
      const cfg = await sandboxConfig(sb, {
        object_store: { kind: "filesystem", root: `${sb.etc}/store` },
        ...extra,
      });
      return await runUnderSet(sb, MAIN_TS, ["sync", "--config", cfg, "--json"], baseEnv());
    };
    const refused = await sync({});
    assertEquals(refused.code, 1, refused.stderr);
    const r = syncJson(refused).results[0]!;
    assertEquals(r.outcome, "failed");
    assertStringIncludes(r.message, "is not allowed by host_binaries");
    const allowed = await sync({ host_binaries: { allow: ["/usr/bin/*"] } });
    assertEquals(allowed.code, 0, allowed.stderr);
    assertEquals(syncJson(allowed).results[0]!.outcome, "host_binary");
  });
});

Deno.test("run under the real permission set: a link swapped after the check never runs what it leads to", async () => {
  await withTempDir(async (dir) => {
    const sb = await sandbox(dir);
    await Deno.mkdir(`${sb.etc}/store`);
    await Deno.mkdir(`${sb.etc}/bin`);
    // The allowed tool appends a line per run; the attacker's script would leave `owned`.
    const ran = `${sb.outside}/ran`;
    const owned = `${sb.outside}/owned`;
    const tool = `${sb.etc}/bin/tool`;
    const evil = `${sb.etc}/bin/evil`;
    await Deno.writeTextFile(tool, `#!/bin/sh\necho run >> ${ran}\n`);
    await Deno.writeTextFile(evil, `#!/bin/sh\nid > ${owned}\n`);
    await Deno.chmod(tool, 0o755);
    await Deno.chmod(evil, 0o755);
    // The source names a path inside an add-on's own data/ (writable by the add-on's user),
    // a link to the allowed tool when the agent checks it.
    const data = `${sb.root}/addons/pwn/data`;
    await Deno.mkdir(data, { recursive: true, mode: 0o700 });
    await Deno.chmod(`${sb.root}/addons/pwn`, 0o750);
    const link = `${data}/tool`;
    await Deno.symlink(tool, link);
    await writeAssignments(sb.etc, [{
      addon_id: "pwn",
      version: "1",
      delivery: "os_package",
      supervision: "ephemeral_helper",
      schedule: "*:*:0/2",
      binary_path: link,
    }]);
    const cfg = await sandboxConfig(sb, {
      source: { kind: "file", path: `${sb.etc}/assignments.json`, poll_interval_s: 1 },
      object_store: { kind: "filesystem", root: `${sb.etc}/store` },
      host_binaries: { allow: [tool] },
      isolation: { users: "none" }, // as root, the worst case
    });
    const agent = spawnUnderSet(sb, ["run", "--config", cfg]);
    const stderr = new Response(agent.stderr).text();
    const runs = async () => (await Deno.readTextFile(ran).catch(() => "")).split("\n").length - 1;
    try {
      await waitFor(async () => (await runs()) >= 1, { timeoutMs: 30_000, what: "a first run" });
      // Checked and running: now the link leads to the attacker's script.
      await Deno.remove(link);
      await Deno.symlink(evil, link);
      const before = await runs();
      await waitFor(
        async () =>
          (await runs()) > before || (await Deno.lstat(owned).then(() => true, () => false)),
        { timeoutMs: 30_000, what: "the next scheduled run" },
      );
      assert(
        !(await Deno.lstat(owned).then(() => true, () => false)),
        "root ran the script the swapped link leads to",
      );
    } finally {
      agent.kill("SIGTERM");
      const status = await agent.status;
      await agent.stdout.cancel();
      assertEquals(status.code, 0, await stderr);
    }
  });
});

Deno.test("run under the real permission set: a source's loader variables never reach an allowed host binary", async (t) => {
  await withTempDir(async (dir) => {
    const sb = await sandbox(dir);
    await Deno.mkdir(`${sb.etc}/store`);
    // LD_DEBUG_OUTPUT makes the loader of an allowed binary write a file of the source's
    // choosing (as root under users "none"); LD_PRELOAD would run the source's code in it.
    const written = `${sb.outside}/written`;
    const helper = {
      addon_id: "loader",
      version: "1",
      delivery: "os_package",
      supervision: "ephemeral_helper",
      binary_path: "/usr/bin/true",
      env: { LD_DEBUG: "files", LD_DEBUG_OUTPUT: written },
    };
    const anyWritten = async () => {
      for await (const e of Deno.readDir(sb.outside)) if (e.name.startsWith("written")) return true;
      return false;
    };
    const run = async (until: (s: string) => boolean) => {
      const cfg = await sandboxConfig(sb, {
        source: { kind: "file", path: `${sb.etc}/assignments.json`, poll_interval_s: 1 },
        object_store: { kind: "filesystem", root: `${sb.etc}/store` },
        host_binaries: { allow: ["/usr/bin/true"] },
        isolation: { users: "none" },
      });
      const agent = spawnUnderSet(sb, ["run", "--config", cfg]);
      const stderr = new Response(agent.stderr).text();
      try {
        return await waitFor(async () => {
          const st = (await readAgentState(sb.root))?.addons.loader;
          return st && until(st.state) ? st : null;
        }, { timeoutMs: 30_000, what: "loader settled" });
      } finally {
        agent.kill("SIGTERM");
        const status = await agent.status;
        await agent.stdout.cancel();
        assertEquals(status.code, 0, await stderr);
      }
    };

    await t.step(
      "named by the source: failed, naming the variable, and nothing written",
      async () => {
        await writeAssignments(sb.etc, [helper]);
        const st = await run((s) => s === "failed");
        assertStringIncludes(st.message, "env LD_DEBUG");
        assertStringIncludes(st.message, "/usr/bin/true");
        assert(!(await anyWritten()), "the loader wrote the source's file");
      },
    );

    await t.step("the same env in the local override runs (an operator's choice)", async () => {
      await writeAssignments(sb.etc, [{ ...helper, env: {} }]);
      await Deno.writeTextFile(
        `${sb.etc}/addons.local.json`,
        JSON.stringify({ addons: [{ addon_id: "loader", env: helper.env }] }),
      );
      await Deno.chmod(`${sb.etc}/addons.local.json`, 0o600);
      const st = await run((s) => s === "completed");
      assertEquals(st.state, "completed");
      assert(await anyWritten(), "the loader honoured the override's LD_DEBUG_OUTPUT");
    });
  });
});
