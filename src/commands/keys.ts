/**
 * The publisher's commands: `keygen`, `sign` and `verify`.
 *
 * @module
 */

import {
  ARCHES,
  decodeBase64,
  decodeSecretKey,
  isSafeSegment,
  OSES,
  signStatement,
  trustKeyProblem,
  verifyStatement,
  writeKeyPair,
} from "../protocol/mod.ts";
import { sha256File } from "../common/mod.ts";
import { EXIT, UsageError } from "./common.ts";

/** The statement fields given on the command line. */
export interface StatementFlags {
  addonId: string;
  version: string;
  os: string;
  arch: string;
  file: string;
}

function _checkStatement(f: StatementFlags): void {
  if (!isSafeSegment(f.addonId)) {
    throw new UsageError(`--addon-id ${JSON.stringify(f.addonId)} is not a safe name`);
  }
  if (!isSafeSegment(f.version)) {
    throw new UsageError(`--version ${JSON.stringify(f.version)} is not a safe name`);
  }
  if (!(OSES as readonly string[]).includes(f.os)) {
    throw new UsageError(`--os must be one of ${OSES.join(", ")}`);
  }
  if (!(ARCHES as readonly string[]).includes(f.arch)) {
    throw new UsageError(`--arch must be one of ${ARCHES.join(", ")}`);
  }
}

/** `keygen --out DIR`: write `signing.key` (0600) and `signing.pub`. */
export async function keygenCommand(opts: { out: string }): Promise<number> {
  try {
    const pub = await writeKeyPair(opts.out);
    console.log(JSON.stringify({ public_key: pub, key_file: `${opts.out}/signing.key` }));
    return EXIT.ok;
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) {
      throw new UsageError(
        `--out ${opts.out} already holds a signing.key; refusing to overwrite it`,
        { cause: e },
      );
    }
    throw e;
  }
}

/** `sign`: print `{"artifact_sha256","artifact_signature"}` for a file. */
export async function signCommand(opts: StatementFlags & { key: string }): Promise<number> {
  _checkStatement(opts);
  const secret = decodeSecretKey(await Deno.readTextFile(opts.key), opts.key);
  const sha256 = await sha256File(opts.file);
  const sig = await signStatement(secret, {
    addon_id: opts.addonId,
    version: opts.version,
    target: `${opts.os}/${opts.arch}`,
    sha256,
  });
  console.log(JSON.stringify({ artifact_sha256: sha256, artifact_signature: sig }));
  return EXIT.ok;
}

/** `verify`: exit 0 when the signature is valid for the file and statement, 1 when not. */
export async function verifyCommand(
  opts: StatementFlags & { publicKey: string; signature: string },
): Promise<number> {
  _checkStatement(opts);
  // The same keys the agent refuses at load (SPEC 12): the identity "verifies" anything.
  const raw = decodeBase64(opts.publicKey);
  const problem = raw?.length === 32
    ? trustKeyProblem(raw)
    : "must be canonical standard base64 of a raw 32-byte ed25519 key";
  if (problem !== null) throw new UsageError(`--public-key: ${problem}`);
  const sha256 = await sha256File(opts.file);
  const key = await verifyStatement(
    { addon_id: opts.addonId, version: opts.version, target: `${opts.os}/${opts.arch}`, sha256 },
    opts.signature,
    [opts.publicKey],
  );
  console.log(key ? `valid: sha256=${sha256}` : `NOT valid: sha256=${sha256}`);
  return key ? EXIT.ok : EXIT.failure;
}
