/**
 * `addon-agent doctor` (SPEC 16): a checklist of what must hold on a host for
 * the agent to work, each failed line saying what to change. It reuses the
 * configuration decoder and the startup self-checks, asks the source once,
 * and looks at (never downloads) each assigned artifact.
 *
 * @example Run the checklist and print it
 * ```ts
 * import { formatCheck } from "./check.ts";
 * import { runDoctor } from "./checks.ts";
 * const checks = await runDoctor("/etc/addon-agent/agent.json");
 * for (const c of checks) console.log(formatCheck(c));
 * ```
 *
 * @module
 */

import * as fs from "node:fs";
import { readRegularFileBounded } from "../common/mod.ts";
import { type AgentConfig, checkPermissions, loadConfig } from "../config/mod.ts";
import { type Assignment, decodeBase64, hostPlatform, type Platform } from "../protocol/mod.ts";
import { Layout, unsafeDirectory } from "../runtime/mod.ts";
import { desiredState, openSource, OVERRIDE_FILE, readOverrideText } from "../source/mod.ts";
import { openObjectStore, storeContextOf, StoreError } from "../store/mod.ts";
import { cgroupDelegation } from "./cgroup.ts";
import { type Check, fail, na, ok } from "./check.ts";

/**
 * Run every check for the configuration at `configPath`. Never throws for a
 * broken host (that is a failed line); never downloads an artifact body.
 */
export async function runDoctor(
  configPath: string,
  platform: Platform = hostPlatform(),
): Promise<Check[]> {
  let cfg: AgentConfig;
  try {
    cfg = await loadConfig(configPath);
  } catch (e) {
    const st = await Deno.stat(configPath).catch(() => null);
    return [
      fail(
        `configuration ${configPath} does not decode: ${(e as Error).message}`,
        st?.isFile
          ? `edit ${configPath} (the field named above); SPEC section 2 lists every key`
          : `write the agent's configuration to ${configPath}, or give its path with --config`,
      ),
      na("everything else needs a configuration that decodes"),
    ];
  }
  const out: Check[] = [ok(`configuration ${configPath} decodes`)];
  const denied = await checkPermissions(cfg);
  if (denied.length === 0) {
    out.push(ok("the permission set grants every host and path the configuration names"));
  }
  for (const d of denied) {
    // "<what> is not readable by this build; add … and rebuild": the part after "; " is the fix.
    const i = d.indexOf("; ");
    out.push(
      i < 0
        ? fail(d, "grant it in permissions.agent (deno.json) and rebuild")
        : fail(d.slice(0, i), d.slice(i + 2)),
    );
  }
  out.push(...await _runtimeRoot(cfg));
  out.push(..._keys(cfg));
  const assigned = await _source(cfg, platform, out);
  out.push(...await _artifacts(cfg, assigned));
  out.push(..._capabilityTools(assigned));
  out.push(await cgroupDelegation(cfg));
  out.push(..._unitDir(cfg, assigned));
  return out;
}

function _mode(n: number | null): string {
  return ((n ?? 0) & 0o7777).toString(8).padStart(4, "0");
}

async function _runtimeRoot(cfg: AgentConfig): Promise<Check[]> {
  const layout = new Layout(cfg.runtime_root);
  const uid = Deno.uid();
  const dirs = [layout.root, layout.tmp, `${layout.root}/addons`];
  const bad: Check[] = [];
  for (const dir of dirs) {
    let st: Deno.FileInfo;
    try {
      st = await Deno.lstat(dir);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        if (dir === layout.root) {
          return [fail(`runtime root ${dir} does not exist`, `run: install -d -m 0755 ${dir}`)];
        }
        continue; // made at the agent's first start
      }
      bad.push(fail(`cannot read ${dir}: ${(e as Error).message}`, `check ${dir}'s permissions`));
      continue;
    }
    if (st.isSymlink && dir === layout.root) {
      const to = await Deno.realPath(dir).catch(() => "the real directory");
      bad.push(
        fail(
          `runtime root ${dir} is a symlink (the agent follows none)`,
          `set runtime_root in ${cfg.file} to ${to}`,
        ),
      );
    } else if (st.isSymlink || !st.isDirectory) {
      bad.push(fail(`${dir} is not a real directory`, `remove ${dir}; the agent makes it`));
    } else if (uid !== null && st.uid !== uid) {
      // The agent's own rule at start (not "or root"): an agent run as a user refuses root's.
      bad.push(fail(`${dir} is owned by uid ${st.uid}`, `run: chown ${uid} ${dir}`));
    } else if (((st.mode ?? 0) & 0o022) !== 0) {
      bad.push(
        fail(
          `${dir} is group- or world-writable (mode ${_mode(st.mode)})`,
          `run: chmod go-w ${dir}`,
        ),
      );
    }
    if (dir === layout.root && bad.length > 0) return bad; // nothing below it to judge
  }
  if (bad.length > 0) return bad;
  // Every directory below, as the agent checks them at start (read only: no mode changes).
  const deep = await unsafeDirectory(layout.root, { tighten: false }).catch((e: Error) =>
    `cannot walk ${layout.root}: ${e.message}`
  );
  if (deep !== null) {
    const m = /\(((?:chown|chmod) [^)]*)\)$/.exec(deep);
    return [
      fail(
        m ? deep.slice(0, m.index).trimEnd() : deep,
        m ? `run: ${m[1]}` : `check ${layout.root}`,
      ),
    ];
  }
  const out = [ok(`runtime root ${layout.root} exists with a safe owner and modes`)];
  try {
    const s = fs.statfsSync(layout.root);
    const free = Number(s.bavail) * Number(s.bsize);
    const need = cfg.limits.max_artifact_bytes;
    out.push(
      free >= need
        ? ok(`${_mib(free)} free for ${layout.tmp} (the largest artifact allowed: ${_mib(need)})`)
        : fail(
          `only ${_mib(free)} free for ${layout.tmp}; artifacts may be up to ${_mib(need)}`,
          `free space on ${layout.root}'s filesystem, or lower limits.max_artifact_bytes in ${cfg.file}`,
        ),
    );
  } catch (e) {
    out.push(fail(`cannot read free space: ${(e as Error).message}`, "allow sys statfs"));
  }
  return out;
}

