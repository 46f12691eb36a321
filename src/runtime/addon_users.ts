/**
 * Add-on users and the ownership of their files (SPEC 13).
 *
 * - Per-add-on uids come from `isolation.uid_range`; the gid is the same
 *   number. The allocation is recorded in `state.json` (`uids`), stays with
 *   its add-on for good, and is only given to another add-on once the first
 *   one's directory `addons/<id>/` is gone. A uid that belongs to someone
 *   else on the host — a user or group entry (`getent`, so systemd's
 *   dynamic users and LDAP count), or a running process (a service's, or an
 *   escaped process of a removed add-on) — is skipped, never handed out.
 * - `secureAddonTree` sets the modes of SPEC 13: `addons/<id>/`, its
 *   `versions/`, the version that runs and everything in it belong to the
 *   agent's user and the add-on's group (directories and executables `0750`,
 *   other files `0640`), `config.json` is `0640`, and `data/` belongs to the
 *   add-on's uid with mode `0700`. No other local user can traverse the
 *   add-on's directory, so nobody else can run a binary that was granted
 *   file capabilities. Symlinks are never followed.
 *
 * @example Allocate and secure
 * ```ts
 * import { Layout } from "./runtime_root.ts";
 * import { emptyState } from "./state.ts";
 * const layout = new Layout("/var/lib/addon-agent");
 * const state = emptyState();
 * const uid = await allocateUid(layout, state, "net-probe", [61000, 61999]);
 * await secureAddonTree(layout, "net-probe", "1.4.2", { uid, gid: uid });
 * ```
 *
 * @module
 */

import { log } from "../common/mod.ts";
import { ensureRealDir } from "./fs_atomic.ts";
import type { Layout } from "./runtime_root.ts";
import type { AgentState } from "./state.ts";

/** Who an add-on runs as; `uid` null: the agent's own user (its files then belong to the agent). */
export interface AddonOwner {
  uid: number | null;
  gid: number | null;
}

/** No uid is free in `isolation.uid_range`. */
export class UidRangeExhaustedError extends Error {
  /** Make the error naming the range. */
  constructor(range: readonly [number, number], options?: { cause?: unknown }) {
    super(
      `isolation.uid_range [${range[0]}, ${range[1]}] has no free uid left; widen it ` +
        "or remove the directories of add-ons that are gone",
      options,
    );
    this.name = "UidRangeExhaustedError";
  }
}

async function _exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * The uid of `addonId`: the one recorded in `state.uids`, else the lowest
 * free one of `range` (recorded in `state` — the caller saves it), creating
 * `addons/<id>/`. A uid recorded for an add-on that is still in `state.addons`
 * or whose directory still exists is never given away.
 */
export async function allocateUid(
  layout: Layout,
  state: AgentState,
  addonId: string,
  range: readonly [number, number],
): Promise<number> {
  const uids = state.uids ??= {};
  // The directory holds the allocation: it exists from now on, and while it does the uid stays.
  await ensureRealDir(layout.addonDir(addonId), 0o750);
  const mine = uids[addonId];
  if (mine !== undefined && mine >= range[0] && mine <= range[1]) return mine;
  // Release uids of add-ons whose files are all gone.
  for (const id of Object.keys(uids)) {
    if (id !== addonId && !state.addons[id] && !(await _exists(layout.addonDir(id)))) {
      delete uids[id];
    }
  }
  // Files under addons/ still owned by a uid keep it taken, recorded or not.
  const owners = new Set<number>();
  try {
    for await (const e of Deno.readDir(layout.addons)) {
      const st = await Deno.lstat(layout.dataDir(e.name)).catch(() => null);
      if (st?.uid !== null && st?.uid !== undefined) owners.add(st.uid);
    }
  } catch {
    // no addons/ yet
  }
  const foreign = new Set<number>();
  for (;;) {
    // Each pick is read and recorded in one synchronous step, so concurrent allocations (add-ons
    // prepared in parallel) see each other's picks, also while this one is being checked.
    const again = uids[addonId];
    if (again !== undefined && again >= range[0] && again <= range[1]) return again;
    const taken = new Set([...Object.values(uids), ...owners, ...foreign]);
    let pick: number | undefined;
    for (let uid = range[0]; uid <= range[1] && pick === undefined; uid++) {
      if (!taken.has(uid)) pick = uid;
    }
    if (pick === undefined) throw new UidRangeExhaustedError(range);
    uids[addonId] = pick;
    const owner = await foreignUidOwner(pick);
    if (owner === null) return pick;
    if (uids[addonId] === pick) delete uids[addonId];
    foreign.add(pick);
    log.warn("skipping a uid of isolation.uid_range that belongs to someone else on this host", {
      addon_id: addonId,
      uid: pick,
      owner,
    });
  }
}

