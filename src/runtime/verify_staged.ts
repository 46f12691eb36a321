/**
 * Self-healing of staged versions (SPEC 8): before a version is first
 * launched by this agent process, and whenever its file's identity (device,
 * inode, size, mtime, ctime) changed since it was last verified, the staged
 * bytes are hashed again and must equal the sha256 in `artifact.json`, which
 * must equal the assignment's (for a bundle, SPEC 15, its entrypoint's bytes
 * must equal `entrypoint_sha256` in `artifact.json`). A version whose `artifact.json` or bytes are
 * missing, unreadable or different is *damaged*: its bytes never run, and
 * {@linkcode quarantineVersion} takes it out of `versions/` so it is fetched
 * again as a new delivery. The verified identities are cached, so an add-on
 * that crash-loops is not re-hashed at every restart.
 *
 * @example Check a version before it runs
 * ```ts
 * import { Layout } from "./runtime_root.ts";
 * const layout = new Layout("/var/lib/addon-agent");
 * const verifier = new StagedVerifier();
 * const want = { version: "1.4.2", binary_name: "net-probe", sha256: "ab".repeat(32) };
 * try {
 *   await verifier.check(layout, "net-probe", want);
 * } catch (e) {
 *   if (!(e instanceof DamagedVersionError)) throw e;
 *   await quarantineVersion(layout, "net-probe", "1.4.2"); // fetched again by the next delivery
 * }
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import * as fs from "node:fs";
import { fsyncDir, removeIfExists } from "./fs_atomic.ts";
import { log, NotRegularFileError, openNoFollow } from "../common/mod.ts";
import type { Layout } from "./runtime_root.ts";
import type { StagedArtifact } from "./versions.ts";

/** A staged version whose `artifact.json` or bytes are missing, unreadable or different. */
export class DamagedVersionError extends Error {
  /** Make the error: `reason` says what is wrong with `version` of `addonId`. */
  constructor(
    readonly addonId: string,
    readonly version: string,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(`version ${version} is damaged: ${reason}`, options);
    this.name = "DamagedVersionError";
  }
}

/** What the assignment expects of a staged version. */
export interface StagedExpectation {
  version: string;
  binary_name: string;
  /** The assignment's lowercase hex sha256. */
  sha256: string;
  /** The assignment's `artifact_format` (`binary`, `tar.gz`, `tar.zst`); absent: not compared. */
  format?: string;
  /**
   * The agent knows this version was staged with `sha256` (`last-good.json` says it ran with
   * those bytes): an `artifact.json` naming other bytes was then altered on disk, which is
   * damage, not a version published twice (a conflict). A version this verifier found intact
   * or staged itself is known without this.
   */
  known?: boolean;
}

/** What {@linkcode StagedVerifier.check} found. */
export type StagedCheck =
  /** Not staged: delivery fetches it. */
  | "absent"
  /** Staged, and the bytes are the ones `artifact.json` and the assignment name. */
  | "intact"
  /**
   * Not this room's to judge: the version directory is not a real directory,
   * or `artifact.json` names other bytes than the assignment (a version
   * published twice). Delivery refuses those as conflicts.
   */
  | "conflict";

/** A file changed less than this long ago (ms) is not remembered as verified. */
export const RACY_MS = 2_000;

/** Verified files remembered at most (a few per add-on of a large host). */
export const MAX_REMEMBERED = 4096;

/** A file's identity, timestamps to the nanosecond (SPEC 8: device, inode, size, mtime, ctime). */
function _identity(st: fs.BigIntStats): string {
  return [st.dev, st.ino, st.size, st.mtimeNs, st.ctimeNs].join(":");
}

/** Verifies staged versions, remembering the identity of each file it verified. */
export class StagedVerifier {
  /** `path` → `sha256 identity` of files verified by this process. */
  readonly #verified = new Map<string, string>();
  /** Version directory → the sha256 it was verified or staged with by this process. */
  readonly #stagedAs = new Map<string, string>();
  /** `addon_id version` → why it was found damaged, until it is delivered again. */
  readonly #damaged = new Map<string, string>();
  /** Files hashed so far (for tests and figures: a cached check hashes nothing). */
  hashes = 0;