function _mib(n: number): string {
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}

function _keys(cfg: AgentConfig): Check[] {
  if (cfg.trust.public_keys.length === 0) {
    return [
      cfg.trust.require_signature
        ? fail(
          "require_signature is true but trust.public_keys is empty: nothing can be delivered",
          `add the publisher's key (addon-agent keygen prints it) to trust.public_keys in ${cfg.file}`,
        )
        : na("no trusted keys configured (unsigned artifacts are accepted)"),
    ];
  }
  return cfg.trust.public_keys.map((k, i) => {
    const bytes = decodeBase64(k);
    return bytes !== null && bytes.length === 32
      ? ok(`trust.public_keys[${i}] is a 32-byte Ed25519 key`)
      : fail(
        `trust.public_keys[${i}] is not the base64 of a 32-byte Ed25519 key`,
        `replace trust.public_keys[${i}] in ${cfg.file} with the content of signing.pub`,
      );
  });
}

/** Ask the source once; returns the assignments of the current document (with the override). */
async function _source(cfg: AgentConfig, platform: Platform, out: Check[]): Promise<Assignment[]> {
  let json;
  let describe: string = cfg.source.kind;
  try {
    const source = await openSource(cfg, platform);
    describe = source.describe;
    try {
      const r = await source.poll();
      if (r.kind !== "document") throw new Error("answered 'not modified' to a first request");
      json = r.json;
    } finally {
      source.close();
    }
  } catch (e) {
    out.push(
      fail(
        `the source ${describe} does not answer: ${(e as Error).message}`,
        `check source in ${cfg.file}, the network path and the source's credentials`,
      ),
    );
    return [];
  }
  try {
    const overridePath = `${cfg.config_dir}/${OVERRIDE_FILE}`;
    const doc = desiredState(
      json,
      await readOverrideText(overridePath, cfg.limits.max_document_bytes),
      overridePath,
      platform,
    );
    const refused = doc.entries.filter((e) => !e.ok);
    out.push(
      refused.length === 0
        ? ok(`the source ${describe} answers: ${doc.entries.length} assignment(s)`)
        : fail(
          `the source ${describe} answers, but refuses ${refused.length} entr${
            refused.length === 1 ? "y" : "ies"
          }: ${
            // A few reasons, not thousands: a hostile document must not bury the checklist.
            refused.slice(0, 3).map((e) => !e.ok && e.error).join("; ")}${
            refused.length > 3 ? `; and ${refused.length - 3} more` : ""
          }`,
          "correct those entries at the control plane (or in addons.local.json)",
        ),
    );
    return doc.entries.flatMap((e) => e.ok ? [e.assignment] : []);
  } catch (e) {
    out.push(
      fail(
        `the source ${describe} answers with a document that is refused: ${(e as Error).message}`,
        "correct the document at the control plane (or in addons.local.json)",
      ),
    );
    return [];
  }
}

