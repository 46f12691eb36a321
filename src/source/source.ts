/**
 * Assignment sources (SPEC 2, 4 and 14): a file on disk, the control plane
 * over HTTP(S) with conditional GETs, a bearer token, a pinned CA and client
 * certificates, or (in `nats.ts` and `s3.ts`) a NATS KV key with push
 * updates and an S3 object. A source only fetches; decoding happens in
 * `assignment.ts`.
 *
 * @example Poll once
 * ```ts
 * import { loadConfig } from "../config/mod.ts";
 * import { hostPlatform } from "../protocol/mod.ts";
 * const cfg = await loadConfig("/etc/addon-agent/agent.json");
 * const source = await openSource(cfg, hostPlatform());
 * const r = await source.poll();
 * if (r.kind === "document") console.log(r.json);
 * ```
 *
 * @module
 */

import { type AgentConfig, ConfigError } from "../config/mod.ts";
import {
  fetchWithTimeouts,
  type IoTimeouts,
  readStreamBounded,
  readTrustedFile,
  StallError,
  TooLargeError,
  UntrustedFileError,
} from "../common/mod.ts";
import { type Json, parseJson, type Platform } from "../protocol/mod.ts";
import { type PollResult, type Source, SourceError, type StatusReport } from "./types.ts";

/**
 * Open the configured source (the NATS and S3 clients are loaded only for their kinds).
 *
 * @throws {SourceError} when a credential file (`token_file`, `ca_file`, `cert_file`,
 * `key_file`) cannot be read or the token is empty.
 */
export async function openSource(cfg: AgentConfig, platform: Platform): Promise<Source> {
  const s = cfg.source;
  switch (s.kind) {
    case "file":
      return new FileSource(s.path, s.poll_interval_s, cfg.limits.max_document_bytes);
    case "nats": {
      const { NatsSource } = await import("./nats.ts");
      return NatsSource.open(cfg);
    }
    case "s3": {
      const { S3Source } = await import("./s3.ts");
      return new S3Source(s, cfg.limits.max_document_bytes, cfg.timeouts);
    }
    case "control_plane":
      return await ControlPlaneSource.open(cfg, platform);
  }
}

/**
 * Reads the document from a file; `poll` reports `not_modified` when the text did not change.
 * A file that someone other than root or the agent could have written, or one larger than
 * `maxBytes`, is refused like an unreadable one (SPEC 12).
 */
export class FileSource implements Source {
  #last: string | null = null;
  /** Read `path` every `intervalS` seconds, at most `maxBytes` of it. */
  constructor(
    readonly path: string,
    readonly intervalS: number,
    readonly maxBytes: number = 8 * 1024 * 1024,
  ) {}
  /** The file's path. */
  get describe(): string {
    return this.path;
  }
  /** Read the file; unchanged text is `not_modified`. */
  async poll(_signal?: AbortSignal): Promise<PollResult> {
    let text: string;
    try {
      text = await readTrustedFile(this.path, {
        what: "the assignments document",
        maxBytes: this.maxBytes,
      });
    } catch (e) {
      // Ignored like an unreadable document (SPEC 12), not bad configuration: no cause kept,
      // so the CLI does not take it for a credential file (exit 2).
      if (e instanceof UntrustedFileError) throw new SourceError(e.message, { kind: "refused" });
      if (e instanceof TooLargeError) {
        throw new SourceError(`${e.message} (limits.max_document_bytes)`, {
          kind: "refused",
          cause: e,
        });
      }
      throw new SourceError(`cannot read ${this.path}: ${(e as Error).message}`, {
        kind: "unavailable",
        cause: e,
      });
    }
    if (text === this.#last) return { kind: "not_modified" };
    let json: Json;
    try {
      json = parseJson(text, this.path);
    } catch (e) {
      throw new SourceError((e as Error).message, { kind: "invalid", cause: e });
    }
    this.#last = text;
    return { kind: "document", json };
  }
  /** Files have no status endpoint. */
  report(_body: StatusReport, _signal?: AbortSignal): Promise<void> {
    return Promise.resolve();
  }
  /** Nothing to release. */
  close(): void {}
}

/** A fetch error with its cause (Deno says "fetch failed" and puts the reason in `cause`). */
function _why(e: unknown): string {
  const err = e as Error & { cause?: unknown };
  return err.cause instanceof Error ? `${err.message}: ${err.cause.message}` : err.message;
}

/** Largest token, CA, certificate or key file read. */
const MAX_SECRET_FILE_BYTES = 1024 * 1024;
/** Bytes of an error answer's body quoted in the message. */
const MAX_ERROR_BODY_BYTES = 4096;

/** Read a trusted file of the source; a loose owner or mode is bad configuration (exit 2). */
async function _readText(path: string, what: string): Promise<string> {
  try {
    return await readTrustedFile(path, { what, maxBytes: MAX_SECRET_FILE_BYTES });
  } catch (e) {
    if (e instanceof UntrustedFileError || e instanceof TooLargeError) {
      throw new ConfigError(`source.${what}: ${e.message}`, { cause: e });
    }
    throw new SourceError(`cannot read ${what} ${path}: ${(e as Error).message}`, {
      kind: "unavailable",
      cause: e,
    });
  }
}

/** Polls `GET {url}/v1/agents/{id}/addons` with `If-None-Match` and posts status reports. */
export class ControlPlaneSource implements Source {
  #etag: string | null = null;
  readonly #client: Deno.HttpClient | undefined;
  readonly #headers: Record<string, string>;
  /** The bearer token, kept to scrub it from text the control plane sends back. */
  readonly #token: string | undefined;
  readonly #addonsUrl: string;
  readonly #statusUrl: string;
  readonly #timeouts: IoTimeouts;

