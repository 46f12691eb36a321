/**
 * The `s3` source and the S3 publisher against s3rver: `control-plane
 * --publish s3://…` writes each agent's document (only changed ones), the
 * source fetches it with `If-None-Match` (a 304 is `not_modified`) and puts
 * status reports to `status_key`; `publish --store s3://…` uploads an artifact.
 */

import { assertEquals, assertMatch, assertRejects } from "./_assert.ts";
import { decodeConfig, type S3SourceConfig } from "../src/config/mod.ts";
import { S3Source } from "../src/source/s3.ts";
import { type PollResult, SourceError } from "../src/source/mod.ts";
import {
  MAIN_TS,
  randomBytes,
  runAgent,
  S3_ENV,
  sha256Hex,
  startS3,
  withTempDir,
} from "./_helpers.ts";
import { waitFor } from "./_agent_process.ts";

const CATALOG = (version: string) =>
  JSON.stringify({
    packages: { toggle: { version, supervision: "config_toggle" } },
    assignments: { agents: { "edge-01": ["toggle"], "edge-02": [] } },
  });

/** The versions a poll result assigns (none for `not_modified`). */
function versions(r: PollResult): string[] {
  if (r.kind !== "document") return [];
  return (r.json as { addons: { version: string }[] }).addons.map((a) => a.version);
}

Deno.test("the S3 source polls with If-None-Match and puts status; the publisher writes changes only", () =>
  withTempDir(async (dir) => {
    const s3 = await startS3(dir);
    for (const [k, v] of Object.entries(S3_ENV)) Deno.env.set(k, v);
    const cfg = decodeConfig({
      agent_id: "edge-01",
      runtime_root: "/tmp/unused",
      source: {
        kind: "s3",
        bucket: "addons",
        endpoint: s3.endpoint,
        force_path_style: true,
        poll_interval_s: 1,
      },
      object_store: { kind: "filesystem", root: dir },
    }, `${dir}/agent.json`);
    const sc = cfg.source as S3SourceConfig;
    assertEquals([sc.key, sc.status_key], ["assignments/edge-01.json", "status/edge-01.json"]);
    const source = new S3Source(sc);
    const publish = () =>
      runAgent([
        "control-plane",
        "--catalog",
        `${dir}/catalog.json`,
        "--publish",
        "s3://addons/assignments/",
        "--endpoint",
        s3.endpoint,
        "--force-path-style",
        "--once",
      ]);
    try {
      await Deno.writeTextFile(`${dir}/catalog.json`, CATALOG("1"));
      let r = await publish();
      assertEquals(r.code, 0, r.stderr);
      assertEquals(JSON.parse(r.stdout), { written: ["edge-01", "edge-02"], unchanged: [] });

      const first = await source.poll();
      assertEquals(first.kind, "document");
      assertEquals(versions(first), ["1"]);
      assertEquals(await source.poll(), { kind: "not_modified" });

      // Unchanged catalog: nothing written; a change rewrites that agent's document only.
      r = await publish();
      assertEquals(JSON.parse(r.stdout), { written: [], unchanged: ["edge-01", "edge-02"] });
      await Deno.writeTextFile(`${dir}/catalog.json`, CATALOG("2"));
      r = await publish();
      assertEquals(JSON.parse(r.stdout), { written: ["edge-01"], unchanged: ["edge-02"] });
      const second = await source.poll();
      assertEquals(versions(second), ["2"]);

      await source.report({ agent_id: "edge-01", addons: [] });
      const status = await fetch(`${s3.endpoint}/addons/status/edge-01.json`);
      assertEquals(await status.json(), { agent_id: "edge-01", addons: [] });

      // Large enough to take several reads of the file: the upload streams it.
      const tool = randomBytes(3 << 20);
      await Deno.writeFile(`${dir}/tool`, tool);
      const up = await runAgent([
        "publish",
        "--store",
        "s3://addons/artifacts/",
        "--key",
        "tool/1/tool",
        "--endpoint",
        s3.endpoint,
        "--force-path-style",
        `${dir}/tool`,
      ]);
      assertEquals(up.code, 0, up.stderr);
      const obj = await fetch(`${s3.endpoint}/addons/artifacts/tool/1/tool`);
      assertEquals(sha256Hex(new Uint8Array(await obj.arrayBuffer())), sha256Hex(tool));
    } finally {
      source.close();
      await s3.stop();
    }
  }));

Deno.test("`control-plane --publish` follows the catalog: each change is published, a broken one in between does not stop it", () =>
  withTempDir(async (dir) => {
    const s3 = await startS3(dir);
    await Deno.writeTextFile(`${dir}/catalog.json`, CATALOG("1"));
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--quiet",
        MAIN_TS,
        "control-plane",
        "--catalog",
        `${dir}/catalog.json`,
        "--publish",
        "s3://addons/docs/",
        "--endpoint",
        s3.endpoint,
        "--force-path-style",
      ],
      env: S3_ENV,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    const published = (version: string) =>
      waitFor(async () => {
        const r = await fetch(`${s3.endpoint}/addons/docs/edge-01.json`);
        if (!r.ok) {
          await r.body?.cancel();
          return null;
        }
        // s3rver writes an object in place: under load a read can catch it empty or half written.
        const doc = await r.json().catch(() => null) as { addons: { version: string }[] } | null;
        return doc?.addons[0]?.version === version ? doc : null;
      }, { what: `edge-01's document at version ${version}`, timeoutMs: 30_000 });
    try {
      await published("1");
      await Deno.writeTextFile(`${dir}/catalog.json`, CATALOG("2"));
      await published("2");
      await Deno.writeTextFile(`${dir}/catalog.json`, "{ not json");
      await Deno.writeTextFile(`${dir}/catalog.json`, CATALOG("3"));
      await published("3");
    } finally {
      child.kill("SIGTERM");
      const status = await child.status;
      await s3.stop();
      assertEquals(status.code, 0, await stderr);
    }
  }));

Deno.test("the S3 source refuses a document over 8 MiB without reading further", () =>
  withTempDir(async (dir) => {
    const s3 = await startS3(dir);
    for (const [k, v] of Object.entries(S3_ENV)) Deno.env.set(k, v);
    const source = new S3Source({
      kind: "s3",
      bucket: "addons",
      key: "assignments/big.json",
      status_key: "status/big.json",
      poll_interval_s: 30,
      region: "us-east-1",
      endpoint: s3.endpoint,
      force_path_style: true,
    });
    try {
      await s3.put("assignments/big.json", `{"addons":[],"pad":"${"x".repeat(9 << 20)}"}`);
      const e = await assertRejects(() => source.poll(), SourceError);
      assertMatch(e.message, /larger than 8388608 bytes \(limits.max_document_bytes\); refused/);
    } finally {
      source.close();
      await s3.stop();
    }
  }));