  /**
   * A verifier that remembers at most `maxRemembered` verified files; `now` is the wall clock
   * (ms) that file timestamps are compared with.
   */
  constructor(
    readonly maxRemembered = MAX_REMEMBERED,
    readonly now: () => number = Date.now,
  ) {}

  /** Remember that `version` of `addonId` was found damaged (`message` says how). */
  noteDamaged(addonId: string, version: string, message: string): void {
    this.#damaged.set(`${addonId} ${version}`, message);
  }

  /** Why `version` of `addonId` was found damaged, while it is not delivered again; else null. */
  damaged(addonId: string, version: string): string | null {
    return this.#damaged.get(`${addonId} ${version}`) ?? null;
  }

  /** `version` of `addonId` is staged and intact again. */
  healed(addonId: string, version: string): void {
    this.#damaged.delete(`${addonId} ${version}`);
  }

  /**
   * Check version `want.version` of `addonId` as staged under `layout`;
   * throws {@linkcode DamagedVersionError} when it is damaged.
   */
  async check(layout: Layout, addonId: string, want: StagedExpectation): Promise<StagedCheck> {
    const dir = layout.versionDir(addonId, want.version);
    let st: Deno.FileInfo;
    try {
      st = await Deno.lstat(dir);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return "absent";
      throw e;
    }
    if (st.isSymlink || !st.isDirectory) return "conflict";
    const damaged = (reason: string, cause?: unknown) =>
      new DamagedVersionError(addonId, want.version, reason, { cause });
    let record: StagedArtifact;
    try {
      record = _decodeRecord(await Deno.readTextFile(`${dir}/artifact.json`));
    } catch (e) {
      throw damaged(`its artifact.json is missing or unreadable (${(e as Error).message})`, e);
    }
    if (record.sha256 !== want.sha256) {
      if (!want.known && this.#stagedAs.get(dir) !== want.sha256) return "conflict";
      throw damaged(
        `its artifact.json names sha256 ${record.sha256}, but the version was staged with ${want.sha256}`,
      );
    }
    if (want.format !== undefined && (record.format ?? "binary") !== want.format) return "conflict";
    // A bundle (SPEC 15): `sha256` is the archive's; the entrypoint's own digest is re-checked.
    const name = record.format !== undefined ? record.entrypoint ?? "" : want.binary_name;
    const expected = record.format !== undefined ? record.entrypoint_sha256 ?? "" : record.sha256;
    if (name === "" || expected === "") {
      throw damaged("its artifact.json names a bundle without its entrypoint and its sha256");
    }
    const path = `${dir}/${name}`;
    let f: fs.promises.FileHandle;
    try {
      // One open, never through a link, never waiting on a FIFO swapped in after a check.
      f = await openNoFollow(path);
    } catch (e) {
      const why = e instanceof NotRegularFileError
        ? "not a regular file: a symbolic link"
        : (e as Error).message;
      throw damaged(`${name} is missing or unreadable (${why})`, e);
    }
    try {
      const st = await f.stat({ bigint: true });
      if (!st.isFile()) throw damaged(`${name} is missing or unreadable (not a regular file)`);
      const modeProblem = _modeProblem(Number(st.mode) & 0o7777);
      if (modeProblem !== null) throw damaged(`${name} ${modeProblem}`);
      const before = _identity(st);
      if (this.#verified.get(path) === `${want.sha256} ${before}`) return "intact";
      this.#verified.delete(path);
      let actual: string;
      try {
        actual = await _hashOpen(f);
      } catch (e) {
        throw damaged(`${name} is unreadable (${(e as Error).message})`, e);
      }
      this.hashes++;
      if (actual !== expected) {
        throw damaged(
          `${name} has sha256 ${actual}, ${
            record.format !== undefined
              ? "artifact.json says"
              : "artifact.json and the assignment say"
          } ${expected}`,
        );
      }
      const later = await f.stat({ bigint: true });
      if (_identity(later) === before && this.#settled(later)) {
        this.#remember(path, `${want.sha256} ${before}`);
      }
      this.stagedAs(dir, want.sha256);
      return "intact";
    } finally {
      await f.close();
    }
  }

  /** Record `path` as verified to hold `sha256` now (the bytes were just staged after their check). */
  async remember(path: string, sha256: string): Promise<void> {
    const st = await fs.promises.lstat(path, { bigint: true });
    if (this.#settled(st)) this.#remember(path, `${sha256} ${_identity(st)}`);
  }

  /**
   * Whether `st`'s identity can be trusted to change with its bytes: file timestamps advance in
   * coarse ticks, so a rewrite within the tick of a check keeps size, mtime and ctime. A file
   * changed less than {@linkcode RACY_MS} ago is hashed again at its next check (as git does
   * with "racily clean" entries).
   */
  #settled(st: fs.BigIntStats): boolean {
    const newest = Number((st.mtimeNs > st.ctimeNs ? st.mtimeNs : st.ctimeNs) / 1_000_000n);
    return newest < this.now() - RACY_MS;
  }

  /** Record that the version in `dir` was staged (or verified) with `sha256` by this process. */
  stagedAs(dir: string, sha256: string): void {
    this.#stagedAs.delete(dir);
    this.#stagedAs.set(dir, sha256);
    while (this.#stagedAs.size > this.maxRemembered) {
      this.#stagedAs.delete(this.#stagedAs.keys().next().value!);
    }
  }

  /** Versions come and go (churn, GC): only the most recently verified files are kept. */
  #remember(path: string, key: string): void {
    this.#verified.delete(path);
    this.#verified.set(path, key);
    while (this.#verified.size > this.maxRemembered) {
      this.#verified.delete(this.#verified.keys().next().value!);
    }
  }

  /** Forget what was verified below `dir` (a version was moved away). */
  forget(dir: string): void {
    this.#stagedAs.delete(dir);
    for (const p of this.#verified.keys()) if (p.startsWith(`${dir}/`)) this.#verified.delete(p);
  }
}

/**
 * What is wrong with the mode of a staged executable (staged `0755`, or `0750` for an isolated
 * add-on), or null: it must stay executable by its owner (else every start fails with "Permission
 * denied"), writable by its owner alone (else anyone may change it between check and exec), and
 * without setuid/setgid (an add-on running as its own user would run it as root).
 */
function _modeProblem(mode: number): string | null {
  const m = mode.toString(8).padStart(4, "0");
  if ((mode & 0o100) === 0) return `is not executable (mode ${m})`;
  if ((mode & 0o022) !== 0) return `is writable by others than its owner (mode ${m})`;
  if ((mode & 0o6000) !== 0) return `has the setuid or setgid bit (mode ${m})`;
  return null;
}

function _decodeRecord(text: string): StagedArtifact {
  const v = JSON.parse(text) as Partial<StagedArtifact> | null;
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error("not an object");
  if (typeof v.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(v.sha256)) {
    throw new Error("sha256 is not 64 lowercase hex digits");
  }
  return v as StagedArtifact;
}

async function _hashOpen(f: fs.promises.FileHandle): Promise<string> {
  const hash = createHash("sha256");
  const buf = new Uint8Array(1 << 20);
  for (;;) {
    const { bytesRead } = await f.read(buf, 0, buf.length, null);
    if (bytesRead === 0) break;
    hash.update(buf.subarray(0, bytesRead));
  }
  return hash.digest("hex");
}

/**
 * Take a damaged version out of `versions/` (SPEC 8): rename it into `tmp/`
 * (one atomic step, so `versions/` never shows a half-removed version), then
 * delete it. `current` or `previous` may dangle until the version is staged
 * again under the same name.
 */
export async function quarantineVersion(
  layout: Layout,
  addonId: string,
  version: string,
  reason = "",
): Promise<void> {
  const dir = layout.versionDir(addonId, version);
  const away = `${layout.tmp}/damaged-${addonId}-${version}-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await Deno.rename(dir, away);
    await fsyncDir(layout.versionsDir(addonId));
    await removeIfExists(away);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    // tmp/ on another filesystem: delete in place.
    await removeIfExists(dir);
  }
  log.error("damaged version moved out of versions/; it will be fetched again", {
    addon_id: addonId,
    version,
    reason,
  });
}
