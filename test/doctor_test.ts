// Tests of `addon-agent doctor` (SPEC 16) against a real runtime root, file
// source and filesystem store: a healthy host passes, and each way of
// breaking it fails its own line with what to change.

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import {
  freePort,
  MAIN_TS,
  newKey,
  publicKeyB64,
  publishFs,
  runDeno,
  S3_ENV,
  signFor,
  withTempDir,
  writeAssignments,
  writeConfig,
} from "./_helpers.ts";
import { cgroupDelegation } from "../src/doctor/cgroup.ts";
import { addonCgroupContainer, findOwnCgroup } from "../src/supervise/cgroup.ts";

async function host(dir: string, extra: Record<string, unknown> = {}): Promise<string> {
  const key = await newKey();
  const bytes = "#!/bin/sh\nexec sleep 300\n";
  await publishFs(dir, "probe/1.0.0/probe", bytes);
  await writeAssignments(dir, [{
    addon_id: "probe",
    version: "1.0.0",
    delivery: "pushed_artifact",
    supervision: "agent_sidecar",
    artifact_object_key: "probe/1.0.0/probe",
    ...(await signFor(key, "probe", "1.0.0", bytes)),
  }]);
  return await writeConfig(dir, {
    object_store: { kind: "filesystem", root: `${dir}/store` },
    trust: { public_keys: [publicKeyB64(key)], require_signature: true },
    ...extra,
  });
}

function doctor(config: string) {
  return runDeno(["run", "-A", "--quiet", MAIN_TS, "doctor", "--config", config]);
}

function failed(stdout: string): string[] {
  return stdout.split("\n").filter((l) => l.startsWith("✘"));
}

Deno.test("doctor passes a healthy host: no ✘ line, exit 0", async () => {
  await withTempDir(async (dir) => {
    const r = await doctor(await host(dir));
    assertEquals(r.code, 0, r.stdout + r.stderr);
    assertEquals(failed(r.stdout), []);
    assertMatch(r.stdout, /✔ configuration .* decodes/);
    assertMatch(r.stdout, /✔ probe 1\.0\.0: .*probe\/1\.0\.0\/probe exists \(25 bytes\)/);
    assertMatch(r.stdout, /– no systemd_\* add-on assigned/);
  });
});

Deno.test("doctor names a missing artifact and what to publish", async () => {
  await withTempDir(async (dir) => {
    const config = await host(dir);
    await Deno.remove(`${dir}/store/probe/1.0.0/probe`);
    const r = await doctor(config);
    assertEquals(r.code, 1);
    assertEquals(failed(r.stdout).length, 1, r.stdout);
    assertMatch(
      r.stdout,
      /✘ probe 1\.0\.0: .*does not exist\n {4}fix: publish probe\/1\.0\.0\/probe/,
    );
  });
});

Deno.test("doctor names a loose runtime-root mode and the chmod that fixes it", async () => {
  await withTempDir(async (dir) => {
    const config = await host(dir);
    await Deno.chmod(`${dir}/root`, 0o777);
    const r = await doctor(config);
    assertEquals(r.code, 1);
    assertMatch(
      r.stdout,
      /✘ .*\/root is group- or world-writable \(mode 0777\)\n {4}fix: run: chmod go-w /,
    );
  });
});

Deno.test("doctor names an unreachable source", async () => {
  await withTempDir(async (dir) => {
    const config = await host(dir, {
      source: { kind: "control_plane", url: `http://127.0.0.1:${freePort()}` },
    });
    const r = await doctor(config);
    assertEquals(r.code, 1);
    assertMatch(r.stdout, /✘ the source .* does not answer: .*\n {4}fix: check source in /);
  });
});

Deno.test("doctor names an invalid trusted key by its field", async () => {
  await withTempDir(async (dir) => {
    const config = await host(dir, { trust: { public_keys: ["AAAA"], require_signature: true } });
    const r = await doctor(config);
    assertEquals(r.code, 1);
    assertMatch(r.stdout, /✘ configuration .* does not decode: .*trust\.public_keys\[0\]/);
  });
});

Deno.test("doctor with a bad flag is bad usage (exit 2)", async () => {
  const r = await runDeno(["run", "-A", "--quiet", MAIN_TS, "doctor", "--bogus"]);
  assertEquals(r.code, 2);
});

Deno.test("doctor refuses a token_file with a line break inside without quoting the token", async () => {
  await withTempDir(async (dir) => {
    // Deno's fetch would fail with `Invalid header value: "Bearer <token>"`, token and all.
    await Deno.writeTextFile(`${dir}/token`, "tok-5ec7et-part1\npart2\n", { mode: 0o600 });
    const config = await host(dir, {
      source: {
        kind: "control_plane",
        url: `http://127.0.0.1:${freePort()}`,
        token_file: `${dir}/token`,
      },
    });
    const r = await doctor(config);
    assertEquals(r.code, 1);
    assert(!(r.stdout + r.stderr).includes("5ec7et"), r.stdout + r.stderr);
    assertMatch(r.stdout, /✘ the source .* token_file .*\/token holds a line break/);
  });
});

