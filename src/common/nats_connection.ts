/**
 * The one NATS connection an agent shares between its source, its object
 * store and its status reports (SPEC 14): credentials and TLS from the
 * `nats` section, the agent's own inbox prefix, reconnecting forever with
 * jitter. The client (`@nats-io/transport-node`) is imported only when a
 * connection is first asked for, so hosts without NATS load none of it.
 *
 * The connection is made in the background: {@linkcode acquireNats} returns
 * at once, and {@linkcode NatsHandle.connected} settles when the first
 * connection succeeds, so a daemon whose NATS server is down still starts
 * (and runs the add-ons it last ran).
 *
 * @example Share the connection
 * ```ts
 * import { acquireNats } from "./nats_connection.ts";
 * const h = acquireNats({ servers: ["nats://127.0.0.1:4222"], inbox_prefix: "_INBOX_edge-01" });
 * const nc = await h.connection(10_000);
 * await nc.flush();
 * h.release(); // the last release closes it
 * ```
 *
 * @module
 */

import type { NatsConnection } from "@nats-io/nats-core";
import { readTrustedFile, UntrustedFileError } from "./trusted_file.ts";

/**
 * What a connection needs: the `nats` section of `agent.json` as the config
 * room decodes it (files absolute, one way to authenticate at most).
 */
export interface NatsConnectionConfig {
  /** `nats://` or `tls://` URLs; a non-loopback server needs TLS (`tls://` or `ca_file`). */
  servers: string[];
  nkey_seed_file?: string;
  user?: string;
  password_file?: string;
  creds_file?: string;
  ca_file?: string;
  cert_file?: string;
  key_file?: string;
  /** Reply subjects start with this; the permissions block lets only this agent subscribe to it. */
  inbox_prefix: string;
}

type NatsConfig = NatsConnectionConfig;

/** The connection is not there (yet or any more); what failed is in the message. */
export class NatsUnavailableError extends Error {
  /** Make the error; `cause` is the client's error when there is one. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "NatsUnavailableError";
  }
}

/** A reference to the shared connection; give it back with {@linkcode NatsHandle.release}. */
export interface NatsHandle {
  /** The servers, for messages. */
  readonly describe: string;
  /** The connection once it is up; rejects with {@linkcode NatsUnavailableError} after `timeoutMs`. */
  connection(timeoutMs: number): Promise<NatsConnection>;
  /** Call `fn` when the first connection is made and after each reconnect, until released. */
  onReconnect(fn: () => void): void;
  /** Drop this reference; the last one closes the connection (settles when it is closed). */
  release(): Promise<void>;
}

interface _Shared {
  key: string;
  refs: number;
  conn: Promise<NatsConnection>;
  listeners: Set<() => void>;
  closed: boolean;
  /** Set while the client is between a disconnect and the next reconnect. */
  down: boolean;
  /** The connection once made. */
  nc: NatsConnection | null;
  /** Ends the wait between two first-connect attempts (release). */
  cancelWait: (() => void) | null;
  /** Why the last first-connect attempt failed, for messages. */
  lastError: string;
}

const _shared = new Map<string, _Shared>();

/**
 * A credential or TLS file of the `nats` section: a file the agent trusts (SPEC 12), so one
 * that someone other than root or the agent could have written is refused
 * ({@linkcode UntrustedFileError}, exit 2), never used.
 */
async function _readFile(path: string, field: string): Promise<Uint8Array> {
  try {
    return new TextEncoder().encode(
      await readTrustedFile(path, { what: `nats.${field}`, maxBytes: 1024 * 1024 }),
    );
  } catch (e) {
    if (e instanceof UntrustedFileError) throw e;
    throw new NatsUnavailableError(`cannot read nats.${field} ${path}: ${(e as Error).message}`);
  }
}

/** Build the client options from the `nats` section (files are read here, once). */
async function _options(cfg: NatsConfig): Promise<Record<string, unknown>> {
  const core = await import("@nats-io/nats-core");
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  const opts: Record<string, unknown> = {
    servers: cfg.servers,
    name: `addon-agent ${cfg.inbox_prefix}`,
    inboxPrefix: cfg.inbox_prefix,
    reconnect: true,
    maxReconnectAttempts: -1,
    waitOnFirstConnect: false,
    reconnectTimeWait: 2_000,
    reconnectJitter: 1_000,
    reconnectJitterTLS: 2_000,
    pingInterval: 20_000,
    maxPingOut: 3,
    timeout: 10_000,
  };
  if (cfg.nkey_seed_file) {
    const seed = text(await _readFile(cfg.nkey_seed_file, "nkey_seed_file")).trim();
    opts.authenticator = core.nkeyAuthenticator(new TextEncoder().encode(seed));
  } else if (cfg.creds_file) {
    opts.authenticator = core.credsAuthenticator(await _readFile(cfg.creds_file, "creds_file"));
  } else if (cfg.user && cfg.password_file) {
    const pass = text(await _readFile(cfg.password_file, "password_file")).trim();
    opts.authenticator = core.usernamePasswordAuthenticator(cfg.user, pass);
  }
  const tlsWanted = cfg.ca_file || cfg.cert_file ||
    cfg.servers.some((s) => s.startsWith("tls:"));
  if (tlsWanted) {
    const tls: Record<string, string> = {};
    if (cfg.ca_file) tls.ca = text(await _readFile(cfg.ca_file, "ca_file"));
    if (cfg.cert_file) tls.cert = text(await _readFile(cfg.cert_file, "cert_file"));
    if (cfg.key_file) tls.key = text(await _readFile(cfg.key_file, "key_file"));
    opts.tls = tls;
  }
  return opts;
}

/**
 * Connect, trying again every 2–3 s until it works or the last reference is
 * released. Not the client's `waitOnFirstConnect`: that promise cannot be
 * cancelled, so releasing a handle whose server never answered waited for
 * ever (`control-plane --publish --once` to a server that is down hung).
 */
async function _connect(cfg: NatsConfig, s: _Shared): Promise<NatsConnection> {
  const { connect } = await import("@nats-io/transport-node");
  const opts = await _options(cfg);
  let nc: NatsConnection;
  for (;;) {
    if (s.closed) throw new NatsUnavailableError("the NATS connection was released");
    try {
      nc = await connect(opts);
      break;
    } catch (e) {
      s.lastError = (e as Error).message;
      if (s.closed) throw new NatsUnavailableError("the NATS connection was released");
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 2_000 + Math.random() * 1_000);
        s.cancelWait = () => {
          clearTimeout(t);
          resolve();
        };
      });
      s.cancelWait = null;
    }
  }
  s.nc = nc;
  if (s.closed) {
    await nc.close();
    throw new NatsUnavailableError("the NATS connection was released");
  }
  const notify = () => {
    for (const fn of [...s.listeners]) {
      try {
        fn();
      } catch { /* a listener's failure is its own */ }
    }
  };
  (async () => {
    for await (const st of nc.status()) {
      if (st.type === "disconnect") s.down = true;
      if (st.type === "reconnect") {
        s.down = false;
        notify();
      }
    }
  })().catch(() => {});
  // Whoever waited for the first connection (a daemon whose server was down at start) hears it too.
  queueMicrotask(notify);
  return nc;
}

