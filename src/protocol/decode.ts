/**
 * Decoding untyped JSON into typed values, once, at the edge.
 *
 * Every failure is a {@linkcode DecodeError} that carries the field path
 * (`source.poll_interval_s`, `addons[2].version`) and, where known, the file.
 *
 * @example Read a config object
 * ```ts
 * const r = ObjectReader.of({ a: 1 }, "");
 * const a = r.optNumber("a", { integer: true });
 * r.done(); // throws on keys that were never read
 * ```
 *
 * @module
 */

import { didYouMean, suggest } from "../common/mod.ts";
import { jsonSyntaxError } from "./json_syntax.ts";

/** A JSON value as `JSON.parse` returns it. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A JSON object. */
export type JsonObject = { [key: string]: Json };

/** An input that does not have the shape it must have; names the field path. */
export class DecodeError extends Error {
  /** Make an error for `path` (empty for the whole value), optionally in `file`; keeps the `cause`. */
  constructor(
    readonly path: string,
    readonly reason: string,
    readonly file?: string,
    options?: { cause?: unknown },
  ) {
    super(
      `${file ? `${file}: ` : ""}${path ? `${path}: ` : ""}${reason}`,
      options?.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "DecodeError";
  }

  /** Return the same error attributed to `file`. */
  inFile(file: string): DecodeError {
    return new DecodeError(this.path, this.reason, file, { cause: this.cause });
  }
}

/**
 * Join a parent path and a key into a field path: `a.b`, `a[2]`, and `a["x.y"]` for a key
 * that is empty or holds `.`, `[`, `]`, a quote, whitespace or a control character (so
 * every path names its field, even one an attacker named).
 *
 * @example
 * ```ts
 * import { joinPath } from "./decode.ts";
 * joinPath("env", "A=B"); // "env.A=B"
 * joinPath("", ""); // '[""]'
 * ```
 */
export function joinPath(parent: string, key: string | number): string {
  if (typeof key === "number") return `${parent}[${key}]`;
  // deno-lint-ignore no-control-regex
  if (key === "" || /[.[\]"\s\u0000-\u001f\u007f-\u009f]/.test(key)) {
    return `${parent}[${JSON.stringify(key)}]`;
  }
  return parent ? `${parent}.${key}` : key;
}

/**
 * Return `s` when it holds no NUL character; else throw a {@linkcode DecodeError} at `path`.
 * A NUL would cut a path, an argument or an environment entry short where the kernel reads it.
 *
 * @example
 * ```ts
 * import { noNul } from "./decode.ts";
 * noNul("ok", "args[0]"); // "ok"
 * ```
 */
export function noNul(s: string, path: string): string {
  if (s.includes("\0")) throw new DecodeError(path, "must not contain a NUL character");
  return s;
}

/** Deepest nesting of arrays and objects accepted in a document (SPEC 12). */
export const MAX_JSON_DEPTH = 100;

/** How deeply `v` nests arrays and objects, counted without recursion, stopping past `limit`. */
function _depth(v: Json, limit: number): number {
  let deepest = 0;
  const stack: [Json, number][] = [[v, 0]];
  while (stack.length > 0) {
    const [x, d] = stack.pop()!;
    if (x === null || typeof x !== "object") continue;
    if (d + 1 > deepest) deepest = d + 1;
    if (deepest > limit) return deepest;
    for (const c of Array.isArray(x) ? x : Object.values(x)) stack.push([c, d + 1]);
  }
  return deepest;
}

/**
 * Parse JSON text, turning a syntax error into a {@linkcode DecodeError}; a value nested
 * deeper than {@linkcode MAX_JSON_DEPTH} is refused too (code that walks it recursively —
 * a redaction, a canonical form — would overflow the stack).
 */
export function parseJson(text: string, file?: string): Json {
  let v: Json;
  try {
    v = JSON.parse(text) as Json;
  } catch (e) {
    // Not JSON.parse's message: it quotes the text around the error, which may be a secret.
    throw new DecodeError("", jsonSyntaxError(text), file, { cause: e });
  }
  if (_depth(v, MAX_JSON_DEPTH) > MAX_JSON_DEPTH) {
    throw new DecodeError("", `nested deeper than ${MAX_JSON_DEPTH} levels`, file);
  }
  return v;
}

/** Whether `v` is a JSON object (not an array, not null). */
export function isObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Describe the JSON type of a value for error messages. */
export function typeName(v: unknown): string {
  if (v === undefined) return "nothing";
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "object") return "an object";
  return `a ${typeof v}`;
}

/** Reads the fields of one JSON object, tracking which keys were used. */
export class ObjectReader {
  readonly #obj: JsonObject;
  readonly #used = new Set<string>();

  private constructor(obj: JsonObject, readonly path: string) {
    this.#obj = obj;
  }

  /** Start reading `value`, which must be an object, found at `path`. */
  static of(value: unknown, path: string): ObjectReader {
    if (!isObject(value)) {
      throw new DecodeError(path, `must be an object, got ${typeName(value)}`);
    }
    return new ObjectReader(value, path);
  }

