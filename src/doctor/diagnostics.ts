/**
 * `addon-agent diagnostics` (SPEC 16): one `tar.gz` for a support ticket
 * with `state.json`, the status document, the `doctor` output, the
 * configuration, override and current document, each add-on's last-good
 * assignment and staged `artifact.json`s, a listing of the runtime root and
 * the agent's version. Secrets stay out by construction: token, key and
 * credential files are never opened, the environment is never read, and
 * every JSON document passes through {@linkcode redact}.
 *
 * @example Write the archive
 * ```ts
 * import { diagnosticsArchive } from "./diagnostics.ts";
 * const bytes = await diagnosticsArchive("/etc/addon-agent/agent.json");
 * await Deno.writeFile("/var/lib/addon-agent/diagnostics.tar.gz", bytes);
 * ```
 *
 * @module
 */

import { gzipSync } from "node:zlib";
import { packTar, type TarEntry } from "modern-tar";
import { loadConfig } from "../config/mod.ts";
import { versionInfo } from "../common/mod.ts";
import { Layout, loadState } from "../runtime/mod.ts";
import { OVERRIDE_FILE } from "../source/mod.ts";
import { buildStatus } from "../status/mod.ts";
import { formatCheck } from "./check.ts";
import { runDoctor } from "./checks.ts";
import { listTree } from "./listing.ts";
import { redact, redactUrls } from "./redact.ts";

const DIR = "addon-agent-diagnostics";

async function _json(path: string): Promise<unknown | string> {
  try {
    const text = await Deno.readTextFile(path);
    try {
      return JSON.parse(text);
    } catch (e) {
      return `unreadable JSON (${(e as Error).message}); content left out`;
    }
  } catch (e) {
    return `not read: ${(e as Error).message}`;
  }
}

/**
 * Build the archive for the configuration at `configPath` (a configuration
 * that does not decode still yields an archive with the doctor output).
 * Never throws for a broken host; never reads a secret file.
 */
export async function diagnosticsArchive(configPath: string): Promise<Uint8Array> {
  const files: [string, string][] = [];
  const add = (name: string, content: unknown) =>
    files.push([
      name,
      typeof content === "string" ? content : JSON.stringify(redact(content), null, 2) + "\n",
    ]);
  const v = versionInfo();
  add("version.txt", `addon-agent ${v.version} (deno ${v.deno}, ${v.target})\n`);
  add("doctor.txt", redactUrls((await runDoctor(configPath)).map(formatCheck).join("\n") + "\n"));
  add("agent.json", await _json(configPath));
  let cfg;
  try {
    cfg = await loadConfig(configPath);
  } catch {
    return _pack(files);
  }
  add("addons.local.json", await _json(`${cfg.config_dir}/${OVERRIDE_FILE}`));
  const layout = new Layout(cfg.runtime_root);
  try {
    const state = await loadState(layout);
    const { pushed, ...rest } = state;
    add("state.json", rest);
    add("document.json", pushed ?? "no document received yet\n");
    add("status.json", await buildStatus(layout, state));
  } catch (e) {
    add("state.json", `not read: ${(e as Error).message}\n`);
  }
  try {
    for await (const a of Deno.readDir(layout.addons)) {
      if (!a.isDirectory) continue;
      add(
        `addons/${a.name}/last-good.json`,
        await _json(`${layout.addons}/${a.name}/last-good.json`),
      );
      try {
        for await (const ver of Deno.readDir(`${layout.addons}/${a.name}/versions`)) {
          add(
            `addons/${a.name}/versions/${ver.name}/artifact.json`,
            await _json(`${layout.addons}/${a.name}/versions/${ver.name}/artifact.json`),
          );
        }
      } catch {
        // no versions staged
      }
    }
  } catch {
    // no add-ons yet
  }
  add("listing.txt", (await listTree(layout.root)).join("\n") + "\n");
  return _pack(files);
}

async function _pack(files: [string, string][]): Promise<Uint8Array> {
  const enc = new TextEncoder();
  const mtime = new Date();
  const entries: TarEntry[] = files.map(([name, text]) => {
    const body = enc.encode(text);
    return { header: { name: `${DIR}/${name}`, size: body.length, mode: 0o600, mtime }, body };
  });
  return gzipSync(await packTar(entries));
}
