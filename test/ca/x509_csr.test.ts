// parseCsr, the hand-written PKCS#10 reader on the issuance hot path: real CSRs from openssl and
// @peculiar/x509 are accepted with the SANs they carry; weak or exotic keys, broken signatures and
// broken encodings are refused with the right reason; and no mutation of a valid CSR ever
// escapes as anything but a CsrError.

import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { webcrypto } from "node:crypto";
import { CsrError, type CsrErrorReason, parseCsr } from "../../src/ca/csr.js";
import { pemDecodeAll, pemEncode } from "../../src/ca/leaf.js";
import { SeededRandom } from "../../src/raft/core/random.js";
import { WEB_ID, openssl, scratchDir, x509 } from "./x509_support.js";

const scratch = scratchDir();
after(() => scratch.remove());

/** `openssl genpkey` arguments per key kind. */
const KEYS = {
  "p256": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
  "p384": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
  "rsa2048": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
  "rsa1024": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
  "ed25519": ["-algorithm", "ED25519"],
  "ed448": ["-algorithm", "ED448"],
  "secp256k1": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:secp256k1"],
  "p256explicit": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-pkeyopt", "ec_param_enc:explicit"],
} as const;

/** A CSR from `openssl req` with an empty subject and the given subjectAltName (none if empty). */
function opensslCsr(key: keyof typeof KEYS, san: string, extra: readonly string[] = []): string {
  const keyFile = scratch.path(`${key}.key`);
  openssl(["genpkey", ...KEYS[key], "-out", keyFile]);
  const csrFile = scratch.path(`${key}-${Math.random().toString(36).slice(2)}.csr`);
  openssl(["req", "-new", "-key", keyFile, "-subj", "/", ...(san === "" ? [] : ["-addext", `subjectAltName=${san}`]), ...extra, "-out", csrFile]);
  return readFileSync(csrFile, "utf8");
}

function refusedWith(reason: CsrErrorReason, message?: RegExp): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof CsrError, `expected a CsrError, got ${String(err)}`);
    assert.equal(err.reason, reason, err.message);
    if (message !== undefined) assert.match(err.message, message);
    return true;
  };
}

function derOf(pem: string): Uint8Array {
  return pemDecodeAll(pem, "CERTIFICATE REQUEST")[0];
}

