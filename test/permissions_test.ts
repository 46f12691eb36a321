/**
 * The agent under its REAL permission set (`permissions.agent` in the repo's
 * `deno.json`), with the test's temp paths substituted for the production
 * ones: sync from s3rver works; writes outside the runtime root are refused
 * by Deno and reported at start; hosts outside the allow list exit 2 with a
 * message naming the host and the setting. Plus the self-check's pure parts.
 */

import { GetObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { assert, assertEquals, assertMatch, assertStringIncludes } from "./_assert.ts";
import {
  freePort,
  MAIN_TS,
  newKey,
  publishFs,
  s3SignedStore,
  scriptAddon,
  sha256Hex,
  signFor,
  startS3,
  syncJson,
  withTempDir,
  writeAssignments,
} from "./_helpers.ts";
import { checkPermissions, permissionNeeds, s3Host } from "../src/config/permission_check.ts";
import type { AgentConfig } from "../src/config/config.ts";
import { HAVE_NATS, startNats } from "./_nats.ts";
import { baseEnv, runUnderSet, sandbox, sandboxConfig } from "./_permission_sandbox.ts";

Deno.test("the agent permission set runs sync from s3rver", async (t) => {
  await withTempDir(async (dir) => {
    const sb = await sandbox(dir);
    const s3 = await startS3(dir);
    try {
      const key = await newKey();
      const bytes = scriptAddon('echo "v1"');
      await s3.put("probe/1.0.0/probe", bytes);
      const cfg = await sandboxConfig(sb, s3SignedStore(s3, key));
      const entry = async (version: string) => ({
        addon_id: "probe",
        version,
        delivery: "pushed_artifact",
        supervision: "agent_sidecar",
        artifact_object_key: `probe/${version}/probe`,
        ...(await signFor(key, "probe", version, bytes)),
      });
      await writeAssignments(sb.etc, [await entry("1.0.0")]);

      await t.step("credentials from the environment: staged and current", async () => {
        const run = await runUnderSet(sb, MAIN_TS, ["sync", "--config", cfg, "--json"], {
          ...baseEnv(),
          AWS_ACCESS_KEY_ID: "S3RVER",
          AWS_SECRET_ACCESS_KEY: "S3RVER",
        });
        assertEquals(run.code, 0, run.stderr);
        assertEquals(syncJson(run).results.map((r) => r.outcome), ["current"]);
        assertEquals(await Deno.readLink(`${sb.root}/addons/probe/current`), "versions/1.0.0");
        assertEquals(
          await Deno.readTextFile(`${sb.root}/addons/probe/versions/1.0.0/probe`),
          bytes,
        );
      });

      await t.step("credentials from a shared credentials file in the config dir", async () => {
        await s3.put("probe/1.0.1/probe", bytes);
        await writeAssignments(sb.etc, [await entry("1.0.1")], "v2");
        await Deno.mkdir(`${sb.etc}/aws`);
        await Deno.writeTextFile(
          `${sb.etc}/aws/credentials`,
          "[default]\naws_access_key_id = S3RVER\naws_secret_access_key = S3RVER\n",
        );
        const run = await runUnderSet(sb, MAIN_TS, ["sync", "--config", cfg, "--json"], {
          ...baseEnv(),
          AWS_SHARED_CREDENTIALS_FILE: `${sb.etc}/aws/credentials`,
          AWS_CONFIG_FILE: `${sb.etc}/aws/config`,
        });
        assertEquals(run.code, 0, run.stderr);
        assertEquals(syncJson(run).results.map((r) => r.outcome), ["current"]);
        assertEquals(await Deno.readLink(`${sb.root}/addons/probe/current`), "versions/1.0.1");
      });
    } finally {
      await s3.stop();
    }
  });
});

Deno.test("the agent permission set runs the daemon: a sidecar starts and stops", async (t) => {
  await withTempDir(async (dir) => {
    const sb = await sandbox(dir);
    const bytes = scriptAddon('echo "up $ADDON_ID"; exec sleep 300');
    await publishFs(sb.etc, "side/1/side", bytes);
    await writeAssignments(sb.etc, [{
      addon_id: "side",
      version: "1",
      delivery: "pushed_artifact",
      supervision: "agent_sidecar",
      artifact_object_key: "side/1/side",
      artifact_sha256: sha256Hex(bytes),
    }]);
    const port = freePort();
    const cfg = await sandboxConfig(sb, {
      source: { kind: "file", path: `${sb.etc}/assignments.json`, poll_interval_s: 1 },
      object_store: { kind: "filesystem", root: `${sb.etc}/store` },
      status: { listen: `127.0.0.1:${port}` },
    });
    const agent = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--config",
        sb.denoJson,
        "-P=agent",
        "--no-prompt",
        "--frozen",
        MAIN_TS,
        "run",
        "--config",
        cfg,
      ],
      env: baseEnv(),
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let pgid = 0;
    try {
      await t.step("the sidecar reaches running (status endpoint on loopback)", async () => {
        const deadline = Date.now() + 20_000;
        let last = "";
        while (Date.now() < deadline) {
          try {
            const doc = await (await fetch(`http://127.0.0.1:${port}/status`)).json();
            const a = doc.addons?.find((x: { addon_id: string }) => x.addon_id === "side");
            last = JSON.stringify(a);
            if (a?.state === "running") {
              pgid = a.pgid;
              break;
            }
          } catch {
            // not listening yet
          }
          await new Promise((r) => setTimeout(r, 200));
        }
        assert(pgid > 0, `the sidecar did not reach running: ${last}`);
      });
    } finally {
      agent.kill("SIGTERM");
      const out = await agent.output();
      await t.step("SIGTERM stops it and exits 0, leaving no process behind", () => {
        assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
        if (pgid > 0) {
          let alive = true;
          try {
            Deno.kill(-pgid, "SIGKILL");
          } catch {
            alive = false;
          }
          assert(!alive, `process group ${pgid} outlived the agent`);
        }
      });
    }
  });
});

