/**
 * Redaction for the support archive (SPEC 16): a deep copy of a JSON value
 * in which nothing an add-on or an operator may keep secret survives.
 * `env` keeps its names with every value replaced (any other shape of `env`
 * is replaced whole), `config` and `args` are replaced whole, so is `nats.user`
 * and any field of an assignment that SPEC 3 does not name, fields whose names say they hold a secret are replaced,
 * and URLs lose their user information.
 *
 * @example
 * ```ts
 * import { redact, REDACTED } from "./redact.ts";
 * const out = redact({ addons: [{ env: { TOKEN: "s3cr3t" }, args: ["--pw", "x"] }] });
 * // { addons: [{ env: { TOKEN: "<redacted>" }, args: "<redacted>" }] }
 * console.log(JSON.stringify(out).includes(REDACTED));
 * ```
 *
 * @module
 */

/** What a redacted value becomes. */
export const REDACTED = "<redacted>";

/** Field names whose values are secrets (a `*_file` or `*_path` names a file, and stays). */
const _SECRET_NAME = /pass(word)?|secret|token|seed|credential|private|api_?key|auth/i;

/**
 * `text` with the user information of every URL in it replaced:
 * `scheme://user:password@host` → `scheme://<redacted>@host`.
 */
export function redactUrls(text: string): string {
  // Up to the LAST "@" of the authority, as URL parsers read it: a password may hold an "@".
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/)[^/?#\s"'<>]*@/gi, `$1${REDACTED}@`);
}

/** Fields of an assignment (SPEC 3) shown as they are; `env` keeps its names, the rest is redacted. */
const _SHOWN = new Set([
  "addon_id",
  "version",
  "enabled",
  "delivery",
  "supervision",
  "binary_path",
  "capabilities",
  "artifact_format",
  "artifact_object_key",
  "artifact_sha256",
  "artifact_signature",
  "entrypoint",
  "resources",
  "schedule",
  "target_os",
  "target_arch",
  "timeout_s",
  "env",
]);

/**
 * An assignment entry with every field SPEC 3 does not name replaced (a source may send
 * `"environment": {…}`; the decoder refuses it, but the document kept is the one received).
 */
function _entry(e: unknown): unknown {
  if (e === null || typeof e !== "object" || Array.isArray(e)) return REDACTED;
  return Object.fromEntries(
    Object.entries(e).map(([k, v]) => [k, _SHOWN.has(k) ? v : REDACTED]),
  );
}

/**
 * Redact `value` (any JSON). Pure; the input is not changed. Must never let
 * through a value of `env`, `config` or `args`, at any depth.
 */
export function redact(value: unknown): unknown {
  if (typeof value === "string") return redactUrls(value);
  if (Array.isArray(value)) return value.map(redact);
  if (value === null || typeof value !== "object") return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    if (k === "env" && v !== null && typeof v === "object" && !Array.isArray(v)) {
      out[k] = Object.fromEntries(Object.keys(v).map((name) => [name, REDACTED]));
    } else if (
      k === "env" || k === "config" || k === "args" || k === "helper_fingerprint"
    ) {
      // An `env` of the wrong shape (["PW=…"], a string) is refused by the decoder, but a
      // malformed override or document still holds it: replaced whole.
      out[k] = REDACTED;
    } else if (k === "addons" && Array.isArray(v)) {
      out[k] = v.map((e) => redact(_entry(e))); // a document's or an override's entries
    } else if (k === "assignment") {
      out[k] = redact(_entry(v)); // last-good.json
    } else if (k === "nats" && v !== null && typeof v === "object" && !Array.isArray(v)) {
      // The NATS user name is one half of a login, as the user of a URL is.
      const nats = redact(v) as Record<string, unknown>;
      if ("user" in nats) nats.user = REDACTED;
      out[k] = nats;
    } else if (_SECRET_NAME.test(k) && !/_(file|path)$/.test(k) && typeof v !== "boolean") {
      out[k] = REDACTED;
    } else {
      out[k] = redact(v);
    }
  }
  return out;
}