  /** Whether `key` is present (and not null). */
  has(key: string): boolean {
    return this.#obj[key] !== undefined && this.#obj[key] !== null;
  }

  /** The raw value of `key`, marked as used. */
  raw(key: string): Json | undefined {
    this.#used.add(key);
    const v = this.#obj[key];
    return v === null ? undefined : v;
  }

  /** Field path of `key` inside this object. */
  at(key: string): string {
    return joinPath(this.path, key);
  }

  /** A required non-empty string. */
  string(key: string): string {
    const v = this.optString(key);
    if (v === undefined) throw this.missing(key);
    return v;
  }

  /** An optional string; empty strings are refused unless `allowEmpty`, NUL always (SPEC 12). */
  optString(key: string, allowEmpty = false): string | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (typeof v !== "string") {
      throw new DecodeError(this.at(key), `must be a string, got ${typeName(v)}`);
    }
    if (!allowEmpty && v === "") throw new DecodeError(this.at(key), "must not be empty");
    return noNul(v, this.at(key));
  }

  /** An optional number within `[min, max]`; integers only when `integer`. */
  optNumber(
    key: string,
    opts: { min?: number; max?: number; integer?: boolean } = {},
  ): number | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (typeof v !== "number" || !Number.isFinite(v)) {
      throw new DecodeError(this.at(key), `must be a number, got ${typeName(v)}`);
    }
    if (opts.integer && !Number.isInteger(v)) {
      throw new DecodeError(this.at(key), "must be a whole number");
    }
    if (opts.min !== undefined && v < opts.min) {
      throw new DecodeError(this.at(key), `must be at least ${opts.min}, got ${v}`);
    }
    if (opts.max !== undefined && v > opts.max) {
      throw new DecodeError(this.at(key), `must be at most ${opts.max}, got ${v}`);
    }
    return v;
  }

  /** An optional boolean. */
  optBool(key: string): boolean | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (typeof v !== "boolean") {
      throw new DecodeError(this.at(key), `must be true or false, got ${typeName(v)}`);
    }
    return v;
  }

  /** An optional array of strings. */
  optStringArray(key: string): string[] | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (!Array.isArray(v)) {
      throw new DecodeError(this.at(key), `must be an array of strings, got ${typeName(v)}`);
    }
    return v.map((item, i) => {
      if (typeof item !== "string") {
        throw new DecodeError(
          joinPath(this.at(key), i),
          `must be a string, got ${typeName(item)}`,
        );
      }
      return noNul(item, joinPath(this.at(key), i));
    });
  }

  /** An optional object whose values are all strings. */
  optStringRecord(key: string): Record<string, string> | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (!isObject(v)) {
      throw new DecodeError(this.at(key), `must be an object of strings, got ${typeName(v)}`);
    }
    const out: Record<string, string> = {};
    for (const [k, item] of Object.entries(v)) {
      const at = joinPath(this.at(key), k);
      if (typeof item !== "string") {
        throw new DecodeError(at, `must be a string, got ${typeName(item)}`);
      }
      noNul(k, at);
      out[k] = noNul(item, at);
    }
    return out;
  }

  /** An optional JSON object, returned as it is. */
  optJsonObject(key: string): JsonObject | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (!isObject(v)) {
      throw new DecodeError(this.at(key), `must be an object, got ${typeName(v)}`);
    }
    return v;
  }

  /** A nested object reader for `key`, or undefined when absent. */
  optObject(key: string): ObjectReader | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    return ObjectReader.of(v, this.at(key));
  }

  /** A required nested object reader for `key`. */
  object(key: string): ObjectReader {
    const r = this.optObject(key);
    if (!r) throw this.missing(key);
    return r;
  }

  /**
   * The error for a required `key` that is absent: when a key of this object that
   * nothing read is a near miss of it (`rot` for `root`), that key is named with the
   * suggestion, since the typo is what the person has to fix; else "is required".
   */
  missing(key: string): DecodeError {
    const near = Object.keys(this.#obj).find((k) =>
      !this.#used.has(k) && k !== key && suggest(k, [key]) === key
    );
    return near === undefined
      ? new DecodeError(this.at(key), "is required")
      : new DecodeError(this.at(near), `unknown key (did you mean ${key}?)`);
  }

  /** One of `choices`, required. */
  oneOf<T extends string>(key: string, choices: readonly T[]): T {
    const v = this.string(key);
    if (!(choices as readonly string[]).includes(v)) {
      throw new DecodeError(
        this.at(key),
        `must be one of ${choices.map((c) => JSON.stringify(c)).join(", ")}, got ${
          JSON.stringify(v)
        }${didYouMean(v, choices)}`,
      );
    }
    return v as T;
  }

  /**
   * Refuse any key that was not read: names the first unknown key's path and,
   * when a key this reader asked for is close to it, suggests that key.
   */
  done(): void {
    for (const key of Object.keys(this.#obj)) {
      if (!this.#used.has(key)) {
        throw new DecodeError(this.at(key), `unknown key${didYouMean(key, this.#used)}`);
      }
    }
  }
}
