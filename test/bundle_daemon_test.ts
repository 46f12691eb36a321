/**
 * Bundles under the daemon (SPEC 15): the entrypoint of the unpacked tree is
 * what runs, with its working directory `data/`; a hostile next version is
 * refused naming its entry while the running tree keeps running (fallback).
 */

import { assert, assertEquals, assertMatch, assertStringIncludes } from "./_assert.ts";
import { waitFor } from "./_agent_process.ts";
import { daemonConfig, sleepLink, waitAddon, withAgent } from "./_daemon_fixtures.ts";
import { publishFs, sha256Hex, withTempDir, writeAssignments } from "./_helpers.ts";
import { hostileBundle, tarDir } from "./_bundles.ts";

const ID = "bundled";

Deno.test("run supervises a bundle's entrypoint and keeps it when the next bundle is refused", async (t) => {
  await withTempDir(async (dir) => {
    const root = `${dir}/root`;
    const sleepBin = await sleepLink(dir);
    const src = `${dir}/tree`;
    await Deno.mkdir(`${src}/bin`, { recursive: true });
    await Deno.mkdir(`${src}/share`, { recursive: true });
    await Deno.writeTextFile(`${src}/share/greeting`, "hi from the bundle\n");
    await Deno.writeTextFile(
      `${src}/bin/run`,
      `#!/bin/sh\ncat "$(dirname "$0")/../share/greeting"\necho "cwd=$(pwd)"\nexec "${sleepBin}" 300\n`,
    );
    await Deno.chmod(`${src}/bin/run`, 0o755);
    await tarDir(src, `${dir}/v1.tar.gz`, "tar.gz");
    const v1 = await Deno.readFile(`${dir}/v1.tar.gz`);
    const entry = async (version: string, bytes: Uint8Array) => {
      await publishFs(dir, `${ID}/${version}/bundle.tar.gz`, bytes);
      return {
        addon_id: ID,
        version,
        delivery: "pushed_artifact",
        supervision: "agent_sidecar",
        artifact_object_key: `${ID}/${version}/bundle.tar.gz`,
        artifact_sha256: sha256Hex(bytes),
        artifact_format: "tar.gz",
        entrypoint: "bin/run",
      };
    };
    await writeAssignments(dir, [await entry("1.0.0", v1)]);
    const cfg = await daemonConfig(dir);

    await withAgent(dir, cfg, async (agent) => {
      let pid = 0;
      await t.step("1.0.0 runs bin/run of its tree, in data/", async () => {
        const a = await waitAddon(
          root,
          agent,
          ID,
          "running 1.0.0",
          (a) => a.state === "running" && a.version === "1.0.0",
        );
        pid = a.pid!;
        const cmdline = (await Deno.readTextFile(`/proc/${pid}/cmdline`)).split("\0");
        assert(cmdline.includes("300"), `the entrypoint exec'd its sleep: ${cmdline}`);
        assertEquals(
          await Deno.readLink(`/proc/${pid}/cwd`),
          await Deno.realPath(`${root}/addons/${ID}/data`),
        );
        const lines = await waitFor(() => {
          const l = agent.logs().filter((l) => l.addon_id === ID && l.stream === "stdout")
            .map((l) => l.msg);
          return l.length >= 2 ? l : null;
        }, { timeoutMs: 20_000, what: "the add-on's two lines", context: () => agent.tail() });
        assertEquals(lines.slice(0, 2), [
          "hi from the bundle",
          `cwd=${await Deno.realPath(`${root}/addons/${ID}/data`)}`,
        ]);
      });

      await t.step("2.0.0 with a .. entry is refused by name; 1.0.0 keeps running", async () => {
        const bad = await hostileBundle([
          { name: "bin/run", body: "#!/bin/sh\necho evil\n", mode: 0o755 },
          { name: "../../../../../evil", body: "x" },
        ]);
        await writeAssignments(dir, [await entry("2.0.0", bad)]);
        const a = await waitAddon(
          root,
          agent,
          ID,
          "fallback to 1.0.0",
          (a) => a.state === "fallback" && a.desired_version === "2.0.0",
        );
        assertEquals([a.version, a.pid], ["1.0.0", pid]);
        assertStringIncludes(a.message, '"../../../../../evil"');
        assertMatch(a.message, /has a "\.\." segment/);
        assertEquals(await Deno.readLink(`${root}/addons/${ID}/current`), "versions/1.0.0");
        assertEquals([...Deno.readDirSync(`${root}/tmp`)].map((e) => e.name), []);
      });
    });
  });
});
