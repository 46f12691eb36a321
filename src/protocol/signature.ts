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

/** Decode standard base64, or return null when it is not valid base64. */
export function decodeBase64(s: string): Uint8Array | null {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) return null;
  try {
    return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
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
