/**
 * Timeouts for every request to a store or source (SPEC 12): the response
 * headers must arrive within `connect_s`, and a body that delivers no byte for
 * `idle_s` fails with a {@linkcode StallError}. A caller's `AbortSignal`
 * interrupts a read that is waiting for bytes at once, not only between
 * reads, so a stopping agent never waits on a silent peer.
 *
 * The one place this logic lives: {@linkcode fetchWithTimeouts} for requests
 * made with `fetch`, {@linkcode guardBody} for any byte stream. A guarded
 * body stays a byte stream: a reader that brings its own buffer
 * (`getReader({ mode: "byob" })`) still gets the bytes read straight into it.
 *
 * @example Fetch with timeouts and a stop signal
 * ```ts
 * import { fetchWithTimeouts } from "./io_timeouts.ts";
 * const stop = new AbortController();
 * const res = await fetchWithTimeouts(
 *   "http://127.0.0.1:8080/doc",
 *   { signal: stop.signal },
 *   { connect_s: 10, idle_s: 60 },
 *   "control plane http://127.0.0.1:8080",
 * );
 * const text = await res.text(); // a StallError after 60 s without a byte
 * ```
 *
 * @module
 */

/** Seconds until response headers (`connect_s`) and without a byte of a body (`idle_s`). */
export interface IoTimeouts {
  connect_s: number;
  idle_s: number;
}

/** `timeouts` when a config gives none (SPEC 12). */
export const DEFAULT_IO_TIMEOUTS: IoTimeouts = { connect_s: 10, idle_s: 60 };

