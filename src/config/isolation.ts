/**
 * The `isolation` key of `agent.json` (SPEC 13): which user add-ons run as,
 * whether they get their own cgroup, and which capabilities an assignment
 * may ask for at all.
 *
 * @example Decode the key (absent: the defaults)
 * ```ts
 * import { ObjectReader } from "../protocol/mod.ts";
 * const r = ObjectReader.of({ isolation: { users: "per_addon" } }, "");
 * const iso = decodeIsolation(r.optObject("isolation"), true);
 * console.log(iso.uid_range); // [61000, 61999]
 * ```
 *
 * @module
 */

import { DecodeError, type ObjectReader } from "../protocol/mod.ts";

/** How add-ons are mapped to users. */
export type UsersMode = "per_addon" | "shared" | "none";

/** The decoded `isolation` key. */
export interface IsolationConfig {
  /** `per_addon`: a uid/gid each; `shared`: all as `user`; `none`: as the agent. */
  users: UsersMode;
  /** The user of `shared` mode: a name or a numeric uid (as text). */
  user?: string;
  /** Inclusive range per-add-on uids (and gids) are taken from. */
  uid_range: [number, number];
  /** `auto`: a cgroup per add-on when the agent's own cgroup v2 is writable. */
  cgroup: "auto" | "off";
  /** The only capabilities an assignment may ask for. */
  allowed_capabilities: string[];
}

/** What an assignment may ask for unless `allowed_capabilities` says otherwise (SPEC 13). */
export const DEFAULT_ALLOWED_CAPABILITIES: readonly string[] = [
  "CAP_NET_RAW",
  "CAP_NET_ADMIN",
  "CAP_NET_BIND_SERVICE",
  "CAP_BPF",
  "CAP_PERFMON",
];

/** The default uid range of per-add-on users. */
export const DEFAULT_UID_RANGE: readonly [number, number] = [61000, 61999];

const CAPABILITY = /^CAP_[A-Z_]+$/;
const USER_NAME = /^[a-z_][a-z0-9_-]{0,31}\$?$|^\d{1,10}$/;

/**
 * Decode `isolation` (absent → defaults). `root` says whether the agent runs
 * as root, which picks the default `users` mode (`per_addon` when root).
 */
export function decodeIsolation(r: ObjectReader | undefined, root: boolean): IsolationConfig {
  const users = r?.has("users")
    ? r.oneOf("users", ["per_addon", "shared", "none"] as const)
    : root
    ? "per_addon"
    : "none";
  const user = r?.optString("user");
  if (users === "shared" && user === undefined) {
    throw new DecodeError(r?.at("user") ?? "isolation.user", 'is required when users is "shared"');
  }
  if (user !== undefined && users !== "shared") {
    throw new DecodeError(r!.at("user"), 'is only used with users "shared"');
  }
  if (user !== undefined && !USER_NAME.test(user)) {
    throw new DecodeError(r!.at("user"), `${JSON.stringify(user)} is not a user name or uid`);
  }
  if (user !== undefined && (user === "root" || /^0+$/.test(user))) {
    throw new DecodeError(
      r!.at("user"),
      "would run every add-on as root, with the agent's secrets in reach; name an unprivileged " +
        'user (users "none" runs add-ons as the agent)',
    );
  }
  let uid_range: [number, number] = [...DEFAULT_UID_RANGE];
  const raw = r?.raw("uid_range");
  if (raw !== undefined) {
    const at = r!.at("uid_range");
    if (
      !Array.isArray(raw) || raw.length !== 2 ||
      !raw.every((n) => typeof n === "number" && Number.isInteger(n))
    ) {
      throw new DecodeError(at, "must be [first, last], two whole numbers");
    }
    const [lo, hi] = raw as [number, number];
    if (lo < 1000 || hi > 2 ** 31 - 2 || lo > hi) {
      throw new DecodeError(
        at,
        `must satisfy 1000 <= first <= last < 2147483647 (no system uids), got [${lo}, ${hi}]`,
      );
    }
    uid_range = [lo, hi];
  }
  const cgroup = r?.has("cgroup") ? r.oneOf("cgroup", ["auto", "off"] as const) : "auto";
  const allowed = r?.optStringArray("allowed_capabilities") ??
    [...DEFAULT_ALLOWED_CAPABILITIES];
  allowed.forEach((c, i) => {
    if (!CAPABILITY.test(c)) {
      throw new DecodeError(
        `${r!.at("allowed_capabilities")}[${i}]`,
        `${JSON.stringify(c)} is not a capability name like CAP_NET_RAW`,
      );
    }
  });
  r?.done();
  const out: IsolationConfig = { users, uid_range, cgroup, allowed_capabilities: allowed };
  if (user !== undefined) out.user = user;
  return out;
}

/** Whether this process runs as root (uid 0); false where the uid is unknown. */
export function runsAsRoot(): boolean {
  try {
    return Deno.uid() === 0;
  } catch {
    return false;
  }
}
