// Unit tests of the support archive's redaction (SPEC 16): shapes a
// malformed override or document can take, and URLs a parser reads
// differently from a naive pattern.

import { assert, assertEquals } from "./_assert.ts";
import { redact, REDACTED, redactUrls } from "../src/doctor/mod.ts";

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
