/**
 * Artifact signatures (SPEC 5): the signed statement, strict RFC 8032 Ed25519
 * verification (WebCrypto), signing and key generation (`@noble/ed25519`).
 *
 * @example Sign and verify a statement
 * ```ts
 * const key = await generateKey();
 * const stmt = { addon_id: "a", version: "1", target: "linux/amd64", sha256: "00".repeat(32) };
 * const sig = await signStatement(key.secret, stmt);
 * await verifyStatement(stmt, sig, [key.publicBase64]); // → the key that verified, or null
 * ```
 *
 * @module
 */

/** The signing library, loaded only by the publisher's commands (the agent only verifies). */
function _ed(): Promise<typeof import("@noble/ed25519")> {
  return import("@noble/ed25519");
}

/** What a signature speaks for: one add-on, version, platform and digest. */
export interface Statement {
  addon_id: string;
  version: string;
  /** `os/arch`. */
  target: string;
  /** Lowercase hex sha256. */
  sha256: string;
}

/** The exact bytes that are signed: UTF-8 lines joined by `\n`, no trailing newline. */
export function statementBytes(s: Statement): Uint8Array {
  return new TextEncoder().encode(
    [
      "addon-agent/artifact/v1",
      `addon_id=${s.addon_id}`,
      `version=${s.version}`,
      `target=${s.target}`,
      `sha256=${s.sha256}`,
    ].join("\n"),
  );
}

/**
 * Decode canonical standard base64, or return null when it is not: the padding must be
 * present and its unused bits zero, so one byte string has exactly one accepted text
 * (SPEC 12: a signature with changed padding bits is not the same signature).
 *
 * @example
 * ```ts
 * import { decodeBase64 } from "./signature.ts";
 * decodeBase64("AA=="); // Uint8Array [0]
 * decodeBase64("AB=="); // null: the unused bits are not zero
 * ```
 */
export function decodeBase64(s: string): Uint8Array | null {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) return null;
  let bytes: Uint8Array;
  try {
    bytes = Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
  return encodeBase64(bytes) === s ? bytes : null;
}

/** p = 2^255 - 19, the field of edwards25519. */
const P = (1n << 255n) - 19n;
/** The curve constant d = -121665/121666 mod p. */
const D = 37095705934669439343138083508754565189542113879843219016388785533085940283555n;
/**
 * The y coordinates (sign bit cleared, as 255-bit integers) of every encoding of a point of
 * small order, canonical or not: the identity (1, p+1), order 2 (p-1), order 4 (0, p) and
 * the order-8 points. The same list libsodium refuses.
 */
const SMALL_ORDER_Y = new Set<bigint>([
  0n,
  1n,
  2707385501144840649318225287225658788936804267575313519463743609750303402022n,
  55188659117513257062467267217118295137698188065244968500265048394206261417927n,
  P - 1n,
  P,
  P + 1n,
]);

function _pow(base: bigint, exp: bigint): bigint {
  let r = 1n;
  let b = base % P;
  for (let e = exp; e > 0n; e >>= 1n) {
    if (e & 1n) r = (r * b) % P;
    b = (b * b) % P;
  }
  return r;
}

/**
 * Why `key` (raw 32 bytes) cannot be a trust-root key, or null when it can: not 32 bytes,
 * a non-canonical encoding, not a point of the curve, or a point of small order (the
 * identity, for one, "verifies" a forged signature for any message).
 *
 * @example
 * ```ts
 * import { trustKeyProblem } from "./signature.ts";
 * trustKeyProblem(new Uint8Array(32)); // "is a point of small order …"
 * ```
 */
export function trustKeyProblem(key: Uint8Array): string | null {
  if (key.length !== 32) return `must be 32 bytes, got ${key.length}`;
  let y = 0n;
  for (let i = 31; i >= 0; i--) y = (y << 8n) | BigInt(i === 31 ? key[i]! & 0x7f : key[i]!);
  if (SMALL_ORDER_Y.has(y)) {
    return "is a point of small order (such as the identity): it would accept forged signatures";
  }
  if (y >= P) return "is not a canonical encoding of a curve point";
  // x^2 = (y^2 - 1) / (d y^2 + 1) must have a square root (Euler's criterion).
  const y2 = (y * y) % P;
  const u = (y2 - 1n + P) % P;
  const v = (D * y2 + 1n) % P;
  const x2 = (u * _pow(v, P - 2n)) % P;
  if (x2 !== 0n && _pow(x2, (P - 1n) / 2n) !== 1n) return "is not a point of the curve";
  if (x2 === 0n && (key[31]! & 0x80) !== 0) return "is not a canonical encoding of a curve point";
  return null;
}

