/**
 * `scripts/build.ts` (`deno task compile`) without the Deno runtime for its
 * targets (as on this machine, or any offline one): a clear one-paragraph
 * failure, never a stack trace. And the release files it writes: SHA256SUMS
 * in `sha256sum` format, signatures that `addon-agent verify` (and OpenSSL)
 * accept for the right platform only.
 */

import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertStringIncludes,
} from "./_assert.ts";
import { type AgentRun, freePort, REPO, runAgent, runDeno, withTempDir } from "./_helpers.ts";
import {
  BuildError,
  type ReleaseSignatures,
  SIGNATURES_FILE,
  TARGETS,
  writeChecksums,
} from "../scripts/build.ts";
import {
  decodeBase64,
  encodeBase64,
  generateKey,
  statementBytes,
} from "../src/protocol/signature.ts";
import { AGENT_VERSION } from "../src/common/version.ts";

const BUILD = `${REPO}/scripts/build.ts`;

/** Run the build script as `deno task compile` does, with `env` over a copy of ours minus DENORT_BIN. */
function _build(args: string[], env: Record<string, string> = {}): Promise<AgentRun> {
  const base = Deno.env.toObject();
  delete base.DENORT_BIN;
  return runDeno(["run", "-A", BUILD, ...args], {
    env: { ...base, ...env },
    clearEnv: true,
    cwd: REPO,
  });
}

/** Whether deno has the runtime for `target` cached already (then nothing fails offline). */
async function _runtimeCached(target: string): Promise<boolean> {
  const info = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json"],
    stdout: "piped",
  })
    .output();
  const dir = JSON.parse(new TextDecoder().decode(info.stdout)).denoDir as string;
  const zip = `${dir}/dl/release/v${Deno.version.deno}/denort-${target}.zip`;
  return await Deno.stat(zip).then(() => true, () => false);
}

function _assertNoTrace(stderr: string): void {
  assert(!stderr.includes("Stack backtrace"), stderr);
  assert(!/^\s+at /m.test(stderr), stderr);
  assert(!stderr.includes("error: Uncaught"), stderr);
}

Deno.test("build.ts stops with a clear message when the Deno runtime cannot be obtained", async (t) => {
  const target = "aarch64-unknown-linux-gnu";
  const cached = await _runtimeCached(target);
  await withTempDir(async (dir) => {
    await t.step({
      name: "no network and no DENORT_BIN: exit 1 naming the target and DENORT_BIN",
      ignore: cached,
      fn: async () => {
        // Nothing listens on the proxy's port: every download fails at once.
        const proxy = `http://127.0.0.1:${freePort()}`;
        const run = await _build(["--target", target, "--out", `${dir}/dist`], {
          HTTPS_PROXY: proxy,
          HTTP_PROXY: proxy,
          NO_PROXY: "",
        });
        assertEquals(run.code, 1, run.stderr);
        _assertNoTrace(run.stderr);
        assertStringIncludes(run.stderr, `cannot build ${target}`);
        assertStringIncludes(run.stderr, `denort-${target}.zip`);
        assertStringIncludes(
          run.stderr,
          `DENORT_BIN=/path/to/denort deno task compile --target ${target}`,
        );
        const paragraph = run.stderr.split("\n").filter((l) => l.startsWith("addon-agent build:"));
        assertEquals(paragraph.length, 1, run.stderr);
        assertEquals(await Deno.stat(`${dir}/dist/addon-agent-${target}`).catch(() => null), null);
      },
    });

    await t.step("DENORT_BIN that is not a file: exit 1 naming it", async () => {
      const run = await _build(["--target", target, "--out", `${dir}/dist`], {
        DENORT_BIN: `${dir}/no-such-denort`,
      });
      assertEquals(run.code, 1, run.stderr);
      _assertNoTrace(run.stderr);
      assertStringIncludes(run.stderr, `DENORT_BIN=${dir}/no-such-denort is not a file`);
    });

    await t.step(
      "DENORT_BIN with more than one target: exit 1 asking for one --target",
      async () => {
        await Deno.writeTextFile(`${dir}/denort`, "");
        const run = await _build(["--out", `${dir}/dist`], { DENORT_BIN: `${dir}/denort` });
        assertEquals(run.code, 1, run.stderr);
        assertStringIncludes(run.stderr, "DENORT_BIN is the runtime of one target");
      },
    );

    await t.step("an unknown target: exit 2 listing the known ones", async () => {
      const run = await _build(["--target", "riscv64-unknown-linux-gnu"]);
      assertEquals(run.code, 2, run.stderr);
      _assertNoTrace(run.stderr);
      for (const known of Object.keys(TARGETS)) assertStringIncludes(run.stderr, known);
    });
  });
});

