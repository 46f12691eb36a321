/**
 * Files under `/sys/fs/cgroup` under Deno's permission set: like `/proc`,
 * Deno grants `/sys` only to `--allow-all`, so when a direct call is refused
 * the agent asks `cat`, `sh`, `mkdir`, `rmdir` and `ls` (it may run programs
 * anyway). Paths are passed as arguments, never spliced into a shell script.
 *
 * @example
 * ```ts
 * sysMkdir("/sys/fs/cgroup/addon-agent/addon-net-probe");
 * sysWriteText("/sys/fs/cgroup/addon-agent/addon-net-probe/pids.max", "64");
 * ```
 *
 * @module
 */

import { procDirect, readProcText } from "./proc_fs.ts";

function _run(cmd: string, args: string[]): { ok: boolean; out: string; err: string } {
  const o = new Deno.Command(cmd, { args, stdin: "null", stdout: "piped", stderr: "piped" })
    .outputSync();
  const dec = new TextDecoder();
  return { ok: o.success, out: dec.decode(o.stdout), err: dec.decode(o.stderr).trim() };
}

/** A file's text; throws NotFound when it cannot be read. */
export function sysReadText(path: string): string {
  return readProcText(path);
}

/** Write `text` to an existing file (cgroup interface files take one write). */
export function sysWriteText(path: string, text: string): void {
  if (procDirect()) return Deno.writeTextFileSync(path, text);
  const r = _run("sh", ["-c", 'printf %s "$2" > "$1"', "sh", path, text]);
  if (!r.ok) throw new Error(`writing ${path} failed: ${r.err}`);
}

/** Create a directory; throws `AlreadyExists` when it exists. */
export function sysMkdir(path: string): void {
  if (procDirect()) return Deno.mkdirSync(path);
  if (sysExists(path)) throw new Deno.errors.AlreadyExists(path);
  const r = _run("mkdir", ["--", path]);
  if (!r.ok) throw new Error(`mkdir ${path} failed: ${r.err}`);
}

/** Remove an empty directory (a cgroup); throws when it cannot. */
export function sysRmdir(path: string): void {
  if (procDirect()) return Deno.removeSync(path);
  const r = _run("rmdir", ["--", path]);
  if (!r.ok) throw new Error(`rmdir ${path} failed: ${r.err}`);
}

/** Whether `path` exists. */
export function sysExists(path: string): boolean {
  if (procDirect()) {
    try {
      Deno.lstatSync(path);
      return true;
    } catch {
      return false;
    }
  }
  return _run("test", ["-e", path]).ok;
}

/** Names of the subdirectories of `dir` (empty when it does not exist). */
export function sysSubdirs(dir: string): string[] {
  if (procDirect()) {
    try {
      return [...Deno.readDirSync(dir)].filter((e) => e.isDirectory).map((e) => e.name);
    } catch {
      return [];
    }
  }
  const r = _run("find", [
    dir,
    "-mindepth",
    "1",
    "-maxdepth",
    "1",
    "-type",
    "d",
    "-printf",
    "%f\\n",
  ]);
  return r.ok ? r.out.split("\n").filter((l) => l !== "") : [];
}
