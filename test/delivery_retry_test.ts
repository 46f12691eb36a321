/**
 * The retry pace of failed deliveries, as an operator sees it in the log and
 * in `state.json`: a store that does not have the object (yet) is tried again
 * in about 30 s; bytes that do not match the assigned sha256 only after the
 * longest delay (1 h), since retrying sooner downloads the same wrong bytes.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { waitFor } from "./_agent_process.ts";
import { daemonConfig, publish, waitState, withAgent } from "./_daemon_fixtures.ts";
import { scriptAddon, sha256Hex, withTempDir, writeAssignments } from "./_helpers.ts";

Deno.test("run retries a missing object soon and a digest mismatch only after an hour", async () => {
  await withTempDir(async (dir) => {
    const root = `${dir}/root`;
    const bytes = scriptAddon("sleep 1000");
    const good = await publish(dir, "mismatch", "1.0.0", bytes);
    const base = { version: "1.0.0", delivery: "pushed_artifact", supervision: "agent_sidecar" };
    await writeAssignments(dir, [
      // The store holds other bytes than the assignment names.
      { addon_id: "mismatch", ...base, ...good, artifact_sha256: sha256Hex("other bytes") },
      // Assigned before it was published.
      {
        addon_id: "unpublished",
        ...base,
        artifact_object_key: "unpublished/1.0.0/unpublished",
        artifact_sha256: sha256Hex(bytes),
      },
    ]);
    const cfg = await daemonConfig(dir);
    await withAgent(dir, cfg, async (agent) => {
      const retryIn = (message: string) => Number(/\(retry in (\d+) s\)/.exec(message)?.[1]);
      const failed = async (id: string) => {
        const s = await waitState(root, agent, id, "failed");
        const line = await waitFor(
          () => agent.logs().find((l) => l.msg === "delivery failed" && l.addon_id === id),
          { timeoutMs: 5_000, what: `the log line of ${id}`, context: () => agent.tail() },
        );
        return { message: s.message, kind: line.kind, retryInS: line.retry_in_s as number };
      };

      const mismatch = await failed("mismatch");
      assertMatch(mismatch.message, /sha256 mismatch/);
      assertEquals(mismatch.kind, "integrity");
      assert(mismatch.retryInS >= 3240, `a mismatch retries in ${mismatch.retryInS} s`);
      assertEquals(retryIn(mismatch.message), mismatch.retryInS, "state.json says when");

      const unpublished = await failed("unpublished");
      assertMatch(unpublished.message, /does not exist/);
      assertEquals(unpublished.kind, "unavailable");
      assert(
        unpublished.retryInS >= 27 && unpublished.retryInS <= 33,
        `a missing object retries in ${unpublished.retryInS} s`,
      );
    });
  });
});
