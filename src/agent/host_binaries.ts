/**
 * The `host_binaries` allowlist (SPEC 12): a binary already on the host that
 * an assignment *source* names (`os_package`, or the host fallback of a
 * `pushed_artifact` without an artifact for this platform) runs only when
 * its real path — every symlink resolved — equals an allowed entry, or lies
 * directly in a directory allowed as `dir/*`. By default nothing is allowed:
 * a compromised control plane cannot make root run `/bin/sh -c …`. The local
 * override, an operator's file, may name any absolute path.
 *
 * @example
 * ```ts
 * import { checkHostBinary } from "./host_binaries.ts";
 * const path = await checkHostBinary("/usr/sbin/nft", "binary_path", {
 *   allow: ["/usr/sbin/nft"],
 *   fromOverride: false,
 * });
 * ```
 *
 * @module
 */

import { DeliveryError } from "../delivery/mod.ts";

/**
 * The one check of a binary the agent did not stage (`os_package`, or the host binary a
 * `pushed_artifact` falls back to): an absolute path to an executable regular file the
 * build may read. `what` names it in the error ("binary_path").
 *
 * @example
 * ```ts
 * import { checkExecutable } from "./host_binaries.ts";
 * const path = await checkExecutable("/bin/sh", "binary_path"); // "/bin/sh"
 * ```
 *
 * @returns `path`
 * @throws {DeliveryError} `refused`, naming `what`, the path and what is wrong with it
 */
export async function checkExecutable(path: string, what: string): Promise<string> {
  if (!path.startsWith("/")) {
    throw new DeliveryError(`${what} ${JSON.stringify(path)} must be an absolute path`, {
      kind: "refused",
    });
  }
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) {
      throw new DeliveryError(
        `${what} ${path} is outside what this build may read; add it to permissions.agent.read in deno.json and rebuild`,
        { kind: "refused", cause: e },
      );
    }
    throw new DeliveryError(`${what} ${path} does not exist`, { kind: "refused", cause: e });
  }
  if (!st.isFile || st.mode === null || (st.mode & 0o111) === 0) {
    throw new DeliveryError(`${what} ${path} is not an executable file`, { kind: "refused" });
  }
  return path;
}

/** Who named the binary and what the configuration allows. */
export interface HostBinaryPolicy {
  /** `host_binaries.allow` of `agent.json`. */
  allow: readonly string[];
  /** The local override named this `binary_path` (an operator may name any path). */
  fromOverride: boolean;
  /** The environment it gets; absent: none is checked. */
  env?: Readonly<Record<string, string>>;
  /** The local override set `env` (an operator may pass the loader anything). */
  envFromOverride?: boolean;
}

/**
 * Variables the dynamic loader and libc act on: they load code (`LD_PRELOAD`, `LD_AUDIT`,
 * `LD_LIBRARY_PATH`, `GCONV_PATH`), write files (`LD_DEBUG_OUTPUT`, `MALLOC_TRACE`) or read
 * them (`LOCPATH`, `NLSPATH`, `HOSTALIASES`, …) — glibc's list of what it ignores for setuid
 * programs, less the harmless `TMPDIR`, `TZDIR`, `LOCALDOMAIN` and `RES_OPTIONS`.
 *
 * @example
 * ```ts
 * import { loaderVariable } from "./host_binaries.ts";
 * loaderVariable("LD_PRELOAD"); // true
 * loaderVariable("LOG_LEVEL"); // false
 * ```
 */
export function loaderVariable(name: string): boolean {
  return /^(LD_[A-Za-z0-9_]*|GCONV_PATH|GETCONF_DIR|GLIBC_TUNABLES|HOSTALIASES|LOCPATH|MALLOC_TRACE|NIS_PATH|NLSPATH|RESOLV_HOST_CONF)$/
    .test(name);
}

/**
 * A source's `env` may not hold a {@linkcode loaderVariable} for a host binary: with it, the
 * allowed `/usr/sbin/nft` would load a library of the source's choosing (as root when add-ons
 * run as the agent), so the allowlist would allow everything.
 */
function _checkEnv(path: string, policy: HostBinaryPolicy): void {
  if (policy.envFromOverride) return;
  const bad = Object.keys(policy.env ?? {}).filter(loaderVariable);
  if (bad.length === 0) return;
  throw new DeliveryError(
    `env ${
      bad.join(", ")
    } may not be passed to host binary ${path}: the loader would act on it (load a library, write or read a file of the source's choosing); only the local override may set it`,
    { kind: "refused" },
  );
}

async function _real(path: string): Promise<string | null> {
  try {
    return await Deno.realPath(path);
  } catch {
    return null;
  }
}

/**
 * Whether the real path `real` is allowed by `allow`. Entries are compared as written and
 * with their own symlinks resolved (so `/usr/sbin/nft` also matches where `/usr/sbin` is a
 * link to `/usr/bin`); `dir/*` allows the files directly in `dir`, not below it.
 *
 * @example
 * ```ts
 * import { hostBinaryAllowed } from "./host_binaries.ts";
 * await hostBinaryAllowed("/opt/vendor/bin/tool", ["/opt/vendor/bin/*"]); // true
 * await hostBinaryAllowed("/opt/vendor/bin/sub/tool", ["/opt/vendor/bin/*"]); // false
 * ```
 */
export async function hostBinaryAllowed(real: string, allow: readonly string[]): Promise<boolean> {
  const dir = real.slice(0, real.lastIndexOf("/")) || "/";
  for (const entry of allow) {
    if (entry.endsWith("/*")) {
      const allowed = entry.slice(0, -2);
      if (dir === allowed || dir === await _real(allowed)) return true;
    } else if (real === entry || real === await _real(entry)) {
      return true;
    }
  }
  return false;
}

/**
 * The checks of a binary the agent did not stage: {@linkcode checkExecutable}, no
 * {@linkcode loaderVariable} in a source's `env`, then, unless the override named it, the
 * `host_binaries` allowlist on its real path.
 *
 * A source's binary runs by the real path that was checked, never by the path as named: a
 * link on the way (say in an add-on's own `data/`) swapped after this check, before one of
 * the many later starts, would otherwise make root run whatever it leads to then.
 *
 * @example
 * ```ts
 * import { checkHostBinary } from "./host_binaries.ts";
 * // With /sbin a link to /usr/sbin: "/usr/sbin/nft" is what runs.
 * await checkHostBinary("/sbin/nft", "binary_path", { allow: ["/usr/sbin/nft"], fromOverride: false });
 * ```
 *
 * @returns what runs: the real path of a source's binary; `path` as named for the override's
 * @throws {DeliveryError} `refused`: "host binary /usr/bin/sh is not allowed by host_binaries"
 */
export async function checkHostBinary(
  path: string,
  what: string,
  policy: HostBinaryPolicy,
): Promise<string> {
  await checkExecutable(path, what);
  _checkEnv(path, policy);
  if (policy.fromOverride) return path;
  const real = await _real(path);
  if (real !== null && await hostBinaryAllowed(real, policy.allow)) return real;
  throw new DeliveryError(
    `host binary ${path}${
      real !== null && real !== path ? ` (really ${real})` : ""
    } is not allowed by host_binaries; an assignment source may name only binaries in host_binaries.allow of agent.json (the local override may name any)`,
    { kind: "refused" },
  );
}
