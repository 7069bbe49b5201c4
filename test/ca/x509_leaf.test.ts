// X.509-SVID leaves from LeafSigner, the hand-written DER hot path: openssl must accept the chain
// and read exactly the SPIFFE shape; @peculiar/x509 must parse the leaf, verify it, and encode
// the same fields to the same TBS bytes; every CA key type must work as the issuer.

import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate, createHash, generateKeyPairSync } from "node:crypto";
import { type PeerCertificate, checkServerIdentity } from "node:tls";
import { CertificateError, decodeCertificate, inspectCertificate } from "../../src/ca/certificates.js";
import { generateCaKey, spkiDerOf } from "../../src/ca/keys.js";
import { LeafSigner, pemDecodeAll, pemEncode } from "../../src/ca/leaf.js";
import { DAY_MS, HOUR_MS, TRUST_DOMAIN, WEB_ID, makeCa, openssl, opensslVerify, scratchDir, x509 } from "./x509_support.js";

const scratch = scratchDir();
after(() => scratch.remove());

/** Now (openssl verify checks the real clock), with a fraction of a second to show it is dropped. */
const NOW_MS = Math.floor(Date.now() / 1000) * 1000 + 750;
const NOW_SECOND_MS = NOW_MS - 750;

function p256Spki(): Uint8Array {
  return spkiDerOf(generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey);
}

/** openssl's view of one certificate file: its text dump, serial and dates. */
function opensslText(file: string): { text: string; serialHex: string; notBeforeMs: number; notAfterMs: number } {
  const text = openssl(["x509", "-in", file, "-noout", "-text"]);
  const serialHex = /^serial=([0-9A-F]+)$/m.exec(openssl(["x509", "-in", file, "-noout", "-serial"]))?.[1] ?? "";
  const dates = openssl(["x509", "-in", file, "-noout", "-startdate", "-enddate", "-dateopt", "iso_8601"]);
  const date = (name: string): number => Date.parse((new RegExp(`^${name}=(.+)$`, "m").exec(dates)?.[1] ?? "").replace(" ", "T"));
  return { text, serialHex, notBeforeMs: date("notBefore"), notAfterMs: date("notAfter") };
}

/** An extension as openssl prints it: whether it is critical, and its value line(s). */
function extension(text: string, name: string): { critical: boolean; value: string } | undefined {
  const m = new RegExp(`X509v3 ${name}:( critical)? *\\n((?:\\s{16,}.*\\n)+)`).exec(text);
  return m === null ? undefined : { critical: m[1] !== undefined, value: m[2].trim() };
}

