/**
 * Launch preparation: everything between an assignment and a start —
 * delivery (or the binary already on the host), the one executable check,
 * file capabilities, the add-on's directories and `config.json`, and the
 * clean environment it starts with. Also the fingerprint that decides
 * whether a changed assignment restarts the add-on.
 *
 * @example
 * ```ts
 * import { prepareLaunch } from "./launch.ts";
 * import type { LaunchContext } from "./launch.ts";
 * import type { Assignment } from "../protocol/mod.ts";
 * declare const ctx: LaunchContext;
 * declare const a: Assignment;
 * const launch = await prepareLaunch(ctx, a, {});
 * console.log(launch.binary, launch.env.ADDON_DATA_DIR);
 * ```
 *
 * @module
 */

import {
  type Assignment,
  type Platform,
  platformString,
  supervisionName,
} from "../protocol/mod.ts";
import { applyFileCapabilities, type Launch } from "../supervise/mod.ts";
import { type Deliverer, DeliveryError, type DeliveryHooks } from "../delivery/mod.ts";
import {
  DamagedVersionError,
  ensureRealDir,
  lastGoodSha256,
  type Layout,
  quarantineVersion,
  StagedVerifier,
  writeFileAtomicIfChanged,
} from "../runtime/mod.ts";
import { type Clock, sha256Hex } from "../common/mod.ts";
import type { AddonIsolation } from "./isolation.ts";
import { checkHostBinary } from "./host_binaries.ts";

/**
 * The fields whose change makes an add-on restart, as a sha256 (hex): it is
 * kept in `state.json` and shown in status, so it must not carry env, args
 * or config values.
 */
export function fingerprint(a: Assignment): string {
  return sha256Hex(JSON.stringify([
    a.version,
    a.delivery,
    supervisionName(a),
    a.artifact?.sha256 ?? a.binary_path ?? null,
    a.binary_name,
    a.artifact?.bundle?.entrypoint ?? null,
    a.args,
    a.env,
    a.config,
    a.capabilities,
    a.schedule ?? null,
    a.timeout_s ?? null,
    // Appended only when set, so assignments without limits keep their fingerprint.
    ...(a.resources !== undefined ? [a.resources] : []),
  ]));
}

/** Variables an add-on inherits from the agent; nothing else (no credentials) is passed on. */
export const INHERITED_ENV = ["PATH", "LANG", "LC_ALL", "TZ"] as const;
const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** The environment every add-on starts from (then its own `env`, then `ADDON_*`). */
export function baseEnvironment(): Record<string, string> {
  const out: Record<string, string> = { PATH: DEFAULT_PATH };
  for (const k of INHERITED_ENV) {
    try {
      const v = Deno.env.get(k);
      if (v !== undefined) out[k] = v;
    } catch {
      // not allowed by the permission set: keep the default
    }
  }
  return out;
}

export { checkExecutable } from "./host_binaries.ts";

/** How the binary of a host without an artifact for its platform is named in errors. */
export function hostBinaryLabel(platform: Platform): string {
  return `no artifact for ${platformString(platform)}, and binary_path`;
}

/** What launch preparation needs. */
export interface LaunchContext {
  layout: Layout;
  platform: Platform;
  deliverer: Deliverer;
  clock: Clock;
  /** Checks staged bytes before they run (SPEC 8); absent: a verifier of this preparation only. */
  verifier?: StagedVerifier;
  /** Users, file modes, cgroups (SPEC 13); absent: add-ons run as the agent, unconfined. */
  isolation?: AddonIsolation;
  /** `host_binaries.allow` (SPEC 12); absent: a source may name no host binary. */
  hostBinaries?: readonly string[];
}

/** Progress of a preparation: delivery phases and bytes, and a finished download. */
export interface PrepareHooks extends DeliveryHooks {
  /** The artifact was fetched from the store (not already staged). */
  onDownloaded?(d: { at: string; duration_ms: number; bytes: number }): void;
  /** Staged bytes were found damaged just before a restart (they did not run). */
  onDamaged?(e: DamagedVersionError): void;
}

/**
 * Deliver, check, grant capabilities and write `config.json`: everything before a start.
 *
 * @throws {DeliveryError} when the assignment cannot be delivered or its binary cannot run
 */
