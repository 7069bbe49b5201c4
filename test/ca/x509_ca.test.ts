// CA certificates: the root and intermediate Cairn creates, the cross-signed root that lets
// holders of an old root trust leaves under a new one, inspection of certificates of any origin,
// and operators' own CA material made by openssl.

import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createPrivateKey } from "node:crypto";
import {
  CertificateError,
  certificateMatchesKey,
  createIntermediateCertificate,
  createRootCertificate,
  crossSignCertificate,
  decodeCertificate,
  inspectCertificate,
} from "../../src/ca/certificates.js";
import { generateCaKey, spkiDerOf } from "../../src/ca/keys.js";
import { LeafSigner } from "../../src/ca/leaf.js";
import { DAY_MS, HOUR_MS, TRUST_DOMAIN, type TestCa, WEB_ID, makeCa, openssl, opensslVerify, scratchDir, x509 } from "./x509_support.js";

const scratch = scratchDir();
after(() => scratch.remove());
const NOW_MS = Math.floor(Date.now() / 1000) * 1000;

function text(name: string, pem: string): string {
  return openssl(["x509", "-in", scratch.write(name, pem), "-noout", "-text"]);
}

function leafOf(ca: TestCa): string {
  const signer = new LeafSigner({ certificatePem: ca.intermediatePem, privateKey: ca.intermediateKey.privateKey });
  return signer.sign({ subjectPublicKeyInfoDer: spkiDerOf(generateCaKey("ec-p256").publicKey), spiffeId: WEB_ID, notBeforeMs: NOW_MS, notAfterMs: NOW_MS + HOUR_MS }).pem;
}

void describe("root and intermediate certificates", () => {
  const ca = makeCa("ec-p256", NOW_MS);

  void test("the root is a self-signed CA with critical cA and keyCertSign+cRLSign, the trust domain's SPIFFE ID, an SKI and a 128-bit serial", () => {
    const rootFile = scratch.write("root.pem", ca.rootPem);
    const verified = opensslVerify(rootFile, undefined, rootFile);
    assert.ok(verified.ok, verified.output);
    const seen = text("root.pem", ca.rootPem);
    assert.match(seen, /X509v3 Basic Constraints: critical\n\s+CA:TRUE\n/);
    assert.match(seen, /X509v3 Key Usage: critical\n\s+Certificate Sign, CRL Sign\n/);
    assert.match(seen, /X509v3 Subject Alternative Name: *\n\s+URI:spiffe:\/\/cairn.local\n/);
    assert.match(seen, /X509v3 Subject Key Identifier: *\n/);
    assert.match(seen, /Subject: O = cairn.local, CN = Cairn Root CA 1\n/);
    const info = inspectCertificate(ca.rootPem);
    assert.equal(info.selfSigned, true);
    assert.equal(info.isCa, true);
    assert.equal(info.keyType, "ec-p256");
    assert.equal(info.subject, "CN=Cairn Root CA 1,O=cairn.local");
    assert.deepEqual(info.uris, [`spiffe://${TRUST_DOMAIN}`]);
    assert.equal(info.serialHex.length, 32);
    assert.ok(BigInt(`0x${info.serialHex}`) >= 2n ** 64n);
    assert.equal(info.notBeforeMs, NOW_MS - 60_000);
    assert.equal(info.notAfterMs, NOW_MS + 365 * DAY_MS);
  });

  void test("the intermediate is a CA with path length 0 whose AKI is the root's SKI, and @peculiar/x509 verifies it with the root", async () => {
    const seen = text("intermediate.pem", ca.intermediatePem);
    assert.match(seen, /X509v3 Basic Constraints: critical\n\s+CA:TRUE, pathlen:0\n/);
    assert.match(seen, /X509v3 Key Usage: critical\n\s+Certificate Sign, CRL Sign\n/);
    assert.match(seen, /URI:spiffe:\/\/cairn.local\n/);
    const root = inspectCertificate(ca.rootPem);
    const intermediate = inspectCertificate(ca.intermediatePem);
    assert.equal(intermediate.authorityKeyIdHex, root.subjectKeyIdHex);
    assert.equal(intermediate.issuer, root.subject);
    assert.equal(intermediate.selfSigned, false);
    const parsed = new x509.X509Certificate(ca.intermediatePem);
    assert.equal(await parsed.verify({ publicKey: new x509.X509Certificate(ca.rootPem), signatureOnly: true }), true);
    assert.equal(parsed.getExtension(x509.BasicConstraintsExtension)?.pathLength, 0);
  });

  void test("an intermediate asked to outlive its root is clipped to the root's notAfter", () => {
    const pem = createIntermediateCertificate(generateCaKey("ec-p256").publicKey, { certificatePem: ca.rootPem, privateKey: ca.rootKey.privateKey }, {
      trustDomain: TRUST_DOMAIN,
      commonName: "Long Intermediate",
      notBeforeMs: NOW_MS,
      notAfterMs: NOW_MS + 3650 * DAY_MS,
    });
    assert.equal(inspectCertificate(pem).notAfterMs, inspectCertificate(ca.rootPem).notAfterMs);
  });

  void test("creating refuses bad options and mismatched keys with CertificateError", () => {
    const options = { trustDomain: TRUST_DOMAIN, commonName: "X", notBeforeMs: NOW_MS, notAfterMs: NOW_MS + DAY_MS };
    const key = generateCaKey("ec-p256");
    assert.throws(() => createRootCertificate(key, { ...options, trustDomain: "Cairn Local" }), (e: unknown) => e instanceof CertificateError && /trust domain/.test(e.message));
    assert.throws(() => createRootCertificate(key, { ...options, commonName: "x".repeat(65) }), /common name/);
    assert.throws(() => createRootCertificate(key, { ...options, notAfterMs: NOW_MS }), /validity is empty/);
    assert.throws(() => createRootCertificate({ privateKey: key.privateKey, publicKey: generateCaKey("ec-p256").publicKey }, options), /not the public half/);
    const issuer = { certificatePem: ca.rootPem, privateKey: generateCaKey("ec-p256").privateKey };
    assert.throws(() => createIntermediateCertificate(key.publicKey, issuer, options), /does not belong to the issuer certificate/);
    assert.throws(() => createIntermediateCertificate(key.publicKey, { certificatePem: leafOf(ca), privateKey: key.privateKey }, options), /not a CA/);
  });

  void test("inspect and key matching: garbage is a CertificateError, the right key matches and another does not", () => {
    assert.equal(certificateMatchesKey(ca.rootPem, ca.rootKey.privateKey), true);
    assert.equal(certificateMatchesKey(ca.rootPem, ca.intermediateKey.privateKey), false);
    for (const garbage of ["", "hello", "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", ca.rootPem + ca.intermediatePem, ca.rootPem.replace(/CERTIFICATE/g, "X509 CRL")]) {
      assert.throws(() => inspectCertificate(garbage), CertificateError);
    }
    const der = decodeCertificate(ca.rootPem).der;
    assert.throws(() => inspectCertificate(der.subarray(0, der.length - 1)), CertificateError);
    assert.throws(() => inspectCertificate(Uint8Array.from([...der, 0])), /unexpected bytes/);
    assert.equal(inspectCertificate(der).serialHex, inspectCertificate(ca.rootPem).serialHex);
  });
});