async function _artifacts(cfg: AgentConfig, assigned: Assignment[]): Promise<Check[]> {
  const wanted = assigned.filter((a) => a.enabled && a.artifact);
  if (wanted.length === 0) return [na("no artifacts assigned to check in the store")];
  let store;
  try {
    store = await openObjectStore(cfg.object_store, storeContextOf(cfg));
  } catch (e) {
    return [
      fail(
        `the object store cannot be opened: ${(e as Error).message}`,
        `check object_store in ${cfg.file}`,
      ),
    ];
  }
  const out: Check[] = [];
  for (const [i, a] of wanted.entries()) {
    const key = a.artifact!.object_key;
    try {
      // A HEAD where the store has one; else open and close at once (a file, a NATS
      // object's info: the size comes without the body).
      let obj: { size: number };
      if (store.stat) {
        obj = await store.stat(key);
      } else {
        const opened = await store.open(key, 0);
        opened.close();
        obj = opened;
      }
      const staged = await _stagedSize(cfg, a);
      if (staged !== null && obj.size >= 0 && obj.size !== staged) {
        out.push(
          fail(
            `${a.addon_id} ${a.version}: ${
              store.describe(key)
            } has ${obj.size} bytes, but the verified copy staged here has ${staged}: the object was replaced`,
            `publish the assigned bytes (sha256 ${
              a.artifact!.sha256
            }) to ${key} again, or assign a new version`,
          ),
        );
        continue;
      }
      out.push(
        obj.size <= cfg.limits.max_artifact_bytes
          ? ok(`${a.addon_id} ${a.version}: ${store.describe(key)} exists (${obj.size} bytes)`)
          : fail(
            `${a.addon_id} ${a.version}: ${
              store.describe(key)
            } has ${obj.size} bytes, over limits.max_artifact_bytes`,
            `raise limits.max_artifact_bytes in ${cfg.file}, or publish a smaller artifact`,
          ),
      );
    } catch (e) {
      const missing = e instanceof StoreError && e.kind === "not_found";
      out.push(
        fail(
          `${a.addon_id} ${a.version}: ${(e as Error).message}`,
          missing
            ? `publish ${key} to the store, or correct artifact_object_key at the control plane`
            : `check object_store in ${cfg.file} and the store's credentials and permissions`,
        ),
      );
      // A store that does not answer would cost connect_s per artifact, and a source may
      // assign thousands: ask no more.
      const down = !(e instanceof StoreError) || e.kind === "unavailable";
      const rest = wanted.length - i - 1;
      if (down && rest > 0) {
        out.push(na(`${rest} more artifact(s) not checked: the store did not answer`));
        break;
      }
    }
  }
  return out;
}

/**
 * The size recorded for `a`'s version when it is staged here with the assigned sha256: the
 * size the store's object must have (SPEC 16, "with the expected size"); null otherwise.
 */
async function _stagedSize(cfg: AgentConfig, a: Assignment): Promise<number | null> {
  const path = `${new Layout(cfg.runtime_root).versionDir(a.addon_id, a.version)}/artifact.json`;
  try {
    const rec = JSON.parse(await readRegularFileBounded(path, 1 << 20)) as Record<string, unknown>;
    return rec.sha256 === a.artifact!.sha256 && typeof rec.size === "number" ? rec.size : null;
  } catch {
    return null; // not staged (or no readable record): nothing to compare with
  }
}

function _onPath(name: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return true;
    } catch {
      // not here
    }
  }
  return false;
}

function _capabilityTools(assigned: Assignment[]): Check[] {
  const users = assigned.filter((a) => a.enabled && a.capabilities.length > 0);
  if (users.length === 0) return [na("no add-on is assigned capabilities (setcap not needed)")];
  const missing = ["setcap", "getcap"].filter((t) => !_onPath(t));
  return [
    missing.length === 0
      ? ok(`setcap and getcap are present (${users.length} add-on(s) get capabilities)`)
      : fail(
        `${missing.join(" and ")} not found, but ${
          users.map((a) => a.addon_id).join(", ")
        } need capabilities`,
        "install libcap2-bin (Debian/Ubuntu) or libcap (RHEL)",
      ),
  ];
}

function _unitDir(cfg: AgentConfig, assigned: Assignment[]): Check[] {
  const units = assigned.filter((a) =>
    a.enabled && typeof a.supervision === "string" && a.supervision.startsWith("systemd_")
  );
  if (units.length === 0) return [na("no systemd_* add-on assigned (unit directory not needed)")];
  const dir = cfg.systemd.unit_dir;
  if (!fs.existsSync(dir)) {
    return [
      fail(
        `unit directory ${dir} does not exist`,
        `run: install -d -m 0755 ${dir} (or set systemd.unit_dir in ${cfg.file})`,
      ),
    ];
  }
  try {
    const st = Deno.statSync(dir);
    const probe = `${dir}/.addon-agent-doctor-${crypto.randomUUID()}`;
    Deno.writeFileSync(probe, new Uint8Array(), { createNew: true, mode: 0o600 });
    Deno.removeSync(probe);
    return st.isDirectory
      ? [ok(`unit directory ${dir} is writable`)]
      : [fail(`${dir} is not a directory`, `set systemd.unit_dir in ${cfg.file}`)];
  } catch (e) {
    return [
      fail(
        `unit directory ${dir} is not writable: ${(e as Error).message}`,
        `grant write on ${dir} (ReadWritePaths= in the unit, write in permissions.agent)`,
      ),
    ];
  }
}