/** A loopback S3 endpoint that records each request and serves a 64 MiB object to a GET. */
function recordingS3(): { endpoint: string; requests: string[]; close: () => Promise<void> } {
  const requests: string[] = [];
  const size = 64 << 20;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    requests.push(`${req.method} ${new URL(req.url).pathname}`);
    const headers = { "content-length": String(size), etag: '"e"' };
    if (req.method === "HEAD") return new Response(null, { headers });
    return new Response(new Uint8Array(size), { headers });
  });
  return {
    endpoint: `http://127.0.0.1:${server.addr.port}`,
    requests,
    close: () => server.shutdown(),
  };
}

Deno.test("doctor asks an S3 store for an artifact's size with a HEAD, never a GET", async () => {
  await withTempDir(async (dir) => {
    const s3 = recordingS3();
    try {
      const config = await host(dir, {
        object_store: {
          kind: "s3",
          bucket: "addons",
          endpoint: s3.endpoint,
          force_path_style: true,
        },
      });
      const r = await runDeno(["run", "-A", "--quiet", MAIN_TS, "doctor", "--config", config], {
        env: S3_ENV,
      });
      assertMatch(
        r.stdout,
        /✔ probe 1\.0\.0: s3:\/\/addons\/probe\/1\.0\.0\/probe exists \(67108864 bytes\)/,
      );
      assertEquals(s3.requests, ["HEAD /addons/probe/1.0.0/probe"]);
    } finally {
      await s3.close();
    }
  });
});

/** Accepts connections and never answers. */
function silentServer(): { url: string; close: () => void } {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  (async () => {
    for await (const c of l) conns.push(c);
  })().catch(() => {});
  return {
    url: `http://127.0.0.1:${(l.addr as Deno.NetAddr).port}`,
    close: () => {
      l.close();
      for (const c of conns) c.close();
    },
  };
}

/** Run doctor, killing it after 30 s: a doctor that needed that long hung. */
async function doctorWithDeadline(config: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", MAIN_TS, "doctor", "--config", config],
    env: S3_ENV,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const deadline = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const r = await child.output();
  clearTimeout(deadline);
  const stdout = new TextDecoder().decode(r.stdout);
  assert(r.signal === null, `doctor hung: ${stdout}`);
  return { code: r.code, stdout };
}

Deno.test("doctor gives up on a source or store that never answers after timeouts.connect_s", async () => {
  await withTempDir(async (dir) => {
    const silent = silentServer();
    try {
      const timeouts = { connect_s: 1, idle_s: 1 };
      const source = await doctorWithDeadline(
        await host(dir, { timeouts, source: { kind: "control_plane", url: silent.url } }),
      );
      assertEquals(source.code, 1);
      assertMatch(source.stdout, /✘ the source .* does not answer: .*within 1 s/);
      const store = await doctorWithDeadline(
        await host(dir, {
          timeouts,
          object_store: { kind: "s3", bucket: "a", endpoint: silent.url, force_path_style: true },
        }),
      );
      assertEquals(store.code, 1);
      assertMatch(store.stdout, /✘ probe 1\.0\.0: cannot stat s3:\/\/a\/probe\/1\.0\.0\/probe/);
      // Thousands of assigned artifacts would cost connect_s each: after the first, none.
      const many = Array.from({ length: 50 }, (_, i) => ({
        addon_id: `p${i}`,
        version: "1.0.0",
        delivery: "pushed_artifact",
        supervision: "agent_sidecar",
        artifact_object_key: `p${i}/1.0.0/p`,
        artifact_sha256: "a".repeat(64),
      }));
      const manyConfig = await host(dir, {
        timeouts,
        object_store: { kind: "s3", bucket: "a", endpoint: silent.url, force_path_style: true },
      });
      await writeAssignments(dir, many); // in place of host()'s one add-on
      const more = await doctorWithDeadline(manyConfig);
      assertEquals(more.stdout.match(/cannot stat/g)?.length, 1, more.stdout);
      assertMatch(more.stdout, /– 49 more artifact\(s\) not checked: the store did not answer/);
    } finally {
      silent.close();
    }
  });
});

Deno.test("doctor judges every directory of the runtime root as the agent does at start", async () => {
  await withTempDir(async (dir) => {
    const config = await host(dir);
    const sync = await runDeno(["run", "-A", "--quiet", MAIN_TS, "sync", "--config", config]);
    assertEquals(sync.code, 0, sync.stderr);
    const deep = `${dir}/root/addons/probe/versions/1.0.0`;
    await Deno.chmod(deep, 0o775);
    const r = await doctor(config);
    assertEquals(r.code, 1, r.stdout);
    assertMatch(
      r.stdout,
      new RegExp(`✘ ${deep} is group- or world-writable .*\\n {4}fix: run: chmod go-w ${deep}\\n`),
    );
    assertEquals((await Deno.stat(deep)).mode! & 0o777, 0o775, "doctor changes no mode");
    // The agent itself refuses to start on it.
    const run = await runDeno(["run", "-A", "--quiet", MAIN_TS, "sync", "--config", config]);
    assertEquals(run.code, 2, run.stderr);
    assertMatch(run.stderr, /group- or world-writable/);
  });
});

