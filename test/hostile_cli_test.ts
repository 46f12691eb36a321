/**
 * Hostile inputs against the real CLI (SPEC 12, decoding half): out-of-range
 * numbers and small-order keys exit 2 at load; a malleated signature, an env
 * key with '=', a relative binary_path and a timeout_s overflow are refused
 * entry by entry and stage nothing; `verify` refuses the identity as a key.
 */

import { assertEquals, assertStringIncludes } from "./_assert.ts";
import {
  encodeBase64,
  listTree,
  newKey,
  publicKeyB64,
  publishFs,
  runAgent,
  scriptAddon,
  signFor,
  syncJson,
  withTempDir,
  writeAssignments,
  writeConfig,
} from "./_helpers.ts";

/** The identity point: a trust key of small order. */
const IDENTITY = "0100000000000000000000000000000000000000000000000000000000000000";

function _hex(h: string): Uint8Array {
  return Uint8Array.from(h.match(/../g)!.map((b) => parseInt(b, 16)));
}

/** A signature text with the unused bits of its last character set: the same bytes, other text. */
function _malleate(sig: string): string {
  const ALPHA = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const i = sig.length - 3;
  return sig.slice(0, i) + ALPHA[ALPHA.indexOf(sig[i]!) ^ 1] + sig.slice(i + 1);
}

Deno.test("sync exits 2 naming the field for out-of-range numbers and small-order keys", async (t) => {
  await withTempDir(async (dir) => {
    const cases: [string, Record<string, unknown>, string][] = [
      [
        "poll_interval_s 3000000",
        { source: { kind: "file", path: `${dir}/a.json`, poll_interval_s: 3000000 } },
        "source.poll_interval_s",
      ],
      ["status.listen port 99999", { status: { listen: "127.0.0.1:99999" } }, "status.listen"],
      [
        "the identity point as a trust key",
        { trust: { public_keys: [encodeBase64(_hex(IDENTITY))] } },
        "trust.public_keys[0]",
      ],
    ];
    for (const [name, extra, field] of cases) {
      await t.step(name, async () => {
        const cfg = await writeConfig(dir, {
          object_store: { kind: "filesystem", root: `${dir}/store` },
          ...extra,
        });
        const run = await runAgent(["sync", "--config", cfg]);
        assertEquals(run.code, 2, run.stderr);
        assertStringIncludes(run.stderr, cfg);
        assertStringIncludes(run.stderr, field);
      });
    }
  });
});

Deno.test("sync refuses a signature with changed padding bits and stages nothing", async () => {
  await withTempDir(async (dir) => {
    const key = await newKey();
    const bytes = scriptAddon("echo forged");
    await publishFs(dir, "probe/1/probe", bytes);
    const signed = await signFor(key, "probe", "1", bytes);
    const cfg = await writeConfig(dir, {
      object_store: { kind: "filesystem", root: `${dir}/store` },
      trust: { public_keys: [publicKeyB64(key)], require_signature: true },
    });
    await writeAssignments(dir, [{
      addon_id: "probe",
      version: "1",
      delivery: "pushed_artifact",
      supervision: "agent_sidecar",
      artifact_object_key: "probe/1/probe",
      artifact_sha256: signed.artifact_sha256,
      artifact_signature: _malleate(signed.artifact_signature),
    }]);
    const run = await runAgent(["sync", "--config", cfg, "--json"]);
    assertEquals(run.code, 1, run.stderr);
    const r = syncJson(run).results;
    assertEquals(r.map((x) => x.outcome), ["refused"]);
    assertStringIncludes(r[0]!.message, "addons[0].artifact_signature");
    assertEquals((await listTree(`${dir}/root`)).filter((p) => p.includes("versions")), []);
  });
});

Deno.test("sync refuses an env key with '=', a relative binary_path and a timeout_s overflow, entry by entry", async () => {
  await withTempDir(async (dir) => {
    const cfg = await writeConfig(dir, {
      object_store: { kind: "filesystem", root: `${dir}/store` },
    });
    await writeAssignments(dir, [
      {
        addon_id: "eq",
        version: "1",
        delivery: "os_package",
        supervision: "agent_sidecar",
        binary_path: "/bin/true",
        env: { "A=B": "c" },
      },
      {
        addon_id: "rel",
        version: "1",
        delivery: "pushed_artifact",
        supervision: "agent_sidecar",
        binary_path: "sh",
      },
      {
        addon_id: "slow",
        version: "1",
        delivery: "os_package",
        supervision: "ephemeral_helper",
        binary_path: "/bin/true",
        timeout_s: 3000000,
      },
    ]);
    const run = await runAgent(["sync", "--config", cfg, "--json"]);
    assertEquals(run.code, 1, run.stderr);
    const r = syncJson(run).results;
    assertEquals(r.map((x) => [x.addon_id, x.outcome]), [
      ["eq", "refused"],
      ["rel", "refused"],
      ["slow", "refused"],
    ]);
    assertStringIncludes(r[0]!.message, "addons[0].env.A=B");
    assertStringIncludes(r[1]!.message, "addons[1].binary_path");
    assertStringIncludes(r[2]!.message, "addons[2].timeout_s: must be at most 604800");
  });
});

Deno.test("verify refuses the identity point as --public-key (its forged signature would pass)", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/file`, "forged bytes");
    // R = the identity, S = 0: "verifies" for any message under the identity as key.
    const forged = encodeBase64(new Uint8Array(64).fill(0).fill(1, 0, 1));
    const run = await runAgent([
      "verify",
      "--public-key",
      encodeBase64(_hex(IDENTITY)),
      "--addon-id",
      "a",
      "--version",
      "1",
      "--os",
      "linux",
      "--arch",
      "amd64",
      "--signature",
      forged,
      `${dir}/file`,
    ]);
    assertEquals(run.code, 2, run.stdout + run.stderr);
    assertStringIncludes(run.stderr, "--public-key");
    assertStringIncludes(run.stderr, "small order");
  });
});