Deno.test("checkPermissions() names a runtime root outside the write set (exit 2)", async (t) => {
  await withTempDir(async (dir) => {
    const sb = await sandbox(dir);
    const elsewhere = `${sb.outside}/root`;
    await Deno.mkdir(`${dir}/store`);
    const cfg = await sandboxConfig(sb, {
      runtime_root: elsewhere,
      object_store: { kind: "filesystem", root: `${dir}/store` },
    });
    await writeAssignments(sb.etc, []);

    await t.step("sync exits 2 naming the path, the field and the setting", async () => {
      const run = await runUnderSet(sb, MAIN_TS, ["sync", "--config", cfg], baseEnv());
      assertEquals(run.code, 2, run.stderr);
      assertStringIncludes(run.stderr, `write: ${elsewhere} (runtime_root`);
      assertStringIncludes(run.stderr, "permissions.agent.write in deno.json");
      // the store root is outside the read set too: named as well
      assertStringIncludes(run.stderr, `read: ${dir}/store (object_store.root`);
      assertStringIncludes(run.stderr, "permissions.agent.read in deno.json");
    });

    await t.step("nothing was created outside", () => {
      assertEquals([...Deno.readDirSync(sb.outside)].length, 0);
    });
  });
});

Deno.test("Deno refuses a write outside the runtime root under the agent set", async (t) => {
  await withTempDir(async (dir) => {
    const sb = await sandbox(dir);
    const script = `${dir}/perm/write.ts`;
    await Deno.writeTextFile(
      script,
      `const [inside, outside] = Deno.args;
await Deno.writeTextFile(inside!, "ok");
try {
  await Deno.writeTextFile(outside!, "escaped");
  console.log("written");
} catch (e) {
  console.log((e as Error).name);
}
`,
    );
    await Deno.mkdir(sb.root, { mode: 0o755 });

    await t.step("inside the runtime root: written; outside: NotCapable", async () => {
      const run = await runUnderSet(sb, script, [`${sb.root}/x`, `${sb.outside}/x`], baseEnv());
      assertEquals(run.code, 0, run.stderr);
      assertEquals(run.stdout.trim(), "NotCapable");
      assertEquals(await Deno.readTextFile(`${sb.root}/x`), "ok");
      assertEquals([...Deno.readDirSync(sb.outside)].length, 0);
    });

    await t.step("the unit dir is writable, the config dir is not", async () => {
      const ok = await runUnderSet(
        sb,
        script,
        [`${sb.units}/u.service`, `${sb.etc}/agent.json`],
        {},
      );
      assertEquals(ok.stdout.trim(), "NotCapable", ok.stderr);
      assert((await Deno.stat(`${sb.units}/u.service`)).isFile);
    });
  });
});

