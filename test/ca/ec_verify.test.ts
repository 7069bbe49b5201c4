// The native ECDSA check (native/ec_verify) against node:crypto's own verify of the same key,
// message and signature: they must agree on every input, valid or broken. A disagreement either
// way is a bug: accepting what OpenSSL through node refuses would issue for a forged CSR, and
// refusing what it accepts would turn real clients away. The checks then run against copies of
// the addon with planted bugs, built here, and each copy must fail at least one of them.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { type KeyObject, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify } from "node:crypto";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, describe, test } from "node:test";
import fc from "fast-check";
import { type EcCurve, EcKeyError, type EcVerifyAddon, verifyEcdsa, verifyEcdsaWith } from "../../src/ca/ec_verify.js";
import type { SignatureHash } from "../../src/ca/keys.js";

type Verify = typeof verifyEcdsa;

const CURVES: readonly EcCurve[] = ["P-256", "P-384"];
const HASHES: readonly SignatureHash[] = ["sha256", "sha384", "sha512"];
/** The group orders, big-endian: for signatures whose s is replaced by n - s, or r by n. */
const ORDER: Record<EcCurve, bigint> = {
  "P-256": 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
  "P-384": 0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
};

interface Signer {
  readonly curve: EcCurve;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  /** The uncompressed point, as a CSR's SubjectPublicKeyInfo carries it. */
  readonly point: Uint8Array;
}

function signer(curve: EcCurve): Signer {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: curve });
  const jwk = publicKey.export({ format: "jwk" });
  const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x ?? "", "base64url"), Buffer.from(jwk.y ?? "", "base64url")]);
  return { curve, privateKey, publicKey, point };
}

const signers = CURVES.flatMap((curve) => Array.from({ length: 4 }, () => signer(curve)));

/** node:crypto's answer, a throw (malformed signature) read as a refusal, as parseCsr reads it. */
function nodeVerifies(s: Signer, hash: SignatureHash, message: Uint8Array, signature: Uint8Array): boolean {
  try {
    return verify(hash, message, s.publicKey, signature);
  } catch {
    return false;
  }
}

function agree(verifyEcdsa: Verify, s: Signer, hash: SignatureHash, message: Uint8Array, signature: Uint8Array): boolean {
  const native = verifyEcdsa(s.curve, hash, s.point, message, signature);
  assert.equal(native, nodeVerifies(s, hash, message, signature), `native ${native} for a ${s.curve}/${hash} signature ${Buffer.from(signature).toString("hex")}`);
  return native;
}

/** DER SEQUENCE { INTEGER r, INTEGER s } for the given values, minimal. */
function derSignature(r: bigint, s: bigint): Uint8Array {
  const int = (v: bigint): Buffer => {
    let hex = v.toString(16);
    if (hex.length % 2 === 1) hex = `0${hex}`;
    let bytes = Buffer.from(hex, "hex");
    if (bytes[0] >= 0x80) bytes = Buffer.concat([Buffer.from([0]), bytes]);
    return Buffer.concat([Buffer.from([2, bytes.length]), bytes]);
  };
  const body = Buffer.concat([int(r), int(s)]);
  return Buffer.concat([Buffer.from([0x30, body.length]), body]);
}

function readSignature(signature: Uint8Array): { r: bigint; s: bigint } {
  const b = Buffer.from(signature);
  const rLength = b[3];
  const r = BigInt(`0x${b.subarray(4, 4 + rLength).toString("hex")}`);
  const s = BigInt(`0x${b.subarray(6 + rLength, 6 + rLength + b[5 + rLength]).toString("hex")}`);
  return { r, s };
}

