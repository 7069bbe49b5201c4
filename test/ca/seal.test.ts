import assert from "node:assert/strict";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import { KEK_BYTES, KeySealer, SealError, parseKek } from "../../src/ca/seal.js";

const keyPem = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ format: "pem", type: "pkcs8" }).toString();
const keyBody = keyPem.split("\n").slice(1, -2).join("");

void describe("sealing CA keys with the operator's KEK", () => {
  void test("a sealed key unseals to the same key, and its text reveals nothing of it", () => {
    const sealer = new KeySealer(randomBytes(KEK_BYTES));
    const sealed = sealer.seal(keyPem);
    assert.match(sealed, /^aes256gcm:[0-9a-f]{16}:/);
    assert.ok(!sealed.includes(keyBody.slice(0, 24)), "the PKCS#8 body must not appear in the sealed text");
    assert.equal(sealer.unseal(sealed).export({ format: "pem", type: "pkcs8" }).toString(), keyPem);
  });

  void test("a different KEK is named as the problem, not mistaken for corruption", () => {
    const sealed = new KeySealer(randomBytes(KEK_BYTES)).seal(keyPem);
    assert.throws(() => new KeySealer(randomBytes(KEK_BYTES)).unseal(sealed), (err: Error) => err instanceof SealError && /every node needs the same KEK/.test(err.message));
    assert.throws(() => new KeySealer(undefined).unseal(sealed), (err: Error) => err instanceof SealError && /this node has no KEK/.test(err.message));
  });

  void test("a tampered sealed key fails its integrity check", () => {
    const sealer = new KeySealer(randomBytes(KEK_BYTES));
    const sealed = sealer.seal(keyPem);
    const parts = sealed.split(":");
    const body = Buffer.from(parts[3], "base64");
    body[5] ^= 0x01;
    parts[3] = body.toString("base64");
    assert.throws(() => sealer.unseal(parts.join(":")), (err: Error) => err instanceof SealError && /integrity/.test(err.message));
  });

  void test("without a KEK keys are stored plain, and a node without one can still read them", () => {
    const sealer = new KeySealer(undefined);
    assert.equal(sealer.sealing, false);
    const stored = sealer.seal(keyPem);
    assert.match(stored, /^plain:/);
    assert.equal(new KeySealer(randomBytes(KEK_BYTES)).unseal(stored).asymmetricKeyType, "ec");
  });

  void test("a KEK is read from base64, hex or raw bytes, and anything else is refused with the fix", () => {
    const kek = randomBytes(KEK_BYTES);
    const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
    assert.deepEqual(Buffer.from(parseKek(enc(`${kek.toString("base64")}\n`), "test")), kek);
    assert.deepEqual(Buffer.from(parseKek(enc(kek.toString("hex")), "test")), kek);
    assert.deepEqual(Buffer.from(parseKek(new Uint8Array(kek), "test")), kek);
    assert.throws(() => parseKek(enc("too-short"), "CAIRN_CA_KEK"), /CAIRN_CA_KEK must hold a 32-byte key.*openssl rand -base64 32/);
  });
});