void describe("LeafSigner: X.509-SVID leaves", () => {
  const ca = makeCa("ec-p256", NOW_MS);
  const rootFile = scratch.write("root.pem", ca.rootPem);
  const intermediateFile = scratch.write("intermediate.pem", ca.intermediatePem);
  const signer = new LeafSigner({ certificatePem: ca.intermediatePem, privateKey: ca.intermediateKey.privateKey });

  void test("a leaf chains to its root through its intermediate under openssl verify", () => {
    const leaf = signer.sign({ subjectPublicKeyInfoDer: p256Spki(), spiffeId: WEB_ID, notBeforeMs: NOW_MS - 10_000, notAfterMs: NOW_MS + HOUR_MS });
    const leafFile = scratch.write("leaf-chain.pem", leaf.pem);
    const verified = opensslVerify(rootFile, intermediateFile, leafFile);
    assert.ok(verified.ok, verified.output);
    // The check can fail: without the intermediate there is no chain.
    assert.equal(opensslVerify(rootFile, undefined, leafFile).ok, false);
  });

  void test("openssl reads the SVID shape: one critical URI SAN, critical digitalSignature only, server+client EKU, CA:FALSE, SKI, AKI, long serial", () => {
    const leaf = signer.sign({ subjectPublicKeyInfoDer: p256Spki(), spiffeId: WEB_ID, notBeforeMs: NOW_MS, notAfterMs: NOW_MS + HOUR_MS });
    const seen = opensslText(scratch.write("leaf-shape.pem", leaf.pem));
    assert.match(seen.text, /Version: 3 \(0x2\)/);
    assert.match(seen.text, /Subject: *\n/, "the subject is empty");
    const san = extension(seen.text, "Subject Alternative Name");
    assert.deepEqual(san, { critical: true, value: `URI:${WEB_ID}` });
    assert.deepEqual(extension(seen.text, "Key Usage"), { critical: true, value: "Digital Signature" });
    assert.deepEqual(extension(seen.text, "Extended Key Usage"), { critical: false, value: "TLS Web Server Authentication, TLS Web Client Authentication" });
    assert.deepEqual(extension(seen.text, "Basic Constraints"), { critical: true, value: "CA:FALSE" });
    const intermediate = inspectCertificate(ca.intermediatePem);
    const colonHex = (hex: string): string => hex.toUpperCase().replace(/(..)(?=.)/g, "$1:");
    assert.equal(extension(seen.text, "Authority Key Identifier")?.value, colonHex(intermediate.subjectKeyIdHex));
    assert.match(extension(seen.text, "Subject Key Identifier")?.value ?? "", /^([0-9A-F]{2}:){19}[0-9A-F]{2}$/);
    assert.ok(BigInt(`0x${seen.serialHex}`) >= 2n ** 64n, `serial ${seen.serialHex} has at least 64 bits`);
    assert.equal(seen.serialHex.toLowerCase(), leaf.serialHex);
    assert.doesNotMatch(seen.text, /Certificate Sign|CRL Sign/);
  });

  void test("the SKI is the SHA-1 of the key bits openssl reads from the leaf", () => {
    const leaf = signer.sign({ subjectPublicKeyInfoDer: p256Spki(), spiffeId: WEB_ID, notBeforeMs: NOW_MS, notAfterMs: NOW_MS + HOUR_MS });
    const text = opensslText(scratch.write("leaf-ski.pem", leaf.pem)).text;
    const pub = /pub:\n((?:\s+[0-9a-f:]+\n)+)/.exec(text)?.[1].replace(/[\s:]/g, "") ?? "";
    assert.equal(pub.length, 130, "an uncompressed P-256 point");
    const expected = createHash("sha1").update(Buffer.from(pub, "hex")).digest("hex");
    assert.equal(extension(text, "Subject Key Identifier")?.value.replace(/:/g, "").toLowerCase(), expected);
  });

  void test("validity is the requested times to the second; notAfter clips to the intermediate's and the clipped time is reported", () => {
    const leaf = signer.sign({ subjectPublicKeyInfoDer: p256Spki(), spiffeId: WEB_ID, notBeforeMs: NOW_MS - 10_000, notAfterMs: NOW_MS + HOUR_MS });
    const seen = opensslText(scratch.write("leaf-times.pem", leaf.pem));
    assert.equal(leaf.notBeforeMs, NOW_SECOND_MS - 10_000);
    assert.equal(leaf.notAfterMs, NOW_SECOND_MS + HOUR_MS);
    assert.equal(seen.notBeforeMs, leaf.notBeforeMs);
    assert.equal(seen.notAfterMs, leaf.notAfterMs);

    const intermediateNotAfterMs = inspectCertificate(ca.intermediatePem).notAfterMs;
    const clipped = signer.sign({ subjectPublicKeyInfoDer: p256Spki(), spiffeId: WEB_ID, notBeforeMs: NOW_MS, notAfterMs: NOW_MS + 400 * DAY_MS });
    assert.equal(clipped.notAfterMs, intermediateNotAfterMs);
    assert.equal(opensslText(scratch.write("leaf-clipped.pem", clipped.pem)).notAfterMs, intermediateNotAfterMs);
  });

  void test("an RSA leaf key also gets keyEncipherment; EC and Ed25519 keys get digitalSignature alone", () => {
    const rsa = spkiDerOf(generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey);
    const ed = spkiDerOf(generateKeyPairSync("ed25519").publicKey);
    const usage = (spki: Uint8Array, name: string): string | undefined => {
      const leaf = signer.sign({ subjectPublicKeyInfoDer: spki, spiffeId: WEB_ID, notBeforeMs: NOW_MS, notAfterMs: NOW_MS + HOUR_MS });
      const file = scratch.write(name, leaf.pem);
      const verified = opensslVerify(rootFile, intermediateFile, file);
      assert.ok(verified.ok, verified.output);
      return extension(opensslText(file).text, "Key Usage")?.value;
    };
    assert.equal(usage(rsa, "leaf-rsa.pem"), "Digital Signature, Key Encipherment");
    assert.equal(usage(ed, "leaf-ed25519.pem"), "Digital Signature");
  });

  void test("DNS SANs follow the one URI SAN", () => {
    const leaf = signer.sign({ subjectPublicKeyInfoDer: p256Spki(), spiffeId: WEB_ID, dnsNames: ["web.default.svc", "*.web.cairn.local"], notBeforeMs: NOW_MS, notAfterMs: NOW_MS + HOUR_MS });
    const seen = opensslText(scratch.write("leaf-dns.pem", leaf.pem));
    assert.deepEqual(extension(seen.text, "Subject Alternative Name"), { critical: true, value: `URI:${WEB_ID}, DNS:web.default.svc, DNS:*.web.cairn.local` });
  });

  void test("IP SANs follow the DNS SANs, and node:tls accepts the leaf for those addresses only", () => {
    const ipv6Loopback = new Uint8Array(16);
    ipv6Loopback[15] = 1;
    const leaf = signer.sign({ subjectPublicKeyInfoDer: p256Spki(), spiffeId: WEB_ID, dnsNames: ["localhost"], ipAddresses: [Uint8Array.from([127, 0, 0, 1]), ipv6Loopback], notBeforeMs: NOW_MS, notAfterMs: NOW_MS + HOUR_MS });
    const seen = opensslText(scratch.write("leaf-ip.pem", leaf.pem));
    assert.deepEqual(extension(seen.text, "Subject Alternative Name"), { critical: true, value: `URI:${WEB_ID}, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1` });
    const cert = new X509Certificate(leaf.pem);
    assert.equal(checkServerIdentity("127.0.0.1", { subjectaltname: cert.subjectAltName ?? "" } as PeerCertificate), undefined);
    assert.ok(checkServerIdentity("127.0.0.2", { subjectaltname: cert.subjectAltName ?? "" } as PeerCertificate) instanceof Error, "another address is refused");
    assert.throws(() => signer.sign({ subjectPublicKeyInfoDer: p256Spki(), spiffeId: WEB_ID, ipAddresses: [Uint8Array.from([127, 0, 1])], notBeforeMs: NOW_MS, notAfterMs: NOW_MS + HOUR_MS }),
      (err: unknown) => err instanceof CertificateError && /4 bytes \(IPv4\) or 16/.test(err.message));
    assert.throws(() => signer.sign({ subjectPublicKeyInfoDer: p256Spki(), spiffeId: WEB_ID, ipAddresses: Array.from({ length: 17 }, () => Uint8Array.from([10, 0, 0, 1])), notBeforeMs: NOW_MS, notAfterMs: NOW_MS + HOUR_MS }),
      (err: unknown) => err instanceof CertificateError && /at most 16 IP addresses/.test(err.message));
  });

  void test("@peculiar/x509 parses the leaf, verifies it with the intermediate, and encodes the same fields to the same TBS bytes", async () => {
    const spki = p256Spki();
    const leaf = signer.sign({ subjectPublicKeyInfoDer: spki, spiffeId: WEB_ID, dnsNames: ["web.local"], notBeforeMs: NOW_MS, notAfterMs: NOW_MS + HOUR_MS });
    const parsed = new x509.X509Certificate(leaf.pem);
    const intermediate = new x509.X509Certificate(ca.intermediatePem);
    assert.equal(await parsed.verify({ publicKey: intermediate, signatureOnly: true }), true);
    assert.equal(await parsed.verify({ publicKey: new x509.X509Certificate(ca.rootPem), signatureOnly: true }), false);
    assert.equal(parsed.subject, "");
    assert.equal(parsed.serialNumber, leaf.serialHex);
    const san = parsed.getExtension(x509.SubjectAlternativeNameExtension);
    assert.ok(san?.critical);
    assert.deepEqual(san.names.toJSON(), [
      { type: "url", value: WEB_ID },
      { type: "dns", value: "web.local" },
    ]);
    assert.equal(parsed.getExtension(x509.BasicConstraintsExtension)?.ca, false);

    // The same fields through @peculiar/x509's own encoder; the signature is a placeholder, so compare the TBS.
    const ski = parsed.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId ?? "";
    const reference = await x509.X509CertificateGenerator.create({
      serialNumber: leaf.serialHex,
      issuer: intermediate.subjectName,
      notBefore: new Date(leaf.notBeforeMs),
      notAfter: new Date(leaf.notAfterMs),
      publicKey: spki,
      signature: new Uint8Array(64).fill(1),
      signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth], false),
        new x509.AuthorityKeyIdentifierExtension(inspectCertificate(ca.intermediatePem).subjectKeyIdHex, false),
        new x509.SubjectKeyIdentifierExtension(ski, false),
        new x509.SubjectAlternativeNameExtension([{ type: "url", value: WEB_ID }, { type: "dns", value: "web.local" }], true),
      ],
    });
    assert.deepEqual(Buffer.from(decodeCertificate(new Uint8Array(reference.rawData)).tbs).toString("hex"), Buffer.from(decodeCertificate(leaf.der).tbs).toString("hex"));
  });

  void test("times from 2050 on are GeneralizedTime, earlier ones UTCTime, and both read back exactly", () => {
    const longCa = makeCa("ec-p256", NOW_MS, { rootDays: 365 * 40, intermediateDays: 365 * 40, tag: "long" });
    const longSigner = new LeafSigner({ certificatePem: longCa.intermediatePem, privateKey: longCa.intermediateKey.privateKey });
    const notBeforeMs = Date.parse("2049-12-31T23:59:59Z");
    const notAfterMs = Date.parse("2050-01-01T00:00:00Z");
    const leaf = longSigner.sign({ subjectPublicKeyInfoDer: p256Spki(), spiffeId: WEB_ID, notBeforeMs, notAfterMs });
    const hex = Buffer.from(leaf.der).toString("hex");
    assert.ok(hex.includes(Buffer.from("\x17\x0d491231235959Z", "latin1").toString("hex")), "notBefore is UTCTime 491231235959Z");
    assert.ok(hex.includes(Buffer.from("\x18\x0f20500101000000Z", "latin1").toString("hex")), "notAfter is GeneralizedTime 20500101000000Z");
    const seen = opensslText(scratch.write("leaf-2050.pem", leaf.pem));
    assert.equal(seen.notBeforeMs, notBeforeMs);
    assert.equal(seen.notAfterMs, notAfterMs);
    const info = inspectCertificate(leaf.pem);
    assert.equal(info.notBeforeMs, notBeforeMs);
    assert.equal(info.notAfterMs, notAfterMs);
  });

  void test("serials are distinct, positive, exactly 16 bytes, and leave at least 64 random bits", () => {
    const spki = p256Spki();
    const serials = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const { serialHex } = signer.sign({ subjectPublicKeyInfoDer: spki, spiffeId: WEB_ID, notBeforeMs: NOW_MS, notAfterMs: NOW_MS + HOUR_MS });
      assert.equal(serialHex.length, 32);
      const first = parseInt(serialHex.slice(0, 2), 16);
      assert.ok(first >= 0x40 && first < 0x80, `serial ${serialHex} is positive and minimal`);
      serials.add(serialHex);
    }
    assert.equal(serials.size, 2000);
  });

  void test("PEM: 64-column lines with a trailing newline, and decoding returns the DER of blocks with the label", () => {
    const leaf = signer.sign({ subjectPublicKeyInfoDer: p256Spki(), spiffeId: WEB_ID, notBeforeMs: NOW_MS, notAfterMs: NOW_MS + HOUR_MS });
    const lines = leaf.pem.split("\n");
    assert.equal(lines[0], "-----BEGIN CERTIFICATE-----");
    assert.equal(lines.at(-1), "");
    assert.equal(lines.at(-2), "-----END CERTIFICATE-----");
    for (const line of lines.slice(1, -3)) assert.equal(line.length, 64);
    assert.equal(pemEncode("CERTIFICATE", leaf.der), leaf.pem);
    const bundle = `${ca.rootPem}some text between blocks\n${leaf.pem}`;
    const decoded = pemDecodeAll(bundle, "CERTIFICATE");
    assert.equal(decoded.length, 2);
    assert.deepEqual(Buffer.from(decoded[1]), Buffer.from(leaf.der));
    assert.deepEqual(pemDecodeAll(bundle, "PRIVATE KEY"), []);
  });

  void test("sign refuses what an X.509-SVID must not be, with CertificateError naming the problem", () => {
    const base = { subjectPublicKeyInfoDer: p256Spki(), spiffeId: WEB_ID, notBeforeMs: NOW_MS, notAfterMs: NOW_MS + HOUR_MS };
    const refused = (change: Partial<typeof base> & { dnsNames?: string[] }, message: RegExp): void => {
      assert.throws(() => signer.sign({ ...base, ...change }), (err: unknown) => err instanceof CertificateError && message.test(err.message));
    };
    refused({ spiffeId: `spiffe://${TRUST_DOMAIN}` }, /not a SPIFFE ID with a path/);
    refused({ spiffeId: `spiffe://${TRUST_DOMAIN}/` }, /not a SPIFFE ID with a path/);
    refused({ spiffeId: `spiffe://${TRUST_DOMAIN}/ns/../svc` }, /not a SPIFFE ID with a path/);
    refused({ spiffeId: "spiffe://other.domain/ns/default/svc/web" }, /outside this intermediate's trust domain/);
    refused({ spiffeId: `spiffe://${TRUST_DOMAIN}/ns/dé/svc` }, /not a SPIFFE ID/);
    refused({ dnsNames: ["bad name"] }, /is not a DNS name/);
    refused({ dnsNames: Array.from({ length: 33 }, (_, i) => `n${i}.local`) }, /at most 32 DNS names/);
    refused({ notBeforeMs: NOW_SECOND_MS, notAfterMs: NOW_SECOND_MS + 999 }, /at least a second after notBeforeMs/);
    refused({ notBeforeMs: Number.NaN }, /notBeforeMs=NaN/);
    refused({ notBeforeMs: NOW_MS + 60 * DAY_MS, notAfterMs: NOW_MS + 61 * DAY_MS }, /intermediate expires at .*rotate the CA/);
    refused({ subjectPublicKeyInfoDer: base.subjectPublicKeyInfoDer.subarray(0, 40) }, /subject public key info is malformed/);
    refused({ subjectPublicKeyInfoDer: Uint8Array.from([...base.subjectPublicKeyInfoDer, 0]) }, /unexpected bytes/);
    refused({ subjectPublicKeyInfoDer: spkiDerOf(generateKeyPairSync("x25519").publicKey) }, /must be an EC, RSA or Ed25519 key/);
  });

  void test("the constructor refuses a key that is not the intermediate's, a public key, and a certificate that is not a CA", () => {
    assert.throws(() => new LeafSigner({ certificatePem: ca.intermediatePem, privateKey: generateCaKey("ec-p256").privateKey }), /does not belong to the intermediate certificate/);
    assert.throws(() => new LeafSigner({ certificatePem: ca.intermediatePem, privateKey: ca.intermediateKey.publicKey }), /a public key/);
    const leaf = signer.sign({ subjectPublicKeyInfoDer: spkiDerOf(ca.intermediateKey.publicKey), spiffeId: WEB_ID, notBeforeMs: NOW_MS, notAfterMs: NOW_MS + HOUR_MS });
    assert.throws(() => new LeafSigner({ certificatePem: leaf.pem, privateKey: ca.intermediateKey.privateKey }), /not a CA/);
  });
});

