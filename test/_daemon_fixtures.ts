/**
 * Fixtures of the daemon tests (`daemon_test.ts`, `daemon_models_test.ts`):
 * add-ons published into a filesystem store below the test's temp dir, an
 * `agent.json` whose file source is polled every 1 s (the shortest SPEC 12 allows), and running the
 * agent around a test body with a check that nothing of the test outlived it.
 *
 * Every process an add-on starts carries the test's temp dir in its command
 * line (scripts live below it; long sleeps run through {@linkcode sleepLink}),
 * so {@linkcode withAgent} finds anything left over with `killMarked(dir)`.
 *
 * @module
 */

import { assert, assertEquals } from "./_assert.ts";
import {
  type AgentProcess,
  killMarked,
  readAgentState,
  startAgent,
  type StartAgentOptions,
  waitFor,
} from "./_agent_process.ts";
import { publishFs, scriptAddon, sha256Hex, writeAssignments, writeConfig } from "./_helpers.ts";
import type { AddonState, AddonStateName, AgentState } from "../src/runtime/state.ts";

/** The version every entry gets unless its `extra` names another. */
export const VERSION = "1.0.0";

/** Make `<dir>/bin/sleep` (a symlink to sleep) so long sleeps carry `dir` in their cmdline. */
export async function sleepLink(dir: string): Promise<string> {
  await Deno.mkdir(`${dir}/bin`, { recursive: true });
  const target = await Deno.realPath("/bin/sleep");
  await Deno.symlink(target, `${dir}/bin/sleep`);
  return `${dir}/bin/sleep`;
}

/** Publish `bytes` into the filesystem store; returns the artifact reference fields. */
export async function publish(
  dir: string,
  id: string,
  version: string,
  bytes: string | Uint8Array,
): Promise<{ artifact_object_key: string; artifact_sha256: string }> {
  const key = `${id}/${version}/${id}`;
  await publishFs(dir, key, bytes);
  return { artifact_object_key: key, artifact_sha256: sha256Hex(bytes) };
}

/** An entry supervised as `supervision`, publishing `bytes` (a script body if a string). */
export async function entry(
  dir: string,
  id: string,
  supervision: string,
  bytes: string | Uint8Array,
  extra: Record<string, unknown> = {},
): Promise<Record<string, unknown>> {
  const version = (extra.version as string | undefined) ?? VERSION;
  return {
    addon_id: id,
    version,
    delivery: "pushed_artifact",
    supervision,
    ...(await publish(dir, id, version, typeof bytes === "string" ? scriptAddon(bytes) : bytes)),
    ...extra,
  };
}

/** An `agent_sidecar` entry whose artifact is the shell script `body` (published at once). */
export function sidecar(
  dir: string,
  id: string,
  body: string,
  extra: Record<string, unknown> = {},
): Promise<Record<string, unknown>> {
  return entry(dir, id, "agent_sidecar", body, extra);
}

/** `agent.json` with a file source polled every 1 s (the shortest SPEC 12 allows) and a filesystem store. */
export function daemonConfig(dir: string, extra: Record<string, unknown> = {}): Promise<string> {
  return writeConfig(dir, {
    source: { kind: "file", path: `${dir}/assignments.json`, poll_interval_s: 1 },
    object_store: { kind: "filesystem", root: `${dir}/store` },
    ...extra,
  });
}

/**
 * Start the agent, run `body`, and always stop it (SIGTERM) and kill
 * whatever of the test is still alive. When `body` succeeded, the agent must
 * have exited 0 and no process carrying `dir` may have survived.
 */
export async function withAgent(
  dir: string,
  cfgPath: string,
  body: (agent: AgentProcess) => Promise<void>,
  env: Record<string, string> = {},
  opts: StartAgentOptions = {},
): Promise<void> {
  const agent = startAgent(cfgPath, env, opts);
  let ok = false;
  try {
    await body(agent);
    ok = true;
  } finally {
    let code: number | Error;
    try {
      code = await agent.stop();
    } catch (e) {
      code = e as Error;
    }
    const left = await killMarked(dir);
    if (ok) {
      assertEquals(code, 0, `agent exit code; log:\n${agent.tail()}`);
      assertEquals(left, [], "processes of the test that outlived the agent");
    }
  }
}

