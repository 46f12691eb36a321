/**
 * Delivery of one assignment: store → verify → stage → switch `current`.
 *
 * Bytes reach `versions/<version>/` only after their sha256 and signature
 * checks passed on exactly those bytes; a version already staged with the
 * same sha256 is never downloaded again, and one staged with other bytes is
 * a conflict, never overwritten.
 *
 * @example Deliver and activate
 * ```ts
 * import type { Assignment } from "../protocol/mod.ts";
 * import { activate } from "../runtime/mod.ts";
 * declare const ctx: DeliveryContext;
 * declare const assignment: Assignment;
 * try {
 *   await deliver(ctx, assignment);
 *   await activate(ctx.layout, assignment.addon_id, assignment.version);
 * } catch (e) {
 *   if (e instanceof DeliveryError && e.kind === "unavailable") console.log("retry soon");
 *   else throw e;
 * }
 * ```
 *
 * @module
 */

import {
  type Assignment,
  type Platform,
  platformString,
  verifyStatement,
} from "../protocol/mod.ts";
import type { AgentConfig } from "../config/mod.ts";
import { DownloadError, type DownloadLease, Downloads } from "./download.ts";
import { BundleEntryError } from "./bundle_index.ts";
import { unpackBundle } from "./unpack.ts";
import {
  assertRealDir,
  ensureRealDir,
  fsyncDir,
  type Layout,
  removeIfExists,
  type StagedArtifact,
  writeFileAtomic,
} from "../runtime/mod.ts";
import { KindedError, log } from "../common/mod.ts";
import { type ObjectStore, openObjectStore, storeContextOf } from "../store/mod.ts";

/**
 * Why an assignment could not be delivered:
 * - `unavailable`: the store, the network or the disk failed, or the object is not in the
 *   store yet; a later attempt may succeed (and resumes the partial).
 * - `integrity`: the store's bytes are not the assigned ones (sha256 mismatch).
 * - `refused`: the signature policy, a limit or the host refuses it (bad or missing
 *   signature, no artifact for this platform and no usable host binary, too large, a bundle
 *   entry that SPEC 15 refuses).
 * - `conflict`: the runtime root holds something else under that version (staged with other
 *   bytes, a planted symlink or file, a damaged staged version); a person must look.
 *
 * Only `unavailable` can pass without a change to the store, the assignment, the
 * configuration or the runtime root.
 */
export type DeliveryErrorKind = "unavailable" | "integrity" | "refused" | "conflict";

/**
 * Why an assignment could not be delivered, with a reason a person can act on.
 *
 * @example Classify a failure
 * ```ts
 * const e = new DeliveryError("1.0.0 is staged with sha256 aa…", { kind: "conflict" });
 * console.log(e.kind === "unavailable" ? "retry soon" : `needs a person: ${e.message}`);
 * ```
 */
export class DeliveryError extends KindedError<DeliveryErrorKind> {
  override readonly name = "DeliveryError";
}

/** What delivery needs from the rest of the agent. */
export interface DeliveryContext {
  layout: Layout;
  store: ObjectStore;
  downloads: Downloads;
  trust: AgentConfig["trust"];
  limits: AgentConfig["limits"];
  platform: Platform;
  /** Progress of a running download, for status reports. */
  onProgress?: (addonId: string, bytes: number, total: number) => void;
  /** The delivery moved on to a new phase. */
  onPhase?: (addonId: string, phase: "downloading" | "verifying") => void;
  /** The caller no longer wants this delivery (a new assignment): its download is abandoned. */
  signal?: AbortSignal;
}

/** Build the delivery context for a configuration (the S3 SDK loads only for an S3 store). */
export async function deliveryContext(
  cfg: AgentConfig,
  layout: Layout,
  platform: Platform,
): Promise<DeliveryContext> {
  return {
    layout,
    store: await openObjectStore(cfg.object_store, storeContextOf(cfg)),
    downloads: new Downloads(),
    trust: cfg.trust,
    limits: cfg.limits,
    platform,
  };
}

