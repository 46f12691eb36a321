import { assert, assertEquals, assertMatch, assertRejects, assertThrows } from "./_assert.ts";
import {
  renderService,
  renderTimer,
  unitNames,
  type UnitSpec,
} from "../src/supervise/systemd_unit.ts";
import { commandSystemctl, SystemctlError, SystemdUnits } from "../src/supervise/systemctl.ts";
import { captureLog } from "../src/common/log.ts";

// systemd is not PID 1 here. Two offline checks stand in for it:
// - `systemd-analyze verify --man=no --recursive-errors=no FILE...` must exit 0 and print nothing
//   (it only warns, exit 0, about unknown keys and ignored lines: those fail the test too);
// - `systemd --test --system --unit=UNIT` (run as an unprivileged user: it refuses root) dumps
//   the unit as systemd parsed it, so ExecStart's argv and Environment= are compared exactly.

const VERIFY_ARGS = ["verify", "--man=no", "--recursive-errors=no"];
const SYSTEMD_BINS = ["/lib/systemd/systemd", "/usr/lib/systemd/systemd"];
const decoder = new TextDecoder();

async function _withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "addon-agent-systemd-" });
  await Deno.chmod(dir, 0o755); // `systemd --test` runs as nobody and must read the units
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function _executable(path: string): Promise<void> {
  await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  await Deno.writeTextFile(path, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
  await Deno.chmod(path, 0o755);
}

/** A spec whose paths (with a space and a `%` in them) exist under `dir`. */
async function _spec(dir: string, over: Partial<UnitSpec> = {}): Promise<UnitSpec> {
  const spec: UnitSpec = {
    addon_id: "net-probe",
    version: "1.4.2",
    exec_path: `${dir}/opt 100%/net-probe`,
    args: ["--interval", "10s"],
    env: { PROBE_MODE: "fast" },
    data_dir: `${dir}/data dir`,
    config_file: `${dir}/config.json`,
    capabilities: [],
    kind: "service",
    ...over,
  };
  await _executable(spec.exec_path);
  await Deno.mkdir(spec.data_dir, { recursive: true });
  return spec;
}

/** Write `units` (name → text) into `dir` and return their paths. */
async function _write(dir: string, units: Record<string, string>): Promise<string[]> {
  const paths: string[] = [];
  for (const [name, text] of Object.entries(units)) {
    await Deno.writeTextFile(`${dir}/${name}`, text);
    paths.push(`${dir}/${name}`);
  }
  return paths;
}

async function _verify(paths: string[]): Promise<{ code: number; output: string }> {
  const out = await new Deno.Command("systemd-analyze", {
    args: [...VERIFY_ARGS, ...paths],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    output: (decoder.decode(out.stdout) + decoder.decode(out.stderr)).trim(),
  };
}

/** Fail unless systemd-analyze verify accepts `paths` without a single warning. */
async function _assertVerifies(paths: string[]): Promise<void> {
  const { code, output } = await _verify(paths);
  assertEquals(
    `exit ${code}: ${output}`,
    "exit 0: ",
    `systemd-analyze ${VERIFY_ARGS.join(" ")} ${paths.join(" ")}`,
  );
}

type Dump = Map<string, Map<string, string[]>>;

/** Load `unit` from `dir` the way systemd does and return each unit's dumped settings. */
async function _systemdDump(dir: string, unit: string): Promise<Dump> {
  let bin: string | undefined;
  for (const b of SYSTEMD_BINS) {
    if (await Deno.stat(b).then(() => true, () => false)) bin = b;
  }
  assert(bin, `systemd binary not found in ${SYSTEMD_BINS.join(", ")}`);
  const args = ["--test", "--system", `--unit=${unit}`, "--no-pager"];
  const asNobody = Deno.uid() === 0;
  const out = await new Deno.Command(asNobody ? "setpriv" : bin, {
    args: asNobody ? ["--reuid=65534", "--regid=65534", "--clear-groups", bin, ...args] : args,
    env: { SYSTEMD_UNIT_PATH: `${dir}:`, SYSTEMD_LOG_LEVEL: "err" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = decoder.decode(out.stdout);
  assertEquals(out.code, 0, `systemd --test failed: ${decoder.decode(out.stderr)}`);
  const dump: Dump = new Map();
  let current: Map<string, string[]> | undefined;
  for (const line of text.split("\n")) {
    const head = /^\t-> Unit (.+):$/.exec(line);
    if (head?.[1] !== undefined) {
      current = new Map();
      dump.set(head[1], current);
      continue;
    }
    const kv = /^\t\t\t?([A-Za-z][A-Za-z ]*): ?(.*)$/.exec(line);
    if (current && kv?.[1] !== undefined && kv[2] !== undefined) {
      current.set(kv[1], [...(current.get(kv[1]) ?? []), kv[2]]);
    }
  }
  return dump;
}

function _get(dump: Dump, unit: string, key: string): string[] {
  const u = dump.get(unit);
  assert(u, `unit ${unit} not in systemd's dump`);
  return u.get(key) ?? [];
}

/** Split systemd's dumped "Command Line" (shell-style quoting with C escapes) into argv. */
function _splitCommandLine(s: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < s.length) {
    if (s[i] === " ") {
      i++;
      continue;
    }
    let word = "";
    if (s[i] === '"') {
      i++;
      while (i < s.length && s[i] !== '"') {
        if (s[i] === "\\") {
          i++;
          const c = s[i] ?? "";
          word += c === "t" ? "\t" : c === "n" ? "\n" : c;
        } else word += s[i];
        i++;
      }
      i++;
    } else {
      while (i < s.length && s[i] !== " ") word += s[i++];
    }
    out.push(word);
  }
  return out;
}

const TRICKY_ARGS = [
  "--interval",
  "10s",
  "--label",
  "a b",
  'say "hi"',
  "it's",
  "back\\slash\\",
  "100%",
  "%n",
  "$HOME",
  "${X}",
  "$$",
  ";",
  "",
  "tab\there",
  "uni ✓",
  "-x=y",
];

const TRICKY_ENV = {
  PROBE_MODE: "fast",
  GREETING: 'hello "world" 50% $x \\ end',
  EMPTY: "",
  _under: "it's\ttabbed",
  ADDON_ID: "overridden by the agent",
};

Deno.test("unitNames() names the units after the add-on", async (t) => {
  await t.step("plain ids", () => {
    assertEquals(unitNames("net-probe"), {
      service: "addon-agent-net-probe.service",
      timer: "addon-agent-net-probe.timer",
    });
  });
  await t.step("characters not allowed in unit names are \\x-escaped like systemd-escape", () => {
    assertEquals(unitNames("a+b").service, "addon-agent-a\\x2bb.service");
  });
  await t.step("unsafe ids are refused", () => {
    for (const id of ["", "../x", "a/b", "a b", ".hidden"]) {
      assertMatch(assertThrows(() => unitNames(id)).message, /addon_id/);
    }
  });
});

Deno.test("renderService() writes a sidecar-like service that systemd reads as meant", async (t) => {
  await _withTempDir(async (dir) => {
    const spec = await _spec(dir, { args: TRICKY_ARGS, env: TRICKY_ENV });
    const text = renderService(spec);
    const { service } = unitNames(spec.addon_id);
    const paths = await _write(dir, { [service]: text });

    await t.step("systemd-analyze verify accepts it", async () => {
      await _assertVerifies(paths);
    });
    const dump = await _systemdDump(dir, service);
    await t.step("ExecStart is parsed into exactly the path and args", () => {
      const [cmd] = _get(dump, service, "Command Line");
      assert(cmd !== undefined, "no ExecStart in the dump");
      // systemd turns "$$" into "$" when it executes the command (after this dump).
      const want = [spec.exec_path, ...TRICKY_ARGS].map((a) => a.replaceAll("$", "$$$$"));
      assertEquals(_splitCommandLine(cmd), want);
    });
    await t.step("Environment= is the add-on's env plus ADDON_* (which win)", () => {
      const env = _get(dump, service, "Environment");
      assertEquals(env, [
        "EMPTY=",
        'GREETING=hello "world" 50% $x \\ end',
        "PROBE_MODE=fast",
        "_under=it's\ttabbed",
        "ADDON_ID=net-probe",
        "ADDON_VERSION=1.4.2",
        `ADDON_CONFIG_FILE=${dir}/config.json`,
        `ADDON_DATA_DIR=${dir}/data dir`,
      ]);
      assert(!text.includes("overridden"), "the add-on's ADDON_ID is dropped");
    });
    await t.step("restart on failure, hardened, no capabilities", () => {
      const one = (k: string) => _get(dump, service, k).join(" | ");
      assertEquals(one("Type"), "simple");
      assertEquals(one("Restart"), "on-failure");
      assertEquals(one("ProtectSystem"), "strict");
      assertEquals(one("ProtectHome"), "yes");
      assertEquals(one("PrivateTmp"), "yes");
      assertEquals(one("ReadWritePaths"), `${dir}/data dir`);
      assertEquals(one("CapabilityBoundingSet"), "");
      assertEquals(one("AmbientCapabilities"), "");
      // systemd's dump does not show NoNewPrivileges: check the text.
      assert(text.includes("\nNoNewPrivileges=yes\n"));
      assert(text.includes("\nCapabilityBoundingSet=\n"));
      assert(!text.includes("AmbientCapabilities"));
      assert(text.includes("\n[Install]\nWantedBy=multi-user.target\n"));
    });
    await t.step("rendering is deterministic (env order does not matter)", () => {
      const reversed = Object.fromEntries(Object.entries(TRICKY_ENV).reverse());
      assertEquals(renderService({ ...spec, env: reversed }), text);
    });
  });
});

Deno.test("renderService() grants capabilities as ambient and bounding set", async (t) => {
  await _withTempDir(async (dir) => {
    const spec = await _spec(dir, { capabilities: ["CAP_NET_RAW", "CAP_NET_BIND_SERVICE"] });
    const text = renderService(spec);
    const { service } = unitNames(spec.addon_id);
    await t.step("systemd-analyze verify accepts it", async () => {
      await _assertVerifies(await _write(dir, { [service]: text }));
    });
    await t.step("systemd reads both sets, and NoNewPrivileges stays on", async () => {
      const dump = await _systemdDump(dir, service);
      assertEquals(_get(dump, service, "CapabilityBoundingSet"), [
        "cap_net_bind_service cap_net_raw",
      ]);
      assertEquals(_get(dump, service, "AmbientCapabilities"), [
        "cap_net_bind_service cap_net_raw",
      ]);
      assert(text.includes("\nNoNewPrivileges=yes\n"));
      assert(text.includes("\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_RAW\n"));
      assert(text.includes("\nAmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW\n"));
    });
    await t.step("every capability name we accept is one systemd knows", async () => {
      const out = await new Deno.Command("systemd-analyze", { args: ["capability"] }).output();
      const known = decoder.decode(out.stdout).toUpperCase();
      const { KNOWN_CAPABILITIES } = await import("../src/supervise/systemd_unit.ts");
      for (const c of KNOWN_CAPABILITIES) assert(new RegExp(`\\b${c}\\b`).test(known), c);
    });
  });
});

Deno.test("renderService() runs an isolated add-on as its numeric uid with its limits", async (t) => {
  await _withTempDir(async (dir) => {
    const spec = await _spec(dir, {
      capabilities: ["CAP_NET_RAW"],
      uid: 61234,
      gid: 61234,
      resources: { memory_max_bytes: 67108864, cpu_max_percent: 50, pids_max: 32 },
    });
    const text = renderService(spec);
    const { service } = unitNames(spec.addon_id);
    await t.step("systemd-analyze verify accepts it", async () => {
      await _assertVerifies(await _write(dir, { [service]: text }));
    });
    await t.step("systemd reads the user, group, capabilities and limits", async () => {
      const dump = await _systemdDump(dir, service);
      assertEquals(_get(dump, service, "User"), ["61234"]);
      assertEquals(_get(dump, service, "Group"), ["61234"]);
      assertEquals(_get(dump, service, "CapabilityBoundingSet"), ["cap_net_raw"]);
      assertEquals(_get(dump, service, "AmbientCapabilities"), ["cap_net_raw"]);
      assert(text.includes("\nMemoryMax=67108864\n"), text);
      assert(text.includes("\nCPUQuota=50%\n"), text);
      assert(text.includes("\nTasksMax=32\n"), text);
    });
    await t.step("uid 0 is refused", () => {
      assertMatch(
        assertThrows(() => renderService({ ...spec, uid: 0 })).message,
        /not a valid non-root id/,
      );
    });
  });
});

Deno.test("renderTimer() writes a timer that runs a oneshot service", async (t) => {
  await _withTempDir(async (dir) => {
    const spec = await _spec(dir, {
      addon_id: "nightly+report",
      kind: "timer",
      schedule: "*-*-* *:0/5:00",
      args: ["--since", "5 min"],
    });
    const names = unitNames(spec.addon_id);
    const schedule = spec.schedule ?? "";
    const serviceText = renderService(spec);
    const timerText = renderTimer({ ...spec, schedule });
    const paths = await _write(dir, { [names.service]: serviceText, [names.timer]: timerText });
    await t.step("systemd-analyze verify accepts both", async () => {
      await _assertVerifies(paths);
    });
    await t.step("systemd links the timer to the service and reads the schedule", async () => {
      const dump = await _systemdDump(dir, names.timer);
      assertEquals(_get(dump, names.timer, "Unit"), [names.service]);
      assertEquals(_get(dump, names.timer, "OnCalendar"), ["*-*-* *:00/5:00"]);
      assertEquals(_get(dump, names.service, "Type"), ["oneshot"]);
      assertEquals(_get(dump, names.service, "Restart"), ["no"]);
      assert(timerText.includes("\nOnCalendar=*-*-* *:0/5:00\n"), "schedule passed verbatim");
      assert(timerText.includes("\n[Install]\nWantedBy=timers.target\n"));
      assert(!serviceText.includes("[Install]"), "the timer starts the service, not boot");
    });
  });
});

Deno.test("renderService()/renderTimer() refuse what a unit cannot carry", async (t) => {
  await _withTempDir(async (dir) => {
    const spec = await _spec(dir);
    const cases: [string, Partial<UnitSpec>, RegExp][] = [
      ["newline in an arg", { args: ["a\nExecStartPre=/bin/evil"] }, /args\[0\].*newline/],
      ["carriage return in an arg", { args: ["a\rb"] }, /args\[0\]/],
      ["NUL in an arg", { args: ["a\0b"] }, /args\[0\]/],
      ["newline in an env value", { env: { A: "x\ny" } }, /env\.A.*newline/],
      ["env name with a dash", { env: { "BAD-NAME": "x" } }, /env name "BAD-NAME"/],
      ["env name with a digit first", { env: { "1X": "x" } }, /env name "1X"/],
      ["env name with =", { env: { "A=B": "x" } }, /env name "A=B"/],
      ["empty env name", { env: { "": "x" } }, /env name ""/],
      ["unknown capability", { capabilities: ["CAP_BOGUS"] }, /CAP_BOGUS/],
      ["relative exec_path", { exec_path: "net-probe" }, /exec_path.*absolute/],
      ["exec_path with ..", { exec_path: "/opt/../bin/x" }, /exec_path/],
      ["data_dir with a newline", { data_dir: "/var/lib/x\ny" }, /data_dir/],
      ["unsafe addon_id", { addon_id: "a/b" }, /addon_id/],
      ["unsafe version", { version: "1 2" }, /version/],
      ["lone surrogate", { args: ["\ud800"] }, /Unicode/],
    ];
    for (const [what, over, re] of cases) {
      await t.step(what, () => {
        assertMatch(assertThrows(() => renderService({ ...spec, ...over })).message, re);
      });
    }
    for (const schedule of ["weekly", "*:0/5\nExecStart=/bin/evil", "Mon 00:00"]) {
      await t.step(`timer schedule ${JSON.stringify(schedule)}`, () => {
        assertMatch(
          assertThrows(() => renderTimer({ ...spec, kind: "timer", schedule })).message,
          /is not supported/,
        );
      });
    }
  });
});

Deno.test("systemd-analyze verify fails on broken units (the check can fail)", async (t) => {
  await _withTempDir(async (dir) => {
    const spec = await _spec(dir);
    const good = renderService(spec);
    const broken: Record<string, string> = {
      "missing binary": good.replace(spec.exec_path.replace("%", "%%"), `${dir}/nope`),
      "unknown key (a warning only)": good.replace("[Service]\n", "[Service]\nBogus=1\n"),
      "unbalanced quote": good.replace("ExecStart=", 'ExecStart="'),
      "bad calendar": "[Timer]\nOnCalendar=weekly at noon\n",
    };
    await t.step("the good unit verifies", async () => {
      await _assertVerifies(await _write(dir, { "addon-agent-good.service": good }));
    });
    for (const [what, text] of Object.entries(broken)) {
      await t.step(what, async () => {
        assert(text !== good);
        const name = what === "bad calendar" ? "addon-agent-bad.timer" : "addon-agent-bad.service";
        const paths = await _write(dir, { [name]: text });
        assertMatch(
          (await assertRejects(() => _assertVerifies(paths))).message,
          /systemd-analyze verify/,
        );
      });
    }
  });
});

/** A stand-in `systemctl` first on PATH that appends its argv to a log (fails while `fail` exists). */
async function _standIn(
  dir: string,
): Promise<{ env: Record<string, string>; calls(): Promise<string[]> }> {
  const bin = `${dir}/bin`;
  const logFile = `${dir}/systemctl.log`;
  await Deno.mkdir(bin);
  await Deno.writeTextFile(
    `${bin}/systemctl`,
    `#!/bin/sh
printf '%s\\n' "$*" >> '${logFile}'
if [ -e '${dir}/fail' ]; then echo "Failed to run systemctl $*: Unit not loaded." >&2; exit 5; fi
exit 0
`,
    { mode: 0o755 },
  );
  await Deno.chmod(`${bin}/systemctl`, 0o755);
  await Deno.writeTextFile(logFile, "");
  return {
    env: { PATH: `${bin}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}` },
    /** The calls since the last time this was asked. */
    async calls() {
      const text = await Deno.readTextFile(logFile);
      await Deno.writeTextFile(logFile, "");
      return text.split("\n").filter((l) => l !== "");
    },
  };
}

async function _ls(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

Deno.test("SystemdUnits installs, changes and removes units through systemctl", async (t) => {
  const restoreLog = captureLog(() => {});
  try {
    await _withTempDir(async (dir) => {
      const unitDir = `${dir}/units`;
      await Deno.mkdir(unitDir);
      const standIn = await _standIn(dir);
      const systemctl = commandSystemctl("systemctl", { env: standIn.env });
      const units = new SystemdUnits(unitDir, systemctl);
      const spec = await _spec(dir, { capabilities: ["CAP_NET_RAW"] });
      const svc = "addon-agent-net-probe.service";

      await t.step("first install: write, daemon-reload, enable --now", async () => {
        assertEquals(await units.install(spec), { changed: true });
        assertEquals(await standIn.calls(), ["daemon-reload", `enable --now ${svc}`]);
        assertEquals(await _ls(unitDir), [svc]);
        assertEquals(await Deno.readTextFile(`${unitDir}/${svc}`), renderService(spec));
        await _assertVerifies([`${unitDir}/${svc}`]);
        // Environment= may carry secrets: never world-readable (SPEC 12).
        assertEquals(((await Deno.stat(`${unitDir}/${svc}`)).mode! & 0o777).toString(8), "600");
      });
      await t.step("install again, unchanged: no calls, no write", async () => {
        // As an older agent left it: world-readable. The mode is tightened in place.
        await Deno.chmod(`${unitDir}/${svc}`, 0o644);
        const before = (await Deno.stat(`${unitDir}/${svc}`)).ino;
        assertEquals(await units.install(spec), { changed: false });
        assertEquals(await standIn.calls(), []);
        assertEquals((await Deno.stat(`${unitDir}/${svc}`)).ino, before);
        assertEquals(((await Deno.stat(`${unitDir}/${svc}`)).mode! & 0o777).toString(8), "600");
      });
      await t.step("install changed: daemon-reload, restart", async () => {
        const v2 = { ...spec, version: "1.5.0", args: ["--interval", "5s"] };
        assertEquals(await units.install(v2), { changed: true });
        assertEquals(await standIn.calls(), ["daemon-reload", `restart ${svc}`]);
        assert((await Deno.readTextFile(`${unitDir}/${svc}`)).includes("ADDON_VERSION=1.5.0"));
        assertEquals(await _ls(unitDir), [svc], "no temporary files left");
      });
      await t.step("a new instance (agent restart) converges once: reload, enable", async () => {
        const again = new SystemdUnits(unitDir, systemctl);
        const v2 = { ...spec, version: "1.5.0", args: ["--interval", "5s"] };
        assertEquals(await again.install(v2), { changed: false });
        assertEquals(await standIn.calls(), ["daemon-reload", `enable --now ${svc}`]);
        assertEquals(await again.install(v2), { changed: false });
        assertEquals(await standIn.calls(), []);
      });
      await t.step("remove: disable --now, delete, daemon-reload", async () => {
        await units.remove(spec.addon_id);
        assertEquals(await standIn.calls(), [`disable --now ${svc}`, "daemon-reload"]);
        assertEquals(await _ls(unitDir), []);
      });
      await t.step("remove again: a no-op", async () => {
        await units.remove(spec.addon_id);
        assertEquals(await standIn.calls(), []);
      });

      const timerSpec: UnitSpec = {
        ...spec,
        addon_id: "nightly+report",
        kind: "timer",
        schedule: "02:30",
      };
      const tn = unitNames(timerSpec.addon_id);
      await t.step("timer install enables the timer, not the service", async () => {
        assertEquals(await units.install(timerSpec), { changed: true });
        assertEquals(await standIn.calls(), ["daemon-reload", `enable --now ${tn.timer}`]);
        assertEquals(await _ls(unitDir), [tn.service, tn.timer]);
        await _assertVerifies([`${unitDir}/${tn.service}`, `${unitDir}/${tn.timer}`]);
      });
      await t.step("timer schedule change: reload, restart the timer", async () => {
        await units.install({ ...timerSpec, schedule: "*:0/15" });
        assertEquals(await standIn.calls(), ["daemon-reload", `restart ${tn.timer}`]);
      });
      await t.step("timer to service: old units removed first", async () => {
        await units.install({ ...timerSpec, kind: "service", schedule: undefined });
        assertEquals(await standIn.calls(), [
          `disable --now ${tn.timer}`,
          `disable --now ${tn.service}`,
          "daemon-reload",
          "daemon-reload",
          `enable --now ${tn.service}`,
        ]);
        assertEquals(await _ls(unitDir), [tn.service]);
      });
      await t.step("a timer without a schedule is refused before any call", async () => {
        assertMatch(
          (await assertRejects(() => units.install({ ...timerSpec, schedule: undefined }))).message,
          /needs a schedule/,
        );
        assertEquals(await standIn.calls(), []);
      });
      await t.step("a failing systemctl rejects with the command and its stderr", async () => {
        await Deno.writeTextFile(`${dir}/fail`, "");
        const err = await units.remove(timerSpec.addon_id).then(() => null, (e: unknown) => e);
        assert(err instanceof SystemctlError, `got ${err}`);
        assertEquals(err.command, ["systemctl", "disable", "--now", tn.service]);
        assertEquals(err.code, 5);
        assert(
          err.message.includes(`systemctl disable --now ${tn.service} failed (exit 5)`),
          err.message,
        );
        assert(
          err.message.endsWith(
            `: Failed to run systemctl disable --now ${tn.service}: Unit not loaded.`,
          ),
          err.message,
        );
        assertEquals(await _ls(unitDir), [tn.service], "files stay until disable worked");
        await Deno.remove(`${dir}/fail`);
        await standIn.calls();
        await units.remove(timerSpec.addon_id);
        assertEquals(await standIn.calls(), [
          "daemon-reload",
          `disable --now ${tn.service}`,
          "daemon-reload",
        ]);
        assertEquals(await _ls(unitDir), []);
      });
      await t.step("a missing systemctl binary is a SystemctlError too", async () => {
        const none = commandSystemctl(`${dir}/no-such-systemctl`);
        const e = await assertRejects(() => none.daemonReload(), SystemctlError);
        assert(e.message.includes("no-such-systemctl daemon-reload failed"), e.message);
      });
    });
  } finally {
    restoreLog();
  }
});

Deno.test("renderService() checks the staged bytes before every start systemd makes", async () => {
  await _withTempDir(async (dir) => {
    const spec = await _spec(dir);
    const good = await Deno.readFile(spec.exec_path);
    const sha = Array.from(
      new Uint8Array(await crypto.subtle.digest("SHA-256", good)),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
    const text = renderService({ ...spec, exec_sha256: sha });
    const { service } = unitNames(spec.addon_id);
    await _assertVerifies(await _write(dir, { [service]: text }));
    const dump = await _systemdDump(dir, service);
    const lines = _get(dump, service, "Command Line");
    assertEquals(lines.length, 2, "ExecStartPre and ExecStart");
    const pre = _splitCommandLine(lines[0]!);
    assertEquals(_splitCommandLine(lines[1]!)[0], spec.exec_path, "ExecStart comes second");
    const run = async () =>
      (await new Deno.Command(pre[0]!, { args: pre.slice(1), stderr: "null" }).output()).code;
    assertEquals(await run(), 0, "intact bytes pass the check");
    await Deno.writeTextFile(spec.exec_path, "#!/bin/sh\nexit 1\n"); // same size, other bytes
    assert(await run() !== 0, "changed bytes pass the check");
    await Deno.remove(spec.exec_path);
    assert(await run() !== 0, "a missing file passes the check");
    assertThrows(() => renderService({ ...spec, exec_sha256: "AB".repeat(32) }));
  });
});
