/**
 * A tiny, dependency-free assertion library for the tests (jsr: is not
 * reachable here, so `@std/assert` cannot be used). The names and argument
 * orders follow `@std/assert` so the tests read the same.
 *
 * - {@linkcode assert}: a condition holds.
 * - {@linkcode assertEquals} / {@linkcode assertNotEquals}: structural deep
 *   equality (objects, arrays, typed arrays such as `Uint8Array`, `Map`,
 *   `Set`, `Date`, `RegExp`, errors); prints both values and the path of the
 *   first difference on failure.
 * - {@linkcode assertMatch}, {@linkcode assertStringIncludes}: strings.
 * - {@linkcode assertInstanceOf}: class membership (narrows the type).
 * - {@linkcode assertThrows} / {@linkcode assertRejects}: a function throws,
 *   a promise rejects; both return the error for further checks.
 * - {@linkcode fail}: fail unconditionally.
 *
 * @example
 * ```ts
 * import { assertEquals, assertThrows } from "./_assert.ts";
 * assertEquals({ a: [1, new Uint8Array([2])] }, { a: [1, new Uint8Array([2])] });
 * const e = assertThrows(() => JSON.parse("{"), SyntaxError);
 * ```
 *
 * @module
 */

/** Thrown by every assertion in this file when it fails. */
export class AssertionError extends Error {
  /** Make an assertion error with `message`. */
  constructor(message: string) {
    super(message);
    this.name = "AssertionError";
  }
}

// deno-lint-ignore no-explicit-any
type AnyConstructor = new (...args: any[]) => unknown;
/** A class of errors, as passed to {@linkcode assertThrows} / {@linkcode assertRejects}. */
// deno-lint-ignore no-explicit-any
export type ErrorClass<E extends Error = Error> = abstract new (...args: any[]) => E;

function _prefix(msg: string | undefined): string {
  return msg ? `${msg}: ` : "";
}

/** Render a value for a failure message: deep, keys sorted, long arrays shortened. */
export function format(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  return Deno.inspect(v, {
    depth: Infinity,
    sorted: true,
    iterableLimit: 200,
    strAbbreviateSize: 1000,
    colors: false,
    compact: true,
    breakLength: 100,
  });
}

function _isTypedArray(v: unknown): v is ArrayBufferView & ArrayLike<number | bigint> {
  return ArrayBuffer.isView(v) && !(v instanceof DataView);
}

