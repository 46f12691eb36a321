/**
 * Rules of the house that a reviewer would otherwise have to remember: tests
 * assert with one module (`test/_assert.ts`), and nothing outside `test/`
 * imports from it (scripts share fixtures through `scripts/`); the rooms of
 * `src/` form no import cycle, use only the rooms below them (the table in
 * README's layout section), reach each other through `mod.ts` only, and each
 * has a `mod.ts` whose module doc shows the room's use in an `@example`
 * (type-checked by `deno check --doc`); no file of `src/` (nor `main.ts`) is
 * over 450 lines; README's layout table and Usage block match the code.
 * Each rule is a function over file texts, shown to catch a made-up
 * violation before it is run over the repository.
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

/** The specifiers `text` loads, statically or with `import("…")` (lazily loaded modules count). */
function _allImports(text: string): string[] {
  return [
    ..._imports(text),
    ...[...text.matchAll(/\bimport\(\s*"([^"]+)"\s*\)/g)].map((m) => m[1]!),
  ];
}

/** Repo-relative path of a relative specifier `spec` in `file`, or null for a package. */
function _resolve(file: string, spec: string): string | null {
  if (!spec.startsWith(".")) return null;
  return new URL(spec, `file:///r/${file}`).pathname.slice("/r/".length);
}

/** The room of a `src/` path (`src/agent/slot.ts` → `agent`), or null outside a room. */
function _room(path: string): string | null {
  const m = path.match(/^src\/([^/]+)\//);
  return m ? m[1]! : null;
}

/** File → the repo files it loads (relative imports only), for `files` (path → text). */
function _fileGraph(files: Map<string, string>): Map<string, string[]> {
  const g = new Map<string, string[]>();
  for (const [file, text] of files) {
    g.set(file, _allImports(text).map((s) => _resolve(file, s)).filter((t) => t !== null));
  }
  return g;
}

/** The cycles of `graph` (its strongly connected parts of more than one node, or a self-loop). */
function _cycles(graph: Map<string, string[]>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string) => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) !== index.get(v)) return;
    const part: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      onStack.delete(w);
      part.push(w);
    } while (w !== v);
    if (part.length > 1 || (graph.get(v) ?? []).includes(v)) out.push(part.sort());
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return out;
}

/** Room → the other rooms its files load. */
function _roomGraph(files: Map<string, string>): Map<string, string[]> {
  const rooms = new Map<string, Set<string>>();
  for (const [file, targets] of _fileGraph(files)) {
    const from = _room(file);
    if (from === null) continue;
    const uses = rooms.get(from) ?? new Set<string>();
    rooms.set(from, uses);
    for (const t of targets) {
      const to = _room(t);
      if (to !== null && to !== from) uses.add(to);
    }
  }
  return new Map([...rooms].map(([r, u]) => [r, [...u].sort()]));
}

/**
 * The rooms each room may use: README's layout table. Levels: common < protocol < config <
 * source/store/runtime < delivery/supervise/status < agent/doctor < commands, and the
 * reference control plane beside them, on protocol/config/source-level pieces only.
 * Besides the order: the agent never uses the control plane, runtime and status never
 * the delivery pipeline, stores nothing that verifies, supervision neither delivery nor stores.
 */
const MAY_USE: Record<string, readonly string[]> = {
  common: [],
  protocol: ["common"],
  config: ["common", "protocol"],
  source: ["common", "protocol", "config"],
  store: ["common", "config"],
  runtime: ["common", "protocol", "config"],
  delivery: ["common", "protocol", "config", "store", "runtime"],
  supervise: ["common", "protocol", "config", "runtime"],
  status: ["common", "protocol", "config", "runtime"],
  agent: [
    "common",
    "protocol",
    "config",
    "source",
    "store",
    "runtime",
    "delivery",
    "supervise",
    "status",
  ],
  doctor: [
    "common",
    "protocol",
    "config",
    "source",
    "store",
    "runtime",
    "supervise",
    "status",
  ],
  control_plane: ["common", "protocol", "config", "source"],
  commands: [
    "common",
    "protocol",
    "config",
    "source",
    "store",
    "runtime",
    "delivery",
    "supervise",
    "status",
    "agent",
    "doctor",
    "control_plane",
  ],
};

/** `room imports other` for every use `MAY_USE` does not allow (an unknown room allows none). */
function _forbiddenUses(rooms: Map<string, string[]>): string[] {
  const out: string[] = [];
  for (const [room, uses] of rooms) {
    const allowed = MAY_USE[room];
    if (allowed === undefined) out.push(`${room}/ is a room README's layout table does not name`);
    for (const u of uses) {
      if (allowed !== undefined && !allowed.includes(u)) out.push(`${room} imports ${u}`);
    }
  }
  return out.sort();
}

