/**
 * The files an agent run needs (`agent.json`, the file source's assignments
 * document) and the environment that reaches s3rver, shared by the tests and
 * the benchmarks. Scripts never import from `test/`; tests may import this.
 *
 * @example A config and a document in a temp dir
 * ```ts
 * const dir = await Deno.makeTempDir();
 * const cfg = await writeConfig(dir, { object_store: { kind: "filesystem", root: dir } });
 * await writeAssignments(dir, []);
 * console.log(cfg, S3_ENV.AWS_ACCESS_KEY_ID);
 * ```
 *
 * @module
 */

/** Environment for the agent to reach s3rver through the AWS default credential chain. */
export const S3_ENV: Record<string, string> = {
  AWS_ACCESS_KEY_ID: "S3RVER",
  AWS_SECRET_ACCESS_KEY: "S3RVER",
  AWS_EC2_METADATA_DISABLED: "true",
};

/** Write `agent.json` into `dir` with sensible test defaults merged with `extra`. */
export async function writeConfig(
  dir: string,
  extra: Record<string, unknown>,
): Promise<string> {
  await Deno.mkdir(`${dir}/root`, { recursive: true, mode: 0o755 });
  await Deno.chmod(`${dir}/root`, 0o755);
  const cfg = {
    agent_id: "test-host",
    runtime_root: `${dir}/root`,
    source: { kind: "file", path: `${dir}/assignments.json` },
    ...extra,
  };
  const path = `${dir}/agent.json`;
  await Deno.writeTextFile(path, JSON.stringify(cfg, null, 2));
  return path;
}

/** Write the assignments document used by a file source. */
export async function writeAssignments(
  dir: string,
  addons: Record<string, unknown>[],
  configVersion = "v1",
): Promise<void> {
  await Deno.writeTextFile(
    `${dir}/assignments.json`,
    JSON.stringify({ config_version: configVersion, addons }, null, 2),
  );
}
