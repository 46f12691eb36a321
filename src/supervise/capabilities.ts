/**
 * File capabilities for sidecar binaries: `setcap` applies them to a staged
 * executable and `getcap` confirms them. Granting needs `CAP_SETFCAP` in the
 * agent; without it the add-on fails with a reason that says so.
 *
 * @example
 * ```ts
 * await applyFileCapabilities("/var/lib/addon-agent/addons/p/versions/1/p", ["CAP_NET_RAW"]);
 * ```
 *
 * @module
 */

import { readProcText } from "./proc_fs.ts";

const CAP_SETFCAP_BIT = 31n;

/** Why capabilities could not be applied. */
export class CapabilityError extends Error {
  /** Make the error with a reason an operator can act on. */
  constructor(message: string) {
    super(message);
    this.name = "CapabilityError";
  }
}

/** Whether this process holds `CAP_SETFCAP` in its effective set (Linux). */
export function holdsSetfcap(): boolean {
  try {
    const status = readProcText(`/proc/${Deno.pid}/status`);
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
    if (!m) return false;
    return ((BigInt(`0x${m[1]}`) >> CAP_SETFCAP_BIT) & 1n) === 1n;
  } catch {
    return false;
  }
}

/** The `setcap` text for capability names: `cap_net_raw,cap_net_admin+ep`. */
export function capabilityText(caps: readonly string[]): string {
  return `${caps.map((c) => c.toLowerCase()).sort().join(",")}+ep`;
}

async function _run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  try {
    const o = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped", stdin: "null" })
      .output();
    const dec = new TextDecoder();
    return { code: o.code, out: (dec.decode(o.stdout) + dec.decode(o.stderr)).trim() };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new CapabilityError(`${cmd} is not installed (Debian package libcap2-bin)`);
    }
    throw e;
  }
}

/** The file capabilities `getcap` reports for `path` (lowercase names), empty when none. */
export async function fileCapabilities(path: string): Promise<string[]> {
  const r = await _run("getcap", [path]);
  if (r.code !== 0) throw new CapabilityError(`getcap ${path} failed: ${r.out}`);
  const m = /\s(cap_[a-z_,]+)[=+]/.exec(r.out);
  return m ? m[1]!.split(",").sort() : [];
}

/** Apply `caps` to `path` with setcap and confirm with getcap; throws {@linkcode CapabilityError}. */
export async function applyFileCapabilities(path: string, caps: readonly string[]): Promise<void> {
  if (caps.length === 0) return;
  if (!holdsSetfcap()) {
    throw new CapabilityError(
      `capabilities ${caps.join(", ")} requested, but the agent does not hold CAP_SETFCAP; ` +
        "run it with the capabilities profile (packaging/addon-agent-capabilities.conf)",
    );
  }
  const text = capabilityText(caps);
  const r = await _run("setcap", [text, path]);
  if (r.code !== 0) throw new CapabilityError(`setcap ${text} ${path} failed: ${r.out}`);
  const have = await fileCapabilities(path);
  const want = caps.map((c) => c.toLowerCase()).sort();
  if (want.some((c) => !have.includes(c))) {
    throw new CapabilityError(
      `getcap shows ${have.join(",") || "no capabilities"} on ${path} after setcap ${text}`,
    );
  }
}
