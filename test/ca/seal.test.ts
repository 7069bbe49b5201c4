import assert from "node:assert/strict";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import { KEK_BYTES, KeySealer, PREVIOUS_KEKS_MAX, SealError, parseKek, parseKekList } from "../../src/ca/seal.js";

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

  void test("a node given the new KEK and the old one as previous unseals what the old sealed, and seals with the new one only", () => {
    const oldKek = randomBytes(KEK_BYTES);
    const newKek = randomBytes(KEK_BYTES);
    const before = new KeySealer(oldKek);
    const sealedBefore = before.seal(keyPem);
    const during = new KeySealer(newKek, [oldKek]);
    assert.deepEqual(during.previousKekIds, [before.kekId]);
    assert.equal(during.unseal(sealedBefore).export({ format: "pem", type: "pkcs8" }).toString(), keyPem);
    assert.deepEqual(during.sealedUnder(sealedBefore), { kind: "previous", kekId: before.kekId });
    assert.equal(during.isUnderCurrentKek(sealedBefore), false);
    const resealed = during.seal(keyPem);
    assert.deepEqual(during.sealedUnder(resealed), { kind: "current", kekId: during.kekId });
    assert.equal(during.isUnderCurrentKek(resealed), true);
    // The old KEK can be dropped: what was re-sealed opens without it, and the old KEK cannot open it.
    assert.equal(new KeySealer(newKek).unseal(resealed).asymmetricKeyType, "ec");
    assert.throws(() => before.unseal(resealed), SealError);
  });

  void test("a blob under a KEK the node lacks names both KEKs and the flag that fixes it", () => {
    const oldKek = randomBytes(KEK_BYTES);
    const sealed = new KeySealer(oldKek).seal(keyPem);
    const onlyNew = new KeySealer(randomBytes(KEK_BYTES));
    assert.deepEqual(onlyNew.sealedUnder(sealed), { kind: "unknown", kekId: new KeySealer(oldKek).kekId });
    assert.throws(() => onlyNew.unseal(sealed), (err: Error) => {
      assert.ok(err instanceof SealError);
      assert.ok(err.message.includes(`sealed with KEK ${new KeySealer(oldKek).kekId}`), err.message);
      assert.ok(err.message.includes(`current KEK ${onlyNew.kekId}`), err.message);
      assert.match(err.message, /nor one of its previous KEKs \(it has none\).*--ca-kek-previous-file or CAIRN_CA_KEK_PREVIOUS/);
      return true;
    });
    const otherPrevious = new KeySealer(randomBytes(KEK_BYTES), [randomBytes(KEK_BYTES)]);
    assert.throws(() => otherPrevious.unseal(sealed), (err: Error) => err instanceof SealError && err.message.includes(`it has ${otherPrevious.previousKekIds[0]}`));
  });

  void test("previous KEKs are refused without a current one, equal to it, twice, or past the limit", () => {
    const kek = randomBytes(KEK_BYTES);
    const other = randomBytes(KEK_BYTES);
    assert.throws(() => new KeySealer(undefined, [kek]), /without a current one.*CAIRN_CA_KEK or --ca-kek-file/);
    assert.throws(() => new KeySealer(kek, [Buffer.from(kek)]), /is the current KEK: remove it from --ca-kek-previous-file/);
    assert.throws(() => new KeySealer(kek, [other, Buffer.from(other)]), /given twice/);
    assert.throws(() => new KeySealer(kek, [randomBytes(16)]), /must be 32 bytes, not 16/);
    const many = Array.from({ length: PREVIOUS_KEKS_MAX + 1 }, () => randomBytes(KEK_BYTES));
    assert.throws(() => new KeySealer(kek, many), new RegExp(`over the limit of ${PREVIOUS_KEKS_MAX}`));
    assert.equal(new KeySealer(kek, many.slice(1)).previousKekIds.length, PREVIOUS_KEKS_MAX);
  });

  void test("keys stored unsealed are readable with a KEK, and due to be sealed", () => {
    const stored = new KeySealer(undefined).seal(keyPem);
    const sealer = new KeySealer(randomBytes(KEK_BYTES));
    assert.deepEqual(sealer.sealedUnder(stored), { kind: "unsealed" });
    assert.equal(sealer.isUnderCurrentKek(stored), false);
    assert.equal(new KeySealer(undefined).isUnderCurrentKek(stored), true);
    assert.deepEqual(sealer.sealedUnder("nonsense"), { kind: "unknown", kekId: undefined });
  });

  void test("a list of previous KEKs is read one per line, or comma separated, with comments; a bad line is named", () => {
    const [a, b, c] = [randomBytes(KEK_BYTES), randomBytes(KEK_BYTES), randomBytes(KEK_BYTES)];
    const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
    const fromFile = parseKekList(enc(`# rotated out 2026-12\n${a.toString("base64")}\n\n${b.toString("hex")}  # older\r\n`), "--ca-kek-previous-file /k");
    assert.deepEqual(fromFile.map((k) => Buffer.from(k)), [a, b]);
    assert.deepEqual(parseKekList(enc(`${a.toString("base64")},${c.toString("base64")}`), "CAIRN_CA_KEK_PREVIOUS").map((k) => Buffer.from(k)), [a, c]);
    assert.deepEqual(parseKekList(new Uint8Array(c), "raw").map((k) => Buffer.from(k)), [c]);
    assert.throws(() => parseKekList(enc(`${a.toString("base64")}\nnot-a-key\n`), "--ca-kek-previous-file /k"), /--ca-kek-previous-file \/k \(line 2\) must hold a 32-byte key/);
    assert.throws(() => parseKekList(enc("# nothing here\n"), "CAIRN_CA_KEK_PREVIOUS"), /CAIRN_CA_KEK_PREVIOUS holds no KEK/);
  });
});
