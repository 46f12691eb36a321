/**
 * Add-on isolation for the launch (SPEC 13): refuses assignments that ask
 * for capabilities outside `isolation.allowed_capabilities`, allocates the
 * add-on's uid, secures its files, prepares its cgroup and says how the
 * process is to be confined. Sidecars and helpers get all of it; systemd
 * units get the uid and limits; `config_toggle` add-ons run nothing.
 *
 * @example At start, per launch, at stop
 * ```ts
 * import type { AgentConfig } from "../config/mod.ts";
 * import type { Assignment } from "../protocol/mod.ts";
 * import { emptyState, Layout } from "../runtime/mod.ts";
 * declare const cfg: AgentConfig;
 * declare const assignment: Assignment;
 * const layout = new Layout(cfg.runtime_root);
 * const state = emptyState();
 * const iso = await AddonIsolation.open(cfg, layout, state);
 * const refusal = iso.refusal(assignment); // a message naming allowed_capabilities, or null
 * const placed = await iso.place(assignment, "1.4.2"); // uid, files, cgroup
 * // launch with placed.confine and placed.cgroup; then, when the add-on is removed:
 * await iso.release(assignment.addon_id);
 * ```
 *
 * @module
 */

import type { Assignment, Entry } from "../protocol/mod.ts";
import type { AgentConfig } from "../config/mod.ts";
import {
  type AddonCgroup,
  type CgroupTree,
  type Confinement,
  type Containment,
  holdsSetpcap,
  openCgroupTree,
  setprivPath,
  UidContainment,
} from "../supervise/mod.ts";
import {
  type AddonOwner,
  type AgentState,
  allocateUid,
  type Layout,
  resolveUser,
  secureAddonTree,
} from "../runtime/mod.ts";
import { log } from "../common/mod.ts";
import { DeliveryError } from "../delivery/mod.ts";

/** How one add-on is placed: its owner, its confinement and its cgroup. */
export interface Placement {
  owner: AddonOwner;
  /** Absent when the add-on runs unconfined (no setpriv on this host and `users: none`). */
  confine?: Confinement;
  cgroup: AddonCgroup | null;
  /**
   * What ends every process of the add-on at a stop, escaped ones too: the cgroup, else (users
   * `per_addon`, whose uid is the add-on's alone) its uid; null: its process group only.
   */
  stopAll: Containment | null;
  /** Whether the agent may shrink the bounding set. */
  bounding: boolean;
  /** What ends all of its processes; null for `config_toggle` (nothing runs). */
  containment: "cgroup" | "process_group" | null;
  /** Limits not applied, with why. */
  notEnforced: string[];
}

/** Placements under way at once: each may allocate a uid (a shell, a scan of `addons/`). */
const MAX_PLACING = 4;

/** The isolation of every add-on of one agent. */
export class AddonIsolation {
  readonly #cgroups = new Map<string, AddonCgroup>();
  #placing = 0;
  readonly #waiting: (() => void)[] = [];
  #halted = false;

  private constructor(
    readonly cfg: AgentConfig["isolation"],
    readonly layout: Layout,
    readonly state: AgentState,
    readonly tree: CgroupTree | null,
    readonly shared: { uid: number; gid: number } | null,
    readonly bounding: boolean,
    readonly setpriv: boolean,
  ) {}

  /**
   * Set up for `cfg`: resolve a shared user, find a writable cgroup v2
   * (`cgroup: auto`). `host.setpriv` overrides whether util-linux `setpriv`
   * is installed (tests of a host without it).
   */
  static async open(
    cfg:
      & Pick<AgentConfig, "isolation" | "runtime_root">
      & Partial<Pick<AgentConfig, "file" | "source">>,
    layout: Layout,
    state: AgentState,
    host: { setpriv?: boolean } = {},
  ): Promise<AddonIsolation> {
    const iso = cfg.isolation;
    const linux = Deno.build.os === "linux";
    const tree = iso.cgroup === "auto" && linux ? await openCgroupTree(cfg.runtime_root) : null;
    const shared = iso.users === "shared" && iso.user !== undefined
      ? await resolveUser(iso.user)
      : null;
    if (shared?.uid === 0) {
      throw new Error(
        `isolation.user ${JSON.stringify(iso.user)} is uid 0: it would run every add-on as root`,
      );
    }
    const setpriv = linux && (host.setpriv ?? setprivPath() !== null);
    if (!setpriv && (iso.users !== "none" || tree !== null)) {
      log.error(
        "setpriv (util-linux) is not installed: add-ons cannot be given their own user or cgroup",
      );
    }
    if (iso.users !== "none") await _warnReadableSecrets(cfg);
    return new AddonIsolation(iso, layout, state, tree, shared, linux && holdsSetpcap(), setpriv);
  }