void describe("cross-signing carries trust across a root rotation", () => {
  const old = makeCa("ec-p256", NOW_MS, { tag: "R1" });
  const next = makeCa("ec-p256", NOW_MS, { tag: "R2", rootDays: 730 });
  const crossPem = crossSignCertificate(next.rootPem, { certificatePem: old.rootPem, privateKey: old.rootKey.privateKey });
  const leafFile = scratch.write("cross-leaf.pem", leafOf(next));

  void test("a leaf under the new intermediate verifies against the old root through the cross-signed new root, and against the new root directly", () => {
    const viaOld = opensslVerify(scratch.write("R1.pem", old.rootPem), scratch.write("I2+R2cross.pem", next.intermediatePem + crossPem), leafFile);
    assert.ok(viaOld.ok, viaOld.output);
    const viaNew = opensslVerify(scratch.write("R2.pem", next.rootPem), scratch.write("I2.pem", next.intermediatePem), leafFile);
    assert.ok(viaNew.ok, viaNew.output);
    // Without the cross-signed certificate the old root cannot reach the leaf: the test can fail.
    assert.equal(opensslVerify(scratch.path("R1.pem"), scratch.path("I2.pem"), leafFile).ok, false);
  });

  void test("the cross-signed certificate keeps the new root's subject, key, SKI and extensions, names the old root as issuer, and clips validity", () => {
    const cross = decodeCertificate(crossPem);
    const root = decodeCertificate(next.rootPem);
    const oldRoot = decodeCertificate(old.rootPem);
    assert.deepEqual(Buffer.from(cross.subjectDer), Buffer.from(root.subjectDer));
    assert.deepEqual(Buffer.from(cross.spkiDer), Buffer.from(root.spkiDer));
    assert.deepEqual(Buffer.from(cross.issuerDer), Buffer.from(oldRoot.subjectDer));
    assert.deepEqual(
      cross.extensions.filter((e) => e.oid !== "2.5.29.35").map((e) => Buffer.from(e.der).toString("hex")),
      root.extensions.map((e) => Buffer.from(e.der).toString("hex")),
    );
    const info = inspectCertificate(crossPem);
    assert.equal(info.subjectKeyIdHex, inspectCertificate(next.rootPem).subjectKeyIdHex);
    assert.equal(info.authorityKeyIdHex, inspectCertificate(old.rootPem).subjectKeyIdHex);
    assert.equal(info.selfSigned, false);
    assert.equal(info.notAfterMs, oldRoot.notAfterMs, "clipped to the old root, which expires first");
    assert.notEqual(info.serialHex, inspectCertificate(next.rootPem).serialHex);
  });

  void test("cross-signing refuses a non-CA certificate and an issuer key that is not the issuer's", () => {
    assert.throws(() => crossSignCertificate(leafOf(next), { certificatePem: old.rootPem, privateKey: old.rootKey.privateKey }), /only a CA certificate/);
    assert.throws(() => crossSignCertificate(next.rootPem, { certificatePem: old.rootPem, privateKey: next.rootKey.privateKey }), /does not belong/);
  });
});