  private constructor(
    readonly describe: string,
    readonly intervalS: number,
    agentId: string,
    platform: Platform,
    client: Deno.HttpClient | undefined,
    token: string | undefined,
    readonly maxBytes: number,
    timeouts: IoTimeouts,
  ) {
    this.#client = client;
    this.#timeouts = timeouts;
    this.#headers = token ? { authorization: `Bearer ${token}` } : {};
    this.#token = token;
    const base = `${describe}/v1/agents/${encodeURIComponent(agentId)}/addons`;
    this.#addonsUrl = `${base}?os=${platform.os}&arch=${platform.arch}`;
    this.#statusUrl = `${base}/status`;
  }

  /** Build the client: token from `token_file` (trimmed), CA and client certificate files. */
  static async open(cfg: AgentConfig, platform: Platform): Promise<ControlPlaneSource> {
    const s = cfg.source;
    if (s.kind !== "control_plane") throw new Error("not a control-plane source");
    const token = s.token_file ? (await _readText(s.token_file, "token_file")).trim() : undefined;
    if (token === "") {
      throw new SourceError(`token_file ${s.token_file} is empty`, { kind: "refused" });
    }
    // A line break or control character inside would fail every request with an error that
    // quotes the header, token and all; refuse it here without quoting it.
    const bad = token?.search(/[^\x20-\x7e]/) ?? -1;
    if (bad >= 0) {
      throw new SourceError(
        `token_file ${s.token_file} holds a line break, control or non-ASCII character (at character ${
          bad + 1
        }); the token must be one line of printable ASCII`,
        { kind: "refused" },
      );
    }
    let client: Deno.HttpClient | undefined;
    if (s.ca_file || s.cert_file) {
      const opts: Deno.CreateHttpClientOptions & Partial<Deno.TlsCertifiedKeyPem> = {};
      if (s.ca_file) opts.caCerts = [await _readText(s.ca_file, "ca_file")];
      if (s.cert_file && s.key_file) {
        opts.cert = await _readText(s.cert_file, "cert_file");
        opts.key = await _readText(s.key_file, "key_file");
      }
      client = Deno.createHttpClient(opts as Deno.CreateHttpClientOptions);
    }
    return new ControlPlaneSource(
      s.url,
      s.poll_interval_s,
      cfg.agent_id,
      platform,
      client,
      token,
      cfg.limits.max_document_bytes,
      cfg.timeouts,
    );
  }

