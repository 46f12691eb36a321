/**
 * The systemd units in `packaging/`: `systemd-analyze verify` accepts the
 * strict profile alone and with the capabilities drop-in applied (the real
 * files, with ExecStart pointed at a temp executable), and rejects broken
 * ones; the drop-in switches off every setting that would bring
 * NoNewPrivileges back; the paths agree with the permission set.
 */

import { assert, assertEquals, assertMatch, assertStringIncludes } from "./_assert.ts";
import { REPO, withTempDir } from "./_helpers.ts";

const UNIT = `${REPO}/packaging/addon-agent.service`;
const DROP_IN = `${REPO}/packaging/addon-agent-capabilities.conf`;
const INSTALLED_BINARY = "/usr/local/bin/addon-agent";

/** Settings that imply NoNewPrivileges=yes for a unit without CAP_SYS_ADMIN (systemd.exec(5)). */
const IMPLY_NNP = [
  "LockPersonality",
  "MemoryDenyWriteExecute",
  "PrivateDevices",
  "ProtectClock",
  "ProtectHostname",
  "ProtectKernelLogs",
  "ProtectKernelModules",
  "ProtectKernelTunables",
  "RestrictAddressFamilies",
  "RestrictNamespaces",
  "RestrictRealtime",
  "RestrictSUIDSGID",
  "SystemCallArchitectures",
  "SystemCallFilter",
  "SystemCallLog",
];

/** Of those, the ones that are lists (an empty assignment resets them). */
const LIST_SETTINGS = [
  "RestrictAddressFamilies",
  "SystemCallArchitectures",
  "SystemCallFilter",
  "SystemCallLog",
];

const HAVE_ANALYZE = await new Deno.Command("systemd-analyze", {
  args: ["--version"],
  stdout: "null",
})
  .output().then((o) => o.success, () => false);

/** The `[Service]` assignments of a unit file, in order (`key → values`; "" resets). */
function _service(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let section = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const m = /^\[(.+)\]$/.exec(line);
    if (m) {
      section = m[1]!;
      continue;
    }
    if (section !== "Service") continue;
    const i = line.indexOf("=");
    const key = line.slice(0, i);
    out.set(key, [...(out.get(key) ?? []), line.slice(i + 1)]);
  }
  return out;
}

/** A single-valued setting: the last assignment wins. */
function _last(values: string[] | undefined): string | undefined {
  return values?.[values.length - 1];
}

/** A list setting: an empty assignment resets it, later ones add to it. */
function _list(values: string[] | undefined): string[] {
  if (values === undefined) return [];
  return values.slice(values.lastIndexOf("") + 1).join(" ").split(/\s+/).filter((v) => v);
}

/** Copy the unit (and the drop-in) into `dir`, ExecStart pointed at a temp executable. */
async function _stage(dir: string, dropIn: boolean, unitText?: string): Promise<string> {
  const exe = `${dir}/bin/addon-agent`;
  await Deno.mkdir(`${dir}/bin`, { recursive: true });
  await Deno.writeTextFile(exe, "#!/bin/sh\nexit 0\n");
  await Deno.chmod(exe, 0o755);
  const text = (unitText ?? await Deno.readTextFile(UNIT)).replaceAll(INSTALLED_BINARY, exe);
  const unit = `${dir}/addon-agent.service`;
  await Deno.writeTextFile(unit, text);
  if (dropIn) {
    await Deno.mkdir(`${dir}/addon-agent.service.d`, { recursive: true });
    await Deno.copyFile(DROP_IN, `${dir}/addon-agent.service.d/capabilities.conf`);
  }
  return unit;
}

async function _analyze(args: string[]): Promise<{ code: number; out: string }> {
  const o = await new Deno.Command("systemd-analyze", {
    args,
    stdout: "piped",
    stderr: "piped",
    env: { SYSTEMD_LOG_COLOR: "0", SYSTEMD_COLORS: "0" },
  }).output();
  const dec = new TextDecoder();
  return { code: o.code, out: (dec.decode(o.stdout) + dec.decode(o.stderr)).trim() };
}