function _pathKey(path: string, key: PropertyKey): string {
  if (typeof key === "number") return `${path}[${key}]`;
  if (typeof key === "symbol") return `${path}[${String(key)}]`;
  return /^[A-Za-z_$][\w$]*$/.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`;
}

/**
 * Find the first structural difference between `a` and `b`.
 *
 * Returns `null` when they are equal, else a description such as
 * `$.addons[1].version: "1" !== "2"`. Rules: primitives compare with `===`
 * (except that `NaN` equals `NaN`); values of different classes differ (an
 * `Array` is not a `Uint8Array`); objects compare their own enumerable keys,
 * and a key whose value is `undefined` is *not* the same as a missing key;
 * typed arrays and `ArrayBuffer`s compare their elements; `Map`s and `Set`s
 * compare as unordered collections; `Date`s by time, `RegExp`s by source and
 * flags; errors also compare `name` and `message`. Cycles are handled.
 */
export function difference(a: unknown, b: unknown, path = "$"): string | null {
  return _diff(a, b, path, new Map());
}

function _diff(
  a: unknown,
  b: unknown,
  path: string,
  seen: Map<object, Set<object>>,
): string | null {
  if (a === b) return null;
  if (typeof a === "number" && typeof b === "number" && Number.isNaN(a) && Number.isNaN(b)) {
    return null;
  }
  const mismatch = () => `${path}: ${format(a)} !== ${format(b)}`;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) {
    return mismatch(); // different primitives, or a primitive against an object
  }
  // Both are objects.
  const pairs = seen.get(a);
  if (pairs?.has(b)) return null; // already being compared higher up (cycle)
  if (pairs) pairs.add(b);
  else seen.set(a, new Set([b]));

  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) {
    const ca = (a as { constructor?: { name?: string } }).constructor?.name ?? "null-prototype";
    const cb = (b as { constructor?: { name?: string } }).constructor?.name ?? "null-prototype";
    if (!(_isPlainish(a) && _isPlainish(b))) {
      return `${path}: actual is a ${ca}, expected a ${cb}: ${format(a)} !== ${format(b)}`;
    }
  }
  if (a instanceof Date && b instanceof Date) {
    return Object.is(a.getTime(), b.getTime()) ? null : mismatch();
  }
  if (a instanceof RegExp && b instanceof RegExp) {
    return a.source === b.source && a.flags === b.flags ? null : mismatch();
  }
  if (a instanceof ArrayBuffer && b instanceof ArrayBuffer) {
    return _diff(new Uint8Array(a), new Uint8Array(b), path, seen);
  }
  if (a instanceof DataView && b instanceof DataView) {
    return _diff(
      new Uint8Array(a.buffer, a.byteOffset, a.byteLength),
      new Uint8Array(b.buffer, b.byteOffset, b.byteLength),
      path,
      seen,
    );
  }
  if (_isTypedArray(a) && _isTypedArray(b)) {
    if (a.length !== b.length) {
      return `${path}: length ${a.length} !== ${b.length}`;
    }
    for (let i = 0; i < a.length; i++) {
      const x = a[i]!;
      const y = b[i]!;
      if (!(x === y || (Number.isNaN(x) && Number.isNaN(y)))) {
        return `${path}[${i}]: ${format(x)} !== ${format(y)}`;
      }
    }
    return null;
  }
  if (a instanceof Map && b instanceof Map) {
    if (a.size !== b.size) return `${path}: Map size ${a.size} !== ${b.size}`;
    for (const [k, va] of a) {
      if (b.has(k)) {
        const d = _diff(va, b.get(k), `${path}.get(${format(k)})`, seen);
        if (d) return d;
        continue;
      }
      // Look for a structurally equal key.
      let found = false;
      for (const [kb, vb] of b) {
        if (_diff(k, kb, path, new Map()) === null && _diff(va, vb, path, new Map()) === null) {
          found = true;
          break;
        }
      }
      if (!found) return `${path}: key ${format(k)} missing or different in the expected Map`;
    }
    return null;
  }
  if (a instanceof Set && b instanceof Set) {
    if (a.size !== b.size) return `${path}: Set size ${a.size} !== ${b.size}`;
    for (const x of a) {
      if (b.has(x)) continue;
      let found = false;
      for (const y of b) {
        if (_diff(x, y, path, new Map()) === null) {
          found = true;
          break;
        }
      }
      if (!found) return `${path}: element ${format(x)} missing from the expected Set`;
    }
    return null;
  }
  if (Array.isArray(a) !== Array.isArray(b)) return mismatch();
  if (Array.isArray(a) && Array.isArray(b) && a.length !== b.length) {
    return `${path}: array length ${a.length} !== ${b.length}\n    actual:   ${
      format(a)
    }\n    expected: ${format(b)}`;
  }
  if (a instanceof Error && b instanceof Error) {
    if (a.name !== b.name) {
      return `${_pathKey(path, "name")}: ${format(a.name)} !== ${format(b.name)}`;
    }
    if (a.message !== b.message) {
      return `${_pathKey(path, "message")}: ${format(a.message)} !== ${format(b.message)}`;
    }
  }
  const ka = Reflect.ownKeys(a).filter((k) => Object.prototype.propertyIsEnumerable.call(a, k));
  const kb = Reflect.ownKeys(b).filter((k) => Object.prototype.propertyIsEnumerable.call(b, k));
  const kbSet = new Set(kb);
  for (const k of ka) {
    if (!kbSet.has(k)) {
      return `${_pathKey(path, _numericKey(a, k))}: present in actual (${
        format((a as Record<PropertyKey, unknown>)[k])
      }) but missing in expected`;
    }
  }
  const kaSet = new Set(ka);
  for (const k of kb) {
    if (!kaSet.has(k)) {
      return `${_pathKey(path, _numericKey(b, k))}: missing in actual, expected ${
        format((b as Record<PropertyKey, unknown>)[k])
      }`;
    }
  }
  for (const k of ka) {
    const d = _diff(
      (a as Record<PropertyKey, unknown>)[k],
      (b as Record<PropertyKey, unknown>)[k],
      _pathKey(path, _numericKey(a, k)),
      seen,
    );
    if (d) return d;
  }
  return null;
}

/** Plain objects and null-prototype objects compare with each other. */
function _isPlainish(v: object): boolean {
  const p = Object.getPrototypeOf(v);
  return p === null || p === Object.prototype;
}

function _numericKey(obj: object, k: PropertyKey): PropertyKey {
  return Array.isArray(obj) && typeof k === "string" && /^\d+$/.test(k) ? Number(k) : k;
}

/** Whether `a` and `b` are structurally equal (see {@linkcode difference} for the rules). */
export function equal(a: unknown, b: unknown): boolean {
  return difference(a, b) === null;
}

/** Fail unless `cond` is truthy; narrows `cond`. */
export function assert(cond: unknown, msg = "expected a truthy value"): asserts cond {
  if (!cond) throw new AssertionError(msg);
}

/** Fail unconditionally. */
export function fail(msg = "failed"): never {
  throw new AssertionError(msg);
}

/**
 * Fail unless `actual` deep-equals `expected` (see {@linkcode difference});
 * the message prints both values and the first difference.
 */
export function assertEquals<T>(actual: unknown, expected: T, msg?: string): asserts actual is T {
  const d = difference(actual, expected);
  if (d === null) return;
  throw new AssertionError(
    `${_prefix(msg)}values are not equal\n  first difference: ${d}\n  actual:   ${
      format(actual)
    }\n  expected: ${format(expected)}`,
  );
}

/** Fail when `actual` deep-equals `expected`. */
export function assertNotEquals(actual: unknown, expected: unknown, msg?: string): void {
  if (difference(actual, expected) !== null) return;
  throw new AssertionError(
    `${_prefix(msg)}expected the values to differ, both are ${format(actual)}`,
  );
}

/** Fail unless `actual` is a string matching `re`. */
export function assertMatch(actual: unknown, re: RegExp, msg?: string): asserts actual is string {
  if (typeof actual === "string" && re.test(actual)) return;
  throw new AssertionError(`${_prefix(msg)}${format(actual)} does not match ${String(re)}`);
}

/** Fail unless `actual` is a string containing `expected`. */
export function assertStringIncludes(
  actual: unknown,
  expected: string,
  msg?: string,
): asserts actual is string {
  if (typeof actual === "string" && actual.includes(expected)) return;
  throw new AssertionError(
    `${_prefix(msg)}${format(actual)} does not include ${format(expected)}`,
  );
}

/** Fail unless `actual` is an instance of `klass`; narrows `actual`. */
export function assertInstanceOf<C extends AnyConstructor>(
  actual: unknown,
  klass: C,
  msg?: string,
): asserts actual is InstanceType<C> {
  if (actual instanceof klass) return;
  const got = actual === null || typeof actual !== "object"
    ? format(actual)
    : `a ${(actual as { constructor?: { name?: string } }).constructor?.name ?? "object"}: ${
      format(actual)
    }`;
  throw new AssertionError(`${_prefix(msg)}expected an instance of ${klass.name}, got ${got}`);
}

function _checkError<E extends Error>(
  what: string,
  e: unknown,
  klass: ErrorClass<E> | undefined,
  includes: string | undefined,
  msg: string | undefined,
): E {
  if (klass && !(e instanceof klass)) {
    throw new AssertionError(
      `${_prefix(msg)}${what} ${
        e instanceof Error ? `${e.name}: ${e.message}` : format(e)
      }, expected an instance of ${klass.name}`,
    );
  }
  if (includes !== undefined) {
    const message = e instanceof Error ? e.message : String(e);
    if (!message.includes(includes)) {
      throw new AssertionError(
        `${_prefix(msg)}the error message ${format(message)} does not include ${format(includes)}`,
      );
    }
  }
  return e as E;
}

/**
 * Fail unless `fn` throws; checks the error's class and that its message
 * includes `msgIncludes` when given. Returns the error.
 *
 * @example
 * ```ts
 * const e = assertThrows(() => decode("x"), DecodeError, "must be a number");
 * assertEquals(e.path, "a.b");
 * ```
 */
export function assertThrows<E extends Error = Error>(
  fn: () => unknown,
  klass?: ErrorClass<E>,
  msgIncludes?: string,
  msg?: string,
): E {
  let result: unknown;
  try {
    result = fn();
  } catch (e) {
    return _checkError("threw", e, klass, msgIncludes, msg);
  }
  if (result instanceof Promise) {
    result.catch(() => {});
    throw new AssertionError(
      `${_prefix(msg)}the function returned a promise; use assertRejects for async functions`,
    );
  }
  throw new AssertionError(
    `${_prefix(msg)}expected the function to throw, it returned ${format(result)}`,
  );
}

/**
 * Fail unless the promise from `fn` (or `fn` itself, if a promise) rejects;
 * checks the error's class and that its message includes `msgIncludes` when
 * given. A synchronous throw from `fn` counts as a rejection. Returns the error.
 *
 * @example
 * ```ts
 * const e = await assertRejects(() => loadConfig("/nope"), ConfigError, "/nope");
 * ```
 */
export async function assertRejects<E extends Error = Error>(
  fn: (() => PromiseLike<unknown>) | PromiseLike<unknown>,
  klass?: ErrorClass<E>,
  msgIncludes?: string,
  msg?: string,
): Promise<E> {
  let result: unknown;
  try {
    result = await (typeof fn === "function" ? fn() : fn);
  } catch (e) {
    return _checkError("rejected with", e, klass, msgIncludes, msg);
  }
  throw new AssertionError(
    `${_prefix(msg)}expected a rejection, the promise resolved to ${format(result)}`,
  );
}
