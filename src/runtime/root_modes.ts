/**
 * The start-up check of every directory of the runtime root (SPEC 12, "The
 * runtime root"): none may be group- or world-writable or owned by another
 * user, since whoever can write one could plant a symlink where root is about
 * to write. An add-on's own `addons/<id>/data/` (owned by its uid under SPEC
 * 13) is the one exception; the walk never enters it and follows no link.
 * On the way, `tmp/`, each `addons/<id>/` and the files that can hold secrets
 * lose any bits for "other" users (older agents wrote them 0755/0644).
 *
 * @example
 * ```ts
 * import { unsafeDirectory } from "./root_modes.ts";
 * const problem = await unsafeDirectory("/var/lib/addon-agent");
 * if (problem) throw new Error(problem);
 * ```
 *
 * @module
 */

/** Files of `addons/<id>/` (and the root) that can hold secrets: never world-readable. */
const SECRET_FILES = new Set(["state.json", "last-good.json", "config.json"]);

/**
 * Walk the directories below `root` (itself checked by the caller) and
 * return a message naming the first one that is group- or world-writable or
 * owned by another user than this process, with the command that fixes it;
 * null when all are safe. `tighten: false` (for `doctor`) changes no mode.
 */
export async function unsafeDirectory(
  root: string,
  opts: { tighten?: boolean } = {},
): Promise<string | null> {
  const tighten = opts.tighten ?? true;
  const uid = Deno.uid();
  const walk = async (dir: string, depth: string[]): Promise<string | null> => {
    for await (const e of Deno.readDir(dir)) {
      const path = `${dir}/${e.name}`;
      if (e.isSymlink) continue; // links are the agent's own (current, previous) or inert
      const here = [...depth, e.name];
      if (e.isFile) {
        if (tighten && SECRET_FILES.has(e.name) && here.length <= 3) await _dropOther(path);
        continue;
      }
      if (!e.isDirectory) continue;
      // addons/<id>/data belongs to the add-on (SPEC 13): not checked, never entered.
      if (here.length === 3 && here[0] === "addons" && here[2] === "data") continue;
      const st = await Deno.lstat(path);
      if (st.isSymlink || !st.isDirectory) continue; // swapped meanwhile: not ours to judge
      if (uid !== null && st.uid !== null && st.uid !== uid) {
        return `${path} is owned by uid ${st.uid}, not by this agent (uid ${uid}); a directory of the runtime root must be the agent's own (chown ${uid} ${path})`;
      }
      if (st.mode !== null && (st.mode & 0o022) !== 0) {
        return `${path} is group- or world-writable (mode ${
          (st.mode & 0o777).toString(8)
        }); no directory of the runtime root may be (chmod go-w ${path})`;
      }
      const isTmp = here.length === 1 && here[0] === "tmp";
      const isAddon = here.length === 2 && here[0] === "addons";
      if (tighten && (isTmp || isAddon)) await _dropOther(path);
      const problem = await walk(path, here);
      if (problem) return problem;
    }
    return null;
  };
  return await walk(root, []);
}

/** Take every permission bit for "other" users away from `path` (not through a symlink). */
async function _dropOther(path: string): Promise<void> {
  const st = await Deno.lstat(path);
  if (st.isSymlink || st.mode === null || (st.mode & 0o007) === 0) return;
  await Deno.chmod(path, st.mode & 0o7770);
}
