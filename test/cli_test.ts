// Tests of main.ts for people at a terminal (SPEC 16): plain-text usage
// errors with suggestions, --help for every command, and "did you mean" for
// configuration keys. Each runs the real program.

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { MAIN_TS, runDeno, withTempDir, writeConfig } from "./_helpers.ts";

const COMMANDS = [
  "run",
  "sync",
  "status",
  "doctor",
  "diagnostics",
  "keygen",
  "sign",
  "verify",
  "control-plane",
  "publish",
  "nats-permissions",
  "dev",
  "version",
];

function cli(args: string[]) {
  return runDeno(["run", "-A", "--quiet", MAIN_TS, ...args]);
}

Deno.test("main() answers an unknown command with plain text, the usage and a suggestion", async () => {
  const r = await cli(["snyc"]);
  assertEquals(r.code, 2);
  assertMatch(r.stderr, /^addon-agent: unknown command "snyc" \(did you mean sync\?\)\n/);
  assert(!r.stderr.trimStart().startsWith("{"), "not a JSON log line");
  for (const c of COMMANDS) assertMatch(r.stderr, new RegExp(`\\n  ${c} +\\S`), c);
});

Deno.test("main() suggests the closest flag and shows the command's usage", async () => {
  const r = await cli(["sync", "--confg", "/x"]);
  assertEquals(r.code, 2);
  assertMatch(r.stderr, /unknown flag --confg \(did you mean config\?\)/);
  assertMatch(r.stderr, /usage: addon-agent sync \[--config PATH\] \[--json\]/);
  const far = await cli(["sync", "--zzzzzzz"]);
  assertEquals(far.code, 2);
  assertMatch(far.stderr, /unknown flag --zzzzzzz\n/, "no suggestion when nothing is close");
});

Deno.test("main() gives every command --help and -h on stdout with one line per flag", async () => {
  const top = await cli(["--help"]);
  assertEquals(top.code, 0);
  for (const c of COMMANDS) assertMatch(top.stdout, new RegExp(`\\n  ${c} +\\S`), c);
  for (const c of COMMANDS) {
    const r = await cli([c, c === "sync" ? "-h" : "--help"]);
    assertEquals(r.code, 0, `${c}: ${r.stderr}`);
    assertMatch(r.stdout, new RegExp(`^usage: addon-agent ${c}`), c);
    assertMatch(r.stdout, /\n {2}-h, --help +show this help/, c);
    assertEquals(r.stderr, "", c);
  }
  const sign = await cli(["sign", "--help"]);
  for (const f of ["--key FILE", "--addon-id ID", "--version V", "--os OS", "--arch ARCH"]) {
    assertMatch(sign.stdout, new RegExp(`\\n  ${f} +\\S`), f);
  }
});

Deno.test("main() refuses a mistyped configuration key, naming the key it meant", async () => {
  await withTempDir(async (dir) => {
    const path = await writeConfig(dir, {
      object_store: { kind: "filesystem", root: `${dir}/store` },
      limts: { keep_versions: 2 },
    });
    const r = await cli(["sync", "--config", path]);
    assertEquals(r.code, 2);
    assertMatch(r.stderr, /limts: unknown key \(did you mean limits\?\)/);
  });
});

Deno.test("main() logs JSON lines when stderr is not a terminal", async () => {
  await withTempDir(async (dir) => {
    const r = await cli(["sync", "--config", `${dir}/missing.json`]);
    assertEquals(r.code, 2);
    const line = JSON.parse(r.stderr.trim().split("\n")[0]!);
    assertEquals(line.level, "error");
    assertMatch(line.msg, /missing\.json/);
  });
});

Deno.test("main() lists every command, and each --help gives one line to every flag its usage names", async () => {
  const top = await cli(["--help"]);
  const listed = [...top.stdout.matchAll(/^ {2}([a-z-]+) {2,}\S/gm)].map((m) => m[1]!);
  assertEquals(listed.toSorted(), COMMANDS.toSorted(), "the usage lists every command");
  await Promise.all(listed.map(async (c) => {
    const r = await cli([c, "--help"]);
    assertEquals(r.code, 0, `${c}: ${r.stderr}`);
    const usage = r.stdout.split("\n")[0]!;
    const lines = r.stdout.split("\n").filter((l) => /^ {2}(-h, )?--/.test(l));
    for (const l of lines) assertMatch(l, /^ {2}\S.* {2,}\S/, `${c}: a one-line description`);
    const helped = new Set(lines.map((l) => /--([a-z-]+)/.exec(l)![1]!));
    for (const [, flag] of usage.matchAll(/--([a-z-]+)/g)) {
      assert(helped.has(flag!), `${c} --help has no line for --${flag}: ${r.stdout}`);
    }
    for (const flag of helped) {
      if (["help", "log-format", "log-level"].includes(flag)) continue;
      assert(usage.includes(`--${flag}`), `${c}'s usage line does not name --${flag}`);
    }
  }));
});

