/**
 * The one module that drives systemd for `systemd_service` / `systemd_timer`
 * add-ons: {@linkcode Systemctl} is the narrow interface to `systemctl`, and
 * {@linkcode SystemdUnits} writes an add-on's unit files into the unit
 * directory and converges systemd onto them (install, change, remove).
 *
 * @example Install and later remove an add-on's units
 * ```ts
 * import type { UnitSpec } from "./systemd_unit.ts";
 * declare const spec: UnitSpec; // kind "service" or "timer" (with a schedule)
 * const units = new SystemdUnits("/etc/systemd/system", commandSystemctl());
 * await units.install(spec); // writes addon-agent-<id>.service, enable --now
 * await units.install(spec); // unchanged: no systemctl calls
 * await units.remove(spec.addon_id); // disable --now, delete, daemon-reload
 * ```
 *
 * @module
 */

import { isAtomicTemp, removeIfExists, writeFileAtomic } from "../runtime/mod.ts";
import { log } from "../common/mod.ts";
import {
  renderService,
  renderTimer,
  type TimerSpec,
  UNIT_PREFIX,
  type UnitNames,
  unitNames,
  type UnitSpec,
} from "./systemd_unit.ts";

/**
 * What the agent asks of systemd. Every method resolves once systemctl has
 * done the work (the job finished) and rejects with an Error naming the
 * command and carrying its stderr otherwise; none of them is retried here.
 * `enableNow` and `disableNow` are idempotent on systemd's side (an enabled,
 * running unit stays so); `restart` starts a stopped unit. Unit names are
 * full names (`addon-agent-x.service`) and are passed as one argument each.
 */
export interface Systemctl {
  /** `systemctl daemon-reload`: make systemd read changed unit files. */
  daemonReload(): Promise<void>;
  /** `systemctl enable --now <unit>`: enable at boot and start now. */
  enableNow(unit: string): Promise<void>;
  /** `systemctl restart <unit>`: stop (if running) and start again with the current unit file. */
  restart(unit: string): Promise<void>;
  /** `systemctl disable --now <unit>`: stop now and no longer start at boot. */
  disableNow(unit: string): Promise<void>;
}

/** A systemctl command that failed: its argv, exit code and stderr. */
export class SystemctlError extends Error {
  /** Make the error for `command` (argv) that exited with `code` and wrote `stderr`; keeps the `cause`. */
  constructor(
    readonly command: string[],
    readonly code: number | null,
    readonly stderr: string,
    options?: { cause?: unknown },
  ) {
    super(
      `${command.join(" ")} failed` + (code === null ? "" : ` (exit ${code})`) +
        (stderr.trim() ? `: ${stderr.trim()}` : ""),
      options?.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "SystemctlError";
  }
}

/** Options of {@linkcode commandSystemctl}. */
export interface CommandSystemctlOptions {
  /** Variables added to (or overriding) the agent's environment; `PATH` also decides where `bin` is found. */
  env?: Record<string, string>;
  /** Kill a systemctl command still running after this long (default 120 s). */
  timeoutMs?: number;
}

/** A {@linkcode Systemctl} running the real binary `bin` (looked up on `PATH`) via `Deno.Command`. */
export function commandSystemctl(
  bin = "systemctl",
  opts: CommandSystemctlOptions = {},
): Systemctl {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const run = async (...args: string[]): Promise<void> => {
    const argv = [bin, ...args];
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command(bin, {
        args,
        env: opts.env,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(timeoutMs),
      }).output();
    } catch (e) {
      throw new SystemctlError(argv, null, e instanceof Error ? e.message : String(e), {
        cause: e,
      });
    }
    if (!out.success) {
      const stderr = new TextDecoder().decode(out.stderr);
      const why = out.signal ? `killed by ${out.signal}` : "";
      throw new SystemctlError(argv, out.code, [stderr, why].filter((s) => s).join(" "));
    }
  };
  return {
    daemonReload: () => run("daemon-reload"),
    enableNow: (unit) => run("enable", "--now", unit),
    restart: (unit) => run("restart", unit),
    disableNow: (unit) => run("disable", "--now", unit),
  };
}

/** Outcome of {@linkcode SystemdUnits.install}. */
export interface InstallResult {
  /** Whether any unit file was written or removed. */
  changed: boolean;
}

/**
 * The unit files of `systemd_*` add-ons in one unit directory, and systemd
 * brought in line with them. Calls are serialized. Contracts:
 *
 * - `install` is idempotent: it writes a unit file (atomically) only when its
 *   content differs, runs `daemon-reload` when a file changed, `enable --now`
 *   when the unit is new, and `restart` when an installed unit changed; a
 *   repeated install with the same spec makes no systemctl call. The first
 *   install of an add-on by this instance (e.g. after an agent restart, or a
 *   crash between writing and enabling) also reloads and enables, so systemd
 *   converges whatever state the previous run left.
 * - `remove` stops and disables the add-on's units, deletes the files and
 *   reloads; removing an add-on without unit files is a no-op. A failing
 *   `disable --now` leaves the files in place (the caller retries).
 * - The add-on's data directory must exist before `install`: systemd refuses
 *   to start a unit whose `ReadWritePaths=` is missing.
 */
export class SystemdUnits {
  #queue: Promise<unknown> = Promise.resolve();
  /** Primary units (service or timer) this instance has brought to their written state. */
  readonly #converged = new Set<string>();