/**
 * Who else on this host has `uid` (or `uid` as a gid): `"user NAME"`,
 * `"group NAME"` (through `getent`, so NSS sources such as systemd's dynamic
 * users count) or `"process PID"` (real, effective, saved or filesystem
 * uid); null when nobody does, or when it cannot be asked (no `sh`).
 * An add-on given such a uid could read that user's files or signal and
 * trace that process.
 *
 * @example
 * ```ts
 * console.log(await foreignUidOwner(65534)); // "user nobody" on Debian
 * ```
 */
export async function foreignUidOwner(uid: number): Promise<string | null> {
  if (!Number.isInteger(uid) || uid < 0) throw new RangeError(`uid ${uid} is not a uid`);
  try {
    const o = await new Deno.Command("/bin/sh", {
      args: ["-c", _FOREIGN_UID_SCRIPT, "addon-agent-uid", String(uid)],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
      clearEnv: true,
      env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL: "C" },
    }).output();
    const line = new TextDecoder().decode(o.stdout).trim();
    return line === "" ? null : line;
  } catch {
    return null;
  }
}

/** One shell for all three questions: a passwd entry, a group entry, a process with the uid. */
const _FOREIGN_UID_SCRIPT = [
  'u="$1"',
  'e=$(getent passwd "$u") && { echo "user ${e%%:*}"; exit 0; }',
  'e=$(getent group "$u") && { echo "group ${e%%:*}"; exit 0; }',
  'f=$(grep -s -l -E "^Uid:([[:space:]]+[0-9]+)*[[:space:]]+$u([[:space:]]|\$)" /proc/[0-9]*/status | head -n 1)',
  '[ -n "$f" ] && { f="${f#/proc/}"; echo "process ${f%/status}"; }',
  "exit 0",
].join("\n");

/** chown (only when it differs: a chown clears file capabilities) and chmod, never through a symlink. */
async function _own(
  path: string,
  uid: number | null,
  gid: number | null,
  mode: (st: Deno.FileInfo) => number,
): Promise<Deno.FileInfo | null> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  if (st.isSymlink) return null;
  const wantUid = uid ?? st.uid;
  const wantGid = gid ?? st.gid;
  if (st.uid !== wantUid || st.gid !== wantGid) await Deno.chown(path, wantUid, wantGid);
  const m = mode(st);
  if (st.mode === null || (st.mode & 0o7777) !== m) await Deno.chmod(path, m);
  return st;
}

const _dirOrFile = (st: Deno.FileInfo): number =>
  st.isDirectory || ((st.mode ?? 0) & 0o111) !== 0 ? 0o750 : 0o640;

async function _tree(path: string, uid: number | null, gid: number | null): Promise<void> {
  const st = await _own(path, uid, gid, _dirOrFile);
  if (!st?.isDirectory) return;
  for await (const e of Deno.readDir(path)) await _tree(`${path}/${e.name}`, uid, gid);
}

/**
 * Give `addons/<id>/` the ownership and modes of SPEC 13 for the add-on
 * running as `owner`, with `version` (when staged) being the one it runs.
 */
export async function secureAddonTree(
  layout: Layout,
  addonId: string,
  version: string | null,
  owner: AddonOwner,
): Promise<void> {
  const agentUid = Deno.uid();
  const gid = owner.gid;
  const dir = () => 0o750;
  await _own(layout.addonDir(addonId), agentUid, gid, dir);
  await _own(layout.versionsDir(addonId), agentUid, gid, dir);
  if (version !== null) await _tree(layout.versionDir(addonId, version), agentUid, gid);
  await _own(layout.configFile(addonId), agentUid, gid, () => 0o640);
  await _own(layout.dataDir(addonId), owner.uid ?? agentUid, gid, () => 0o700);
}

/** The uid and gid of a user name or numeric uid (`id -u`, `id -g`), for `shared` mode. */
export async function resolveUser(user: string): Promise<{ uid: number; gid: number }> {
  const run = async (flag: string): Promise<number> => {
    const o = await new Deno.Command("id", {
      args: [flag, "--", user],
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).output();
    const text = new TextDecoder().decode(o.success ? o.stdout : o.stderr).trim();
    const n = Number(text);
    if (!o.success || !Number.isInteger(n)) {
      throw new Error(`isolation.user ${JSON.stringify(user)} is not a user on this host: ${text}`);
    }
    return n;
  };
  if (/^\d+$/.test(user)) {
    const uid = Number(user);
    const gid = await run("-g").catch(() => uid); // a bare uid without passwd entry: gid = uid
    return { uid, gid };
  }
  return { uid: await run("-u"), gid: await run("-g") };
}
