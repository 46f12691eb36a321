/**
 * `DeliveryRetries` (SPEC 8, retry timing) with an injected clock and random
 * source: the delay of each attempt, its jitter, and a retry that fires when
 * its backoff is due rather than at the next periodic tick.
 */

import { assert, assertEquals } from "./_assert.ts";
import { DeliveryRetries, type RetryPace, retryPace } from "../src/agent/retry.ts";
import { SYSTEM_CLOCK } from "../src/common/mod.ts";
import { FakeClock } from "./_helpers.ts";
import { DeliveryError } from "../src/delivery/mod.ts";

const TIMING = { retryInitialMs: 30_000, retryMaxMs: 3_600_000 };

Deno.test("DeliveryRetries.failed() backs off 30 s doubling to 1 h", () => {
  const clock = new FakeClock(1_000_000);
  const r = new DeliveryRetries(clock, TIMING, () => 0.5); // no jitter
  const delays = Array.from({ length: 9 }, () => r.failed("1.0.0:ab", () => {}));
  assertEquals(delays, [
    30_000,
    60_000,
    120_000,
    240_000,
    480_000,
    960_000,
    1_920_000,
    3_600_000,
    3_600_000,
  ]);
  assertEquals(clock.timers.size, 1, "one armed timer per key, not one per failure");
});

Deno.test("DeliveryRetries.failed() jitters each delay by at most ±10 %", () => {
  const low = new DeliveryRetries(new FakeClock(1_000_000), TIMING, () => 0);
  const high = new DeliveryRetries(new FakeClock(1_000_000), TIMING, () => 0.999999);
  assertEquals(low.failed("k", () => {}), 27_000);
  assertEquals(high.failed("k", () => {}), 33_000);
  assertEquals(low.failed("k", () => {}), 54_000);
  const spread = new Set(
    Array.from({ length: 50 }, () => new DeliveryRetries(SYSTEM_CLOCK, TIMING).failed("k")),
  );
  assert(spread.size > 1, "real random delays differ");
  for (const d of spread) assert(d >= 27_000 && d <= 33_000, `${d} outside 30 s ±10 %`);
});

Deno.test("DeliveryRetries fires the retry when its backoff is due, not at a later tick", () => {
  const clock = new FakeClock(1_000_000);
  const r = new DeliveryRetries(clock, TIMING, () => 0.5);
  const fired: number[] = [];
  const start = clock.now();
  r.failed("1.0.0:ab", () => fired.push(clock.now() - start));
  assert(r.waiting("1.0.0:ab"));
  clock.advanceTo(start + 29_999);
  assertEquals(fired.length, 0, "not before its backoff");
  clock.advanceTo(start + 30_000);
  assertEquals(fired, [30_000], "exactly when due");
  assert(!r.waiting("1.0.0:ab"));
  assert(r.has("1.0.0:ab"));
  // The retry failed again: the next one comes 60 s later.
  r.failed("1.0.0:ab", () => fired.push(clock.now() - start));
  clock.advanceTo(start + 200_000);
  assertEquals(fired, [30_000, 90_000]);
});

Deno.test("DeliveryRetries.succeeded() and clear() disarm the timers", () => {
  const clock = new FakeClock(1_000_000);
  const r = new DeliveryRetries(clock, TIMING, () => 0.5);
  const fired: string[] = [];
  r.failed("a", () => fired.push("a"));
  r.failed("b", () => fired.push("b"));
  r.failed("c", () => fired.push("c"));
  r.succeeded("a");
  assert(!r.has("a"));
  assertEquals(r.failed("a", () => fired.push("a")), 30_000, "a success starts the backoff over");
  r.succeeded("a");
  r.clear();
  clock.advanceTo(clock.now() + 10 * 3_600_000);
  assertEquals(fired, []);
  assertEquals(clock.timers.size, 0);
});

Deno.test("DeliveryRetries.failed() at the slow pace waits the longest delay at once", () => {
  const r = new DeliveryRetries(new FakeClock(1_000_000), TIMING, () => 0.5);
  assertEquals(r.failed("1.0.0:ab", () => {}, "slow"), 3_600_000, "first failure");
  assertEquals(r.failed("1.0.0:ab", () => {}, "slow"), 3_600_000, "second failure");
  assertEquals(r.failed("2.0.0:cd", () => {}, "soon"), 30_000, "another key keeps its own pace");
});

Deno.test("retryPace() retries soon only what may pass by itself", async (t) => {
  const cases: [string, unknown, RetryPace][] = [
    ["store down", new DeliveryError("s3 unreachable", { kind: "unavailable" }), "soon"],
    ["digest mismatch", new DeliveryError("sha256 mismatch", { kind: "integrity" }), "slow"],
    ["bad signature", new DeliveryError("does not verify", { kind: "refused" }), "slow"],
    ["planted version dir", new DeliveryError("not a real dir", { kind: "conflict" }), "slow"],
    ["an I/O error while preparing", new Deno.errors.Interrupted("EINTR"), "soon"],
  ];
  for (const [what, e, pace] of cases) {
    await t.step(`${what}: ${pace}`, () => assertEquals(retryPace(e), pace));
  }
});
