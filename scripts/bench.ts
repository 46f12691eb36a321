/**
 * `deno task bench`: run every registered benchmark section in turn and
 * print its lines under a heading, or only the sections named on the
 * command line. A section whose module is not there (yet) is reported as
 * "skipped: not available" instead of failing the run.
 *
 * Register a section by adding `{ name, run }` to {@linkcode SECTIONS};
 * `_section(file, exportName)` imports the module only when the section runs.
 *
 * @example Run everything, or just the delivery benchmark
 * ```sh
 * deno task bench
 * deno task bench delivery
 * ```
 *
 * @module
 */

/** One benchmark section: a name for the heading and a function returning printable lines. */
export interface BenchSection {
  name: string;
  run: () => Promise<string[]>;
}

/** Thrown by a section whose module or export does not exist. */
class _Unavailable extends Error {
  override name = "Unavailable";
}

/** A section runner that imports `file` (relative to this script) and calls `exportName()`. */
function _section(file: string, exportName: string): () => Promise<string[]> {
  return async () => {
    const url = new URL(file, import.meta.url);
    try {
      await Deno.stat(url);
    } catch {
      throw new _Unavailable(`${file} does not exist`);
    }
    // A non-literal specifier: a missing module must not break type checking or loading.
    const mod = await import(url.href) as Record<string, unknown>;
    const fn = mod[exportName];
    if (typeof fn !== "function") throw new _Unavailable(`${file} does not export ${exportName}`);
    return await (fn as () => Promise<string[]>)();
  };
}

/** The registered sections, in the order they run. */
export const SECTIONS: BenchSection[] = [
  { name: "delivery", run: _section("./bench_delivery.ts", "benchDelivery") },
  { name: "bundles", run: _section("./bench_bundles.ts", "benchBundles") },
  { name: "control-plane", run: _section("./bench_control_plane.ts", "benchControlPlane") },
  { name: "startup", run: _section("./bench_startup.ts", "benchStartup") },
  { name: "supervision", run: _section("./bench_supervision.ts", "benchSupervision") },
  { name: "chaos", run: _section("./bench_chaos.ts", "benchChaos") },
  { name: "fleet", run: _section("./bench_fleet.ts", "benchFleet") },
  { name: "isolation", run: _section("./bench_isolation.ts", "benchIsolation") },
];

/** Run `names` (every section when empty), printing each under a heading; returns the exit code. */
export async function runBench(names: string[], sections = SECTIONS): Promise<number> {
  const unknown = names.filter((n) => !sections.some((s) => s.name === n));
  if (unknown.length > 0) {
    console.error(
      `unknown bench section ${unknown.map((n) => JSON.stringify(n)).join(", ")}; known: ${
        sections.map((s) => s.name).join(", ")
      }`,
    );
    return 2;
  }
  let code = 0;
  for (const section of sections) {
    if (names.length > 0 && !names.includes(section.name)) continue;
    console.log(`\n## ${section.name}\n`);
    const started = performance.now();
    try {
      for (const line of await section.run()) console.log(line);
      console.log(`\n(${section.name}: ${((performance.now() - started) / 1000).toFixed(1)} s)`);
    } catch (e) {
      if (e instanceof _Unavailable) {
        console.log("skipped: not available");
      } else {
        console.log(`failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
        code = 1;
      }
    }
  }
  return code;
}

if (import.meta.main) {
  Deno.exit(await runBench(Deno.args));
}