Deno.test("checkPermissions() names hosts outside the net allow list (exit 2)", async (t) => {
  await withTempDir(async (dir) => {
    const sb = await sandbox(dir);

    await t.step("a control plane and the AWS default S3 host", async () => {
      const cfg = await sandboxConfig(sb, {
        source: { kind: "control_plane", url: "https://cp.example.net:8443" },
        object_store: { kind: "s3", bucket: "addons", region: "eu-west-1" },
      });
      const run = await runUnderSet(sb, MAIN_TS, ["sync", "--config", cfg], baseEnv());
      assertEquals(run.code, 2, run.stderr);
      assertStringIncludes(
        run.stderr,
        `net: cp.example.net:8443 (source.url in ${cfg}) is not allowed by this build; ` +
          `add \\"cp.example.net:8443\\" to permissions.agent.net in deno.json and rebuild`,
      );
      assertStringIncludes(run.stderr, "net: addons.s3.eu-west-1.amazonaws.com:443");
    });

    await t.step("an S3 endpoint with path-style addressing", async () => {
      const cfg = await sandboxConfig(sb, {
        object_store: {
          kind: "s3",
          bucket: "addons",
          endpoint: "https://s3.example.net",
          force_path_style: true,
        },
      });
      const run = await runUnderSet(
        sb,
        MAIN_TS,
        ["sync", "--config", cfg, "--log-format", "text"],
        baseEnv(),
      );
      assertEquals(run.code, 2, run.stderr);
      assertMatch(run.stderr, /net: s3\.example\.net:443 \(object_store\.endpoint in [^)]+\)/);
      assertStringIncludes(run.stderr, "permissions.agent.net");
      assert(!run.stderr.includes("runtime_root"), run.stderr);
    });

    await t.step("a loopback control plane is allowed by the default set", async () => {
      const cfg = await sandboxConfig(sb, {
        source: { kind: "control_plane", url: "http://127.0.0.1:1" },
        object_store: { kind: "filesystem", root: sb.etc },
      });
      const run = await runUnderSet(sb, MAIN_TS, ["sync", "--config", cfg], baseEnv());
      assert(!run.stderr.includes("is not allowed by this build"), run.stderr);
      assertEquals(run.code, 1, run.stderr);
    });
  });
});

Deno.test("s3Host() names the host the AWS SDK contacts", async (t) => {
  const cases: [Record<string, unknown>, string][] = [
    [{ bucket: "addons", region: "us-east-1" }, "addons.s3.us-east-1.amazonaws.com:443"],
    [
      { bucket: "addons", region: "us-east-1", force_path_style: true },
      "s3.us-east-1.amazonaws.com:443",
    ],
    [{ bucket: "my.addons", region: "eu-west-1" }, "s3.eu-west-1.amazonaws.com:443"],
    [{ bucket: "Addons_x", region: "eu-west-1" }, "s3.eu-west-1.amazonaws.com:443"],
    [{ bucket: "addons", region: "cn-north-1" }, "addons.s3.cn-north-1.amazonaws.com.cn:443"],
    [{ bucket: "addons", endpoint: "https://s3.example.net" }, "addons.s3.example.net:443"],
    [
      { bucket: "addons", endpoint: "https://s3.example.net:9000", force_path_style: true },
      "s3.example.net:9000",
    ],
    [{ bucket: "addons", endpoint: "http://10.1.2.3:9000" }, "10.1.2.3:9000"],
    [{ bucket: "my.addons", endpoint: "http://store.lan" }, "store.lan:80"],
    [{ bucket: "addons", endpoint: "http://store.lan" }, "addons.store.lan:80"],
  ];
  for (const [c, want] of cases) {
    const store = {
      kind: "s3" as const,
      bucket: c.bucket as string,
      region: (c.region as string | undefined) ?? "us-east-1",
      force_path_style: c.force_path_style === true,
      prefix: "",
      ...(c.endpoint ? { endpoint: c.endpoint as string } : {}),
    };
    await t.step(`${JSON.stringify(c)} → ${want}`, async () => {
      assertEquals(s3Host(store), want);
      // the SDK agrees: capture the request it would send, without sending it
      const client = new S3Client({
        region: store.region,
        forcePathStyle: store.force_path_style,
        ...(store.endpoint ? { endpoint: store.endpoint } : {}),
        credentials: { accessKeyId: "a", secretAccessKey: "b" },
      });
      client.middlewareStack.add(
        () => (args) => {
          const req = args.request as { hostname: string; port?: number; protocol: string };
          const port = req.port ?? (req.protocol === "https:" ? 443 : 80);
          throw new Error(`HOST ${req.hostname}:${port}`);
        },
        { step: "finalizeRequest", priority: "low" },
      );
      let seen = "";
      try {
        await client.send(new GetObjectCommand({ Bucket: store.bucket, Key: "k" }));
      } catch (e) {
        seen = (e as Error).message;
      } finally {
        client.destroy();
      }
      assertEquals(seen, `HOST ${want}`);
    });
  }
});