  /** What stops add-ons from escaping a stop. */
  get containment(): "cgroup" | "process_group" {
    return this.tree ? "cgroup" : "process_group";
  }

  /** Why `a` is refused (a capability outside `allowed_capabilities`), or null. */
  refusal(a: Assignment): string | null {
    const bad = a.capabilities.filter((c) => !this.cfg.allowed_capabilities.includes(c));
    if (bad.length === 0) return null;
    return `capabilities ${bad.join(", ")} are not in isolation.allowed_capabilities (${
      this.cfg.allowed_capabilities.join(", ") || "empty"
    }); the entry is refused and nothing is granted`;
  }

  /** `entries` with every assignment that `refusal` names turned into a refused entry. */
  screen(entries: Entry[]): Entry[] {
    return entries.map((e) => {
      if (!e.ok) return e;
      const why = this.refusal(e.assignment);
      if (why === null) return e;
      return {
        ok: false,
        addon_id: e.assignment.addon_id,
        path: "capabilities",
        error: why,
      };
    });
  }

  /** The owner `a` runs as: its own uid, the shared user, or the agent. */
  async owner(addonId: string): Promise<AddonOwner> {
    switch (this.cfg.users) {
      case "per_addon": {
        const uid = await allocateUid(this.layout, this.state, addonId, this.cfg.uid_range);
        return { uid, gid: uid };
      }
      case "shared":
        return { uid: this.shared!.uid, gid: this.shared!.gid };
      default:
        return { uid: null, gid: _agentGid() };
    }
  }

  /**
   * Allocate, secure and contain `a` (with `version` the staged version it runs, if any).
   *
   * @throws {DeliveryError} (refused) when `a` would run a process that must switch users but
   *   `setpriv` is not installed: it never runs as the agent's user instead
   */
  async place(a: Assignment, version: string | null): Promise<Placement> {
    // A few at a time, and none once the agent stops: a document of 2,000 add-ons placed all
    // at once spawned 2,000 shells that each scanned addons/, and SIGTERM waited ~100 s for them.
    while (this.#placing >= MAX_PLACING && !this.#halted) {
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    }
    if (this.#halted) {
      throw new DeliveryError("the agent is stopping; the add-on was not placed", {
        kind: "unavailable",
      });
    }
    this.#placing++;
    try {
      return await this.#place(a, version);
    } finally {
      this.#placing--;
      this.#waiting.shift()?.();
    }
  }

  /** Place no more add-ons (the agent is stopping); those waiting to be placed fail at once. */
  halt(): void {
    this.#halted = true;
    for (const wake of this.#waiting.splice(0)) wake();
  }

  async #place(a: Assignment, version: string | null): Promise<Placement> {
    const runsProcess = a.supervision === "agent_sidecar" ||
      a.supervision === "ephemeral_helper";
    const unit = a.supervision === "systemd_service" || a.supervision === "systemd_timer";
    if (runsProcess && !this.setpriv && this.cfg.users !== "none") {
      throw new DeliveryError(
        `isolation.users is "${this.cfg.users}" but setpriv (util-linux) is not installed, so ` +
          "the add-on cannot be started as its own user; it is not started as the agent's " +
          'user instead (install util-linux, or set isolation.users to "none")',
        { kind: "refused" },
      );
    }
    const owner = await this.owner(a.addon_id);
    await secureAddonTree(this.layout, a.addon_id, version, owner);
    let cgroup: AddonCgroup | null = null;
    if (this.tree && runsProcess && this.setpriv) {
      cgroup = await this.tree.prepare(a.addon_id, a.resources);
      this.#cgroups.set(a.addon_id, cgroup);
    }
    const notEnforced = cgroup?.notEnforced.map((n) => `${n.resource}: ${n.reason}`) ??
      (a.resources && runsProcess
        ? Object.keys(a.resources).map((k) => `${k}: not enforced: no cgroup`)
        : []);
    const byUid = cgroup === null && runsProcess && this.setpriv &&
        this.cfg.users === "per_addon" && owner.uid !== null
      ? new UidContainment(a.addon_id, owner.uid)
      : null;
    const out: Placement = {
      owner,
      cgroup,
      stopAll: cgroup ?? byUid,
      bounding: this.bounding,
      // systemd units live in the unit's own cgroup, which systemd ends on stop.
      containment: cgroup || unit ? "cgroup" : runsProcess ? "process_group" : null,
      notEnforced,
    };
    const st = this.state.addons[a.addon_id];
    if (st) {
      if (owner.uid !== null) st.uid = owner.uid;
      else delete st.uid;
      if (out.containment) st.containment = out.containment;
      else delete st.containment;
      if (notEnforced.length) st.resources_not_enforced = notEnforced;
      else delete st.resources_not_enforced;
    }
    // systemd switches a unit's user itself (User=, Group=): no setpriv needed for it.
    if (this.setpriv || unit) {
      out.confine = {
        uid: owner.uid,
        gid: owner.uid === null ? null : owner.gid,
        capabilities: a.capabilities,
        procsFile: cgroup?.procsFile ?? null,
      };
    }
    return out;
  }