/**
 * Imports that reach into another room past its `mod.ts`. `main.ts` may load a command's own
 * file (it loads only the command it runs, for start-up time) and nothing else but `mod.ts`.
 */
function _pastModTs(files: Map<string, string>): string[] {
  const out: string[] = [];
  for (const [file, text] of files) {
    const from = _room(file);
    for (const spec of _allImports(text)) {
      const target = _resolve(file, spec);
      if (target === null) continue;
      const to = _room(target);
      if (to === null || to === from || target === `src/${to}/mod.ts`) continue;
      if (file === "main.ts" && to === "commands") continue;
      out.push(`${file} imports ${spec}`);
    }
  }
  return out.sort();
}

/** Files of more than `max` lines, with their count. */
function _tooLong(files: Map<string, string>, max: number): string[] {
  const out: string[] = [];
  for (const [file, text] of files) {
    const lines = text.split("\n").length - (text.endsWith("\n") ? 1 : 0);
    if (lines > max) out.push(`${file}: ${lines} lines`);
  }
  return out.sort();
}

/** Rooms (of the `src/<room>/…` paths in `files`) without a `mod.ts` opening with a module doc and its `@example`. */
function _roomsWithoutModDoc(files: Map<string, string>): string[] {
  const rooms = new Set([...files.keys()].map(_room).filter((r) => r !== null));
  const out: string[] = [];
  for (const room of [...rooms].sort()) {
    const mod = files.get(`src/${room}/mod.ts`);
    if (mod === undefined) out.push(`src/${room}/ has no mod.ts`);
    else if (!/^\/\*\*[\s\S]*?@module[\s\S]*?\*\//.test(mod.trimStart())) {
      out.push(`src/${room}/mod.ts opens with no module doc (/** … @module */)`);
    } else if (
      !/^\/\*\*(?:(?!\*\/)[\s\S])*?@example(?:(?!\*\/)[\s\S])*?```ts/.test(mod.trimStart())
    ) {
      out.push(`src/${room}/mod.ts's module doc has no @example (deno check --doc runs it)`);
    }
  }
  return out;
}

/** `main.ts` and every file of `src/`, path → text. */
async function _sources(): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for (const file of ["main.ts", ...await _tsFiles("src")]) {
    files.set(file, await Deno.readTextFile(`${REPO}/${file}`));
  }
  return files;
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

Deno.test("_cycles() finds a file cycle and a room cycle, and src/ has neither", async () => {
  const made = new Map([
    ["src/source/source.ts", 'const { S } = await import("./s3.ts");'],
    ["src/source/s3.ts", 'import { SourceError } from "./source.ts";'],
    ["src/store/mod.ts", 'export * from "../delivery/mod.ts";'],
    ["src/delivery/mod.ts", 'export * from "../store/mod.ts";'],
  ]);
  assertEquals(_cycles(_fileGraph(made)).length, 2);
  assertEquals(_cycles(_roomGraph(made)), [["delivery", "store"]]);

  const files = await _sources();
  assertEquals(_cycles(_fileGraph(files)), [], "break the cycle (e.g. shared types in types.ts)");
  assertEquals(_cycles(_roomGraph(files)), []);
});

Deno.test("_forbiddenUses() refuses a room reaching up or sideways, and src/ has none", async () => {
  const made = new Map([
    ["src/runtime/gc.ts", 'import { linkedVersion } from "../delivery/mod.ts";'],
    ["src/agent/daemon.ts", 'import { Catalog } from "../control_plane/mod.ts";'],
    ["src/store/s3.ts", 'const { verify } = await import("../protocol/mod.ts");'],
    ["src/supervise/runners.ts", 'import type { ObjectStore } from "../store/mod.ts";'],
    ["src/kitchen/sink.ts", "export {};"],
  ]);
  assertEquals(_forbiddenUses(_roomGraph(made)), [
    "agent imports control_plane",
    "kitchen/ is a room README's layout table does not name",
    "runtime imports delivery",
    "store imports protocol",
    "supervise imports store",
  ]);
  assertEquals(
    _forbiddenUses(_roomGraph(await _sources())),
    [],
    "a room uses only those below it (README's layout table); move the piece down or the caller up",
  );
});

Deno.test("_pastModTs() refuses an import into another room past its mod.ts, and src/ has none", async () => {
  const made = new Map([
    ["src/status/status.ts", 'import { readState } from "../runtime/state.ts";'],
    ["src/status/endpoint.ts", 'import { buildStatus } from "./status.ts";'],
    ["src/agent/daemon.ts", 'import { log } from "../common/mod.ts";'],
    [
      "main.ts",
      'import { x } from "./src/config/config.ts";\nawait import("./src/commands/run.ts");',
    ],
  ]);
  assertEquals(_pastModTs(made), [
    "main.ts imports ./src/config/config.ts",
    "src/status/status.ts imports ../runtime/state.ts",
  ]);
  assertEquals(_pastModTs(await _sources()), [], "import ../<room>/mod.ts (export it there first)");
});

