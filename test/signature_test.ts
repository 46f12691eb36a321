// Tests of src/protocol/signature.ts: every Wycheproof Ed25519 vector against strict
// RFC 8032 verification, the exact signed statement (SPEC 5), and the
// sign/verify policy helpers.

import {
  decodeBase64,
  encodeBase64,
  generateKey,
  publicKeyOf,
  signStatement,
  type Statement,
  statementBytes,
  verifyRaw,
  verifyStatement,
} from "../src/protocol/signature.ts";
import { assert, assertEquals, fail } from "./_assert.ts";

// ---------------------------------------------------------------------------
// helpers

const VECTORS_FILE = "vectors/wycheproof_ed25519_test.json";

/**
 * Find the shared vectors: `<clone>/../shared/` beside the repository, else
 * the directory named by `ADDON_AGENT_SHARED`.
 */
async function _readVectors(): Promise<{ text: string; path: string }> {
  const candidates = [new URL(`../../shared/${VECTORS_FILE}`, import.meta.url).pathname];
  let env: string | undefined;
  try {
    env = Deno.env.get("ADDON_AGENT_SHARED");
  } catch {
    env = undefined; // no --allow-env: only the relative location is tried
  }
  if (env) candidates.push(`${env.replace(/\/+$/, "")}/${VECTORS_FILE}`);
  for (const path of candidates) {
    try {
      return { text: await Deno.readTextFile(path), path };
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  return fail(
    `Wycheproof vectors not found at ${candidates.join(" or ")}; ` +
      "put shared/ beside the clone or set ADDON_AGENT_SHARED",
  );
}

function _hex(s: string): Uint8Array {
  assert(s.length % 2 === 0 && /^[0-9a-fA-F]*$/.test(s), `bad hex ${JSON.stringify(s)}`);
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

interface _Vector {
  tcId: number;
  comment: string;
  flags?: string[];
  msg: string;
  sig: string;
  result: "valid" | "invalid" | "acceptable";
}

interface _VectorFile {
  algorithm: string;
  numberOfTests: number;
  testGroups: { type: string; publicKey: { pk: string }; tests: _Vector[] }[];
}

const STMT: Statement = {
  addon_id: "net-probe",
  version: "1.4.2",
  target: "linux/amd64",
  sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
};

// ---------------------------------------------------------------------------
// Wycheproof

Deno.test("verifyRaw() gives every Wycheproof Ed25519 vector its expected result", async (t) => {
  const { text, path } = await _readVectors();
  const file = JSON.parse(text) as _VectorFile;
  assertEquals(file.algorithm, "EDDSA");

  const counts = { valid: 0, invalid: 0, acceptable: 0 };
  const wrong: string[] = [];
  const acceptable: string[] = [];
  let total = 0;

  await t.step("each vector", async () => {
    for (const group of file.testGroups) {
      assertEquals(group.type, "EddsaVerify", `group type in ${path}`);
      const pk = _hex(group.publicKey.pk);
      for (const v of group.tests) {
        total++;
        counts[v.result]++;
        const got = await verifyRaw(_hex(v.sig), _hex(v.msg), pk);
        // Strict RFC 8032: anything Wycheproof merely tolerates ("acceptable",
        // such as non-canonical encodings) is rejected.
        const want = v.result === "valid";
        if (v.result === "acceptable") {
          acceptable.push(`tcId ${v.tcId} (${v.comment}; ${v.flags?.join(",")}) → ${got}`);
        }
        if (got !== want) {
          wrong.push(
            `tcId ${v.tcId} [${v.result}] ${v.comment} (${v.flags?.join(",")}): got ${got}`,
          );
        }
      }
    }
    if (acceptable.length > 0) {
      console.log(
        `"acceptable" vectors (expected false under strict RFC 8032):\n  ${
          acceptable.join("\n  ")
        }`,
      );
    }
    assertEquals(wrong, [], `vectors with the wrong result (${wrong.length})`);
  });

  await t.step("the count of vectors run equals numberOfTests (151)", () => {
    assertEquals(total, file.numberOfTests);
    assertEquals(total, 151);
    assertEquals(counts.valid + counts.invalid + counts.acceptable, 151);
    assert(counts.valid > 0 && counts.invalid > 0, `counts ${JSON.stringify(counts)}`);
  });
});

Deno.test("verifyRaw() refuses wrong lengths without throwing", async () => {
  const key = await generateKey();
  const pub = decodeBase64(key.publicBase64)!;
  const sig = decodeBase64(await signStatement(key.secret, STMT))!;
  const msg = statementBytes(STMT);
  assertEquals(await verifyRaw(sig, msg, pub), true);
  assertEquals(await verifyRaw(sig.subarray(0, 63), msg, pub), false);
  assertEquals(await verifyRaw(new Uint8Array([...sig, 0]), msg, pub), false);
  assertEquals(await verifyRaw(sig, msg, pub.subarray(0, 31)), false);
  assertEquals(await verifyRaw(sig, msg, new Uint8Array(32)), false);
  assertEquals(await verifyRaw(new Uint8Array(64), msg, pub), false);
});

// ---------------------------------------------------------------------------
// the statement

Deno.test("statementBytes() is exactly the SPEC 5 text", async (t) => {
  await t.step("five lines joined by \\n, no trailing newline", () => {
    const expected = "addon-agent/artifact/v1\n" +
      "addon_id=net-probe\n" +
      "version=1.4.2\n" +
      "target=linux/amd64\n" +
      "sha256=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const bytes = statementBytes(STMT);
    assertEquals(bytes, new TextEncoder().encode(expected));
    assertEquals(new TextDecoder().decode(bytes).split("\n").length, 5);
    assert(bytes[bytes.length - 1] !== 0x0a, "no trailing newline");
  });

  await t.step("UTF-8 encoded", () => {
    const bytes = statementBytes({ ...STMT, version: "1.0+é" });
    assertEquals(
      new TextDecoder().decode(bytes).split("\n")[2],
      "version=1.0+é",
    );
    assertEquals(bytes.length, statementBytes({ ...STMT, version: "1.0+e" }).length + 1);
  });
});

// ---------------------------------------------------------------------------
// signStatement / verifyStatement

Deno.test("signStatement() and verifyStatement() round-trip", async (t) => {
  const key = await generateKey();
  const sig = await signStatement(key.secret, STMT);

  await t.step("the signature is standard base64 of 64 bytes", () => {
    assertEquals(sig.length, 88);
    assertEquals(decodeBase64(sig)?.length, 64);
    assertEquals(encodeBase64(decodeBase64(sig)!), sig);
  });

  await t.step("it verifies and returns the key that verified", async () => {
    assertEquals(await verifyStatement(STMT, sig, [key.publicBase64]), key.publicBase64);
    assertEquals(await publicKeyOf(key.secret), key.publicBase64);
  });

  await t.step("it is deterministic (RFC 8032)", async () => {
    assertEquals(await signStatement(key.secret, STMT), sig);
  });
});

Deno.test("verifyStatement() refuses a signature moved to another statement", async (t) => {
  const key = await generateKey();
  const sig = await signStatement(key.secret, STMT);
  const others: [string, Statement][] = [
    ["another addon_id", { ...STMT, addon_id: "net-probe2" }],
    ["another version", { ...STMT, version: "1.4.3" }],
    ["a downgrade label", { ...STMT, version: "1.4.1" }],
    ["another target", { ...STMT, target: "linux/arm64" }],
    ["another os", { ...STMT, target: "darwin/amd64" }],
    ["another sha256", { ...STMT, sha256: "0".repeat(64) }],
    ["an uppercased sha256", { ...STMT, sha256: STMT.sha256.toUpperCase() }],
    // A field boundary cannot be shifted: "addon_id=a\nversion=b" stays distinct.
    ["shifted fields", { ...STMT, addon_id: "net-probe\nversion=1.4.2", version: "" }],
  ];
  for (const [name, stmt] of others) {
    await t.step(name, async () => {
      assertEquals(await verifyStatement(stmt, sig, [key.publicBase64]), null);
    });
  }
  await t.step("the original still verifies", async () => {
    assertEquals(await verifyStatement(STMT, sig, [key.publicBase64]), key.publicBase64);
  });
});

Deno.test("verifyStatement() returns null for untrusted keys and malformed input", async (t) => {
  const key = await generateKey();
  const other = await generateKey();
  const sig = await signStatement(key.secret, STMT);

  await t.step("a key that is not trusted", async () => {
    assertEquals(await verifyStatement(STMT, sig, [other.publicBase64]), null);
  });

  await t.step("no trusted keys at all", async () => {
    assertEquals(await verifyStatement(STMT, sig, []), null);
  });

  await t.step("malformed base64 signatures", async () => {
    const bad = [
      "",
      "not base64!",
      sig.slice(0, -2), // padding dropped
      sig.slice(0, -4), // 63 bytes
      sig + "AAAA", // 67 bytes
      "-" + sig.slice(1), // a base64url character
      ` ${sig}`,
      `${sig}\n`,
      encodeBase64(new Uint8Array(64)),
    ];
    for (const b of bad) {
      assertEquals(
        await verifyStatement(STMT, b, [key.publicBase64]),
        null,
        `signature ${JSON.stringify(b)}`,
      );
    }
  });

  await t.step("malformed trusted keys are skipped, not fatal", async () => {
    assertEquals(
      await verifyStatement(STMT, sig, ["???", "", encodeBase64(new Uint8Array(31))]),
      null,
    );
    assertEquals(
      await verifyStatement(STMT, sig, ["???", key.publicBase64]),
      key.publicBase64,
    );
  });
});

Deno.test("verifyStatement() accepts any trusted key (key rotation)", async (t) => {
  const oldKey = await generateKey();
  const newKey = await generateKey();
  const trusted = [oldKey.publicBase64, newKey.publicBase64];
  const oldSig = await signStatement(oldKey.secret, STMT);
  const newSig = await signStatement(newKey.secret, STMT);

  await t.step("a signature by the old key verifies, naming the old key", async () => {
    assertEquals(await verifyStatement(STMT, oldSig, trusted), oldKey.publicBase64);
  });

  await t.step("a signature by the new key verifies, naming the new key", async () => {
    assertEquals(await verifyStatement(STMT, newSig, trusted), newKey.publicBase64);
    assertEquals(await verifyStatement(STMT, newSig, [...trusted].reverse()), newKey.publicBase64);
  });

  await t.step("once the old key is dropped, its signatures no longer verify", async () => {
    assertEquals(await verifyStatement(STMT, oldSig, [newKey.publicBase64]), null);
  });
});