/** Start options that make the agent log each poll, for {@linkcode waitPolls}. */
export const COUNT_POLLS: StartAgentOptions = { extraArgs: ["--log-level", "debug"] };

/**
 * Wait until the agent finished `n` more polls (its "poll done" debug lines; start it with
 * {@linkcode COUNT_POLLS}). The way to let time pass before checking that nothing happened:
 * it counts what the agent did instead of guessing how long that takes.
 */
export async function waitPolls(agent: AgentProcess, n: number, timeoutMs = 20_000): Promise<void> {
  const done = () => agent.logs().filter((l) => l.msg === "poll done").length;
  const from = done();
  await waitFor(() => {
    agent.assertAlive();
    return done() >= from + n;
  }, {
    timeoutMs,
    what: `${n} more polls (is the agent started with COUNT_POLLS?)`,
    context: () => agent.tail(),
  });
}

/** Wait until `pred` holds for add-on `id` in `state.json`; returns that add-on's state. */
export function waitAddon(
  root: string,
  agent: AgentProcess,
  id: string,
  what: string,
  pred: (a: AddonState, s: AgentState) => boolean,
  timeoutMs = 20_000,
): Promise<AddonState> {
  return waitFor(async () => {
    agent.assertAlive();
    const s = await readAgentState(root);
    const a = s?.addons[id];
    return a && s && pred(a, s) ? a : null;
  }, {
    timeoutMs,
    what: `${id}: ${what}`,
    context: () => agent.tail(),
  });
}

/** {@linkcode waitAddon} until add-on `id` is in `state` (which also names the wait). */
export function waitState(
  root: string,
  agent: AgentProcess,
  id: string,
  state: AddonStateName,
): Promise<AddonState> {
  return waitAddon(root, agent, id, state, (a) => a.state === state);
}

/** Alive: exists and is not a zombie (PID 1 here does not reap orphans). */
export function alive(pid: number): boolean {
  try {
    const st = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const state = st.slice(st.lastIndexOf(")") + 2).split(" ")[0];
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/**
 * The kill -9 escape, against the real agent configured with `extra`: an
 * add-on's child calls setsid with a clean environment (no `ADDON_DATA_DIR`,
 * out of the add-on's process group), the agent is killed with SIGKILL, and
 * the next agent must end that child before it starts the add-on again.
 * Asserts the child outlived the first agent and is gone once the add-on runs again.
 */
export async function assertKill9LeftoverEnded(
  dir: string,
  extra: Record<string, unknown> = {},
): Promise<void> {
  const sleep = await sleepLink(dir);
  const cfg = await daemonConfig(dir, extra);
  const root = `${dir}/root`;
  const body = `setsid env -i /bin/sh -c "echo \\$\\$ > '$ADDON_DATA_DIR/escaped'; ` +
    `exec ${sleep} 301" & exec ${sleep} 300`;
  await writeAssignments(dir, [await sidecar(dir, "left", body)]);
  const first = startAgent(cfg);
  let child = 0;
  let oldPid: number | null = null;
  try {
    oldPid = (await waitState(root, first, "left", "running")).pid;
    child = await waitFor(async () => {
      try {
        const pid = Number((await Deno.readTextFile(`${root}/addons/left/data/escaped`)).trim());
        return pid > 0 && alive(pid) ? pid : null;
      } catch {
        return null;
      }
    }, { timeoutMs: 10_000, what: "the escaped child" });
  } finally {
    await first.kill9();
  }
  assert(alive(child), "the escaped child outlived the killed agent");
  await Deno.remove(`${root}/addons/left/data/escaped`);
  await withAgent(dir, cfg, async (agent) => {
    // The new agent starts the add-on again, after ending what the old one left.
    await waitAddon(
      root,
      agent,
      "left",
      "running again",
      (a) => a.state === "running" && a.pid !== null && a.pid !== oldPid,
    );
    assert(!alive(child), `the old escaped child ${child} is gone; ${agent.tail(60)}`);
  });
}
