/**
 * The host platform in the agent's words (`linux`/`darwin`, `amd64`/`arm64`).
 *
 * @module
 */

/** An operating system name as assignments use it. */
export type Os = "linux" | "darwin";
/** A CPU architecture name as assignments use it. */
export type Arch = "amd64" | "arm64";

/** A platform, `os/arch`. */
export interface Platform {
  os: Os;
  arch: Arch;
}

/** All operating systems the agent knows. */
export const OSES: readonly Os[] = ["linux", "darwin"];
/** All architectures the agent knows. */
export const ARCHES: readonly Arch[] = ["amd64", "arm64"];

/** The platform this agent runs on. */
export function hostPlatform(): Platform {
  const os: Os = Deno.build.os === "darwin" ? "darwin" : "linux";
  const arch: Arch = Deno.build.arch === "aarch64" ? "arm64" : "amd64";
  return { os, arch };
}

/** Format a platform as `os/arch`. */
export function platformString(p: Platform): string {
  return `${p.os}/${p.arch}`;
}
