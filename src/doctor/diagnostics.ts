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
import { readRegularFileBounded, versionInfo } from "../common/mod.ts";
import { isObject, parseJson, typeName } from "../protocol/mod.ts";
import { Layout, loadState } from "../runtime/mod.ts";
import { OVERRIDE_FILE } from "../source/mod.ts";
import { buildStatus } from "../status/mod.ts";
import { formatCheck } from "./check.ts";
import { runDoctor } from "./checks.ts";
import { listTree } from "./listing.ts";
import { redact, redactUrls } from "./redact.ts";

const DIR = "addon-agent-diagnostics";

/** Largest file copied into the archive (state.json may hold an 8 MiB document, twice over). */
export const MAX_COPIED_BYTES = 16 << 20;
/** Once the files gathered reach this many bytes, further ones are left out with a note. */
export const MAX_ARCHIVE_BYTES = 64 << 20;

/**
 * The JSON in the file at `path`, or a note saying why it is left out. The
 * last component is never followed when it is a link (`follow` resolves the
 * whole path first, for the operator's own agent.json and override); a FIFO,
 * device or file over {@linkcode MAX_COPIED_BYTES} is not read; text that is
 * not JSON is described by position only (never quoted: it may be a secret).
 */
async function _json(path: string, follow = false): Promise<unknown | string> {
  let text: string;
  try {
    text = await readRegularFileBounded(
      follow ? await Deno.realPath(path) : path,
      MAX_COPIED_BYTES,
    );
  } catch (e) {
    return `not read: ${(e as Error).message}\n`;
  }
  let v;
  try {
    v = parseJson(text); // deep nesting refused too: redact() walks it recursively
  } catch (e) {
    return `${(e as Error).message}; content left out\n`; // by position, never quoted
  }
  // Every file gathered holds an object; anything else (a token file of digits reached by
  // mistake parses as a number) is not what was meant, and is left out.
  return isObject(v) ? v : `not a JSON object (${typeName(v)}); content left out\n`;
}

/** Whether `path` is a real directory (not a link to one). */
async function _realDir(path: string): Promise<boolean> {
  try {
    const st = await Deno.lstat(path);
    return st.isDirectory && !st.isSymlink;
  } catch {
    return false;
  }
}

/**
 * Build the archive for the configuration at `configPath` (a configuration
 * that does not decode still yields an archive with the doctor output).
 * Never throws for a broken host; never reads a secret file.
 */
export async function diagnosticsArchive(configPath: string): Promise<Uint8Array> {
  const files: [string, string][] = [];
  let total = 0;
  const add = (name: string, content: unknown) => {
    let text = typeof content === "string"
      ? content
      : JSON.stringify(redact(content), null, 2) + "\n";
    if (total + text.length > MAX_ARCHIVE_BYTES) {
      text = `left out: the archive already holds ${total} characters\n`;
    }
    total += text.length;
    files.push([name, text]);
  };
  const v = versionInfo();
  add("version.txt", `addon-agent ${v.version} (deno ${v.deno}, ${v.target})\n`);
  add("doctor.txt", redactUrls((await runDoctor(configPath)).map(formatCheck).join("\n") + "\n"));
  add("agent.json", await _json(configPath, true));
  let cfg;
  try {
    cfg = await loadConfig(configPath);
  } catch {
    return _pack(files);
  }
  add("addons.local.json", await _json(`${cfg.config_dir}/${OVERRIDE_FILE}`, true));
  const layout = new Layout(cfg.runtime_root);
  try {
    // The agent's own reader follows no planted FIFO or giant file from here.
    const st = await Deno.lstat(layout.stateFile).catch(() => null);
    if (st && (!st.isFile || st.size > MAX_COPIED_BYTES)) {
      throw new Error(
        `${layout.stateFile} is not a regular file of at most ${MAX_COPIED_BYTES} bytes`,
      );
    }
    const state = await loadState(layout);
    const { pushed, ...rest } = state;
    add("state.json", rest);
    add("document.json", pushed ?? "no document received yet\n");
    add("status.json", await buildStatus(layout, state));
  } catch (e) {
    add("state.json", `not read: ${(e as Error).message}\n`);
  }
  try {
    if (!await _realDir(layout.addons)) throw new Error("no real addons/ directory");
    for await (const a of Deno.readDir(layout.addons)) {
      if (!a.isDirectory) continue; // a link is listed, not followed
      add(
        `addons/${a.name}/last-good.json`,
        await _json(`${layout.addons}/${a.name}/last-good.json`),
      );
      const versions = `${layout.addons}/${a.name}/versions`;
      if (!await _realDir(versions)) continue;
      try {
        for await (const ver of Deno.readDir(versions)) {
          if (!ver.isDirectory) continue;
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