void describe("operator-imported CA material made by openssl", () => {
  void test("an openssl P-384 root and intermediate without SPIFFE IDs: inspected, key-matched, and the leaf signer issues chains openssl accepts", () => {
    const rootKeyFile = scratch.path("ext-root.key");
    const intermediateKeyFile = scratch.path("ext-intermediate.key");
    openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out", rootKeyFile]);
    openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out", intermediateKeyFile]);
    const rootFile = scratch.path("ext-root.pem");
    openssl(["req", "-x509", "-new", "-key", rootKeyFile, "-subj", "/O=Example Corp/CN=Example Root", "-days", "30", "-out", rootFile]);
    const extensions = scratch.write("ext.cnf", "[v3]\nbasicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n");
    const csrFile = scratch.path("ext-intermediate.csr");
    openssl(["req", "-new", "-key", intermediateKeyFile, "-subj", "/O=Example Corp/CN=Example Intermediate", "-out", csrFile]);
    const intermediateFile = scratch.path("ext-intermediate.pem");
    openssl(["x509", "-req", "-in", csrFile, "-CA", rootFile, "-CAkey", rootKeyFile, "-CAcreateserial", "-days", "20", "-extfile", extensions, "-extensions", "v3", "-out", intermediateFile]);

    const rootPem = openssl(["x509", "-in", rootFile]);
    const intermediatePem = openssl(["x509", "-in", intermediateFile]);
    const intermediateKey = createPrivateKey(openssl(["pkey", "-in", intermediateKeyFile]));
    const root = inspectCertificate(rootPem);
    assert.equal(root.selfSigned, true);
    assert.equal(root.keyType, "other", "P-384 is not a key type Cairn generates");
    assert.equal(root.subject, "CN=Example Root,O=Example Corp");
    assert.equal(certificateMatchesKey(intermediatePem, intermediateKey), true);

    const signer = new LeafSigner({ certificatePem: intermediatePem, privateKey: intermediateKey });
    const leaf = signer.sign({ subjectPublicKeyInfoDer: spkiDerOf(generateCaKey("ec-p256").publicKey), spiffeId: "spiffe://example.org/ns/a/svc/b", notBeforeMs: NOW_MS, notAfterMs: NOW_MS + HOUR_MS });
    const leafFile = scratch.write("ext-leaf.pem", leaf.pem);
    const verified = opensslVerify(rootFile, intermediateFile, leafFile);
    assert.ok(verified.ok, verified.output);
    assert.match(openssl(["x509", "-in", leafFile, "-noout", "-text"]), /Signature Algorithm: ecdsa-with-SHA384/);

    // Cairn's own intermediate under the operator's root, as the authority does when a root is imported.
    const cairnIntermediateKey = generateCaKey("ec-p256");
    const cairnIntermediatePem = createIntermediateCertificate(cairnIntermediateKey.publicKey, { certificatePem: rootPem, privateKey: createPrivateKey(openssl(["pkey", "-in", rootKeyFile])) }, {
      trustDomain: TRUST_DOMAIN,
      commonName: "Cairn Intermediate under Example Root",
      notBeforeMs: NOW_MS,
      notAfterMs: NOW_MS + 100 * DAY_MS,
    });
    assert.equal(inspectCertificate(cairnIntermediatePem).notAfterMs, root.notAfterMs);
    const cairnLeaf = new LeafSigner({ certificatePem: cairnIntermediatePem, privateKey: cairnIntermediateKey.privateKey }).sign({
      subjectPublicKeyInfoDer: spkiDerOf(generateCaKey("ed25519").publicKey),
      spiffeId: WEB_ID,
      notBeforeMs: NOW_MS,
      notAfterMs: NOW_MS + HOUR_MS,
    });
    const chained = opensslVerify(rootFile, scratch.write("cairn-under-ext.pem", cairnIntermediatePem), scratch.write("cairn-under-ext-leaf.pem", cairnLeaf.pem));
    assert.ok(chained.ok, chained.output);
  });
});