/** The executable an assignment runs, once delivered. */
export interface Delivered {
  /**
   * Path of the executable to run. For `host_binary` it is the assignment's `binary_path`,
   * not yet checked: the caller checks it is an executable file before running it.
   */
  binary: string;
  /** sha256 of the staged bytes, when the agent staged them. */
  sha256?: string;
  /** Bytes fetched from the store by this delivery (0 when already staged). */
  fetched: number;
  /** How the binary got here. */
  source: "staged" | "downloaded" | "host_binary";
}

/**
 * The add-on's staged artifact record, or null when that version is not staged.
 *
 * @throws {DeliveryError} `conflict` when `versions/<version>` is not a real directory or its
 * `artifact.json` is unreadable.
 */
export async function readStaged(
  layout: Layout,
  addonId: string,
  version: string,
): Promise<StagedArtifact | null> {
  const dir = layout.versionDir(addonId, version);
  let st: Deno.FileInfo;
  try {
    st = await Deno.lstat(dir);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  if (!st.isDirectory || st.isSymlink) {
    throw new DeliveryError(
      `${dir} is not a real directory (a symlink or a file was planted there); refusing to use or overwrite it`,
      { kind: "conflict" },
    );
  }
  try {
    return JSON.parse(await Deno.readTextFile(`${dir}/artifact.json`)) as StagedArtifact;
  } catch (e) {
    throw new DeliveryError(
      `${dir} exists but its artifact.json is unreadable (${
        (e as Error).message
      }); remove the directory or publish a new version`,
      { kind: "conflict", cause: e },
    );
  }
}

/**
 * Apply the signature policy (SPEC 5) to `a` with bytes of digest `sha256` (null: a host
 * binary, only the policy applies); returns the verifying key, null for an accepted unsigned
 * artifact.
 *
 * @throws {DeliveryError} `refused` when the policy refuses the artifact or no trusted key
 * verifies its signature.
 */
export async function checkSignature(
  ctx: Pick<DeliveryContext, "trust" | "platform">,
  a: Assignment,
  sha256: string | null,
): Promise<string | null> {
  const sig = a.artifact?.signature;
  if (sig !== undefined && ctx.trust.public_keys.length === 0) {
    throw new DeliveryError(
      "the artifact is signed but trust.public_keys is empty; refusing (fail closed): add the publisher's key",
      { kind: "refused" },
    );
  }
  if (sig === undefined) {
    if (ctx.trust.require_signature) {
      throw new DeliveryError(
        sha256 === null
          ? `no artifact for ${
            platformString(ctx.platform)
          } and trust.require_signature is true; the host binary ${
            a.binary_path ?? ""
          } is not run unsigned`
          : "the artifact is unsigned and trust.require_signature is true",
        { kind: "refused" },
      );
    }
    return null;
  }
  if (sha256 === null) return null;
  const key = await verifyStatement(
    {
      addon_id: a.addon_id,
      version: a.version,
      target: platformString(ctx.platform),
      sha256,
    },
    sig,
    ctx.trust.public_keys,
  );
  if (key === null) {
    throw new DeliveryError(
      `the signature does not verify for ${a.addon_id} ${a.version} ${
        platformString(ctx.platform)
      } sha256=${sha256} with any trusted key`,
      { kind: "refused" },
    );
  }
  return key;
}

/** The host's own binary when there is no artifact for this platform; the caller checks it can run. */
async function _hostBinary(ctx: DeliveryContext, a: Assignment): Promise<Delivered> {
  await checkSignature(ctx, a, null);
  const path = a.binary_path;
  if (path === undefined) {
    throw new DeliveryError(`no artifact for ${platformString(ctx.platform)}`, {
      kind: "refused",
    });
  }
  log.warn("no artifact for this platform; running the binary already on the host", {
    addon_id: a.addon_id,
    binary_path: path,
  });
  return { binary: path, fetched: 0, source: "host_binary" };
}

/**
 * Deliver `a` (pushed_artifact): reuse a staged version or download, verify and stage it.
 * Idempotent. Without an artifact for this platform, the host's `binary_path` is used.
 *
 * @throws {DeliveryError} of the kind that says what a retry can do (see
 * {@linkcode DeliveryErrorKind}).
 * @throws {Deno.errors.NotCapable} when this build may not write the runtime root.
 */
export async function deliver(ctx: DeliveryContext, a: Assignment): Promise<Delivered> {
  const ref = a.artifact;
  if (!ref) return _hostBinary(ctx, a);
  const staged = await readStaged(ctx.layout, a.addon_id, a.version);
  const binary = _entryPath(ctx.layout, a);
  if (staged) {
    if (staged.sha256 !== ref.sha256) {
      throw new DeliveryError(
        `${a.version} is staged with sha256 ${staged.sha256}; publish a new version (the assignment says ${ref.sha256})`,
        { kind: "conflict" },
      );
    }
    const stagedFormat = staged.format ?? "binary";
    if (stagedFormat !== (ref.bundle?.format ?? "binary")) {
      throw new DeliveryError(
        `${a.version} is staged as artifact_format ${stagedFormat}; publish a new version (the assignment says ${
          ref.bundle?.format ?? "binary"
        })`,
        { kind: "conflict" },
      );
    }
    const key = await checkSignature(ctx, a, staged.sha256);
    if (staged.key !== null && key === null) {
      throw new DeliveryError(
        `${a.version} was verified by a key that the assignment no longer proves; refusing to run it`,
        { kind: "refused" },
      );
    }
    if (staged.key !== null && !ctx.trust.public_keys.includes(staged.key)) {
      throw new DeliveryError(
        `${a.version} was signed by a key that is no longer in trust.public_keys; not running it`,
        { kind: "refused" },
      );
    }
    return {
      binary: await _stagedBinary(ctx.layout, a),
      sha256: staged.sha256,
      fetched: 0,
      source: "staged",
    };
  }
  // Refuse early what the policy would refuse after the download.
  const refusedUnseen = ref.signature !== undefined
    ? ctx.trust.public_keys.length === 0
    : ctx.trust.require_signature;
  if (refusedUnseen) await checkSignature(ctx, a, ref.sha256);
  let lease;
  ctx.onPhase?.(a.addon_id, "downloading");
  try {
    lease = await ctx.downloads.fetch({
      store: ctx.store,
      layout: ctx.layout,
      key: ref.object_key,
      sha256: ref.sha256,
      maxBytes: ctx.limits.max_artifact_bytes,
      ...(ctx.limits.free_space_margin_bytes !== undefined
        ? { marginBytes: ctx.limits.free_space_margin_bytes }
        : {}),
      onProgress: (b, t) => ctx.onProgress?.(a.addon_id, b, t),
      ...(ctx.signal ? { signal: ctx.signal } : {}),
    });
  } catch (e) {
    if (e instanceof DownloadError) {
      throw new DeliveryError(e.message, { kind: e.kind, cause: e });
    }
    throw e;
  }
  ctx.onPhase?.(a.addon_id, "verifying");
  let keep = false;
  try {
    const key = await checkSignature(ctx, a, ref.sha256);
    if (key === null) {
      log.warn("the artifact is unsigned; staging it because trust.require_signature is false", {
        addon_id: a.addon_id,
        version: a.version,
      });
    }
    await _stage(ctx.layout, a, lease, ctx.limits.max_unpacked_bytes, {
      addon_id: a.addon_id,
      version: a.version,
      sha256: ref.sha256,
      size: lease.size,
      object_key: ref.object_key,
      key,
      staged_at: new Date().toISOString(),
    });
  } catch (e) {
    if (e instanceof BundleEntryError) {
      throw new DeliveryError(`${e.message}; nothing was staged`, { kind: "refused", cause: e });
    }
    if (ref.bundle === undefined || e instanceof DeliveryError) throw e;
    keep = true;
    throw new DeliveryError(
      `unpacking the bundle failed: ${
        (e as Error).message
      }; the verified archive is kept for the next try`,
      { kind: "unavailable", cause: e },
    );
  } finally {
    await lease.release(keep);
  }
  log.info("staged", {
    addon_id: a.addon_id,
    version: a.version,
    sha256: ref.sha256,
    bytes: lease.size,
    fetched: lease.fetched,
  });
  return { binary, sha256: ref.sha256, fetched: lease.fetched, source: "downloaded" };
}

/** What runs: `versions/<v>/<binary_name>`, or a bundle's `versions/<v>/<entrypoint>`. */
function _entryPath(layout: Layout, a: Assignment): string {
  return `${layout.versionDir(a.addon_id, a.version)}/${
    a.artifact?.bundle?.entrypoint ?? a.binary_name
  }`;
}

async function _stagedBinary(layout: Layout, a: Assignment): Promise<string> {
  const path = _entryPath(layout, a);
  // versions/<v> is a directory the agent made: a link planted there is never followed (SPEC 12).
  const vst = await Deno.lstat(layout.versionDir(a.addon_id, a.version)).catch(() => null);
  if (!vst?.isDirectory || vst.isSymlink) {
    throw new DeliveryError(
      `${
        layout.versionDir(a.addon_id, a.version)
      } is not a real directory (a link the agent did not make); the staged version is damaged`,
      { kind: "conflict" },
    );
  }
  const st = await Deno.lstat(path).catch(() => null);
  // A bundle's entrypoint may lie below the bundle's own directories (or its symlinks,
  // which unpacking kept inside the version directory): it must resolve inside it.
  const real = await Deno.realPath(path).catch(() => "");
  const dir = await Deno.realPath(layout.versionDir(a.addon_id, a.version)).catch(() => "");
  if (!st || !st.isFile || dir === "" || !real.startsWith(`${dir}/`)) {
    throw new DeliveryError(
      `${path} is missing or not a regular file; the staged version is damaged`,
      { kind: "conflict" },
    );
  }
  return path;
}

async function _stage(
  layout: Layout,
  a: Assignment,
  lease: DownloadLease,
  maxUnpackedBytes: number,
  record: StagedArtifact,
): Promise<void> {
  // Not world-readable (SPEC 13): the launch gives the add-on's group access.
  await ensureRealDir(layout.addonDir(a.addon_id), 0o750);
  await ensureRealDir(layout.versionsDir(a.addon_id), 0o750);
  const stageDir = `${layout.tmp}/stage-${a.addon_id}-${a.version}-${
    crypto.randomUUID().slice(0, 8)
  }`;
  await Deno.mkdir(stageDir, { mode: 0o750 });
  try {
    const bundle = a.artifact?.bundle;
    if (bundle) {
      const u = await unpackBundle(lease.path, stageDir, {
        ...bundle,
        maxBytes: maxUnpackedBytes,
      });
      record.format = bundle.format;
      record.entrypoint = bundle.entrypoint;
      record.files = u.files;
      record.unpacked_bytes = u.bytes;
      record.entrypoint_sha256 = u.entrypoint_sha256;
    } else {
      const bin = `${stageDir}/${a.binary_name}`;
      // Moved when no other add-on waits for these bytes (no second copy on a small disk);
      // else a copy, never a hard link: two add-ons with identical bytes must not share an
      // inode, or file capabilities and ownership given to one would apply to the other.
      if (!lease.moveTo(bin)) await Deno.copyFile(lease.path, bin);
      await Deno.chmod(bin, 0o750);
    }
    await writeFileAtomic(
      `${stageDir}/artifact.json`,
      JSON.stringify(record, null, 2) + "\n",
      0o640,
    );
    const target = layout.versionDir(a.addon_id, a.version);
    if (await Deno.lstat(target).then(() => true, () => false)) {
      throw new DeliveryError(
        `${target} appeared while staging; refusing to overwrite it`,
        { kind: "conflict" },
      );
    }
    await assertRealDir(layout.versionsDir(a.addon_id));
    await Deno.rename(stageDir, target);
    await fsyncDir(layout.versionsDir(a.addon_id));
  } catch (e) {
    await removeIfExists(stageDir);
    throw e;
  }
}