/** A peer that went silent: no headers within `connect_s`, or no byte for `idle_s`. A retry may cure it. */
export class StallError extends Error {
  /** Always transient: the store or source may answer next time. */
  readonly transient = true;
  /** Make the error with a message naming the peer and the timeout that expired. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StallError";
  }
}

/** How {@linkcode guardBody} watches a body. */
export interface GuardOptions {
  /** Interrupt a read that waits longer than this many milliseconds for a byte. */
  idleMs: number;
  /** The error a stall interrupts the read with. */
  onStall: () => Error;
  /** Interrupts a waiting read at once (with the signal's reason) and cancels the body. */
  signal?: AbortSignal;
  /**
   * What an interrupted read sees: `"error"` (the default) fails it with the
   * reason; `"end"` ends the body there, so the bytes that already arrived
   * are delivered (a download keeps them for a resume) and
   * {@linkcode interruptionOf} tells why it ended early.
   */
  interrupted?: "error" | "end";
}

/** Bytes read from the peer at a time by {@linkcode guardBody}. */
const SCRATCH = 256 * 1024;

const _interruptions = new WeakMap<ReadableStream<Uint8Array>, unknown>();

/**
 * Why a body made by {@linkcode guardBody} with `interrupted: "end"` ended
 * early (a stall or an abort), or null when it was not interrupted.
 *
 * @example
 * ```ts
 * import { guardBody, interruptionOf, StallError } from "./io_timeouts.ts";
 * declare const src: ReadableStream<Uint8Array>;
 * const body = guardBody(src, { idleMs: 1000, onStall: () => new StallError("stalled"), interrupted: "end" });
 * for await (const _ of body) { /* consume *\/ }
 * console.log(interruptionOf(body)); // a StallError when the peer went silent
 * ```
 */
export function interruptionOf(body: unknown): Error | null {
  const why = body instanceof ReadableStream ? _interruptions.get(body) : undefined;
  if (why === undefined) return null;
  return why instanceof Error ? why : new Error(String(why));
}

/**
 * `src` as a byte stream whose reads are interrupted with `onStall()` when no
 * byte comes for `idleMs`, or with the signal's reason when `signal` aborts;
 * either way `src` is cancelled, which releases its connection. The time a
 * consumer takes between reads does not count: only waiting for the peer
 * does. A reader that brings its own buffer (BYOB, with `min`) gets the
 * bytes copied into it.
 *
 * @example
 * ```ts
 * import { guardBody, StallError } from "./io_timeouts.ts";
 * declare const body: ReadableStream<Uint8Array>;
 * const guarded = guardBody(body, {
 *   idleMs: 60_000,
 *   onStall: () => new StallError("s3://addons/x: no byte for 60 s"),
 * });
 * for await (const chunk of guarded) console.log(chunk.length);
 * ```
 */
export function guardBody(
  src: ReadableStream<Uint8Array>,
  opts: GuardOptions,
): ReadableStream<Uint8Array> {
  // Bytes are read into a buffer of our own (reused: no garbage per chunk) and copied into the
  // consumer's: a read that is cancelled mid-way never takes the consumer's buffer with it.
  let byob: ReadableStreamBYOBReader | null = null;
  let plain: ReadableStreamDefaultReader<Uint8Array> | null = null;
  try {
    byob = src.getReader({ mode: "byob" });
  } catch {
    plain = src.getReader();
  }
  const reader = (byob ?? plain)!;
  let scratch: Uint8Array = new Uint8Array(SCRATCH);
  let failure: unknown = null;
  let waiting = false;
  let lastByte = 0;
  let timer: ReturnType<typeof setTimeout> | null = null;
  const interrupt = (why: unknown) => {
    if (failure !== null) return;
    failure = why;
    // Cancelling settles a pending read at once (done) and lets go of the connection.
    reader.cancel(why).catch(() => {});
  };
  const onAbort = () => interrupt(opts.signal!.reason);
  // One timer per idle period, not one per chunk: it re-arms for what is left.
  const arm = (ms: number) => {
    timer = setTimeout(() => {
      timer = null;
      if (!waiting || failure !== null) return;
      const left = lastByte + opts.idleMs - Date.now();
      if (left > 0) arm(left);
      else interrupt(opts.onStall());
    }, ms);
  };
  const finish = () => {
    if (timer !== null) clearTimeout(timer);
    timer = null;
    opts.signal?.removeEventListener("abort", onAbort);
  };
  if (opts.signal?.aborted) interrupt(opts.signal.reason);
  else opts.signal?.addEventListener("abort", onAbort, { once: true });

  const holder: { stream?: ReadableStream<Uint8Array> } = {};
  const close = (controller: ReadableByteStreamController) => {
    finish();
    controller.close();
    // A reader waiting with its own buffer gets what was filled so far, with `done`.
    controller.byobRequest?.respond(0);
  };
  const interrupted = (controller: ReadableByteStreamController) => {
    finish();
    if (opts.interrupted !== "end") throw failure;
    _interruptions.set(holder.stream!, failure);
    close(controller);
  };
  const source: UnderlyingByteSource = {
    type: "bytes",
    autoAllocateChunkSize: SCRATCH,
    async pull(controller: ReadableByteStreamController) {
      if (failure !== null) return interrupted(controller);
      waiting = true;
      lastByte = Date.now();
      if (timer === null) arm(opts.idleMs);
      let r: ReadableStreamReadResult<Uint8Array>;
      const want = Math.min(scratch.length, controller.byobRequest?.view?.byteLength ?? SCRATCH);
      try {
        r = byob ? await byob.read(scratch.subarray(0, want)) : await plain!.read();
      } catch (e) {
        if (failure !== null) return interrupted(controller);
        finish();
        throw e;
      } finally {
        waiting = false;
      }
      if (byob && r.value) scratch = new Uint8Array(r.value.buffer);
      if (failure !== null) return interrupted(controller);
      if (r.done) return close(controller);
      const v = r.value;
      const req = controller.byobRequest;
      if (byob && req?.view && v.byteLength <= req.view.byteLength) {
        new Uint8Array(req.view.buffer, req.view.byteOffset, v.byteLength).set(v);
        req.respond(v.byteLength);
      } else {
        // enqueue takes the chunk's buffer: hand it a copy when the buffer is ours or shared.
        controller.enqueue(byob || v.byteLength !== v.buffer.byteLength ? v.slice() : v);
      }
    },
    cancel(reason) {
      finish();
      if (failure !== null) return Promise.resolve();
      failure = reason ?? new Error("cancelled");
      return reader.cancel(reason);
    },
  };
  const stream = new ReadableStream(source) as ReadableStream<Uint8Array>;
  holder.stream = stream;
  return stream;
}

/** `fetch` options plus Deno's `client` (CA and client certificates). */
export type FetchInit = RequestInit & { client?: Deno.HttpClient };

/** Statuses whose Response may not carry a body. */
const _NULL_BODY = new Set([101, 103, 204, 205, 304]);

/**
 * `fetch` whose response headers must arrive within `connect_s` and whose
 * body fails a read after `idle_s` without a byte (both a
 * {@linkcode StallError} naming `what`). `init.signal` aborts the request,
 * and later interrupts a read of the body at once. With `interrupted: "end"`
 * an interrupted body ends where it stopped (see {@linkcode GuardOptions}).
 *
 * @example
 * ```ts
 * import { fetchWithTimeouts } from "./io_timeouts.ts";
 * const res = await fetchWithTimeouts("http://127.0.0.1:9000/b/k", {}, { connect_s: 10, idle_s: 60 }, "s3://b/k");
 * console.log(res.status);
 * ```
 */
export async function fetchWithTimeouts(
  input: string | URL,
  init: FetchInit,
  t: IoTimeouts,
  what: string,
  opts: { interrupted?: "error" | "end" } = {},
): Promise<Response> {
  const outer = init.signal ?? undefined;
  const ctl = new AbortController();
  let timedOut: StallError | null = null;
  const onOuter = () => ctl.abort(outer!.reason);
  if (outer?.aborted) ctl.abort(outer.reason);
  else outer?.addEventListener("abort", onOuter, { once: true });
  const timer = setTimeout(() => {
    timedOut = new StallError(
      `${what}: no response within ${t.connect_s} s (timeouts.connect_s)`,
    );
    ctl.abort(timedOut);
  }, t.connect_s * 1000);
  let res: Response;
  try {
    res = await fetch(input, { ...init, signal: ctl.signal });
  } catch (e) {
    outer?.removeEventListener("abort", onOuter);
    throw timedOut ?? e;
  } finally {
    clearTimeout(timer);
  }
  outer?.removeEventListener("abort", onOuter);
  // An opaque redirect (`redirect: "manual"`) has no body to guard and a status Response refuses.
  if (res.status < 200 || res.status > 599) return res;
  const head = { status: res.status, statusText: res.statusText, headers: res.headers };
  if (res.body === null || _NULL_BODY.has(res.status)) {
    await res.body?.cancel().catch(() => {});
    return new Response(null, head);
  }
  const body = guardBody(res.body, {
    idleMs: t.idle_s * 1000,
    onStall: () => new StallError(`${what}: no byte for ${t.idle_s} s (timeouts.idle_s)`),
    ...(outer ? { signal: outer } : {}),
    ...(opts.interrupted ? { interrupted: opts.interrupted } : {}),
  });
  return new Response(body, head);
}