  /**
   * Conditional GET; a 304 is `not_modified` without parsing anything. Headers
   * must come within `timeouts.connect_s`, the body may not stall for `idle_s`.
   */
  async poll(signal?: AbortSignal): Promise<PollResult> {
    const headers: Record<string, string> = { ...this.#headers, accept: "application/json" };
    if (this.#etag !== null) headers["if-none-match"] = this.#etag;
    let res: Response;
    try {
      res = await fetchWithTimeouts(
        this.#addonsUrl,
        {
          headers,
          // A redirect could downgrade https to http, or lead anywhere: none is followed (SPEC 12).
          redirect: "manual",
          ...(signal ? { signal } : {}),
          ...(this.#client ? { client: this.#client } : {}),
        },
        this.#timeouts,
        `control plane ${this.describe}`,
      );
    } catch (e) {
      if (e instanceof StallError) {
        throw new SourceError(e.message, { kind: "unavailable", cause: e });
      }
      throw new SourceError(`control plane ${this.describe} unreachable: ${_why(e)}`, {
        kind: "unavailable",
        cause: e,
      });
    }
    if (res.status === 304) {
      await res.body?.cancel();
      return { kind: "not_modified" };
    }
    if (res.status >= 300 && res.status < 400) {
      await res.body?.cancel();
      throw new SourceError(
        `control plane ${this.describe} answered HTTP ${res.status} (a redirect to ${
          JSON.stringify(res.headers.get("location") ?? "")
        }); redirects are not followed, so fix source.url`,
        { kind: "refused" },
      );
    }
    if (res.status !== 200) {
      const text = await readStreamBounded(res.body, MAX_ERROR_BODY_BYTES, this.describe)
        .catch(() => "");
      // An error page may echo the request, Authorization header and all (a debugging proxy):
      // the token is cut out before the text reaches a log, state or doctor.
      const shown = this.#token ? text.replaceAll(this.#token, "<redacted>") : text;
      throw new SourceError(
        `control plane ${this.describe} answered HTTP ${res.status}: ${shown.slice(0, 200)}`,
        { kind: res.status >= 500 ? "unavailable" : "refused" },
      );
    }
    if (Number(res.headers.get("content-length") ?? 0) > this.maxBytes) {
      await res.body?.cancel();
      throw new SourceError(
        `control plane ${this.describe}: ${
          new TooLargeError(this.#addonsUrl, this.maxBytes).message
        } (limits.max_document_bytes)`,
        { kind: "refused" },
      );
    }
    const text = await readStreamBounded(res.body, this.maxBytes, this.#addonsUrl).catch((e) => {
      const hint = e instanceof TooLargeError ? " (limits.max_document_bytes)" : "";
      throw new SourceError(`control plane ${this.describe}: ${(e as Error).message}${hint}`, {
        kind: hint ? "refused" : "unavailable",
        cause: e,
      });
    });
    let json: Json;
    try {
      json = parseJson(text, this.#addonsUrl);
    } catch (e) {
      throw new SourceError((e as Error).message, { kind: "invalid", cause: e });
    }
    const etag = res.headers.get("etag");
    this.#etag = etag;
    return etag ? { kind: "document", json, etag } : { kind: "document", json };
  }

  /** POST a status report (with the same timeouts); rejects with a {@linkcode SourceError} when it fails. */
  async report(body: StatusReport, signal?: AbortSignal): Promise<void> {
    let res: Response;
    try {
      res = await fetchWithTimeouts(
        this.#statusUrl,
        {
          method: "POST",
          headers: { ...this.#headers, "content-type": "application/json" },
          body: JSON.stringify(body),
          redirect: "manual",
          ...(signal ? { signal } : {}),
          ...(this.#client ? { client: this.#client } : {}),
        },
        this.#timeouts,
        `status report to ${this.describe}`,
      );
    } catch (e) {
      if (e instanceof StallError) {
        throw new SourceError(e.message, { kind: "unavailable", cause: e });
      }
      throw new SourceError(`status report to ${this.describe} failed: ${_why(e)}`, {
        kind: "unavailable",
        cause: e,
      });
    }
    await res.body?.cancel().catch(() => {});
    if (!res.ok) {
      throw new SourceError(`status report to ${this.describe} answered HTTP ${res.status}`, {
        kind: res.status >= 500 ? "unavailable" : "refused",
      });
    }
  }

  /** Close the HTTP client. */
  close(): void {
    this.#client?.close();
  }
}