/** Take a reference to the shared connection for `cfg`, connecting in the background. */
export function acquireNats(cfg: NatsConfig): NatsHandle {
  const key = JSON.stringify(cfg);
  let s = _shared.get(key);
  if (!s || s.closed) {
    const fresh: _Shared = {
      key,
      refs: 0,
      listeners: new Set(),
      closed: false,
      down: false,
      nc: null,
      cancelWait: null,
      lastError: "",
      conn: Promise.resolve(null as unknown as NatsConnection),
    };
    fresh.conn = _connect(cfg, fresh);
    fresh.conn.catch(() => {});
    _shared.set(key, fresh);
    s = fresh;
  }
  const shared = s;
  shared.refs++;
  const mine = new Set<() => void>();
  let released = false;
  return {
    describe: cfg.servers.join(","),
    async connection(timeoutMs: number): Promise<NatsConnection> {
      if (released) throw new NatsUnavailableError("this NATS handle was released");
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new NatsUnavailableError(
                `no connection to NATS ${cfg.servers.join(",")} within ${
                  Math.round(timeoutMs / 1000)
                } s${shared.lastError ? ` (${shared.lastError})` : ""}; still trying`,
              ),
            ),
          timeoutMs,
        );
      });
      try {
        const nc = await Promise.race([shared.conn, timeout]);
        if (nc.isClosed()) throw new NatsUnavailableError("the NATS connection is closed");
        if (shared.down) {
          // Fail now rather than queue the request until it times out; a reconnect calls back.
          throw new NatsUnavailableError(
            `disconnected from NATS ${cfg.servers.join(",")}; reconnecting`,
          );
        }
        return nc;
      } catch (e) {
        if (e instanceof NatsUnavailableError) throw e;
        throw new NatsUnavailableError(
          `NATS ${cfg.servers.join(",")}: ${(e as Error).message}`,
          { cause: e },
        );
      } finally {
        clearTimeout(timer);
      }
    },
    onReconnect(fn: () => void): void {
      mine.add(fn);
      shared.listeners.add(fn);
    },
    release(): Promise<void> {
      if (released) return Promise.resolve();
      released = true;
      for (const fn of mine) shared.listeners.delete(fn);
      if (--shared.refs > 0) return Promise.resolve();
      shared.closed = true;
      if (_shared.get(shared.key) === shared) _shared.delete(shared.key);
      shared.cancelWait?.();
      // Not connected yet: nothing to close (an attempt under way closes what it gets).
      if (shared.nc === null) return Promise.resolve();
      return shared.nc.close().catch(() => {});
    },
  };
}