void describe("parseCsr accepts the keys Cairn issues for", () => {
  for (const [key, keyType] of [["p256", "ec-p256"], ["p384", "ec-p384"], ["rsa2048", "rsa"], ["ed25519", "ed25519"]] as const) {
    void test(`an openssl ${key} CSR with a URI SAN and DNS SANs parses as ${keyType}`, () => {
      const pem = opensslCsr(key, `URI:${WEB_ID},DNS:web.local,DNS:web.default.svc`);
      const csr = parseCsr(pem);
      assert.equal(csr.keyType, keyType);
      assert.deepEqual(csr.uris, [WEB_ID]);
      assert.deepEqual(csr.dnsNames, ["web.local", "web.default.svc"]);
      // The SPKI is verbatim: the same key openssl prints.
      const spkiPem = openssl(["req", "-in", scratch.write(`${key}-check.csr`, pem), "-noout", "-pubkey"]);
      assert.equal(pemEncode("PUBLIC KEY", csr.subjectPublicKeyInfoDer), spkiPem);
      // DER input gives the same answer as PEM.
      assert.deepEqual(parseCsr(derOf(pem)).uris, [WEB_ID]);
    });
  }

  void test("a CSR without SANs parses with none; the caller decides that it needs one", () => {
    const csr = parseCsr(opensslCsr("p256", ""));
    assert.deepEqual(csr.uris, []);
    assert.deepEqual(csr.dnsNames, []);
  });

  void test("a CSR with a subject and extra requested extensions parses; only the SAN is read", () => {
    const keyFile = scratch.path("subject.key");
    openssl(["genpkey", ...KEYS.p256, "-out", keyFile]);
    const pem = openssl(["req", "-new", "-key", keyFile, "-subj", "/O=Acme/CN=web", "-addext", `subjectAltName=URI:${WEB_ID}`, "-addext", "keyUsage=critical,digitalSignature", "-addext", "basicConstraints=critical,CA:TRUE"]);
    assert.deepEqual(parseCsr(pem).uris, [WEB_ID]);
  });

  for (const [name, algorithm, signing] of [
    ["ECDSA P-256", { name: "ECDSA", namedCurve: "P-256" }, { name: "ECDSA", hash: "SHA-256" }],
    ["ECDSA P-384", { name: "ECDSA", namedCurve: "P-384" }, { name: "ECDSA", hash: "SHA-384" }],
    ["RSA-2048", { name: "RSASSA-PKCS1-v1_5", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" }, { name: "RSASSA-PKCS1-v1_5" }],
  ] as const) {
    void test(`a ${name} CSR made by @peculiar/x509's Pkcs10CertificateRequestGenerator parses`, async () => {
      const keys = await webcrypto.subtle.generateKey(algorithm, false, ["sign", "verify"]);
      const request = await x509.Pkcs10CertificateRequestGenerator.create({
        name: "CN=web",
        keys,
        signingAlgorithm: signing,
        extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: WEB_ID }, { type: "dns", value: "web.local" }])],
      });
      const csr = parseCsr(request.toString("pem"));
      assert.deepEqual(csr.uris, [WEB_ID]);
      assert.deepEqual(csr.dnsNames, ["web.local"]);
      assert.deepEqual(parseCsr(new Uint8Array(request.rawData)).uris, [WEB_ID]);
    });
  }
});