Deno.test("checkPermissions() lists what a config needs and finds all of it granted under -A", async (t) => {
  const cfg: AgentConfig = {
    file: "/etc/addon-agent/agent.json",
    agent_id: "h",
    runtime_root: "/var/lib/addon-agent",
    config_dir: "/etc/addon-agent",
    source: {
      kind: "control_plane",
      url: "https://cp.example.net:8443",
      poll_interval_s: 30,
      token_file: "/etc/addon-agent/token",
      ca_file: "/etc/addon-agent/ca.pem",
    },
    object_store: {
      kind: "s3",
      bucket: "addons",
      region: "us-east-1",
      endpoint: "https://s3.example.net",
      force_path_style: true,
      prefix: "",
    },
    trust: { public_keys: [], require_signature: false },
    limits: {
      max_artifact_bytes: 1,
      keep_versions: 3,
      max_unpacked_bytes: 1,
      max_document_bytes: 8388608,
    },
    status: { listen: "127.0.0.1:7420" },
    systemd: { unit_dir: "/etc/systemd/system" },
    timeouts: { connect_s: 10, idle_s: 60 },
    isolation: {
      users: "none",
      uid_range: [61000, 61999],
      cgroup: "off",
      allowed_capabilities: [],
    },
    host_binaries: { allow: [] },
  };

  await t.step("every host and path the config names, once each", () => {
    const needs = permissionNeeds(cfg).map((n) => `${n.kind} ${n.value} ${n.fields.join(",")}`);
    for (
      const want of [
        "net cp.example.net:8443 source.url",
        "net s3.example.net:443 object_store.endpoint",
        "net 127.0.0.1:7420 status.listen",
        "read /etc/addon-agent/token source.token_file",
        "read /etc/addon-agent/ca.pem source.ca_file",
        "read /etc/addon-agent/agent.json the configuration file",
        "read /etc/addon-agent config_dir",
        "read /var/lib/addon-agent runtime_root",
        "write /var/lib/addon-agent runtime_root",
        "write /etc/systemd/system systemd.unit_dir",
      ]
    ) {
      assert(needs.includes(want), `missing ${want} in\n${needs.join("\n")}`);
    }
    assertEquals(new Set(needs).size, needs.length);
  });

  await t.step("this test process runs with -A: nothing is reported", async () => {
    assertEquals(await checkPermissions(cfg), []);
  });
});

Deno.test({
  name: "the agent permission set runs sync from a NATS source and object store",
  ignore: !HAVE_NATS,
  fn: () =>
    withTempDir(async (dir) => {
      const sb = await sandbox(dir);
      const nats = await startNats();
      const { connect } = await import("@nats-io/transport-node");
      const { Kvm } = await import("@nats-io/kv");
      const { Objm } = await import("@nats-io/obj");
      const nc = await connect({ servers: [nats.url] });
      try {
        const bytes = scriptAddon('echo "v1"');
        const os = await new Objm(nc).create("artifacts");
        await os.putBlob({ name: "probe/1.0.0/probe" }, new TextEncoder().encode(bytes));
        const kv = await new Kvm(nc).create("assign");
        await kv.put(
          "perm-host",
          JSON.stringify({
            config_version: "v1",
            addons: [{
              addon_id: "probe",
              version: "1.0.0",
              delivery: "pushed_artifact",
              supervision: "agent_sidecar",
              artifact_object_key: "probe/1.0.0/probe",
              artifact_sha256: sha256Hex(bytes),
            }],
          }),
        );
        const cfg = await sandboxConfig(sb, {
          source: { kind: "nats", bucket: "assign" },
          object_store: { kind: "nats", bucket: "artifacts" },
          nats: { servers: [nats.url] },
        });
        const run = await runUnderSet(sb, MAIN_TS, ["sync", "--config", cfg, "--json"], baseEnv());
        assertEquals(run.code, 0, run.stderr);
        assertEquals(syncJson(run).results.map((r) => r.outcome), ["current"]);
        assertEquals(
          await Deno.readTextFile(`${sb.root}/addons/probe/versions/1.0.0/probe`),
          bytes,
        );
      } finally {
        await nc.close();
        await nats.stop();
      }
    }),
});
