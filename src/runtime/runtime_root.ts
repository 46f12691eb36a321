/**
 * The runtime root (SPEC 6): its layout, the ownership and mode check, the
 * `agent.lock` that keeps a second agent off, and the start-up clean-up of
 * `tmp/` (only resumable partials named by their sha256 survive).
 *
 * @example Open the runtime root for work
 * ```ts
 * const root = await openRuntimeRoot("/var/lib/addon-agent");
 * try {
 *   console.log(root.addonDir("net-probe"));
 * } finally {
 *   root.release();
 * }
 * ```
 *
 * @module
 */

import { unsafeDirectory } from "./root_modes.ts";
import { ensureRealDir, sweepAtomicTemps } from "./fs_atomic.ts";
import { KindedError, log } from "../common/mod.ts";

/**
 * Why the runtime root cannot be used:
 * - `refused`: it is not a real directory, cannot be created, is owned by someone else or
 *   writable by others (a configuration problem: fix `runtime_root` or the directory).
 * - `locked`: another agent holds `agent.lock` (the configuration is fine).
 */
export type RuntimeRootErrorKind = "refused" | "locked";

/**
 * A refusal to use the runtime root, with a message a person can act on.
 *
 * @example Tell a second agent from a bad directory
 * ```ts
 * try {
 *   await openRuntimeRoot("/var/lib/addon-agent");
 * } catch (e) {
 *   if (e instanceof RuntimeRootError && e.kind === "locked") console.log("already running");
 * }
 * ```
 */
export class RuntimeRootError extends KindedError<RuntimeRootErrorKind> {
  override readonly name = "RuntimeRootError";
}

/** Name of a resumable partial download for a digest. */
export function partialName(sha256: string): string {
  return `${sha256}.partial`;
}

const PARTIAL = /^[0-9a-f]{64}\.partial$/;

/** Paths inside a runtime root. */
export class Layout {
  /** Paths below `root`. */
  constructor(readonly root: string) {}
  /** `tmp/`. */
  get tmp(): string {
    return `${this.root}/tmp`;
  }
  /** `state.json`. */
  get stateFile(): string {
    return `${this.root}/state.json`;
  }
  /** `addons/`. */
  get addons(): string {
    return `${this.root}/addons`;
  }
  /** `addons/<id>`. */
  addonDir(id: string): string {
    return `${this.root}/addons/${id}`;
  }
  /** `addons/<id>/versions`. */
  versionsDir(id: string): string {
    return `${this.addonDir(id)}/versions`;
  }
  /** `addons/<id>/versions/<version>`. */
  versionDir(id: string, version: string): string {
    return `${this.versionsDir(id)}/${version}`;
  }
  /** `addons/<id>/current`. */
  current(id: string): string {
    return `${this.addonDir(id)}/current`;
  }
  /** `addons/<id>/previous`. */
  previous(id: string): string {
    return `${this.addonDir(id)}/previous`;
  }
  /** `addons/<id>/last-good.json`. */
  lastGood(id: string): string {
    return `${this.addonDir(id)}/last-good.json`;
  }
  /** `addons/<id>/config.json`. */
  configFile(id: string): string {
    return `${this.addonDir(id)}/config.json`;
  }
  /** `addons/<id>/data`. */
  dataDir(id: string): string {
    return `${this.addonDir(id)}/data`;
  }
  /** `tmp/<sha256>.partial`. */
  partial(sha256: string): string {
    return `${this.tmp}/${partialName(sha256)}`;
  }
}

/** A runtime root this process holds the lock on. */
export class RuntimeRoot extends Layout {
  readonly #lock: Deno.FsFile;
  /** Wrap `root` whose `agent.lock` is held through `lock`. */
  constructor(root: string, lock: Deno.FsFile) {
    super(root);
    this.#lock = lock;
  }
  /** Release `agent.lock`. */
  release(): void {
    try {
      this.#lock.close();
    } catch {
      // already released
    }
  }
}

/**
 * Refuse a runtime root that is group- or world-writable or owned by another user.
 *
 * @throws {RuntimeRootError} `refused`, saying what to change (`chown`, `chmod go-w`).
 */
