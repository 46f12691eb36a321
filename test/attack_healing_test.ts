/**
 * Attacks on self-healing (SPEC 8) against the real agent, beyond the first
 * tests in `self_healing_test.ts`: staged records rewritten to fit tampered
 * bytes, links that point out of `versions/`, and a runtime root that is
 * read-only from the start. Add-ons are shell scripts staged through the real
 * pipeline from a filesystem store; the source is a file polled every 1 s.
 */

import { assert, assertEquals, assertStringIncludes } from "./_assert.ts";
import { daemonConfig, sidecar, sleepLink, waitAddon, withAgent } from "./_daemon_fixtures.ts";
import { exists, sha256Hex, withTempDir, writeAssignments } from "./_helpers.ts";
import type { AddonState } from "../src/runtime/state.ts";

function _running(a: AddonState): boolean {
  return a.state === "running" && a.pid !== null;
}

/** Overwrite the staged script of `vdir` and make its `artifact.json` name the new bytes. */
async function _tamperWithRecord(vdir: string, bytes: string): Promise<void> {
  await Deno.writeTextFile(`${vdir}/probe`, bytes);
  const rec = JSON.parse(await Deno.readTextFile(`${vdir}/artifact.json`));
  rec.sha256 = sha256Hex(bytes);
  await Deno.writeTextFile(`${vdir}/artifact.json`, JSON.stringify(rec));
}

Deno.test("run fetches again a version whose bytes and artifact.json were both rewritten while it was stopped", async () => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const cfg = await daemonConfig(dir);
    await writeAssignments(dir, [await sidecar(dir, "probe", `exec "${sleepBin}" 300`)]);
    const vdir = `${root}/addons/probe/versions/1.0.0`;
    const marker = `${dir}/TAMPERED`;
    let good = "";
    await withAgent(dir, cfg, async (agent) => {
      await waitAddon(root, agent, "probe", "running", _running);
      good = await Deno.readTextFile(`${vdir}/probe`);
    });
    await _tamperWithRecord(vdir, `#!/bin/sh\ntouch "${marker}"\nexec "${sleepBin}" 300\n`);
    await withAgent(dir, cfg, async (agent) => {
      await waitAddon(root, agent, "probe", "running again", _running);
      assertEquals(await Deno.readTextFile(`${vdir}/probe`), good, "fetched again");
      assert(!(await exists(marker)), "the tampered bytes ran");
      const moved = agent.logs().find((l) => l.msg.startsWith("damaged version moved out"));
      assert(moved, agent.tail());
      assertStringIncludes(String(moved.reason), "its artifact.json names sha256 ");
    });
    assert(!(await exists(marker)), "the tampered bytes ran");
  });
});

Deno.test("run fetches again a running version whose bytes and artifact.json were rewritten before a restart", async () => {
  await withTempDir(async (dir) => {
    const sleepBin = await sleepLink(dir);
    const root = `${dir}/root`;
    const cfg = await daemonConfig(dir);
    await writeAssignments(dir, [await sidecar(dir, "probe", `exec "${sleepBin}" 300`)]);
    const vdir = `${root}/addons/probe/versions/1.0.0`;
    const marker = `${dir}/TAMPERED`;
    await withAgent(dir, cfg, async (agent) => {
      const first = await waitAddon(root, agent, "probe", "running", _running);
      const good = await Deno.readTextFile(`${vdir}/probe`);
      await _tamperWithRecord(vdir, `#!/bin/sh\ntouch "${marker}"\nexec "${sleepBin}" 300\n`);
      Deno.kill(first.pid!, "SIGKILL");
      await waitAddon(
        root,
        agent,
        "probe",
        "running under a new pid",
        (a) => _running(a) && a.pid !== first.pid,
      );
      assertEquals(await Deno.readTextFile(`${vdir}/probe`), good, "fetched again");
      assert(!(await exists(marker)), "the tampered bytes ran");
    });
    assert(!(await exists(marker)), "the tampered bytes ran");
  });
});
