/**
 * Benchmark of bundle delivery (SPEC 15): `addon-agent sync` of a signed
 * tar.gz of 2,000 files from a filesystem store, against what an operator
 * would run on the same file — `openssl dgst -sha256` then `tar -xzf` into
 * an empty directory — side by side, alternating, best of each (other work
 * on a shared machine only ever adds). The bundle's files are random bytes,
 * so the archive is as large as its content. Every timed run starts after
 * `sync(1)`. `sync` runs with the V8 flags the compiled agent carries
 * (`AGENT_V8_FLAGS` in `build.ts`).
 *
 * Targets: sync ÷ (openssl + tar) ≤ 1.0; peak RSS of sync ≤ 96 MiB whatever
 * the bundle's size (three sizes are measured to show whether it grows).
 *
 * @example Run it for a 64 MiB and a 256 MiB bundle
 * ```sh
 * deno run -A scripts/bench_bundles.ts 64 256
 * ```
 *
 * @module
 */

import { hostPlatform, platformString } from "../src/protocol/platform.ts";
import { generateKey, signStatement } from "../src/protocol/signature.ts";
import { sha256File } from "../src/common/sha256_file.ts";
import { writeAssignments, writeConfig } from "./_agent_files.ts";
import { AGENT_V8_FLAGS } from "./build.ts";
import { exists, GNU_TIME, runSync, settle, timed, writeRandomFile } from "./bench_delivery.ts";

const TARGETS = { ratio: 1.0, rssMiB: 96 } as const;
const FILES = 2000;

/** Options of {@linkcode benchBundles}. */
export interface BenchBundlesOptions {
  /** Bundle sizes in MiB (default `[64, 256, 1024]`). */
  sizesMiB?: number[];
  /** Rounds per size (default 3). */
  rounds?: number;
}

interface _Result {
  mib: number;
  archiveBytes: number;
  sync: number[];
  operator: number[];
  rssKiB: number[];
}

/** Run the bundle benchmark and return printable result lines. */
export async function benchBundles(opts: BenchBundlesOptions = {}): Promise<string[]> {
  const sizes = opts.sizesMiB ?? [64, 256, 1024];
  const rounds = opts.rounds ?? 3;
  const dir = await Deno.makeTempDir({ prefix: "bench-bundles-" });
  await Deno.chmod(dir, 0o755);
  const haveTime = await exists(GNU_TIME);
  try {
    const key = await generateKey();
    const results: _Result[] = [];
    for (const mib of sizes) results.push(await _benchSize(dir, mib, rounds, key, haveTime));
    return _report(results, rounds, haveTime);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

async function _benchSize(
  dir: string,
  mib: number,
  rounds: number,
  key: { secret: Uint8Array; publicBase64: string },
  haveTime: boolean,
): Promise<_Result> {
  // The tree: FILES files of random bytes in 50 directories, `mib` MiB in all, plus bin/run.
  const tree = `${dir}/tree-${mib}`;
  const per = Math.floor((mib << 20) / FILES);
  for (let i = 0; i < FILES; i++) {
    const d = `${tree}/d${i % 50}`;
    if (i < 50) await Deno.mkdir(d, { recursive: true });
    await writeRandomFile(`${d}/f${i}`, per);
  }
  await Deno.mkdir(`${tree}/bin`);
  await Deno.writeTextFile(`${tree}/bin/run`, "#!/bin/sh\nexec sleep 1\n", { mode: 0o755 });
  const id = `bundle-${mib}`;
  const version = "1.0.0";
  const objectKey = `${id}/${version}/bundle.tar.gz`;
  const archive = `${dir}/store/${objectKey}`;
  await Deno.mkdir(archive.slice(0, archive.lastIndexOf("/")), { recursive: true });
  await timed(`tar -czf '${archive}' -C '${tree}' .`);
  await Deno.remove(tree, { recursive: true });
  const sha256 = await sha256File(archive);
  const signature = await signStatement(key.secret, {
    addon_id: id,
    version,
    target: platformString(hostPlatform()),
    sha256,
  });
  const r: _Result = {
    mib,
    archiveBytes: (await Deno.stat(archive)).size,
    sync: [],
    operator: [],
    rssKiB: [],
  };
  for (let round = 0; round < rounds; round++) {
    const run = `${dir}/run-${mib}-${round}`;
    await Deno.mkdir(run);
    const cfg = await writeConfig(run, {
      object_store: { kind: "filesystem", root: `${dir}/store` },
      trust: { public_keys: [key.publicBase64], require_signature: true },
      limits: { max_artifact_bytes: 4 * 1024 ** 3, max_unpacked_bytes: 4 * 1024 ** 3 },
    });
    await writeAssignments(run, [{
      addon_id: id,
      version,
      delivery: "pushed_artifact",
      supervision: "agent_sidecar",
      artifact_object_key: objectKey,
      artifact_sha256: sha256,
      artifact_signature: signature,
      artifact_format: "tar.gz",
      entrypoint: "bin/run",
    }]);
    await settle();
    const s = await runSync(cfg, haveTime, [`--v8-flags=${AGENT_V8_FLAGS}`]);
    r.sync.push(s.ms);
    if (s.rssKiB !== null) r.rssKiB.push(s.rssKiB);
    await Deno.remove(`${run}/root`, { recursive: true });
    await Deno.mkdir(`${run}/x`);
    await settle();
    const op = await timed(
      `openssl dgst -sha256 '${archive}' >/dev/null && tar -xzf '${archive}' -C '${run}/x'`,
    );
    r.operator.push(op.ms);
    await Deno.remove(run, { recursive: true });
  }
  await Deno.remove(archive);
  return r;
}

function _best(xs: number[]): number {
  return xs.length ? Math.min(...xs) : NaN;
}

function _report(results: _Result[], rounds: number, haveTime: boolean): string[] {
  const lines = [
    `bundle: tar.gz of ${FILES} files of random bytes, filesystem store, signed; best of ${rounds}`,
    `peak RSS ${haveTime ? "from /usr/bin/time" : "from polling VmHWM"}`,
    "",
    "| bundle | archive | sync | openssl + tar -xzf | ratio (≤ 1.0) | peak RSS (≤ 96 MiB) |",
    "| --- | --- | --- | --- | --- | --- |",
  ];
  for (const r of results) {
    const ratio = _best(r.sync) / _best(r.operator);
    const rss = Math.max(...r.rssKiB) / 1024;
    lines.push(
      `| ${r.mib} MiB | ${(r.archiveBytes / (1 << 20)).toFixed(0)} MiB | ${
        (_best(r.sync) / 1000).toFixed(2)
      } s | ${(_best(r.operator) / 1000).toFixed(2)} s | ${ratio.toFixed(2)} ${
        ratio <= TARGETS.ratio ? "✔" : "✘"
      } | ${rss.toFixed(0)} MiB ${rss <= TARGETS.rssMiB ? "✔" : "✘"} |`,
    );
  }
  return lines;
}

if (import.meta.main) {
  const sizes = Deno.args.map(Number).filter((n) => Number.isFinite(n) && n > 0);
  for (const line of await benchBundles(sizes.length ? { sizesMiB: sizes } : {})) console.log(line);
}