Deno.test({
  name: "systemd-analyze verify accepts the units and rejects broken ones",
  ignore: !HAVE_ANALYZE,
  fn: async (t) => {
    await t.step("the strict profile verifies without a warning", async () => {
      await withTempDir(async (dir) => {
        const r = await _analyze(["verify", await _stage(dir, false)]);
        assertEquals(r, { code: 0, out: "" });
      });
    });

    await t.step("with the capabilities drop-in applied: verifies without a warning", async () => {
      await withTempDir(async (dir) => {
        const r = await _analyze(["verify", await _stage(dir, true)]);
        assertEquals(r, { code: 0, out: "" });
      });
    });

    await t.step(
      "the drop-in is applied: root, NoNewPrivileges off (security --offline)",
      async () => {
        await withTempDir(async (dir) => {
          const strict = await _analyze(["security", "--offline=yes", await _stage(dir, false)]);
          assertMatch(strict.out, /✓ User=\/DynamicUser=\s+Service runs under a static non-root/);
          assertMatch(strict.out, /✓ NoNewPrivileges=/);
          const caps = await _analyze(["security", "--offline=yes", await _stage(dir, true)]);
          assertMatch(caps.out, /✗ User=\/DynamicUser=\s+Service runs as root/);
          assertMatch(caps.out, /✗ NoNewPrivileges=/);
        });
      },
    );

    await t.step("negative: an ExecStart that does not exist fails verify", async () => {
      await withTempDir(async (dir) => {
        const unit = await _stage(dir, false);
        const text = await Deno.readTextFile(unit);
        await Deno.writeTextFile(unit, text.replace(`${dir}/bin/addon-agent`, `${dir}/missing`));
        const r = await _analyze(["verify", unit]);
        assert(r.code !== 0, r.out);
        assertStringIncludes(r.out, `${dir}/missing`);
      });
    });

    await t.step("negative: a misspelt setting or bad value is reported", async () => {
      await withTempDir(async (dir) => {
        const text = (await Deno.readTextFile(UNIT))
          .replace(/^NoNewPrivileges=yes$/m, "NoNewPrivilege=yes")
          .replace(/^ProtectSystem=strict$/m, "ProtectSystem=stricter");
        const r = await _analyze(["verify", await _stage(dir, false, text)]);
        assertStringIncludes(r.out, "NoNewPrivilege");
        assertStringIncludes(r.out, "stricter");
      });
    });
  },
});

Deno.test("the strict profile and the drop-in say what docs/install.md says", async (t) => {
  const strict = _service(await Deno.readTextFile(UNIT));
  const caps = _service(await Deno.readTextFile(DROP_IN));
  const merged = new Map(strict);
  for (const [k, v] of caps) merged.set(k, [...(merged.get(k) ?? []), ...v]);
  const perms = JSON.parse(await Deno.readTextFile(`${REPO}/deno.json`)).permissions.agent;

  await t.step(
    "strict: dedicated user, no capabilities, no new privileges, one writable dir",
    () => {
      assertEquals(_last(strict.get("User")), "addon-agent");
      assertEquals(_last(strict.get("NoNewPrivileges")), "yes");
      assertEquals(strict.get("CapabilityBoundingSet"), [""]);
      assertEquals(_last(strict.get("ProtectSystem")), "strict");
      assertEquals(_last(strict.get("Restart")), "on-failure");
      assertEquals(_last(strict.get("StateDirectory")), "addon-agent");
      assertEquals(_list(strict.get("ReadWritePaths")), [perms.write[0]]);
      assertEquals(
        _last(strict.get("ExecStart")),
        `${INSTALLED_BINARY} run --config /etc/addon-agent/agent.json`,
      );
    },
  );

  await t.step("capabilities: root, CAP_SETFCAP in a bounded set, the unit dir writable", () => {
    assertEquals(_last(merged.get("User")), "root");
    assertEquals(_last(merged.get("NoNewPrivileges")), "no");
    const bset = _list(merged.get("CapabilityBoundingSet"));
    assert(bset.includes("CAP_SETFCAP"), bset.join(" "));
    assert(!bset.includes("CAP_SYS_ADMIN"), bset.join(" "));
    assertEquals(_list(merged.get("ReadWritePaths")).sort(), [...perms.write].sort());
  });

  await t.step("capabilities: every setting that implies NoNewPrivileges is off again", () => {
    for (const key of IMPLY_NNP) {
      const v = LIST_SETTINGS.includes(key)
        ? _list(merged.get(key)).join(" ")
        : _last(merged.get(key));
      assert(
        v === undefined || v === "" || v === "no",
        `${key}=${v} would turn NoNewPrivileges back on`,
      );
    }
  });
});