Deno.test("main() answers an unknown flag of every command in plain text with the usage, exit 2", async () => {
  await Promise.all(COMMANDS.map(async (c) => {
    const r = await cli([c, "--bogus-flag"]);
    assertEquals(r.code, 2, `${c}: ${r.stderr}`);
    assertMatch(r.stderr, /^addon-agent: unknown flag --bogus-flag\n\nusage: addon-agent /, c);
    assertEquals(r.stdout, "", c);
  }));
  const short = await cli(["sync", "-x"]);
  assertEquals(short.code, 2);
  assertMatch(short.stderr, /^addon-agent: unknown flag -x\n\nusage: addon-agent sync /);
  const empty = await cli(["sync", "--config="]);
  assertEquals(empty.code, 2);
  assertMatch(empty.stderr, /^addon-agent: --config needs a PATH/, "plain text, not a JSON log");
  const oneDash = await cli(["sync", "-config", "/x"]);
  assertEquals(oneDash.code, 2);
  assertMatch(oneDash.stderr, /did you mean --config\?/);
});

Deno.test("main() help COMMAND is COMMAND --help; help of an unknown command suggests one", async () => {
  const r = await cli(["help", "sync"]);
  assertEquals(r.code, 0, r.stderr);
  assertMatch(r.stdout, /^usage: addon-agent sync /);
  const typo = await cli(["help", "snyc"]);
  assertEquals(typo.code, 2);
  assertMatch(typo.stderr, /unknown command "snyc" \(did you mean sync\?\)/);
});

Deno.test("main() verify with a public key that is no key is bad usage (exit 2), not 'not valid'", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/f`, "x");
    const statement = ["--addon-id", "a", "--version", "1", "--os", "linux", "--arch", "amd64"];
    const r = await cli([
      "verify",
      "--public-key",
      "zz",
      ...statement,
      "--signature",
      "zz",
      `${dir}/f`,
    ]);
    assertEquals(r.code, 2, r.stdout + r.stderr);
    assertMatch(
      r.stderr,
      /^addon-agent: --public-key: must be canonical standard base64 of a raw 32-byte/,
    );
  });
});

Deno.test("main() suggests configuration keys at every nesting level, also for a missing required key", async () => {
  await withTempDir(async (dir) => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [
        { limits: { keep_verisons: 3 } },
        /limits\.keep_verisons: unknown key \(did you mean keep_versions\?\)/,
      ],
      [
        { source: { kind: "file", path: `${dir}/assignments.json`, pol_interval_s: 5 } },
        /source\.pol_interval_s: unknown key \(did you mean poll_interval_s\?\)/,
      ],
      // The typo hides a required key: the typo is what to fix, not "root: is required".
      [
        { object_store: { kind: "filesystem", rot: dir } },
        /object_store\.rot: unknown key \(did you mean root\?\)/,
      ],
      [
        { object_store: { kind: "filesytem", root: dir } },
        /got "filesytem" \(did you mean filesystem\?\)/,
      ],
    ];
    for (const [extra, want] of cases) {
      const path = await writeConfig(dir, {
        object_store: { kind: "filesystem", root: dir },
        ...extra,
      });
      const r = await cli(["sync", "--config", path, "--log-format", "text"]);
      assertEquals(r.code, 2, r.stderr);
      assertMatch(r.stderr, want);
    }
  });
});

Deno.test("sync and status print no control character that a document carries", async () => {
  await withTempDir(async (dir) => {
    const esc = "\x1b]0;owned\x07\x1b[2J";
    await Deno.writeTextFile(
      `${dir}/assignments.json`,
      JSON.stringify({
        config_version: `v1${esc}`,
        addons: [{ addon_id: `bad${esc}`, version: "1", supervision: "config_toggle" }],
      }),
    );
    const config = await writeConfig(dir, {
      object_store: { kind: "filesystem", root: `${dir}/store` },
    });
    const sync = await cli(["sync", "--config", config, "--log-format", "text"]);
    assertEquals(sync.code, 1, sync.stdout + sync.stderr);
    const status = await cli(["status", "--config", config, "--log-format", "text"]);
    for (const out of [sync.stdout, sync.stderr, status.stdout, status.stderr]) {
      // deno-lint-ignore no-control-regex
      assert(!/[\x00-\x08\x0b-\x1f\x7f]/.test(out), JSON.stringify(out));
    }
  });
});
