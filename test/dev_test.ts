/**
 * `addon-agent dev`: the README's first command, run for real.
 */

import { assertEquals, assertMatch } from "./_assert.ts";
import { MAIN_TS } from "./_helpers.ts";
import { HAVE_NATS } from "./_nats.ts";

Deno.test("addon-agent dev delivers, supervises and rolls out the example add-on", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", MAIN_TS, "dev", "--for", "25"],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
  assertMatch(text, /hello is running version 1\.0\.0/);
  assertMatch(
    text,
    /hello is running version 1\.1\.0 \(pid \d+, current -> 1\.1\.0, previous -> 1\.0\.0\)/,
  );
  assertMatch(text, /Stopping the agent/);
});

Deno.test({
  name: "addon-agent dev --nats runs the same rollout on a local nats-server",
  ignore: !HAVE_NATS,
  fn: async () => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", MAIN_TS, "dev", "--for", "20", "--nats"],
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    assertMatch(text, /a local nats-server with JetStream runs on nats:\/\/127\.0\.0\.1:\d+/);
    assertMatch(text, /hello is running version 1\.0\.0/);
    assertMatch(
      text,
      /hello is running version 1\.1\.0 \(pid \d+, current -> 1\.1\.0, previous -> 1\.0\.0\)/,
    );
  },
});
