/**
 * `source` kind `nats` (SPEC 14): the document is the value of key
 * `<agent_id>` in a JetStream KV bucket, and status reports are put to the
 * same key of `status_bucket`.
 *
 * Updates arrive by push on a plain subscription to `$KV.<bucket>.<agent_id>`
 * (the subject every put and delete of that key is published on); a push
 * only says "read now" (anyone whose request names that subject as its
 * reply makes the server publish there), and the key is read with a direct get (`$JS.API.DIRECT.GET.KV_<bucket>.$KV.<bucket>.<agent_id>`)
 * at start, after every reconnect and every `resync_interval_s` (±20 %, the
 * daemon's poll interval). No consumer per agent: at 100,000 agents the
 * server keeps 100,000 subscriptions, not 100,000 consumers (see
 * `docs/decisions.md`). A deleted or purged key, or one never written, is
 * the empty document: the agent stops what the bucket no longer assigns.
 *
 * @example Read the document and wait for a push
 * ```ts
 * import { NatsSource } from "./nats.ts";
 * declare const cfg: import("../config/mod.ts").AgentConfig;
 * const source = NatsSource.open(cfg);
 * source.watch(() => console.log("a new document was put"));
 * const r = await source.poll();
 * if (r.kind === "document") console.log(r.json);
 * source.close();
 * ```
 *
 * @module
 */

import type { AgentConfig, NatsSourceConfig } from "../config/mod.ts";
import { acquireNats, log, type NatsHandle } from "../common/mod.ts";
import { type Json, parseJson } from "../protocol/mod.ts";
import { type PollResult, type Source, SourceError, type StatusReport } from "./types.ts";
import type { Msg, MsgHdrs, NatsConnection, Subscription } from "@nats-io/nats-core";

/**
 * Waits before reading the key again when it does not (yet) hold the value
 * just pushed: the subscriber can get a put before the stream stored it.
 */
export const CONFIRM_DELAYS_MS: readonly number[] = [20, 80, 200, 500];

/** The empty document a deleted (or never written) key stands for. */
export const EMPTY_DOCUMENT: Json = { config_version: "", addons: [] };

function _deleted(h: MsgHdrs | undefined): boolean {
  const op = h?.get("KV-Operation");
  return op === "DEL" || op === "PURGE";
}