  /** Memory and CPU use of every contained add-on, into `state`. */
  refreshUsage(): void {
    for (const [id, cg] of this.#cgroups) {
      const s = this.state.addons[id];
      if (!s) continue;
      const u = cg.usage();
      if (u.memory_bytes !== undefined) s.memory_bytes = u.memory_bytes;
      if (u.cpu_seconds !== undefined) s.cpu_seconds = u.cpu_seconds;
    }
  }

  /** End what is left in the add-on's cgroup and remove it (the add-on was removed or disabled). */
  async release(addonId: string): Promise<void> {
    const cg = this.#cgroups.get(addonId);
    if (!cg) return;
    await cg.end(5_000);
    if (await cg.remove()) this.#cgroups.delete(addonId);
  }

  /** At agent stop: end and remove every add-on cgroup, then the container when it is ours alone. */
  async close(): Promise<void> {
    for (const id of [...this.#cgroups.keys()]) await this.release(id);
    this.tree?.close();
  }

  /**
   * End the processes an earlier (killed) agent left behind: everything in add-on cgroups or,
   * without cgroups, every process of a sidecar's or helper's own uid (`users: per_addon`).
   */
  async endLeftovers(): Promise<void> {
    if (!this.tree) {
      if (this.cfg.users !== "per_addon" || !this.setpriv) return;
      for (const s of Object.values(this.state.addons)) {
        const runsProcess = s.supervision === "agent_sidecar" ||
          s.supervision === "ephemeral_helper";
        if (!runsProcess || s.uid === undefined || this.state.uids?.[s.addon_id] !== s.uid) {
          continue;
        }
        const c = new UidContainment(s.addon_id, s.uid);
        const left = c.members();
        if (left.length === 0) continue;
        log.info("ending processes of an add-on's uid left by an earlier agent", {
          addon_id: s.addon_id,
          uid: s.uid,
          pids: left,
        });
        await c.end(5_000);
      }
      return;
    }
    for (const id of await this.tree.leftovers()) {
      const cg = await this.tree.prepare(id);
      if (!cg.empty()) {
        log.info("ending processes left in an add-on cgroup by an earlier agent", {
          addon_id: id,
          pids: cg.members(),
        });
        await cg.end(5_000);
      }
    }
  }
}

/** Add-ons run as other users: say so when the agent's secrets are readable by every user. */
async function _warnReadableSecrets(cfg: Partial<Pick<AgentConfig, "file" | "source">>) {
  const files = [cfg.file];
  if (cfg.source?.kind === "control_plane") files.push(cfg.source.token_file, cfg.source.key_file);
  for (const f of files) {
    if (f === undefined) continue;
    try {
      const st = await Deno.stat(f);
      if (st.mode !== null && (st.mode & 0o004) !== 0) {
        log.warn("readable by every user, add-ons included; chmod o-r it", { path: f });
      }
    } catch {
      // not there (or not readable under the permission set): nothing to say
    }
  }
}

function _agentGid(): number | null {
  try {
    return Deno.gid();
  } catch {
    return null;
  }
}