Deno.test("doctor's fix for a configuration that is not there is to write it or name it", async () => {
  await withTempDir(async (dir) => {
    const r = await doctor(`${dir}/missing.json`);
    assertEquals(r.code, 1);
    assertMatch(
      r.stdout,
      /fix: write the agent's configuration to .*missing\.json, or give its path with --config/,
    );
  });
});

Deno.test("cgroupDelegation() names the cgroup the agent would use, or why process groups are used", async () => {
  const cfg = (cgroup: "auto" | "off") => ({
    runtime_root: "/var/lib/addon-agent-doctor-test",
    isolation: {
      users: "per_addon" as const,
      uid_range: [61000, 61999] as [number, number],
      cgroup,
      allowed_capabilities: [],
    },
  });
  const off = await cgroupDelegation(cfg("off"));
  assertEquals(off.status, "na");
  assertMatch(off.title, /isolation\.cgroup is "off": add-ons are contained by process groups/);
  const none = await cgroupDelegation(cfg("auto"), null);
  assertMatch(none.title, /no cgroup v2 .*process groups/);
  const gone = await cgroupDelegation(cfg("auto"), { mount: "/nonexistent-cgroup2", path: "/a/b" });
  assertEquals(gone.status, "na");
  assertMatch(gone.title, /not writable \(seen from cgroup \/a\/b\).*process groups/);
  const own = findOwnCgroup();
  if (Deno.uid() === 0 && own !== null) {
    // The very container the agent's openCgroupTree uses for this runtime root.
    const { container } = await addonCgroupContainer(cfg("auto").runtime_root, own);
    const line = await cgroupDelegation(cfg("auto"), own);
    assertEquals(line.status, "ok", line.title);
    assert(line.title.includes(`add-ons get their own cgroup in ${container}`), line.title);
    const offered = await Deno.readTextFile(
      `${container.replace(/\/[^/]+$/, "")}/cgroup.controllers`,
    )
      .catch(() => "");
    if (!offered.includes("pids")) assertMatch(line.title, /not enforced \(no .*pids controller\)/);
  }
});

Deno.test("doctor names three refused entries of a hostile document and counts the rest", async () => {
  await withTempDir(async (dir) => {
    const config = await host(dir);
    await writeAssignments(
      dir,
      Array.from({ length: 2000 }, (_, i) => ({ addon_id: `bad ${i}`, version: "1" })),
    );
    const r = await doctor(config);
    assertEquals(r.code, 1);
    const line = r.stdout.split("\n").find((l) => l.includes("refuses 2000 entries"));
    assert(line !== undefined, r.stdout);
    assert(line.length < 1000, `one line of ${line.length} characters`);
    assertMatch(line, /; and 1997 more$/);
  });
});

Deno.test("doctor compares the store's object with the verified copy staged here", async () => {
  await withTempDir(async (dir) => {
    const config = await host(dir);
    const sync = await runDeno(["run", "-A", "--quiet", MAIN_TS, "sync", "--config", config]);
    assertEquals(sync.code, 0, sync.stderr);
    assertEquals(failed((await doctor(config)).stdout), []);
    // Someone replaced the object in the store after this host verified it.
    await Deno.writeTextFile(`${dir}/store/probe/1.0.0/probe`, "#!/bin/sh\nexec evil\n");
    const r = await doctor(config);
    assertEquals(r.code, 1, r.stdout);
    assertMatch(
      r.stdout,
      /✘ probe 1\.0\.0: .* has 20 bytes, but the verified copy staged here has 25: the object was replaced\n {4}fix: publish the assigned bytes \(sha256 [0-9a-f]{64}\) to probe\/1\.0\.0\/probe again/,
    );
  });
});

Deno.test("doctor shows a control plane's error page without the token it echoes", async () => {
  await withTempDir(async (dir) => {
    const token = "tok-3c40-echoed";
    await Deno.writeTextFile(`${dir}/token`, token, { mode: 0o600 });
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (req) =>
        new Response(`bad request; you sent ${req.headers.get("authorization")}`, {
          status: 400,
        }),
    );
    try {
      const config = await host(dir, {
        source: {
          kind: "control_plane",
          url: `http://127.0.0.1:${server.addr.port}`,
          token_file: `${dir}/token`,
        },
      });
      const r = await doctor(config);
      assertEquals(r.code, 1);
      assertMatch(r.stdout, /answered HTTP 400: bad request; you sent Bearer <redacted>/);
      assert(!(r.stdout + r.stderr).includes("3c40"), r.stdout + r.stderr);
    } finally {
      await server.shutdown();
    }
  });
});
