/**
 * The agent under its REAL permission set (`permissions.agent` in the repo's
 * `deno.json`), with a test's temp paths substituted for the production ones:
 * a sandbox (config dir, runtime root, unit dir), `agent.json` in it, and
 * runs of the agent under `-P=agent` with a cleared environment.
 *
 * @module
 */

import { assert } from "./_assert.ts";
import { type AgentRun, MAIN_TS, REPO, runDeno } from "./_helpers.ts";

/** The production paths the set names, and where each one lives in a test's temp dir. */
export const PROD = {
  config: "/etc/addon-agent",
  runtime: "/var/lib/addon-agent",
  units: "/etc/systemd/system",
} as const;

export interface Sandbox {
  /** Temp config dir (stands in for /etc/addon-agent). */
  etc: string;
  /** Temp runtime root (stands in for /var/lib/addon-agent). */
  root: string;
  /** Temp unit dir (stands in for /etc/systemd/system). */
  units: string;
  /** A directory the set does not cover. */
  outside: string;
  /** The generated deno.json holding the substituted set. */
  denoJson: string;
}

/**
 * Write `<dir>/perm/deno.json` (the repo's imports plus `permissions.agent` with temp paths)
 * and a copy of the repo's `deno.lock` beside it. The lock is what lets the child load the
 * npm packages from the cache `deno task cache` filled: without it deno resolves the
 * packages' version ranges afresh and fetches their registry metadata, which that cache
 * does not hold (a fresh DENO_DIR), from a child whose cleared environment cannot reach it.
 */
export async function sandbox(dir: string): Promise<Sandbox> {
  const sb: Sandbox = {
    etc: `${dir}/etc`,
    root: `${dir}/var/root`,
    units: `${dir}/units`,
    outside: `${dir}/outside`,
    denoJson: `${dir}/perm/deno.json`,
  };
  for (const d of [sb.etc, `${dir}/var`, sb.units, sb.outside, `${dir}/perm`]) {
    await Deno.mkdir(d, { recursive: true, mode: 0o755 });
  }
  const repo = JSON.parse(await Deno.readTextFile(`${REPO}/deno.json`));
  const set = repo.permissions?.agent;
  assert(set, "deno.json has no permissions.agent");
  const text = JSON.stringify(set)
    .replaceAll(`"${PROD.config}"`, JSON.stringify(sb.etc))
    .replaceAll(`"${PROD.runtime}"`, JSON.stringify(sb.root))
    .replaceAll(`"${PROD.units}"`, JSON.stringify(sb.units));
  const agent = JSON.parse(text);
  for (const p of [sb.etc, sb.root, sb.units]) {
    assert(JSON.stringify(agent).includes(JSON.stringify(p)), `the set does not name ${p}`);
  }
  await Deno.writeTextFile(
    sb.denoJson,
    JSON.stringify(
      {
        imports: repo.imports,
        nodeModulesDir: repo.nodeModulesDir,
        permissions: { agent },
      },
      null,
      2,
    ),
  );
  await Deno.copyFile(`${REPO}/deno.lock`, `${dir}/perm/deno.lock`);
  return sb;
}

/**
 * Run `script args` under `-P=agent` of the sandbox's deno.json; no prompts, and `--frozen`
 * so a lock that no longer matches the imports fails loudly instead of downloading.
 */
export async function runUnderSet(
  sb: Sandbox,
  script: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<AgentRun> {
  return await runDeno(
    ["run", "--config", sb.denoJson, "-P=agent", "--no-prompt", "--frozen", script, ...args],
    { env: { AWS_EC2_METADATA_DISABLED: "true", ...env }, clearEnv: true },
  );
}

/** Environment every agent run needs: PATH (for `ln`, `setcap`…), HOME, DENO_DIR's default. */
export function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const k of ["PATH", "HOME", "DENO_DIR", "XDG_CACHE_HOME"]) {
    const v = Deno.env.get(k);
    if (v !== undefined) env[k] = v;
  }
  return env;
}

/** Write `<etc>/agent.json` with `extra` merged over a file source and the sandbox's paths. */
export async function sandboxConfig(sb: Sandbox, extra: Record<string, unknown>): Promise<string> {
  const path = `${sb.etc}/agent.json`;
  await Deno.writeTextFile(
    path,
    JSON.stringify({
      agent_id: "perm-host",
      runtime_root: sb.root,
      source: { kind: "file", path: `${sb.etc}/assignments.json` },
      systemd: { unit_dir: sb.units },
      ...extra,
    }),
  );
  return path;
}

/** Start `main.ts args` under `-P=agent` of the sandbox (with {@linkcode baseEnv}); piped output. */
export function spawnUnderSet(sb: Sandbox, args: string[]): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--config", sb.denoJson, "-P=agent", "--no-prompt", "--frozen", MAIN_TS, ...args],
    env: baseEnv(),
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}
