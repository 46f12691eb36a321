/**
 * `addon-agent dev`: the README's first command, run for real.
 */

import { assertEquals, assertMatch } from "./_assert.ts";
import { MAIN_TS } from "./_helpers.ts";
import { HAVE_NATS } from "./_nats.ts";

Deno.test("addon-agent dev delivers a bundle, rolls out 1.1.0 and rolls back a crash-looping 1.2.0", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", MAIN_TS, "dev", "--for", "120"],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  // Read until the demo says it is done, then stop it as a user would (Ctrl-C).
  let text = "";
  const dec = new TextDecoder();
  for await (const chunk of child.stdout) {
    text += dec.decode(chunk, { stream: true });
    if (/==> 7\. Done/.test(text)) {
      child.kill("SIGINT");
      // keep reading until the demo exits
    }
  }
  const status = await child.status;
  const err = await stderr;
  assertEquals(status.code, 0, err);
  assertMatch(text, /hello is running version 1\.0\.0/);
  assertMatch(
    text,
    /hello is running version 1\.1\.0 \(pid \d+, current -> 1\.1\.0, previous -> 1\.0\.0\)/,
  );
  assertMatch(
    text,
    /hello is rolled_back version 1\.1\.0 \(pid \d+, current -> 1\.1\.0, previous -> -\)\n\s+1\.2\.0 rolled back to 1\.1\.0: 5 exits/,
  );
  assertMatch(text, /Stopping the agent/);
  // The add-on's own lines: the bundle's second file, and the config greeting with its spaces.
  assertMatch(err + text, /hello 1\.0\.0: a bundle of two files/);
  assertMatch(err + text, /hello 1\.1\.0 is alive \(greeting: hi from 1\.1\.0\)/);
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