/** Every check, for the addon and for each planted-bug copy of it. */
const CHECKS: ReadonlyArray<readonly [string, (verifyEcdsa: Verify) => void]> = [
  ["accepts every genuine signature, on both curves with every hash, as node:crypto does", (verifyEcdsa) => {
    fc.assert(
      fc.property(fc.nat(signers.length - 1), fc.constantFrom(...HASHES), fc.uint8Array({ maxLength: 600 }), (i, hash, message) => {
        const s = signers[i];
        assert.ok(agree(verifyEcdsa, s, hash, message, sign(hash, message, { key: s.privateKey, dsaEncoding: "der" })));
      }),
      { numRuns: 400 },
    );
  }],

  ["refuses, as node:crypto does, a signature with any bit flipped, a byte cut or added, or over another message or hash", (verifyEcdsa) => {
    fc.assert(
      fc.property(fc.nat(signers.length - 1), fc.constantFrom(...HASHES), fc.uint8Array({ minLength: 1, maxLength: 300 }), fc.nat(), fc.nat(7), fc.nat(3), (i, hash, message, at, bit, how) => {
        const s = signers[i];
        const good = sign(hash, message, { key: s.privateKey, dsaEncoding: "der" });
        const bad = Buffer.from(good);
        if (how === 0) bad[at % bad.length] ^= 1 << bit;
        const signature = how === 1 ? bad.subarray(0, bad.length - 1 - (at % 4)) : how === 2 ? Buffer.concat([bad, Buffer.from([at & 0xff])]) : bad;
        const otherMessage = Buffer.from(message);
        if (how === 3) otherMessage[at % otherMessage.length] ^= 1 << bit;
        assert.equal(agree(verifyEcdsa, s, hash, otherMessage, signature), false);
        // The right signature checked under another hash.
        assert.equal(agree(verifyEcdsa, s, hash === "sha256" ? "sha384" : "sha256", message, good), false);
      }),
      { numRuns: 600 },
    );
  }],

  ["refuses another key's signature", (verifyEcdsa) => {
    const [a, b] = signers.filter((s) => s.curve === "P-256");
    const message = Buffer.from("the CSR's CertificationRequestInfo");
    assert.equal(agree(verifyEcdsa, b, "sha256", message, sign("sha256", message, { key: a.privateKey, dsaEncoding: "der" })), false);
  }],

  ["agrees with node:crypto on the edges of the signature's encoding and range", (verifyEcdsa) => {
    for (const s of signers.slice(0, 1).concat(signers.filter((x) => x.curve === "P-384").slice(0, 1))) {
      const message = Buffer.from("edges");
      const good = sign("sha256", message, { key: s.privateKey, dsaEncoding: "der" });
      const { r, s: sValue } = readSignature(good);
      const n = ORDER[s.curve];
      // ECDSA as OpenSSL verifies it has no low-s rule: n - s verifies too.
      assert.equal(agree(verifyEcdsa, s, "sha256", message, derSignature(r, n - sValue)), true, "n - s");
      for (const [name, signature] of [
        ["r = 0", derSignature(0n, sValue)],
        ["s = 0", derSignature(r, 0n)],
        ["r + n", derSignature(r + n, sValue)],
        ["s + n", derSignature(r, sValue + n)],
        ["r = n", derSignature(n, sValue)],
        ["a zero byte padded onto r", (() => {
          const b = Buffer.from(good);
          const rLength = b[3];
          return Buffer.concat([Buffer.from([0x30, b[1] + 1, 2, rLength + 1, 0]), b.subarray(4)]);
        })()],
        ["a long-form length", Buffer.concat([Buffer.from([0x30, 0x81, good[1]]), good.subarray(2)])],
        ["trailing bytes", Buffer.concat([good, Buffer.from([0, 0])])],
        ["empty", new Uint8Array(0)],
      ] as const) {
        assert.equal(agree(verifyEcdsa, s, "sha256", message, signature), false, name);
      }
    }
  }],

  ["refuses a point off the curve, the point at infinity, a compressed or cut point, and a point of the other curve, as node:crypto cannot import them", (verifyEcdsa) => {
    const s = signers[0];
    const message = Buffer.from("keys");
    const signature = sign("sha256", message, { key: s.privateKey, dsaEncoding: "der" });
    const offCurve = Buffer.from(s.point);
    offCurve[offCurve.length - 1] ^= 1;
    const other = signers.find((x) => x.curve === "P-384");
    assert.ok(other !== undefined);
    for (const [name, point] of [
      ["off the curve", offCurve],
      ["infinity", Buffer.from([0])],
      ["cut", s.point.subarray(0, 64)],
      ["empty", new Uint8Array(0)],
      ["a P-384 point", other.point],
    ] as const) {
      assert.throws(() => verifyEcdsa("P-256", "sha256", point, message, signature), EcKeyError, name);
    }
    // node:crypto refuses the same off-curve point at import.
    const jwk = s.publicKey.export({ format: "jwk" });
    assert.throws(() => createPublicKey({ key: { ...jwk, y: offCurve.subarray(33).toString("base64url") }, format: "jwk" }));
  }],

  ["leaves no error behind for node:crypto: importing a PEM key right after a refused point still works", (verifyEcdsa) => {
    // OpenSSL queues an error per failed call on the thread; node:crypto's PEM import reads that
    // queue, and failed with "point is not on curve" when the check left it there.
    const s = signers[0];
    const offCurve = Buffer.from(s.point);
    offCurve[offCurve.length - 1] ^= 1;
    const pkcs8 = s.privateKey.export({ format: "pem", type: "pkcs8" });
    for (let i = 0; i < 3; i++) {
      assert.throws(() => verifyEcdsa("P-256", "sha256", offCurve, Buffer.from("m"), new Uint8Array(8)), EcKeyError);
      assert.equal(verifyEcdsa("P-256", "sha256", s.point, Buffer.from("m"), Buffer.from([0x30, 0])), false);
      assert.equal(createPrivateKey(pkcs8).asymmetricKeyType, "ec");
    }
  }],

  ["answers a TypeError for arguments of the wrong kind", (verifyEcdsa) => {
    const s = signers[0];
    const ok = new Uint8Array(8);
    assert.throws(() => verifyEcdsa("P-521" as EcCurve, "sha256", s.point, ok, ok), TypeError);
    assert.throws(() => verifyEcdsa("P-256", "md5" as SignatureHash, s.point, ok, ok), TypeError);
    assert.throws(() => verifyEcdsa("P-256", "sha256", "point" as unknown as Uint8Array, ok, ok), TypeError);
    assert.throws(() => verifyEcdsa("P-256", "sha256", s.point, ok, new Uint16Array(4) as unknown as Uint8Array), TypeError);
  }],
];

