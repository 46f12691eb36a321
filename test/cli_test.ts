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
  "keygen",
  "sign",
  "verify",
  "control-plane",
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