void describe("every CA key type issues a chain openssl accepts", () => {
  for (const type of ["ec-p256", "rsa-2048", "ed25519"] as const) {
    void test(`${type}: root -> intermediate -> leaf verifies, and the leaf is signed with the intermediate's algorithm`, async () => {
      const ca = makeCa(type, NOW_MS, { tag: type });
      const signer = new LeafSigner({ certificatePem: ca.intermediatePem, privateKey: ca.intermediateKey.privateKey });
      const leaf = signer.sign({ subjectPublicKeyInfoDer: p256Spki(), spiffeId: WEB_ID, notBeforeMs: NOW_MS, notAfterMs: NOW_MS + HOUR_MS });
      const verified = opensslVerify(scratch.write(`${type}-root.pem`, ca.rootPem), scratch.write(`${type}-intermediate.pem`, ca.intermediatePem), scratch.write(`${type}-leaf.pem`, leaf.pem));
      assert.ok(verified.ok, verified.output);
      const expected = { "ec-p256": "ecdsa-with-SHA256", "rsa-2048": "sha256WithRSAEncryption", ed25519: "ED25519" }[type];
      assert.match(openssl(["x509", "-in", scratch.path(`${type}-leaf.pem`), "-noout", "-text"]), new RegExp(`Signature Algorithm: ${expected}`));
      // WebCrypto (behind @peculiar/x509) agrees, which is how browsers and Deno check it.
      const ok = await new x509.X509Certificate(leaf.pem).verify({ publicKey: new x509.X509Certificate(ca.intermediatePem), signatureOnly: true });
      assert.equal(ok, true);
    });
  }
});
