/**
 * Print the closing line CI reads, `N passed, N failed`, from Deno's JUnit
 * report (one count per top-level test; a test fails when it or a step failed).
 *
 * Usage: `deno run --allow-read scripts/junit_summary.ts .test-results/junit.xml`
 *
 * @module
 */

/** Count passed and failed top-level tests (steps, named `test > step`, are counted apart). */
export function summarize(
  xml: string,
): { passed: number; failed: number; skipped: number; steps: number } {
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  let steps = 0;
  const re = /<testcase\b([^>]*?)(\/>|>([\s\S]*?)<\/testcase>)/g;
  for (const m of xml.matchAll(re)) {
    if (/\bname="[^"]* &gt; /.test(m[1] ?? "")) {
      steps++;
      continue;
    }
    const body = m[3] ?? "";
    if (/<failure\b|<error\b/.test(body)) failed++;
    else if (/<skipped\b/.test(body)) skipped++;
    else passed++;
  }
  return { passed, failed, skipped, steps };
}

if (import.meta.main) {
  const path = Deno.args[0] ?? ".test-results/junit.xml";
  const s = summarize(await Deno.readTextFile(path));
  console.log(`(${s.steps} steps inside these tests)`);
  console.log(`${s.passed} passed, ${s.failed} failed${s.skipped ? `, ${s.skipped} skipped` : ""}`);
  if (s.failed > 0 || s.passed === 0) Deno.exit(1);
}
