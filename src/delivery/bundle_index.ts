/**
 * What a bundle may put in its version directory (SPEC 15), decided entry by
 * entry before anything is written: the agent keeps an index of every path
 * the bundle made so far and admits an entry only when it stays inside the
 * tree, names a path no earlier entry named, and reaches it through real
 * directories of the bundle (never a symlink or a file). No I/O here: the
 * unpacker ({@linkcode ./unpack.ts}) writes what this index admits.
 *
 * @example Admit entries one by one
 * ```ts
 * import { BundleIndex } from "./bundle_index.ts";
 * const index = new BundleIndex();
 * index.admit({ name: "./bin/", type: "directory", mode: 0o755 }); // { kind: "directory", path: "bin", ... }
 * index.admit({ name: "bin/probe", type: "file", mode: 0o4755 }); // mode 0o755: setuid dropped
 * index.admit({ name: "../etc/passwd", type: "file" }); // throws BundleEntryError
 * ```
 *
 * @module
 */

import { ARTIFACT_RECORD, checkBundlePath, MAX_BUNDLE_PATH_BYTES } from "../protocol/mod.ts";

/** At most this many entries in one bundle (SPEC 15). */
export const MAX_BUNDLE_ENTRIES = 10_000;

/** Symlinks one path may go through, as Linux allows (`MAXSYMLINKS`); more is ELOOP. */
export const MAX_SYMLINK_HOPS = 40;

/** A resolution went through more than {@linkcode MAX_SYMLINK_HOPS} symlinks. */
class _TooManyHops extends Error {}

/** An entry of a bundle that is refused; `entry` is its name as the archive spells it. */
export class BundleEntryError extends Error {
  /** Refuse `entry` (null for the archive as a whole) for `reason`. */
  constructor(readonly entry: string | null, readonly reason: string, options?: ErrorOptions) {
    super(
      entry === null
        ? `bundle refused: ${reason}`
        : `bundle entry ${JSON.stringify(entry)} ${reason}`,
      options,
    );
    this.name = "BundleEntryError";
  }
}

/** The parts of a tar header the index looks at. */
export interface EntryHeader {
  name: string;
  /** modern-tar's type names: `file`, `directory`, `symlink`, `link`, `fifo`, devices… */
  type?: string;
  mode?: number;
  /** Target of a symlink or hard link. */
  linkname?: string;
}

/** What the unpacker is to write for an admitted entry; paths are relative to the version dir. */
export type Admitted =
  | { kind: "root" }
  | { kind: "directory"; path: string; mkdirs: string[]; mode: number }
  | { kind: "file"; path: string; mkdirs: string[]; mode: number }
  | { kind: "symlink"; path: string; mkdirs: string[]; target: string }
  | { kind: "hardlink"; path: string; mkdirs: string[]; target: string };

type _Kind = "dir" | "implicit-dir" | "file" | "symlink";

/** Modes kept within 0755: setuid, setgid, sticky and group/other write dropped. */
export function safeMode(mode: number | undefined, fallback: number): number {
  return (mode ?? fallback) & 0o755;
}

/** `./a/b/` → `a/b`; `./` and `.` → "" (the version directory itself). */
function _clean(name: string): string {
  let n = name;
  while (n.startsWith("./")) n = n.slice(2);
  if (n === ".") n = "";
  while (n.endsWith("/")) n = n.slice(0, -1);
  return n;
}

/** Every path of one bundle so far and what it is. */
export class BundleIndex {
  readonly #kinds = new Map<string, _Kind>();
  readonly #symlinks = new Map<string, string>();
  /** Where each symlink leads (segments below the version dir), once resolved; null: out or a loop. */
  readonly #resolved = new Map<string, string[] | null>();
  #entries = 0;

  /** Create an index allowing at most `maxEntries` entries. */
  constructor(readonly maxEntries = MAX_BUNDLE_ENTRIES) {}

  /** Entries seen so far (the refused one included). */
  get entries(): number {
    return this.#entries;
  }

