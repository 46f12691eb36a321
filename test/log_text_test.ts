/**
 * Text logs escape control characters (SPEC 12): an add-on's output (or a
 * server's error text) can neither split a log line nor drive the terminal.
 */

import { captureLog, configureLog, escapeControl, log } from "../src/common/log.ts";
import { assert, assertEquals, assertStringIncludes } from "./_assert.ts";
import { startAgent, waitFor } from "./_agent_process.ts";
import { daemonConfig, sidecar } from "./_daemon_fixtures.ts";
import { withTempDir, writeAssignments } from "./_helpers.ts";

// deno-lint-ignore no-control-regex
const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u202e]/;

Deno.test("escapeControl() writes every control character as an escape", () => {
  assertEquals(
    escapeControl("a\0b\x1b[31mc\n\t\r\x7f\x9b\u2028\u202e"),
    [
      "a\\x00b\\x1b[31mc\\n\\t\\r\\x7f\\x9b\\u2028\\u202e",
    ].join(""),
  );
  assertEquals(escapeControl("plain ünïcode ✔"), "plain ünïcode ✔");
});

Deno.test("log in text format escapes the message, the add-on id and every field", () => {
  const lines: string[] = [];
  const restore = captureLog((l) => lines.push(l));
  configureLog({ format: "text" });
  try {
    log.info("out\0put\x1b]0;pwned\x07", {
      addon_id: "a",
      stream: "stdout",
      reason: "line1\nFAKE INFO line2",
    });
  } finally {
    configureLog({ format: "json" });
    restore();
  }
  assertEquals(lines.length, 1);
  assert(!RAW_CONTROL.test(lines[0]!), JSON.stringify(lines[0]));
  assert(!lines[0]!.includes("\n"));
  assertStringIncludes(lines[0]!, "out\\x00put\\x1b]0;pwned\\x07");
  assertStringIncludes(lines[0]!, "reason=line1\\nFAKE INFO line2");
});

Deno.test("run --log-format text prints an add-on's NULs and escapes as escapes", async () => {
  await withTempDir(async (dir) => {
    await writeAssignments(dir, [
      await sidecar(dir, "noisy", String.raw`printf 'a\000b\033[2Jc\n'; exec sleep 300`),
    ]);
    const cfg = await daemonConfig(dir);
    const agent = startAgent(cfg, {}, { extraArgs: ["--log-format", "text"] });
    try {
      const line = await waitFor(
        () => agent.lines().find((l) => l.includes("[noisy]") && l.includes("a\\x00b")) ?? null,
        { timeoutMs: 20_000, what: "the add-on's line", context: () => agent.tail() },
      );
      assertStringIncludes(line, "a\\x00b\\x1b[2Jc");
      for (const l of agent.lines()) assert(!RAW_CONTROL.test(l), JSON.stringify(l));
    } finally {
      await agent.stop();
    }
  });
});