void describe("parseCsr refuses what Cairn will not sign", () => {
  void test("an RSA-1024 key is unsupportedKey, and the message says what to use", () => {
    assert.throws(() => parseCsr(opensslCsr("rsa1024", `URI:${WEB_ID}`)), refusedWith("unsupportedKey", /^the CSR key is RSA 1024 bits; use RSA 2048-4096, ECDSA P-256\/P-384 or Ed25519$/));
  });

  void test("EC secp256k1 and Ed448 keys are unsupportedKey, named", () => {
    assert.throws(() => parseCsr(opensslCsr("secp256k1", `URI:${WEB_ID}`)), refusedWith("unsupportedKey", /EC on curve secp256k1/));
    assert.throws(() => parseCsr(opensslCsr("ed448", `URI:${WEB_ID}`)), refusedWith("unsupportedKey", /is Ed448/));
  });

  void test("a P-256 key with explicit curve parameters is unsupportedKey", () => {
    assert.throws(() => parseCsr(opensslCsr("p256explicit", `URI:${WEB_ID}`)), refusedWith("unsupportedKey", /explicit or missing curve parameters/));
  });

  void test("an EC point that is not on its curve is malformed, not a bad signature", () => {
    const der = new Uint8Array(derOf(opensslCsr("p256", `URI:${WEB_ID}`)));
    // The point is the last 65 bytes of the SubjectPublicKeyInfo; its first byte after 0x04 is x.
    const spki = parseCsr(der).subjectPublicKeyInfoDer;
    const pointStart = Buffer.from(der).indexOf(Buffer.from(spki)) + spki.length - 64;
    der[pointStart + 40] ^= 0x01; // a y coordinate one bit off is (overwhelmingly) off the curve
    assert.throws(() => parseCsr(der), refusedWith("malformed", /public key is not a valid key/));
  });

  void test("a flipped signature byte is badSignature", () => {
    for (const key of ["p256", "rsa2048", "ed25519"] as const) {
      const der = new Uint8Array(derOf(opensslCsr(key, `URI:${WEB_ID}`)));
      der[der.length - 2] ^= 0x01;
      assert.throws(() => parseCsr(der), refusedWith("badSignature", /does not verify/), key);
    }
  });

  void test("a SHA-1 signature is badSignature, naming the algorithm", () => {
    assert.throws(() => parseCsr(opensslCsr("rsa2048", `URI:${WEB_ID}`, ["-sha1"])), refusedWith("badSignature", /sha1WithRSAEncryption/));
  });

  void test("an IP address SAN is refused: Cairn issues only URI and DNS SANs", () => {
    assert.throws(() => parseCsr(opensslCsr("p256", `URI:${WEB_ID},IP:10.0.0.1`)), refusedWith("malformed", /IP address SAN/));
  });

  void test("truncated, garbage, wrongly labelled, doubled and trailing-byte input is malformed", () => {
    const pem = opensslCsr("p256", `URI:${WEB_ID}`);
    const der = derOf(pem);
    const cases: Array<[string, string | Uint8Array, RegExp]> = [
      ["empty", "", /found no PEM block/],
      ["text", "hello", /found no PEM block/],
      ["random DER", Uint8Array.from([0x30, 0x03, 0x02, 0x01, 0x00]), /malformed/],
      ["truncated DER", der.subarray(0, der.length - 10), /claims \d+ bytes but only \d+ remain/],
      ["trailing byte", Uint8Array.from([...der, 0]), /unexpected bytes/],
      ["wrong label", pem.replace(/CERTIFICATE REQUEST/g, "CERTIFICATE"), /labelled CERTIFICATE REQUEST, found "CERTIFICATE"/],
      ["two CSRs", pem + pem, /exactly one PEM block/],
      ["bad base64", pem.replace(/\n[A-Za-z0-9+/]{4}/, "\n!!!!"), /not valid base64/],
      ["no END line", pem.replace(/-----END CERTIFICATE REQUEST-----\n/, ""), /no matching END line/],
      ["indefinite length", Uint8Array.from([0x30, 0x80, 0x00, 0x00]), /indefinite length/],
      ["non-minimal length", Uint8Array.from([0x30, 0x81, 0x03, 0x02, 0x01, 0x00]), /long form for a length under 128/],
      ["oversized", new Uint8Array(64 * 1024), /over the 16384-byte bound/],
    ];
    for (const [name, input, message] of cases) assert.throws(() => parseCsr(input), refusedWith("malformed", message), name);
  });
});

void describe("parseCsr under mutation", () => {
  void test("random byte flips and truncations of valid CSRs are always refused, and only ever with CsrError", () => {
    const random = new SeededRandom(20240605);
    const originals = [derOf(opensslCsr("p256", `URI:${WEB_ID},DNS:web.local`)), derOf(opensslCsr("rsa2048", `URI:${WEB_ID}`)), derOf(opensslCsr("ed25519", `URI:${WEB_ID}`))];
    const reasons = new Map<CsrErrorReason, number>();
    const attempt = (mutated: Uint8Array, what: string): void => {
      try {
        parseCsr(mutated);
      } catch (err) {
        assert.ok(err instanceof CsrError, `${what}: ${String(err)}`);
        reasons.set(err.reason, (reasons.get(err.reason) ?? 0) + 1);
        return;
      }
      assert.fail(`${what}: a mutated CSR was accepted`);
    };
    for (const original of originals) {
      for (let i = 0; i < 700; i++) {
        const mutated = new Uint8Array(original);
        const flips = 1 + random.nextInt(3);
        for (let f = 0; f < flips; f++) mutated[random.nextInt(mutated.length)] ^= 1 + random.nextInt(255);
        attempt(mutated, `flip #${i}`);
      }
      for (let length = 0; length < original.length; length++) attempt(original.subarray(0, length), `truncated to ${length}`);
    }
    // Mutations land in structure and in signed bytes alike: both reasons must appear.
    assert.ok((reasons.get("malformed") ?? 0) > 100, JSON.stringify([...reasons]));
    assert.ok((reasons.get("badSignature") ?? 0) > 100, JSON.stringify([...reasons]));
  });
});