export async function checkRuntimeRootOwnership(root: string): Promise<void> {
  const st = await Deno.lstat(root);
  if (st.isSymlink || !st.isDirectory) {
    throw new RuntimeRootError(`runtime root ${root} must be a real directory`, {
      kind: "refused",
    });
  }
  const uid = Deno.uid();
  if (uid !== null && st.uid !== null && st.uid !== uid) {
    throw new RuntimeRootError(
      `runtime root ${root} is owned by uid ${st.uid}, not by this agent (uid ${uid}); chown it`,
      { kind: "refused" },
    );
  }
  if (st.mode !== null && (st.mode & 0o022) !== 0) {
    throw new RuntimeRootError(
      `runtime root ${root} is group- or world-writable (mode ${
        (st.mode & 0o777).toString(8)
      }); chmod go-w ${root}`,
      { kind: "refused" },
    );
  }
}

/**
 * Create (if missing) and check the runtime root, take `agent.lock`, and clean `tmp/`.
 *
 * @throws {RuntimeRootError} `refused` for a root the agent may not use, `locked` while
 * another agent holds `agent.lock`.
 * @throws {NotADirectoryError} when `tmp/` or `addons/` is not a real directory.
 */
export async function openRuntimeRoot(root: string): Promise<RuntimeRoot> {
  try {
    await Deno.mkdir(root, { recursive: true, mode: 0o755 });
  } catch (e) {
    if (!(e instanceof Deno.errors.AlreadyExists)) {
      throw new RuntimeRootError(`cannot create runtime root ${root}: ${(e as Error).message}`, {
        kind: "refused",
        cause: e,
      });
    }
  }
  await checkRuntimeRootOwnership(root);
  // Held through a read-only descriptor: flock needs no write access, and a file open for
  // writing would keep the filesystem busy, so a read-only remount could not happen (SPEC 8).
  const lockPath = `${root}/agent.lock`;
  const lockFile = await Deno.open(lockPath, { read: true }).catch(async (e) => {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    (await Deno.open(lockPath, { write: true, create: true, mode: 0o600 })).close();
    return await Deno.open(lockPath, { read: true });
  });
  if (!(await lockFile.tryLock(true))) {
    lockFile.close();
    throw new RuntimeRootError(
      `another addon-agent holds ${root}/agent.lock; only one agent may use a runtime root`,
      { kind: "locked" },
    );
  }
  const held = new RuntimeRoot(root, lockFile);
  try {
    await ensureRealDir(held.tmp, 0o700);
    await ensureRealDir(held.addons);
    // Whoever can write a directory of the root could plant a link where root writes (SPEC 12).
    const problem = await unsafeDirectory(root);
    if (problem) throw new RuntimeRootError(problem, { kind: "refused" });
    await cleanTmp(held);
    await sweepLitter(held);
  } catch (e) {
    held.release();
    throw e;
  }
  return held;
}

/** Remove everything in `tmp/` except resumable partials named `<sha256>.partial`. */
export async function cleanTmp(layout: Layout, keep?: (sha256: string) => boolean): Promise<void> {
  for await (const e of Deno.readDir(layout.tmp)) {
    const isPartial = e.isFile && PARTIAL.test(e.name);
    if (isPartial && (!keep || keep(e.name.slice(0, 64)))) continue;
    await Deno.remove(`${layout.tmp}/${e.name}`, { recursive: true });
  }
}

/**
 * Remove the temporaries of atomic writes that a crash left wherever the
 * agent writes them inside the runtime root (SPEC 8, "No litter"): beside
 * `state.json`, and in every `addons/<id>/` (last-good.json, config.json,
 * the `current`/`previous` links). Returns the paths removed.
 */
export async function sweepLitter(layout: Layout): Promise<string[]> {
  const dirs = [layout.root];
  try {
    for await (const e of Deno.readDir(layout.addons)) {
      if (e.isDirectory) dirs.push(layout.addonDir(e.name));
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const removed: string[] = [];
  for (const d of dirs) {
    for (const name of await sweepAtomicTemps(d)) removed.push(`${d}/${name}`);
  }
  if (removed.length) log.info("removed temporaries an interrupted write left", { paths: removed });
  return removed;
}
