/**
 * A listing of a directory tree for support (SPEC 16): path, type, mode,
 * owner, size and link target of every entry, without following a symlink
 * and without reading any file's content.
 *
 * @example
 * ```ts
 * import { listTree } from "./listing.ts";
 * console.log((await listTree("/var/lib/addon-agent")).join("\n"));
 * ```
 *
 * @module
 */

/** At most this many entries are listed (a runaway data/ directory cannot bloat the archive). */
export const MAX_LISTED = 20_000;

/** `s` with control characters written as `\xNN`, so a planted name cannot forge a line. */
function _printable(s: string): string {
  return s.replace(
    // deno-lint-ignore no-control-regex
    /[\x00-\x1f\x7f\\]/g,
    (c) => c === "\\" ? "\\\\" : `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`,
  );
}

/** One line per entry under `root` (root first), sorted by path; names with control characters escaped. */
export async function listTree(root: string, max = MAX_LISTED): Promise<string[]> {
  const lines: string[] = [];
  const walk = async (path: string, rel: string): Promise<void> => {
    if (lines.length >= max) return;
    let st: Deno.FileInfo;
    try {
      st = await Deno.lstat(path);
    } catch (e) {
      lines.push(`${rel}  (${(e as Error).message})`);
      return;
    }
    const type = st.isSymlink ? "l" : st.isDirectory ? "d" : st.isFile ? "-" : "?";
    const mode = ((st.mode ?? 0) & 0o7777).toString(8).padStart(4, "0");
    let line = `${type} ${mode} ${st.uid ?? "?"}:${st.gid ?? "?"} ${String(st.size).padStart(10)} ${
      _printable(rel)
    }`;
    if (st.isSymlink) line += ` -> ${_printable(await Deno.readLink(path).catch(() => "?"))}`;
    lines.push(line);
    if (!st.isDirectory || st.isSymlink) return;
    const names: string[] = [];
    try {
      for await (const e of Deno.readDir(path)) names.push(e.name);
    } catch (e) {
      lines.push(`${rel}/  (${(e as Error).message})`);
      return;
    }
    for (const n of names.sort()) await walk(`${path}/${n}`, rel === "." ? n : `${rel}/${n}`);
  };
  await walk(root, ".");
  if (lines.length >= max) lines.push(`… stopped after ${max} entries`);
  return lines;
}
