/**
 * Start-up figures for `deno task bench`: the cold start of
 * `addon-agent version` (target < 100 ms) and of a `sync` with nothing to do
 * (filesystem store, empty assignments document), each the median of fresh
 * `deno run -P=agent` processes (the agent's real permission set, with temp
 * paths substituted for the sync), and the AWS SDK's import cost on its own:
 * a fresh process that imports `@aws-sdk/client-s3` minus an empty one (the
 * agent imports the SDK only when the store is S3).
 *
 * @example Print the figures
 * ```ts
 * import { benchStartup } from "./bench_startup.ts";
 * for (const line of await benchStartup()) console.log(line);
 * ```
 *
 * @module
 */

const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const RUNS = 7;
const TARGET_VERSION_MS = 100;

interface _Stats {
  median: number;
  min: number;
  max: number;
}

function _stats(xs: number[]): _Stats {
  const s = [...xs].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)]!, min: s[0]!, max: s[s.length - 1]! };
}

/** Wall time (ms) of one process run of `deno <args>`; throws when it fails. */
async function _time(args: string[], env: Record<string, string> = {}): Promise<number> {
  const t0 = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const ms = performance.now() - t0;
  if (!out.success) {
    throw new Error(
      `deno ${args.join(" ")} exited ${out.code}: ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return ms;
}

/** One warm-up run (fills deno's caches), then {@linkcode RUNS} measured ones. */
async function _bench(args: string[], env: Record<string, string> = {}): Promise<_Stats> {
  await _time(args, env);
  const xs: number[] = [];
  for (let i = 0; i < RUNS; i++) xs.push(await _time(args, env));
  return _stats(xs);
}

function _fmt(s: _Stats): string {
  return `median ${s.median.toFixed(0)} ms of ${RUNS} (min ${s.min.toFixed(0)}, max ${
    s.max.toFixed(0)
  })`;
}

/** A deno.json with the repo's imports and `permissions.agent` moved onto `dir`'s paths. */
async function _agentConfig(dir: string): Promise<string> {
  const repo = JSON.parse(await Deno.readTextFile(`${REPO}/deno.json`));
  const agent = JSON.parse(
    JSON.stringify(repo.permissions.agent)
      .replaceAll('"/etc/addon-agent"', JSON.stringify(`${dir}/etc`))
      .replaceAll('"/var/lib/addon-agent"', JSON.stringify(`${dir}/root`))
      .replaceAll('"/etc/systemd/system"', JSON.stringify(`${dir}/units`)),
  );
  const path = `${dir}/deno.json`;
  await Deno.writeTextFile(
    path,
    JSON.stringify({
      imports: repo.imports,
      nodeModulesDir: repo.nodeModulesDir,
      permissions: { agent },
    }),
  );
  // The repo's lock beside it: the agent loads the cached packages as resolved, without asking
  // the registry (which would be measured too).
  await Deno.copyFile(`${REPO}/deno.lock`, `${dir}/deno.lock`);
  return path;
}

/** Measure the start-up figures; returns one printable line per figure. */
export async function benchStartup(): Promise<string[]> {
  const lines: string[] = [];
  const dir = await Deno.makeTempDir({ prefix: "addon-agent-bench-" });
  try {
    await Deno.chmod(dir, 0o755);
    const agent = ["run", "-P=agent", "--no-prompt", "--quiet"];

    await Deno.writeTextFile(`${dir}/empty.ts`, "export {};\n");
    const base = ["run", "-A", "--quiet", "--config", `${REPO}/deno.json`];
    const empty = await _bench([...base, `${dir}/empty.ts`]);
    lines.push(`startup  an empty script (deno run, the floor under both): ${_fmt(empty)}`);

    const version = await _bench([...agent, `${REPO}/main.ts`, "version"]);
    lines.push(
      `startup  addon-agent version (deno run -P=agent): ${
        _fmt(version)
      }; target < ${TARGET_VERSION_MS} ms: ${
        version.median < TARGET_VERSION_MS ? "met" : "NOT met"
      }`,
    );

    for (const d of ["etc", "root", "units", "store"]) {
      await Deno.mkdir(`${dir}/${d}`, { mode: 0o755 });
    }
    await Deno.writeTextFile(
      `${dir}/etc/assignments.json`,
      JSON.stringify({ config_version: "empty", addons: [] }),
    );
    await Deno.writeTextFile(
      `${dir}/etc/agent.json`,
      JSON.stringify({
        agent_id: "bench",
        runtime_root: `${dir}/root`,
        source: { kind: "file", path: `${dir}/etc/assignments.json` },
        object_store: { kind: "filesystem", root: `${dir}/etc` },
        systemd: { unit_dir: `${dir}/units` },
      }),
    );
    const config = await _agentConfig(dir);
    const sync = await _bench(
      [
        "run",
        "--config",
        config,
        "--frozen",
        "-P=agent",
        "--no-prompt",
        "--quiet",
        `${REPO}/main.ts`,
        "sync",
        "--config",
        `${dir}/etc/agent.json`,
      ],
    );
    lines.push(
      `startup  addon-agent sync, nothing to do (filesystem store, empty document, -P=agent): ${
        _fmt(sync)
      }`,
    );

    await Deno.writeTextFile(`${dir}/sdk.ts`, 'import "@aws-sdk/client-s3";\n');
    const sdk = await _bench([...base, `${dir}/sdk.ts`]);
    lines.push(
      `startup  import("@aws-sdk/client-s3"): +${
        (sdk.median - empty.median).toFixed(0)
      } ms (fresh process importing it: ${_fmt(sdk)}; empty process: median ${
        empty.median.toFixed(0)
      } ms); paid by sync/run only with an S3 store`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  return lines;
}

if (import.meta.main) {
  for (const line of await benchStartup()) console.log(line);
}