Deno.test("_roomsWithoutModDoc() finds a room without mod.ts, its doc or its example, and src/ has none", async () => {
  const made = new Map([
    ["src/a/x.ts", "export {};"],
    ["src/b/mod.ts", 'export * from "./x.ts";'],
    ["src/c/mod.ts", "/**\n * C.\n *\n * @module\n */\nexport {};"],
    [
      "src/d/mod.ts",
      "/**\n * D.\n * @example\n * ```ts\n * d();\n * ```\n * @module\n */\nexport {};",
    ],
  ]);
  assertEquals(_roomsWithoutModDoc(made), [
    "src/a/ has no mod.ts",
    "src/b/mod.ts opens with no module doc (/** … @module */)",
    "src/c/mod.ts's module doc has no @example (deno check --doc runs it)",
  ]);
  assertEquals(_roomsWithoutModDoc(await _sources()), []);
});

Deno.test("_tooLong() counts lines, and no file of src/ nor main.ts is over 450", async () => {
  const made = new Map([
    ["src/agent/slot.ts", "x\n".repeat(451)],
    ["src/agent/probation.ts", "x\n".repeat(450)],
  ]);
  assertEquals(_tooLong(made, 450), ["src/agent/slot.ts: 451 lines"]);
  assertEquals(
    _tooLong(await _sources(), 450),
    [],
    "split the file along a real seam (one concern per file)",
  );
});

/** README's layout table: room → the rooms its "may use" column names. */
function _readmeRooms(readme: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const m of readme.matchAll(/^\s*\|\s*`([a-z_]+)\/`\s*\|[^|]*\|([^|]*)\|\s*$/gm)) {
    const uses = m[2]!.trim();
    out.set(m[1]!, uses === "—" ? [] : uses.split(",").map((u) => u.trim()).sort());
  }
  return out;
}

Deno.test("README's layout table names every room of src/ with the rooms it may use", async () => {
  const table = _readmeRooms(await Deno.readTextFile(`${REPO}/README.md`));
  const rooms = new Set<string>();
  for (const f of await _tsFiles("src")) rooms.add(_room(f)!);
  assertEquals([...table.keys()].sort(), [...rooms].sort(), "a row per room");
  for (const [room, uses] of table) {
    assertEquals(uses, [...(MAY_USE[room] ?? [])].sort(), `README's "may use" of ${room}/`);
  }
});

/** README's Usage block: each command (and TARGET) → the text of its lines, continuations included. */
function _readmeUsage(readme: string): Map<string, string> {
  const block = readme.split("## Usage")[1]?.split("```")[1] ?? "";
  const out = new Map<string, string>();
  let current: string | null = null;
  for (const line of block.split("\n")) {
    const head = line.match(/^addon-agent ([a-z-]+)/) ?? line.match(/^(TARGET)\b/);
    if (head) current = head[1]!;
    else if (!/^\s/.test(line)) current = null;
    if (current !== null) out.set(current, `${out.get(current) ?? ""} ${line}`);
  }
  return out;
}

Deno.test("README's Usage block names every command of main.ts with each of its flags", async () => {
  const usage = _readmeUsage(await Deno.readTextFile(`${REPO}/README.md`));
  const run = async (args: string[]) => {
    const o = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${REPO}/main.ts`, ...args],
      stdout: "piped",
      stderr: "null",
    }).output();
    return new TextDecoder().decode(o.stdout);
  };
  const commands = [...(await run(["--help"])).matchAll(/^ {2}([a-z-]+) {2,}/gm)].map((m) => m[1]!);
  assertEquals([...usage.keys()].filter((c) => c !== "TARGET").sort(), [...commands].sort());
  const missing: string[] = [];
  await Promise.all(commands.map(async (cmd) => {
    const help = await run([cmd, "--help"]);
    const flags = [...help.split("flags:")[1]!.matchAll(/--([a-z-]+)/g)].map((m) => m[1]!)
      .filter((f) => !["help", "log-format", "log-level"].includes(f));
    const text = usage.get(cmd) ?? "";
    const target = text.includes("[TARGET]") ? usage.get("TARGET") ?? "" : "";
    for (const f of new Set(flags)) {
      if (!new RegExp(`--${f}\\b`).test(text + target)) missing.push(`${cmd} --${f}`);
    }
  }));
  assertEquals(missing.sort(), [], "README's Usage block lacks these flags");
});
