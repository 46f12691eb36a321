/**
 * A failed delivery is retried when its backoff is due (SPEC 8, retry
 * timing), with a reconciler driven by a fake clock, a fake deliverer and a
 * fake runner: no waiting, no periodic tick.
 */

import { assert, assertEquals, assertStringIncludes } from "./_assert.ts";
import { FakeClock, withTempDir } from "./_helpers.ts";
import { waitFor } from "./_agent_process.ts";
import { Reconciler } from "../src/agent/reconciler.ts";
import { decodeDocument, hostPlatform } from "../src/protocol/mod.ts";
import { DeliveryError } from "../src/delivery/mod.ts";
import type { Deliverer } from "../src/delivery/mod.ts";
import { emptyState, Layout } from "../src/runtime/mod.ts";
import type { AgentConfig } from "../src/config/mod.ts";
import type { Runner } from "../src/supervise/mod.ts";

Deno.test("Reconciler retries a failed delivery when its backoff is due, without a tick", async () => {
  await withTempDir(async (dir) => {
    await Deno.mkdir(`${dir}/addons`);
    await Deno.mkdir(`${dir}/tmp`);
    const clock = new FakeClock(1_700_000_000_000);
    const platform = hostPlatform();
    const calls: number[] = [];
    let storeUp = false;
    const deliverer: Deliverer = {
      deliver: () => {
        calls.push(clock.now());
        if (!storeUp) {
          return Promise.reject(new DeliveryError("store down", { kind: "unavailable" }));
        }
        return Promise.resolve({ binary: "/bin/sh", fetched: 0, source: "host_binary" });
      },
      activate: () => Promise.resolve({ changed: true }),
      rollBack: () => Promise.resolve(null),
      abortAll: () => {},
      downloading: () => [],
    };
    const started: string[] = [];
    const runner = (): Runner => ({
      start: () => {
        started.push("start");
        return Promise.resolve();
      },
      stop: () => Promise.resolve(),
      pid: null,
      restarts: 0,
      setMinimumBackoff: () => {},
    });
    const state = emptyState();
    const rec = new Reconciler({
      cfg: {
        limits: { keep_versions: 3 },
        host_binaries: { allow: ["/bin/sh"] },
      } as unknown as AgentConfig,
      layout: new Layout(dir),
      platform,
      state,
      deliverer,
      runners: runner,
      clock,
      onChange: () => {},
    });
    const doc = decodeDocument({
      addons: [{
        addon_id: "probe",
        version: "1.0.0",
        delivery: "pushed_artifact",
        supervision: "agent_sidecar",
        artifact_object_key: "probe/1.0.0/probe",
        artifact_sha256: "ab".repeat(32),
      }],
    }, platform);
    const t0 = clock.now();
    await rec.apply(doc.entries);
    assertEquals(calls.length, 1);
    const st = state.addons.probe!;
    assertEquals(st.state, "failed", "the failure is in the state at once");
    assertStringIncludes(st.message, "store down");
    const retry = [...clock.timers.values()].find((x) => x.at - t0 >= 27_000);
    assert(retry, "a retry timer is armed");
    assert(retry.at - t0 <= 33_000, `due after ${retry.at - t0} ms, not 30 s ±10 %`);

    storeUp = true;
    // Whatever else is armed (ticks) runs up to just before the retry is due, and settles.
    clock.advanceTo(retry.at - 1);
    await rec.settled();
    assertEquals(calls.length, 1, "not retried before its backoff");
    clock.advanceTo(retry.at);
    await waitFor(() => started.length > 0, { timeoutMs: 5_000, what: "the add-on started" });
    assertEquals(calls, [t0, retry.at], "retried exactly when due");
    assertEquals(state.addons.probe!.state, "starting");
    await rec.stopAll();
  });
});