void describe("the native ECDSA check", () => {
  for (const [name, check] of CHECKS) test(name, () => check(verifyEcdsa));
});

/** Bugs planted in copies of ec_verify.c: each is a way the check could let a forged CSR through, or turn a good one away. */
const PLANTED: ReadonlyArray<readonly [string, string, string]> = [
  ["leaves OpenSSL's error queue dirty", "  ERR_clear_error();", "  /* planted */"],
  ["takes the point at infinity for a key", " || EC_POINT_is_at_infinity(group, q))", ")"],
  ["counts a malformed signature (ECDSA_verify's -1) as verified", "key) == 1 ? VERIFIED", "key) != 0 ? VERIFIED"],
  ["hashes SHA-384 as SHA-256", "case 384: SHA384(message.data, message.length, digest); digest_length = SHA384_DIGEST_LENGTH;", "case 384: SHA256(message.data, message.length, digest); digest_length = SHA256_DIGEST_LENGTH;"],
  ["verifies half of the digest", "ECDSA_verify(0, digest, digest_length,", "ECDSA_verify(0, digest, digest_length / 2,"],
  ["drops the signature's last byte", "(int)signature.length, key)", "(int)signature.length - 1, key)"],
];

void describe("the native ECDSA check's tests, against planted bugs", () => {
  const addonDir = fileURLToPath(new URL("../../../native/ec_verify/", import.meta.url));
  const build = fileURLToPath(new URL("../../../native/build", import.meta.url));
  const source = readFileSync(join(addonDir, "ec_verify.c"), "utf8");
  const workDir = mkdtempSync(join(tmpdir(), "cairn-ec-verify-mutants-"));
  after(() => rmSync(workDir, { recursive: true, force: true }));

  PLANTED.forEach(([bug, original, planted], i) => {
    test(`a copy that ${bug} fails at least one check`, (t) => {
      assert.ok(source.includes(original), `ec_verify.c no longer contains the line this bug replaces: ${original}`);
      const dir = join(workDir, `mutant-${i}`);
      mkdirSync(dir);
      copyFileSync(join(addonDir, "binding.gyp"), join(dir, "binding.gyp"));
      writeFileSync(join(dir, "ec_verify.c"), source.replace(original, planted));
      execFileSync(process.execPath, [build, dir], { stdio: "pipe" });
      const addon = createRequire(import.meta.url)(join(dir, "build", "Release", "ec_verify.node")) as EcVerifyAddon;
      const mutant = verifyEcdsaWith(addon);
      const failed = CHECKS.filter(([, check]) => {
        try {
          check(mutant);
          return false;
        } catch {
          return true;
        }
      }).map(([name]) => name);
      t.diagnostic(`${failed.length} of ${CHECKS.length} checks fail: ${failed.join("; ")}`);
      assert.ok(failed.length > 0, `no check catches a copy that ${bug}`);
    });
  });
});