Deno.test("writeChecksums() writes SHA256SUMS and release signatures that verify", async (t) => {
  await withTempDir(async (dir) => {
    const files = ["addon-agent-x86_64-unknown-linux-gnu", "addon-agent-aarch64-apple-darwin"];
    for (const [i, f] of files.entries()) {
      await Deno.writeTextFile(`${dir}/${f}`, `#!/bin/sh\necho fake build ${i}\n`);
    }
    const key = await generateKey();

    await t.step(
      "SHA256SUMS is sorted, in sha256sum format, and sha256sum -c accepts it",
      async () => {
        const { sums, signatures } = await writeChecksums(dir, files);
        assertEquals(signatures, null);
        const lines = sums.trimEnd().split("\n");
        assertEquals(lines.map((l) => l.slice(66)), [...files].sort());
        for (const l of lines) assertMatch(l, /^[0-9a-f]{64} {2}addon-agent-[a-z0-9_-]+$/);
        assertEquals(await Deno.readTextFile(`${dir}/SHA256SUMS`), sums);
        const check = await new Deno.Command("sha256sum", {
          args: ["-c", "SHA256SUMS"],
          cwd: dir,
          stdout: "piped",
          stderr: "piped",
        }).output();
        assertEquals(check.code, 0, new TextDecoder().decode(check.stderr));
      },
    );

    let sig: ReleaseSignatures | null = null;
    await t.step("with a release key: one signature per binary, for its own platform", async () => {
      sig = (await writeChecksums(dir, files, key.secret)).signatures;
      assert(sig);
      assertEquals(JSON.parse(await Deno.readTextFile(`${dir}/${SIGNATURES_FILE}`)), sig);
      assertEquals(sig.public_key, key.publicBase64);
      assertEquals(sig.version, AGENT_VERSION);
      assertEquals(
        sig.files.map((f) => `${f.file} ${f.os}/${f.arch}`),
        [
          "addon-agent-aarch64-apple-darwin darwin/arm64",
          "addon-agent-x86_64-unknown-linux-gnu linux/amd64",
        ],
      );
    });

    await t.step(
      "addon-agent verify accepts each, and refuses it for another platform",
      async () => {
        assert(sig);
        for (const f of (sig as ReleaseSignatures).files) {
          const flags = (os: string, arch: string) => [
            "verify",
            "--public-key",
            key.publicBase64,
            "--addon-id",
            "addon-agent",
            "--version",
            AGENT_VERSION,
            "--os",
            os,
            "--arch",
            arch,
            "--signature",
            f.artifact_signature,
            `${dir}/${f.file}`,
          ];
          const ok = await runAgent(flags(f.os, f.arch));
          assertEquals(ok.code, 0, ok.stderr);
          const moved = await runAgent(flags(f.os, f.arch === "amd64" ? "arm64" : "amd64"));
          assertEquals(moved.code, 1, moved.stderr);
        }
      },
    );

    const openssl = await new Deno.Command("openssl", { args: ["version"], stdout: "null" })
      .output().then((o) => o.success, () => false);
    await t.step({
      name: "OpenSSL verifies a signature too (for a first install without a trusted agent)",
      ignore: !openssl,
      fn: async () => {
        assert(sig);
        const f = (sig as ReleaseSignatures).files[0]!;
        const stmt = statementBytes({
          addon_id: "addon-agent",
          version: AGENT_VERSION,
          target: `${f.os}/${f.arch}`,
          sha256: f.artifact_sha256,
        });
        await Deno.writeFile(`${dir}/statement`, stmt);
        await Deno.writeFile(`${dir}/sig.bin`, decodeBase64(f.artifact_signature)!);
        // SubjectPublicKeyInfo of an Ed25519 key: a fixed 12-byte prefix, then the raw key
        const spki = new Uint8Array([
          ...decodeBase64("MCowBQYDK2VwAyEA")!,
          ...decodeBase64(key.publicBase64)!,
        ]);
        await Deno.writeTextFile(
          `${dir}/release.pub.pem`,
          `-----BEGIN PUBLIC KEY-----\n${encodeBase64(spki)}\n-----END PUBLIC KEY-----\n`,
        );
        const v = await new Deno.Command("openssl", {
          args: [
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            "release.pub.pem",
            "-rawin",
            "-in",
            "statement",
            "-sigfile",
            "sig.bin",
          ],
          cwd: dir,
          stdout: "piped",
          stderr: "piped",
        }).output();
        assertEquals(v.code, 0, new TextDecoder().decode(v.stderr));
        assertStringIncludes(new TextDecoder().decode(v.stdout), "Signature Verified Successfully");
      },
    });

    await t.step("without a key again: the stale signature file is removed", async () => {
      await writeChecksums(dir, files);
      assertEquals(await Deno.stat(`${dir}/${SIGNATURES_FILE}`).catch(() => null), null);
    });

    await t.step("a file not named addon-agent-<target> cannot be signed", async () => {
      await Deno.writeTextFile(`${dir}/notes.txt`, "x");
      const e = await assertRejects(
        () => writeChecksums(dir, [...files, "notes.txt"], key.secret),
        BuildError,
      );
      assertStringIncludes(e.message, "notes.txt");
    });
  });
});