  /** Regular files (hard links included) admitted so far. */
  get files(): number {
    let n = 0;
    for (const k of this.#kinds.values()) if (k === "file") n++;
    return n;
  }

  /** Decide on the next entry; throws {@linkcode BundleEntryError} when it is refused. */
  admit(h: EntryHeader): Admitted {
    const refuse = (reason: string): never => {
      throw new BundleEntryError(h.name, reason);
    };
    if (++this.#entries > this.maxEntries) {
      refuse(`is one entry more than the ${this.maxEntries} a bundle may have`);
    }
    const type = h.type ?? "file";
    if (!["file", "directory", "symlink", "link"].includes(type)) {
      refuse(`is a ${type}; a bundle holds only files, directories and links`);
    }
    const path = _clean(h.name);
    if (path === "" && !h.name.startsWith("/")) {
      if (type === "directory") return { kind: "root" };
      refuse("names the version directory itself");
    }
    const why = checkBundlePath(path === "" ? h.name : path);
    if (why !== null) refuse(why);
    if (path === ARTIFACT_RECORD) refuse(`uses ${ARTIFACT_RECORD}, the agent's own record`);
    const mkdirs = this.#parents(path, refuse);
    const had = this.#kinds.get(path);
    if (had !== undefined && !(had === "implicit-dir" && type === "directory")) {
      refuse(
        had === "implicit-dir"
          ? "is a directory of earlier entries; two entries may not have one path"
          : "repeats the path of an earlier entry; two entries may not have one path",
      );
    }
    switch (type) {
      case "directory":
        this.#kinds.set(path, "dir");
        return { kind: "directory", path, mkdirs, mode: safeMode(h.mode, 0o755) | 0o700 };
      case "file":
        this.#kinds.set(path, "file");
        return { kind: "file", path, mkdirs, mode: safeMode(h.mode, 0o644) };
      case "symlink": {
        const target = h.linkname ?? "";
        if (target === "") refuse("is a symlink with an empty target");
        if (target.startsWith("/")) refuse(`is a symlink to the absolute path ${target}`);
        if (target.includes("\0")) refuse("is a symlink whose target contains NUL");
        if (new TextEncoder().encode(target).length > MAX_BUNDLE_PATH_BYTES) {
          refuse(`is a symlink whose target is longer than ${MAX_BUNDLE_PATH_BYTES} bytes`);
        }
        if (_lexical(_dirname(path), target) === null) {
          refuse(`is a symlink to ${target}, which leaves the version directory`);
        }
        this.#kinds.set(path, "symlink");
        this.#symlinks.set(path, target);
        return { kind: "symlink", path, mkdirs, target };
      }
      default: {
        const target = _clean(h.linkname ?? "");
        if (this.#kinds.get(target) !== "file") {
          refuse(
            `is a hard link to ${
              JSON.stringify(h.linkname ?? "")
            }, which is not an earlier regular file of the bundle`,
          );
        }
        this.#kinds.set(path, "file");
        return { kind: "hardlink", path, mkdirs, target };
      }
    }
  }

  /**
   * The directories to create for `path`; refuses a path through a symlink or a file. Each
   * directory made this way counts as an entry: deep paths cannot multiply the limit.
   */
  #parents(path: string, refuse: (reason: string) => never): string[] {
    const segs = path.split("/");
    const mkdirs: string[] = [];
    let prefix = "";
    for (let i = 0; i < segs.length - 1; i++) {
      prefix = i === 0 ? segs[0]! : `${prefix}/${segs[i]}`;
      const k = this.#kinds.get(prefix);
      if (k === "symlink") refuse(`goes through ${prefix}, a symlink of the bundle`);
      if (k === "file") refuse(`goes through ${prefix}, a file of the bundle`);
      if (k === undefined) {
        if (++this.#entries > this.maxEntries) {
          refuse(
            `makes the bundle more than the ${this.maxEntries} entries (with its directories) it may have`,
          );
        }
        this.#kinds.set(prefix, "implicit-dir");
        mkdirs.push(prefix);
      }
    }
    return mkdirs;
  }

  /** The path of the regular file `entrypoint`, or a refusal naming it (SPEC 15). */
  checkEntrypoint(entrypoint: string): string {
    const k = this.#kinds.get(entrypoint);
    if (k === "file") return entrypoint;
    throw new BundleEntryError(
      entrypoint,
      k === undefined
        ? "is the entrypoint but is not in the bundle"
        : `is the entrypoint but is a ${
          k === "symlink" ? "symlink" : "directory"
        }, not a regular file of the bundle`,
    );
  }

  /**
   * Check, once every entry is known, that no symlink resolves outside the
   * version directory when the kernel follows the bundle's other symlinks
   * too (`a -> .` and `b -> a/..` each look harmless alone). Loops are refused.
   */
  checkSymlinks(): void {
    for (const [path, target] of this.#symlinks) {
      let out: string[] | null;
      try {
        out = this.#link(path, 0);
      } catch (e) {
        if (!(e instanceof _TooManyHops)) throw e;
        // Linux gives up (ELOOP) after 40 links; resolving a chain of thousands also overflowed
        // the stack, which made the refusal a retried "unavailable" instead.
        throw new BundleEntryError(
          path,
          `is a symlink to ${target} that goes through more than ${MAX_SYMLINK_HOPS} symlinks of the bundle (the kernel's limit)`,
        );
      }
      if (out === null) {
        throw new BundleEntryError(
          path,
          `is a symlink to ${target}, which leaves the version directory (or loops) through the bundle's symlinks`,
        );
      }
    }
  }

  /**
   * Where the symlink at `path` leads, resolved through the bundle's symlinks (memoized); null:
   * out or a loop. `depth`: symlinks being resolved around this one; past
   * {@linkcode MAX_SYMLINK_HOPS} it throws `_TooManyHops` (so the recursion stays shallow).
   */
  #link(path: string, depth: number): string[] | null {
    if (this.#resolved.has(path)) return this.#resolved.get(path)!;
    if (depth >= MAX_SYMLINK_HOPS) throw new _TooManyHops();
    this.#resolved.set(path, null); // re-entered while resolving: a loop
    const out = this.#walk(_dirname(path), this.#symlinks.get(path)!, depth + 1);
    this.#resolved.set(path, out);
    return out;
  }

  /** Walk `target` from directory `from` (segments), following the bundle's symlinks; null when it leaves. */
  #walk(from: string[], target: string, depth: number): string[] | null {
    let cur = [...from];
    for (const seg of target.split("/")) {
      if (seg === "" || seg === ".") continue;
      if (seg === "..") {
        if (cur.length === 0) return null;
        cur.pop();
        continue;
      }
      cur.push(seg);
      const at = cur.join("/");
      if (this.#symlinks.has(at)) {
        const next = this.#link(at, depth);
        if (next === null) return null;
        cur = [...next];
      }
    }
    return cur;
  }
}

function _dirname(path: string): string[] {
  const segs = path.split("/");
  segs.pop();
  return segs;
}

/** Lexically join `target` onto `from`; null when it climbs above the version directory. */
function _lexical(from: string[], target: string): string[] | null {
  const cur = [...from];
  for (const seg of target.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") {
      if (cur.length === 0) return null;
      cur.pop();
    } else cur.push(seg);
  }
  return cur;
}