/** Encode bytes as standard base64. */
export function encodeBase64(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 0x8000) {
    s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/**
 * Strict RFC 8032 verification of raw bytes (non-canonical encodings rejected), with
 * WebCrypto's Ed25519: native, and all Wycheproof vectors give their expected result.
 */
export async function verifyRaw(
  signature: Uint8Array,
  message: Uint8Array,
  publicKey: Uint8Array,
): Promise<boolean> {
  if (signature.length !== 64 || publicKey.length !== 32) return false;
  try {
    const key = await crypto.subtle.importKey(
      "raw",
      publicKey as Uint8Array<ArrayBuffer>,
      { name: "Ed25519" },
      false,
      ["verify"],
    );
    return await crypto.subtle.verify(
      { name: "Ed25519" },
      key,
      signature as Uint8Array<ArrayBuffer>,
      message as Uint8Array<ArrayBuffer>,
    );
  } catch {
    return false;
  }
}

/** Verify `signatureB64` over `stmt`; returns the trusted key (base64) that verified it, or null. */
export async function verifyStatement(
  stmt: Statement,
  signatureB64: string,
  trustedKeysB64: readonly string[],
): Promise<string | null> {
  const sig = decodeBase64(signatureB64);
  if (!sig || sig.length !== 64) return null;
  const msg = statementBytes(stmt);
  for (const k of trustedKeysB64) {
    const pub = decodeBase64(k);
    if (pub && await verifyRaw(sig, msg, pub)) return k;
  }
  return null;
}

/** A signing key pair. */
export interface KeyPair {
  /** The 32-byte secret seed. */
  secret: Uint8Array;
  /** Base64 of the raw 32-byte public key. */
  publicBase64: string;
}

/** Generate a new Ed25519 key pair. */
export async function generateKey(): Promise<KeyPair> {
  const ed = await _ed();
  const secret = ed.utils.randomSecretKey();
  const pub = await ed.getPublicKeyAsync(secret);
  return { secret, publicBase64: encodeBase64(pub) };
}

/** The public key (base64) of a secret seed. */
export async function publicKeyOf(secret: Uint8Array): Promise<string> {
  return encodeBase64(await (await _ed()).getPublicKeyAsync(secret));
}

/** Sign `stmt` with the secret seed; returns standard base64 of the 64-byte signature. */
export async function signStatement(secret: Uint8Array, stmt: Statement): Promise<string> {
  return encodeBase64(await (await _ed()).signAsync(statementBytes(stmt), secret));
}

/** Encode a secret seed as the `signing.key` file text (base64 of 32 bytes, one line). */
export function encodeSecretKey(secret: Uint8Array): string {
  return encodeBase64(secret) + "\n";
}

/** Decode `signing.key` file text; throws with a reason when it is not a 32-byte key. */
export function decodeSecretKey(text: string, file: string): Uint8Array {
  const b = decodeBase64(text.trim());
  if (!b || b.length !== 32) {
    throw new Error(`${file}: not a signing key (want base64 of a 32-byte ed25519 seed)`);
  }
  return b;
}

/** Write `signing.key` (0600) and `signing.pub` into `dir`; returns the public key. */
export async function writeKeyPair(dir: string): Promise<string> {
  const key = await generateKey();
  await Deno.mkdir(dir, { recursive: true });
  const keyPath = `${dir}/signing.key`;
  const f = await Deno.open(keyPath, { write: true, createNew: true, mode: 0o600 });
  try {
    await f.write(new TextEncoder().encode(encodeSecretKey(key.secret)));
    await f.sync();
  } finally {
    f.close();
  }
  await Deno.chmod(keyPath, 0o600);
  await Deno.writeTextFile(`${dir}/signing.pub`, key.publicBase64 + "\n");
  return key.publicBase64;
}