/** `p`, or a rejection as soon as `signal` aborts (the agent is stopping: a stalled request must not hold it). */
function _unlessAborted<T>(
  p: Promise<T>,
  signal: AbortSignal | undefined,
  what: string,
): Promise<T> {
  if (!signal) return p;
  p.catch(() => {});
  const stopped = () =>
    new SourceError(`${what}: abandoned, the agent is stopping`, {
      kind: "unavailable",
      cause: signal.reason,
    });
  if (signal.aborted) return Promise.reject(stopped());
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(stopped());
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** Reads the agent's key of a KV bucket, with push updates; puts status reports. */
export class NatsSource implements Source {
  readonly intervalS: number;
  readonly describe: string;
  readonly #nats: NatsHandle;
  readonly #key: string;
  readonly #subject: string;
  readonly #directGet: string;
  readonly #statusSubject: string;
  #sub: Subscription | null = null;
  #subscribing: Promise<void> | null = null;
  #onUpdate: (() => void) | null = null;
  /** The text last returned as a document; null before the first. */
  #lastText: string | null = null;
  /** The newest pushed value not yet returned by `poll` (`null` text = deleted). */
  #pushed: { text: string | null } | null = null;
  #released: Promise<void> | null = null;
  /** How long a read or a status put may take (`timeouts.connect_s`); the daemon retries. */
  readonly #requestMs: number;
  /** `limits.max_document_bytes`: a larger value is refused, never parsed. */
  readonly #maxBytes: number;

  private constructor(cfg: AgentConfig, s: NatsSourceConfig, nats: NatsHandle) {
    this.#nats = nats;
    this.intervalS = s.resync_interval_s;
    this.#requestMs = cfg.timeouts.connect_s * 1000;
    this.#maxBytes = cfg.limits.max_document_bytes;
    this.#key = cfg.agent_id;
    this.#subject = `$KV.${s.bucket}.${cfg.agent_id}`;
    this.#directGet = `$JS.API.DIRECT.GET.KV_${s.bucket}.${this.#subject}`;
    this.#statusSubject = `$KV.${s.status_bucket}.${cfg.agent_id}`;
    this.describe = `nats kv ${s.bucket}/${cfg.agent_id} (${nats.describe})`;
    nats.onReconnect(() => {
      log.info("connected to NATS; reading the assignments key", { source: this.describe });
      this.#onUpdate?.();
    });
  }

  /** Open the source on the shared connection (connecting in the background). */
  static open(cfg: AgentConfig): NatsSource {
    const s = cfg.source;
    if (s.kind !== "nats" || !cfg.nats) throw new Error("not a nats source");
    return new NatsSource(cfg, s, acquireNats(cfg.nats));
  }

  /** Call `fn` whenever a new value was pushed or the connection came back: poll then. */
  watch(fn: () => void): void {
    this.#onUpdate = fn;
  }

  async #connection(): Promise<NatsConnection> {
    try {
      return await this.#nats.connection(this.#requestMs);
    } catch (e) {
      throw new SourceError(`${this.describe}: ${(e as Error).message}`, {
        kind: "unavailable",
        cause: e,
      });
    }
  }

  async #subscribe(nc: NatsConnection): Promise<void> {
    if (this.#sub) return;
    this.#subscribing ??= (async () => {
      this.#sub = nc.subscribe(this.#subject, {
        callback: (err: Error | null, msg: Msg) => {
          if (err) {
            log.warn("NATS subscription failed; resyncing", {
              source: this.describe,
              error: err,
            });
            this.#sub = null;
            this.#subscribing = null;
          } else {
            this.#pushed = {
              text: _deleted(msg.headers) ? null : msg.data.length > this.#maxBytes
                ? "" // only a hint; the read refuses it
                : msg.string(),
            };
          }
          this.#onUpdate?.();
        },
      });
      // The subscription is in place at the server before the key is read, so no put is lost.
      await nc.flush();
    })();
    try {
      await this.#subscribing;
    } catch (e) {
      this.#sub = null;
      this.#subscribing = null;
      throw new SourceError(`${this.describe}: cannot subscribe: ${(e as Error).message}`, {
        kind: "refused",
        cause: e,
      });
    }
  }

  /** The value of the key now (`null` when deleted, purged or never written). */
  async #read(nc: NatsConnection): Promise<string | null> {
    let m: Msg;
    try {
      m = await nc.request(this.#directGet, undefined, { timeout: this.#requestMs });
    } catch (e) {
      throw new SourceError(`${this.describe}: cannot read the key: ${(e as Error).message}`, {
        kind: "unavailable",
        cause: e,
      });
    }
    const code = m.headers?.code ?? 0;
    if (code === 404) return null;
    if (code !== 0) {
      throw new SourceError(
        `${this.describe}: the server answered ${code} ${
          m.headers?.description ?? ""
        } (is the bucket there, with allow_direct, and may the agent's user read its key?)`,
        { kind: "refused" },
      );
    }
    const subject = m.headers?.get("Nats-Subject");
    if (subject !== this.#subject) {
      // Never "empty" on a strange answer: that would stop every add-on.
      throw new SourceError(
        `${this.describe}: the server answered with ${
          JSON.stringify(subject)
        }, not ${this.#subject}`,
        { kind: "invalid" },
      );
    }
    if (_deleted(m.headers)) return null;
    if (m.data.length > this.#maxBytes) {
      throw new SourceError(
        `${this.describe}: the document is ${m.data.length} bytes, larger than ${this.#maxBytes} (limits.max_document_bytes); refused`,
        { kind: "refused" },
      );
    }
    return m.string();
  }

  /**
   * The value of the key now, read with a direct get (at start, after a
   * reconnect, on the resync interval and after every push). A pushed value
   * is only a hint: another agent can make the server publish any message
   * on this subject (a request whose reply subject is `$KV.<bucket>.<id>`),
   * so the key is read back, a few times over ~1 s when the push overtook
   * the store, and a value the bucket does not hold is never taken.
   * Unchanged text is `not_modified`.
   */
  poll(signal?: AbortSignal): Promise<PollResult> {
    return _unlessAborted(this.#poll(signal), signal, this.describe);
  }

  async #poll(signal: AbortSignal | undefined): Promise<PollResult> {
    const nc = await this.#connection();
    await this.#subscribe(nc);
    const pushed = this.#pushed;
    this.#pushed = null;
    let text = await this.#read(nc);
    if (pushed !== null && text !== pushed.text) {
      for (const ms of CONFIRM_DELAYS_MS) {
        // A newer push polls again; a stopping agent does not wait.
        if (this.#pushed !== null || this.#released || signal?.aborted) break;
        await new Promise((r) => setTimeout(r, ms));
        text = await this.#read(nc);
        if (text === pushed.text) break;
      }
      if (text !== pushed.text) {
        log.warn("a value pushed on the assignments subject is not in the bucket; ignored", {
          source: this.describe,
          pushed_bytes: pushed.text?.length ?? 0,
        });
      }
    }
    const shown = text ?? "";
    if (shown === this.#lastText) return { kind: "not_modified" };
    let json: Json;
    if (text === null) {
      json = EMPTY_DOCUMENT;
    } else {
      try {
        json = parseJson(text, this.describe);
      } catch (e) {
        this.#lastText = shown;
        throw new SourceError((e as Error).message, { kind: "invalid", cause: e });
      }
    }
    this.#lastText = shown;
    return { kind: "document", json };
  }

  /** Put the report to `status_bucket` key `<agent_id>` and wait for the server's ack. */
  report(body: StatusReport, signal?: AbortSignal): Promise<void> {
    return _unlessAborted(this.#report(body), signal, `status report to ${this.#statusSubject}`);
  }

  async #report(body: StatusReport): Promise<void> {
    const nc = await this.#connection();
    let m: Msg;
    try {
      m = await nc.request(this.#statusSubject, JSON.stringify(body), {
        timeout: this.#requestMs,
      });
    } catch (e) {
      throw new SourceError(
        `status report to ${this.#statusSubject} failed: ${(e as Error).message}`,
        { kind: "unavailable", cause: e },
      );
    }
    let ack: { error?: { description?: string } };
    try {
      ack = m.json();
    } catch {
      throw new SourceError(`status report to ${this.#statusSubject}: not a JetStream ack`, {
        kind: "refused",
      });
    }
    if (ack.error) {
      throw new SourceError(
        `status report to ${this.#statusSubject} refused: ${ack.error.description ?? "error"}`,
        { kind: "refused" },
      );
    }
  }

  /** The key this source reads, for messages. */
  get key(): string {
    return this.#key;
  }

  /** Stop the subscription and give back the connection. */
  close(): void {
    if (this.#released) return;
    try {
      this.#sub?.unsubscribe();
    } catch { /* the connection may be gone already */ }
    this.#released = this.#nats.release();
  }

  /** Like {@linkcode NatsSource.close}, settling once the connection (if last) is closed. */
  async closed(): Promise<void> {
    this.close();
    await this.#released;
  }
}