export async function prepareLaunch(
  ctx: LaunchContext,
  a: Assignment,
  hooks: PrepareHooks,
): Promise<Launch> {
  const layout = ctx.layout;
  let binary = "";
  let staged = false;
  let preflight: (() => Promise<void>) | undefined;
  if (a.supervision !== "config_toggle") {
    if (a.delivery === "os_package") {
      binary = await checkHostBinary(a.binary_path ?? "", "binary_path", _policy(ctx, a));
    } else {
      const t0 = ctx.clock.now();
      const verifier = ctx.verifier ?? new StagedVerifier();
      const damage = a.artifact ? await healStaged(ctx.layout, verifier, a) : null;
      let d;
      try {
        d = await ctx.deliverer.deliver(a, {
          ...(hooks.onPhase ? { onPhase: hooks.onPhase } : {}),
          ...(hooks.onProgress ? { onProgress: hooks.onProgress } : {}),
          ...(hooks.signal ? { signal: hooks.signal } : {}),
        });
      } catch (e) {
        if (damage === null || !(e instanceof DeliveryError)) throw e;
        throw new DeliveryError(`${damage}; fetching it again failed: ${e.message}`, {
          kind: e.kind,
          cause: e,
        });
      }
      if (a.artifact && d.source !== "host_binary") {
        if (d.source === "downloaded") await verifier.remember(d.binary, a.artifact.sha256);
        verifier.stagedAs(layout.versionDir(a.addon_id, a.version), a.artifact.sha256);
        verifier.healed(a.addon_id, a.version);
      }
      binary = d.source === "host_binary"
        ? await checkHostBinary(d.binary, hostBinaryLabel(ctx.platform), _policy(ctx, a))
        : d.binary;
      staged = d.source !== "host_binary";
      if (staged && a.artifact) preflight = _preflight(layout, verifier, a, hooks);
      if (d.source === "downloaded") {
        hooks.onDownloaded?.({
          at: new Date(ctx.clock.now()).toISOString(),
          duration_ms: ctx.clock.now() - t0,
          bytes: d.fetched,
        });
      }
    }
    if (a.capabilities.length > 0 && a.supervision === "agent_sidecar" && !staged) {
      throw new DeliveryError(
        `capabilities ${
          a.capabilities.join(", ")
        } can only be granted to a binary the agent staged, not to ${binary}`,
        { kind: "refused" },
      );
    }
  }
  await ensureRealDir(layout.addonDir(a.addon_id), 0o750);
  await ensureRealDir(layout.dataDir(a.addon_id), 0o700);
  // The add-on's config may hold secrets: never world-readable (SPEC 12).
  await writeFileAtomicIfChanged(
    layout.configFile(a.addon_id),
    JSON.stringify(a.config, null, 2) + "\n",
    0o640,
  );
  // Owner and modes first: a chown clears file capabilities, so setcap comes after.
  const placed = await ctx.isolation?.place(a, staged ? a.version : null);
  if (a.capabilities.length > 0 && a.supervision === "agent_sidecar") {
    await applyFileCapabilities(binary, a.capabilities);
  }
  const launch = launchFor(layout, a, binary);
  if (placed) {
    if (placed.confine) launch.confine = placed.confine;
    launch.cgroup = placed.stopAll;
    launch.bounding = placed.bounding;
  }
  if (preflight) launch.preflight = preflight;
  return launch;
}

function _policy(ctx: LaunchContext, a: Assignment) {
  return {
    allow: ctx.hostBinaries ?? [],
    fromOverride: a.binary_from_override === true,
    env: a.env,
    envFromOverride: a.env_from_override === true,
  };
}

/**
 * The check before every restart of a staged version (SPEC 8): cheap while
 * the file's identity is unchanged (cached), a re-hash otherwise; damaged
 * bytes never run, and `onDamaged` lets the add-on's slot heal the version.
 */
function _preflight(
  layout: Layout,
  verifier: StagedVerifier,
  a: Assignment,
  hooks: PrepareHooks,
): () => Promise<void> {
  return async () => {
    try {
      const found = await verifier.check(layout, a.addon_id, {
        version: a.version,
        binary_name: a.binary_name,
        sha256: a.artifact!.sha256,
        format: a.artifact!.bundle?.format ?? "binary",
      });
      if (found !== "intact") {
        throw new DamagedVersionError(
          a.addon_id,
          a.version,
          found === "absent" ? "it is no longer staged" : "its artifact.json names other bytes",
        );
      }
    } catch (e) {
      if (e instanceof DamagedVersionError) hooks.onDamaged?.(e);
      throw e;
    }
  };
}

/**
 * Self-healing before a start (SPEC 8): check the staged bytes of `a`; a
 * damaged version is moved out of `versions/` so the delivery that follows
 * fetches it again. Returns the damage (this time or remembered from an
 * earlier attempt whose fetch failed), or null.
 *
 * @example Before a delivery of `a`
 * ```ts
 * import { healStaged } from "./launch.ts";
 * import { Layout, StagedVerifier } from "../runtime/mod.ts";
 * import type { Assignment } from "../protocol/mod.ts";
 * declare const a: Assignment;
 * const damage = await healStaged(new Layout("/var/lib/addon-agent"), new StagedVerifier(), a);
 * if (damage !== null) console.log(`fetching again: ${damage}`);
 * ```
 */
export async function healStaged(
  layout: Layout,
  verifier: StagedVerifier,
  a: Assignment,
): Promise<string | null> {
  try {
    await verifier.check(layout, a.addon_id, {
      version: a.version,
      binary_name: a.binary_name,
      sha256: a.artifact!.sha256,
      format: a.artifact!.bundle?.format ?? "binary",
      known: await lastGoodSha256(layout, a.addon_id, a.version) === a.artifact!.sha256,
    });
  } catch (e) {
    if (!(e instanceof DamagedVersionError)) throw e;
    verifier.noteDamaged(a.addon_id, a.version, e.message);
    verifier.forget(layout.versionDir(a.addon_id, a.version));
    await quarantineVersion(layout, a.addon_id, a.version, e.reason);
  }
  return verifier.damaged(a.addon_id, a.version);
}

/** The launch of `a` running `binary`: arguments, environment, working and data directories. */
export function launchFor(layout: Layout, a: Assignment, binary: string): Launch {
  return {
    assignment: a,
    fingerprint: fingerprint(a),
    addon_id: a.addon_id,
    version: a.version,
    binary,
    args: a.args,
    env: {
      ...baseEnvironment(),
      ...a.env,
      ADDON_ID: a.addon_id,
      ADDON_VERSION: a.version,
      ADDON_CONFIG_FILE: layout.configFile(a.addon_id),
      ADDON_DATA_DIR: layout.dataDir(a.addon_id),
    },
    cwd: layout.dataDir(a.addon_id),
    dataDir: layout.dataDir(a.addon_id),
    configFile: layout.configFile(a.addon_id),
  };
}