  /** Manage units in `unitDir` (a real directory, e.g. `/etc/systemd/system`) through `systemctl`. */
  constructor(readonly unitDir: string, readonly systemctl: Systemctl) {}

  /** Write the add-on's unit file(s) when they differ and enable/restart as needed (idempotent). */
  install(spec: UnitSpec): Promise<InstallResult> {
    return this.#serialize(() => this.#install(spec));
  }

  /** Disable and stop the add-on's units, delete their files, reload; a no-op when there are none. */
  remove(addonId: string): Promise<void> {
    return this.#serialize(async () => {
      await this.#remove(addonId, unitNames(addonId));
    });
  }

  /**
   * Remove the temporaries of unit writes a crash left in the unit directory
   * (only `.addon-agent-….tmp` files: other software's files stay). Returns
   * the names removed.
   */
  sweepTemps(): Promise<string[]> {
    return this.#serialize(async () => {
      const removed: string[] = [];
      const dir = this.unitDir.replace(/\/+$/, "");
      try {
        for await (const e of Deno.readDir(dir)) {
          if (!e.isFile || !e.name.startsWith(`.${UNIT_PREFIX}`) || !isAtomicTemp(e.name)) continue;
          await removeIfExists(`${dir}/${e.name}`);
          removed.push(e.name);
        }
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
      if (removed.length) {
        log.info("removed temporaries an interrupted unit write left", { removed });
      }
      return removed;
    });
  }

  #serialize<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(fn, fn);
    this.#queue = next.catch(() => {});
    return next;
  }

  async #install(spec: UnitSpec): Promise<InstallResult> {
    const names = unitNames(spec.addon_id);
    // Render first: an unrepresentable spec is refused before anything is touched.
    const files: [string, string][] = [[names.service, renderService(spec)]];
    if (spec.kind === "timer") {
      if (spec.schedule === undefined) {
        throw new Error(`addon ${spec.addon_id}: a systemd_timer needs a schedule`);
      }
      files.push([names.timer, renderTimer(spec as TimerSpec)]);
    }
    const primary = spec.kind === "timer" ? names.timer : names.service;
    let removed = false;
    const serviceOld = await this.#read(names.service);
    const timerOld = await this.#read(names.timer);
    // Switching between service and timer: take the old units down completely first.
    if (
      (spec.kind === "service" && timerOld !== null) ||
      (spec.kind === "timer" && timerOld === null && serviceOld !== null)
    ) {
      log.info("systemd unit kind changed; removing the old units", {
        addon_id: spec.addon_id,
        kind: spec.kind,
      });
      removed = await this.#remove(spec.addon_id, names);
    }
    const primaryExisted = !removed && (spec.kind === "timer" ? timerOld : serviceOld) !== null;
    const wasConverged = this.#converged.has(primary);
    this.#converged.delete(primary);
    let written = false;
    for (const [name, content] of files) {
      const old = removed ? null : name === names.timer ? timerOld : serviceOld;
      const mode = unitFileMode(content);
      if (old === content) {
        await _tightenMode(this.#path(name), mode);
        continue;
      }
      await writeFileAtomic(this.#path(name), content, mode);
      written = true;
      log.info(old === null ? "systemd unit written" : "systemd unit changed", {
        addon_id: spec.addon_id,
        unit: name,
        version: spec.version,
      });
    }
    if (written || !wasConverged) await this.systemctl.daemonReload();
    if (!primaryExisted || !wasConverged) await this.systemctl.enableNow(primary);
    if (written && primaryExisted) await this.systemctl.restart(primary);
    this.#converged.add(primary);
    return { changed: written || removed };
  }

  /** Returns whether any unit file was there (and so was removed). */
  async #remove(addonId: string, names: UnitNames): Promise<boolean> {
    // The timer first, so it cannot start the service again once that is stopped.
    const present: string[] = [];
    for (const name of [names.timer, names.service]) {
      if (await this.#read(name) !== null) present.push(name);
    }
    if (present.length === 0) return false;
    const converged = present.some((n) => this.#converged.has(n));
    // Files written but never loaded (a crash before daemon-reload) are unknown to systemd.
    if (!converged) await this.systemctl.daemonReload();
    for (const name of present) this.#converged.delete(name);
    for (const name of present) await this.systemctl.disableNow(name);
    for (const name of present) await removeIfExists(this.#path(name));
    await this.systemctl.daemonReload();
    log.info("systemd units removed", { addon_id: addonId, units: present });
    return true;
  }

  #path(name: string): string {
    return `${this.unitDir.replace(/\/+$/, "")}/${name}`;
  }

  async #read(name: string): Promise<string | null> {
    try {
      return await Deno.readTextFile(this.#path(name));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw e;
    }
  }
}

/**
 * The mode of a unit file: `0600` when it carries `Environment=` (the add-on's
 * env may hold secrets, SPEC 12), else `0644`.
 *
 * @example
 * ```ts
 * unitFileMode("[Service]\nEnvironment=\"TOKEN=x\"\n"); // 0o600
 * ```
 */
export function unitFileMode(content: string): number {
  return /^Environment=/m.test(content) ? 0o600 : 0o644;
}

/** Take group/world bits away from an existing unit file that an older agent wrote too open. */
async function _tightenMode(path: string, mode: number): Promise<void> {
  const st = await Deno.lstat(path);
  if (st.isFile && st.mode !== null && (st.mode & 0o777 & ~mode) !== 0) {
    await Deno.chmod(path, mode);
  }
}
