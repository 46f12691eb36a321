/**
 * Rules of the house that a reviewer would otherwise have to remember: tests
 * assert with one module (`test/_assert.ts`), and nothing outside `test/`
 * imports from it (scripts share fixtures through `scripts/`).
 */

import { assertEquals } from "./_assert.ts";
import { REPO } from "./_helpers.ts";

/** Every `.ts` file below `dir` (relative to the repo), recursively. */
async function _tsFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string) => {
    for await (const e of Deno.readDir(`${REPO}/${rel}`)) {
      const path = `${rel}/${e.name}`;
      if (e.isDirectory) await walk(path);
      else if (e.isFile && e.name.endsWith(".ts")) out.push(path);
    }
  };
  await walk(dir);
  return out.sort();
}

/** The module specifiers `text` imports or re-exports statically. */
function _imports(text: string): string[] {
  return [...text.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s+"([^"]+)"/gms)].map((m) => m[1]!);
}

Deno.test("tests assert with test/_assert.ts only", async () => {
  const other = /^(node:assert|jsr:@std\/assert|@std\/assert|https?:\/\/.*\/assert)/;
  const offenders: string[] = [];
  for (const file of await _tsFiles("test")) {
    const text = await Deno.readTextFile(`${REPO}/${file}`);
    for (const spec of _imports(text)) {
      if (other.test(spec)) offenders.push(`${file} imports ${spec}`);
    }
    if (file !== "test/_assert.ts" && /^(?:async )?function _?assert(?:Equals)?\(/m.test(text)) {
      offenders.push(`${file} defines its own assert/assertEquals`);
    }
  }
  assertEquals(offenders, [], "use the functions of test/_assert.ts");
});

Deno.test("nothing outside test/ imports from test/", async () => {
  const offenders: string[] = [];
  for (const dir of ["src", "scripts", "examples"]) {
    for (const file of await _tsFiles(dir)) {
      const text = await Deno.readTextFile(`${REPO}/${file}`);
      for (const spec of _imports(text)) {
        const target = new URL(spec, `file://${REPO}/${file}`).pathname;
        if (target.startsWith(`${REPO}/test/`)) offenders.push(`${file} imports ${spec}`);
      }
    }
  }
  assertEquals(offenders, [], "share fixtures through scripts/ (e.g. scripts/_agent_files.ts)");
});
