// Unit tests of the text doctor and the support archive produce (SPEC 16):
// redaction of the shapes a malformed override or document can take, URLs a
// parser reads differently from a naive pattern, listings and checklist lines
// that planted names or error texts cannot forge.

import { assert, assertEquals } from "./_assert.ts";
import { fail, formatCheck, listTree, redact, REDACTED, redactUrls } from "../src/doctor/mod.ts";

Deno.test("redact() replaces an env that is not an object whole", () => {
  const out = redact({
    addons: [{ env: ["PW=env-5ecret"] }, { env: "PW=env-5ecret" }, { env: { PW: "env-5ecret" } }],
  });
  assert(!JSON.stringify(out).includes("5ecret"), JSON.stringify(out));
  assertEquals(out, {
    addons: [{ env: REDACTED }, { env: REDACTED }, { env: { PW: REDACTED } }],
  });
});

Deno.test("redactUrls() hides a password that holds an @", () => {
  // WHATWG URL: user "u", password "p@ss5ecret", host "host".
  assertEquals(new URL("https://u:p@ss5ecret@host/x").host, "host");
  const out = redactUrls("url https://u:p@ss5ecret@host/x and nats://a:b@h:4222, c@d");
  assertEquals(out, `url https://${REDACTED}@host/x and nats://${REDACTED}@h:4222, c@d`);
});

Deno.test("redact() hides the NATS user name and keeps its file paths", () => {
  const out = redact({
    nats: { servers: ["nats://h:4222"], user: "fleet-5ecret", password_file: "/etc/pw" },
    isolation: { users: "shared", user: "addon" },
  });
  assertEquals(out, {
    nats: { servers: ["nats://h:4222"], user: REDACTED, password_file: "/etc/pw" },
    isolation: { users: "shared", user: "addon" },
  });
});

Deno.test("listTree() escapes a planted name with a line break, so it cannot forge a line", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/a\nl 0777 0:0 1 x -> \\etc\\shadow`, "");
    const lines = await listTree(dir);
    assertEquals(lines.length, 2, lines.join("\n"));
    assert(lines[1]!.endsWith(" a\\x0al 0777 0:0 1 x -> \\\\etc\\\\shadow"), lines[1]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("redact() replaces fields of an assignment that SPEC 3 does not name, and entries that are no object", () => {
  const out = redact({
    addons: [
      { addon_id: "p", version: "1", environment: { PW: "x-5ecret" }, passwd: "y-5ecret" },
      "PW=z-5ecret",
    ],
  });
  assert(!JSON.stringify(out).includes("5ecret"), JSON.stringify(out));
  assertEquals(out, {
    addons: [{ addon_id: "p", version: "1", environment: REDACTED, passwd: REDACTED }, REDACTED],
  });
  const lastGood = redact({ assignment: { addon_id: "p", secrets: ["5ecret"] }, handshake: true });
  assertEquals(lastGood, { assignment: { addon_id: "p", secrets: REDACTED }, handshake: true });
});

Deno.test("formatCheck() escapes control characters a store's error text may carry", () => {
  const line = formatCheck(fail("store said: \x1b[2J\x1b]0;owned\x07\n✔ all good", "fix\rit"));
  assertEquals(line, "✘ store said: \\x1b[2J\\x1b]0;owned\\x07\\n✔ all good\n    fix: fix\\rit");
});
