// PKCS#10 certificate signing requests (RFC 2986), on the issuance hot path. A strict reader over
// the CSR's DER: it finds the public key, the requested SANs and the signed bytes without
// copying, accepts only the key types Cairn issues for, and verifies the self-signature (EC
// natively, see ec_verify.ts; RSA and Ed25519 with node:crypto). Every failure is a CsrError
// whose reason says what kind of problem it is.

import { type JsonWebKey, verify } from "node:crypto";
import {
  type DerElement,
  DerError,
  DerReader,
  Tag,
  contextTag,
  elementBytes,
  pemDecodeBlocks,
  readBoolean,
  readIntegerBytes,
  readOid,
  readPrintableAscii,
  valueEquals,
  valueOf,
} from "../common/der.js";
import { CSR_ATTRIBUTE_OID, EXTENSION_OID, GENERAL_NAME_TAG } from "../common/x509.js";
import { readSigned } from "./certificates.js";
import { type EcCurve, EcKeyError, verifyEcdsa } from "./ec_verify.js";
import { type KeyKind, OID, type SignatureHash, algorithmOid, oidValue, readAlgorithmIdentifier, readSpki, verificationAlgorithmOf } from "./keys.js";

export type CsrErrorReason = "malformed" | "badSignature" | "unsupportedKey";

export class CsrError extends Error {
  constructor(
    readonly reason: CsrErrorReason,
    message: string,
  ) {
    super(message);
    this.name = "CsrError";
  }
}

export type CsrKeyType = "ec-p256" | "ec-p384" | "rsa" | "ed25519";

export interface ParsedCsr {
  /** Verbatim from the CSR (a view into its bytes), to be spliced into the leaf. */
  readonly subjectPublicKeyInfoDer: Uint8Array;
  readonly keyType: CsrKeyType;
  /** URI SANs from the extensionRequest attribute, in order. */
  readonly uris: readonly string[];
  readonly dnsNames: readonly string[];
}

/** Far above any CSR a workload sends (an RSA-4096 CSR with a few SANs is about 1.7 KB). */
export const CSR_BYTES_MAX = 16 * 1024;
/** PEM is 4/3 of the DER plus line breaks and delimiters. */
const CSR_PEM_CHARS_MAX = 2 * CSR_BYTES_MAX;
/** URI plus DNS SANs; a leaf carries one URI and a handful of DNS names. */
export const CSR_SANS_MAX = 64;
/** A SPIFFE ID is at most 2048 bytes; a DNS name at most 253. */
const SAN_CHARS_MAX = 2048;
const RSA_BITS_MIN = 2048;
const RSA_BITS_MAX = 4096;
const ACCEPTED_KEYS = "use RSA 2048-4096, ECDSA P-256/P-384 or Ed25519";

const OID_BYTES = {
  ecPublicKey: oidValue(OID.ecPublicKey),
  rsaEncryption: oidValue(OID.rsaEncryption),
  ed25519: oidValue(OID.ed25519),
  prime256v1: oidValue(OID.prime256v1),
  secp384r1: oidValue(OID.secp384r1),
  extensionRequest: oidValue(CSR_ATTRIBUTE_OID.extensionRequest),
  subjectAltName: oidValue(EXTENSION_OID.subjectAltName),
};

/** Names for keys Cairn refuses, so the message says what was sent. */
const KNOWN_KEY_NAMES: ReadonlyMap<string, string> = new Map([
  ["1.2.840.10040.4.1", "DSA"],
  ["1.2.840.113549.1.1.10", "RSA-PSS"],
  ["1.3.101.110", "X25519"],
  ["1.3.101.111", "X448"],
  ["1.3.101.113", "Ed448"],
]);
const KNOWN_CURVE_NAMES: ReadonlyMap<string, string> = new Map([
  ["1.3.132.0.10", "secp256k1"],
  ["1.3.132.0.35", "P-521"],
  ["1.2.840.10045.3.1.1", "P-192"],
  ["1.3.132.0.33", "P-224"],
  ["1.3.36.3.3.2.8.1.1.7", "brainpoolP256r1"],
]);

/** The uncompressed point (0x04 || X || Y) each accepted curve's key must be. */
const EC_POINT_BYTES = { "ec-p256": 65, "ec-p384": 97 } as const;

/**
 * Parses a CSR given as PEM (exactly one "CERTIFICATE REQUEST" block) or DER, checks its
 * structure strictly, accepts only EC P-256/P-384, RSA 2048-4096 and Ed25519 keys, and verifies
 * its self-signature (ECDSA with SHA-256/384/512, RSA PKCS#1 v1.5 with SHA-256/384/512, Ed25519).
 */
export function parseCsr(csr: string | Uint8Array): ParsedCsr {
  const { parsed, proof } = readCsrUnverified(csr);
  verifyCsrProof(proof);
  return parsed;
}

/**
 * What verifying a CSR's self-signature needs, and nothing else: plain data, so it can be sent to
 * a worker thread (the check costs most of an issuance) while the caller decides on the rest.
 */
export interface CsrProof {
  /** The digest (null for Ed25519). */
  readonly hash: SignatureHash | null;
  readonly keyType: CsrKeyType;
  /** The CertificationRequestInfo's bytes: what was signed. */
  readonly signed: Uint8Array;
  readonly key: CsrPublicKey;
  readonly signature: Uint8Array;
}

/**
 * A CSR's key as its check takes it: an EC key as its uncompressed point, for the native ECDSA
 * check (ec_verify.ts: node:crypto's import of a fresh key costs more than the verify); an RSA or
 * Ed25519 key as a JWK for node:crypto, the cheapest import it offers (see verifyCsrProof).
 */
export type CsrPublicKey = { readonly curve: EcCurve; readonly point: Uint8Array } | { readonly jwk: JsonWebKey };

/**
 * parseCsr in two halves: everything but the signature check (strict structure, key and
 * algorithm checks; cheap), and the proof that `verifyCsrProof` checks. Nothing may be issued
 * for `parsed` until its proof has verified.
 */
export function readCsrUnverified(csr: string | Uint8Array): { readonly parsed: ParsedCsr; readonly proof: CsrProof } {
  const bytes = typeof csr === "string" ? decodePem(csr) : csr;
  if (bytes.length > CSR_BYTES_MAX) throw new CsrError("malformed", `the CSR is ${bytes.length} bytes, over the ${CSR_BYTES_MAX}-byte bound`);
  let fields: CsrFields;
  try {
    fields = readCsr(bytes);
  } catch (err) {
    if (err instanceof DerError) throw new CsrError("malformed", `the CSR is malformed: ${err.message}`);
    throw err;
  }
  const spkiDer = elementBytes(bytes, fields.spki);
  const proof = proofOf(bytes, fields);
  return { parsed: { subjectPublicKeyInfoDer: spkiDer, keyType: fields.keyType, uris: fields.uris, dnsNames: fields.dnsNames }, proof };
}

function decodePem(pem: string): Uint8Array {
  if (pem.length > CSR_PEM_CHARS_MAX) throw new CsrError("malformed", `the CSR PEM is ${pem.length} characters, over the bound of ${CSR_PEM_CHARS_MAX}`);
  let blocks;
  try {
    blocks = pemDecodeBlocks(pem);
  } catch (err) {
    if (err instanceof DerError) throw new CsrError("malformed", `the CSR PEM is malformed: ${err.message}`);
    throw err;
  }
  // "NEW CERTIFICATE REQUEST" is what Java's keytool and old Netscape tools write.
  if (blocks.length !== 1 || (blocks[0].label !== "CERTIFICATE REQUEST" && blocks[0].label !== "NEW CERTIFICATE REQUEST")) {
    const found = blocks.length === 0 ? "no PEM block" : blocks.map((b) => `"${b.label}"`).join(", ");
    throw new CsrError("malformed", `expected exactly one PEM block labelled CERTIFICATE REQUEST, found ${found}`);
  }
  return blocks[0].der;
}

interface CsrFields {
  readonly info: DerElement;
  readonly spki: DerElement;
  readonly keyType: CsrKeyType;
  readonly keyKind: KeyKind;
  readonly key: CsrPublicKey;
  readonly signatureAlgorithm: DerElement;
  readonly signature: Uint8Array;
  readonly uris: string[];
  readonly dnsNames: string[];
}

/** The structure, without cryptography. Throws DerError for malformed input, CsrError for a refused key. */
function readCsr(bytes: Uint8Array): CsrFields {
  const { signed: info, signatureAlgorithm, signature } =
    readSigned(bytes, { whole: "the CertificationRequest", der: "the CSR DER", body: "the CertificationRequestInfo" });

  const i = DerReader.inside(bytes, info);
  const version = readIntegerBytes(bytes, i.read("the version", Tag.integer), "the version");
  if (version.length !== 1 || version[0] !== 0) throw new DerError("the version must be 0 (v1), the only PKCS#10 version");
  checkName(bytes, i.read("the subject", Tag.sequence));
  const spki = i.read("the subjectPKInfo", Tag.sequence);
  // RFC 2986 requires the attributes field, but some encoders omit it when empty; absent and empty mean the same.
  const attributes = i.readOptional("the attributes", contextTag(0, true));
  i.finish("the CertificationRequestInfo");

  const key = classifyKey(bytes, spki);
  const sans: { uris: string[]; dnsNames: string[] } = { uris: [], dnsNames: [] };
  if (attributes !== undefined) readAttributes(bytes, attributes, sans);
  return { info, spki, ...key, signatureAlgorithm, signature, ...sans };
}

/** A Name is a SEQUENCE of SETs of (OID, value); Cairn ignores the subject but refuses a broken one. */
function checkName(bytes: Uint8Array, name: DerElement): void {
  const r = DerReader.inside(bytes, name);
  while (!r.atEnd) {
    const set = DerReader.inside(bytes, r.read("a subject RDN", Tag.set));
    if (set.atEnd) throw new DerError("a subject RDN is empty");
    while (!set.atEnd) {
      const attribute = DerReader.inside(bytes, set.read("a subject attribute", Tag.sequence));
      attribute.read("a subject attribute's type", Tag.oid);
      attribute.read("a subject attribute's value");
      attribute.finish("a subject attribute");
    }
  }
}

interface ClassifiedKey {
  readonly keyType: CsrKeyType;
  readonly keyKind: KeyKind;
  readonly key: CsrPublicKey;
}

/** Which accepted key the SPKI holds; CsrError("unsupportedKey") naming the key otherwise. */
function classifyKey(bytes: Uint8Array, spki: DerElement): ClassifiedKey {
  const { algorithm, keyBits } = readSpki(bytes, spki);
  const params = algorithm.parameters;
  if (valueEquals(bytes, algorithm.oid, OID_BYTES.ecPublicKey)) {
    if (params === undefined || params.tag !== Tag.oid) {
      throw new CsrError("unsupportedKey", `the CSR key is EC with explicit or missing curve parameters; ${ACCEPTED_KEYS} with a named curve`);
    }
    const keyType = valueEquals(bytes, params, OID_BYTES.prime256v1) ? "ec-p256" : valueEquals(bytes, params, OID_BYTES.secp384r1) ? "ec-p384" : undefined;
    if (keyType === undefined) {
      const curve = readOid(bytes, params, "the CSR key's curve");
      throw new CsrError("unsupportedKey", `the CSR key is EC on curve ${KNOWN_CURVE_NAMES.get(curve) ?? curve}; ${ACCEPTED_KEYS}`);
    }
    if (keyBits.length !== EC_POINT_BYTES[keyType] || keyBits[0] !== 0x04) {
      throw new CsrError("unsupportedKey", `the CSR's ${keyType === "ec-p256" ? "P-256" : "P-384"} key is not an uncompressed point; send the key uncompressed, as TLS libraries expect`);
    }
    return { keyType, keyKind: "ec", key: { curve: keyType === "ec-p256" ? "P-256" : "P-384", point: keyBits } };
  }
  if (valueEquals(bytes, algorithm.oid, OID_BYTES.rsaEncryption)) {
    if (params === undefined || params.tag !== Tag.null || params.end !== params.valueStart) {
      throw new DerError("an rsaEncryption key must have NULL parameters (RFC 3279)");
    }
    const { modulus, exponent } = readRsaPublicKey(keyBits);
    const bits = (modulus.length - 1) * 8 + (32 - Math.clz32(modulus[0]));
    if (bits < RSA_BITS_MIN || bits > RSA_BITS_MAX) throw new CsrError("unsupportedKey", `the CSR key is RSA ${bits} bits; ${ACCEPTED_KEYS}`);
    return { keyType: "rsa", keyKind: "rsa", key: { jwk: { kty: "RSA", n: base64url(modulus, 0, modulus.length), e: base64url(exponent, 0, exponent.length) } } };
  }
  if (valueEquals(bytes, algorithm.oid, OID_BYTES.ed25519)) {
    if (params !== undefined) throw new DerError("an Ed25519 key must have no parameters (RFC 8410)");
    if (keyBits.length !== 32) throw new DerError(`an Ed25519 key is 32 bytes, not ${keyBits.length}`);
    return { keyType: "ed25519", keyKind: "ed25519", key: { jwk: { kty: "OKP", crv: "Ed25519", x: base64url(keyBits, 0, 32) } } };
  }
  const oid = algorithmOid(algorithm);
  throw new CsrError("unsupportedKey", `the CSR key is ${KNOWN_KEY_NAMES.get(oid) ?? `of algorithm ${oid}`}; ${ACCEPTED_KEYS}`);
}

/** An RSAPublicKey SEQUENCE { modulus, publicExponent } as unsigned big-endian magnitudes without leading zeros. */
function readRsaPublicKey(keyBits: Uint8Array): { modulus: Uint8Array; exponent: Uint8Array } {
  const r = new DerReader(keyBits);
  const key = DerReader.inside(keyBits, r.read("the RSA public key", Tag.sequence));
  r.finish("the RSA public key");
  const modulus = positiveMagnitude(readIntegerBytes(keyBits, key.read("the RSA modulus", Tag.integer), "the RSA modulus"), "the RSA modulus");
  const exponent = positiveMagnitude(readIntegerBytes(keyBits, key.read("the RSA public exponent", Tag.integer), "the RSA public exponent"), "the RSA public exponent");
  key.finish("the RSA public key");
  return { modulus, exponent };
}

function positiveMagnitude(integer: Uint8Array, what: string): Uint8Array {
  if (integer[0] >= 0x80) throw new DerError(`${what} is negative`);
  let first = 0;
  while (first < integer.length && integer[first] === 0) first++;
  if (first === integer.length) throw new DerError(`${what} is zero`);
  return integer.subarray(first);
}

function base64url(bytes: Uint8Array, start: number, end: number): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset + start, end - start).toString("base64url");
}

/** Attributes: [0] IMPLICIT SET OF Attribute; only extensionRequest matters, the rest (challengePassword, ...) is ignored. */
function readAttributes(bytes: Uint8Array, attributes: DerElement, sans: { uris: string[]; dnsNames: string[] }): void {
  const r = DerReader.inside(bytes, attributes);
  let sawExtensionRequest = false;
  while (!r.atEnd) {
    const attribute = DerReader.inside(bytes, r.read("an attribute", Tag.sequence));
    const type = attribute.read("an attribute's type", Tag.oid);
    const values = attribute.read("an attribute's values", Tag.set);
    attribute.finish("an attribute");
    if (!valueEquals(bytes, type, OID_BYTES.extensionRequest)) continue;
    if (sawExtensionRequest) throw new DerError("the extensionRequest attribute appears twice");
    sawExtensionRequest = true;
    const v = DerReader.inside(bytes, values);
    const extensions = v.read("the extensionRequest value", Tag.sequence);
    v.finish("the extensionRequest attribute (it must have exactly one value)");
    readRequestedExtensions(bytes, extensions, sans);
  }
}

/** Requested extensions: only subjectAltName is read; the CA decides every other extension itself. */
function readRequestedExtensions(bytes: Uint8Array, extensions: DerElement, sans: { uris: string[]; dnsNames: string[] }): void {
  const r = DerReader.inside(bytes, extensions);
  const seen: DerElement[] = [];
  while (!r.atEnd) {
    const e = DerReader.inside(bytes, r.read("a requested extension", Tag.sequence));
    const id = e.read("a requested extension's id", Tag.oid);
    const critical = e.readOptional("a requested extension's critical flag", Tag.boolean);
    if (critical !== undefined && !readBoolean(bytes, critical, "a requested extension's critical flag")) {
      throw new DerError("a requested extension spells out critical=FALSE, which DER omits");
    }
    const value = e.read("a requested extension's value", Tag.octetString);
    e.finish("a requested extension");
    // A request asks for a handful of extensions, so comparing with each one seen is cheapest.
    if (seen.some((other) => valueEquals(bytes, id, valueOf(bytes, other)))) {
      throw new DerError(`requested extension ${readOid(bytes, id, "an extension id")} appears twice`);
    }
    seen.push(id);
    if (!valueEquals(bytes, id, OID_BYTES.subjectAltName)) continue;
    readSubjectAltNames(bytes, value, sans);
  }
}

function readSubjectAltNames(bytes: Uint8Array, octets: DerElement, sans: { uris: string[]; dnsNames: string[] }): void {
  const o = DerReader.inside(bytes, octets);
  const names = o.read("the subjectAltName", Tag.sequence);
  o.finish("the subjectAltName extension");
  const r = DerReader.inside(bytes, names);
  if (r.atEnd) throw new DerError("the subjectAltName is empty; it must name at least one SAN");
  while (!r.atEnd) {
    if (sans.uris.length + sans.dnsNames.length >= CSR_SANS_MAX) throw new CsrError("malformed", `the CSR asks for more than ${CSR_SANS_MAX} SANs`);
    const name = r.read("a subjectAltName entry");
    if (name.end - name.valueStart > SAN_CHARS_MAX) throw new DerError(`a subjectAltName entry is over ${SAN_CHARS_MAX} characters`);
    if (name.tag === GENERAL_NAME_TAG.uri) {
      sans.uris.push(readPrintableAscii(bytes, name, "a URI SAN"));
    } else if (name.tag === GENERAL_NAME_TAG.dnsName) {
      sans.dnsNames.push(readPrintableAscii(bytes, name, "a DNS SAN"));
    } else {
      throw new CsrError("malformed", `the CSR asks for a ${generalNameKind(name.tag)} SAN; Cairn issues only URI (the SPIFFE ID) and DNS SANs`);
    }
  }
}

function generalNameKind(tag: number): string {
  switch (tag & 0x1f) {
    case 0:
      return "otherName";
    case 1:
      return "email (rfc822Name)";
    case 4:
      return "directoryName";
    case 7:
      return "IP address";
    case 8:
      return "registeredID";
    default:
      return `[${tag & 0x1f}]`;
  }
}

/** The signature's algorithm, checked against the key, and the bytes it covers. */
function proofOf(bytes: Uint8Array, fields: CsrFields): CsrProof {
  let algorithm;
  try {
    algorithm = verificationAlgorithmOf(readAlgorithmIdentifier(bytes, fields.signatureAlgorithm, "the signature"));
  } catch (err) {
    if (err instanceof DerError) throw new CsrError("malformed", `the CSR is malformed: ${err.message}`);
    throw err;
  }
  if (typeof algorithm === "string") throw new CsrError("badSignature", `the CSR signature is refused: ${algorithm}; sign with SHA-256 or stronger (or Ed25519)`);
  if (algorithm.keyKind !== fields.keyKind) {
    throw new CsrError("badSignature", `the CSR is signed with ${algorithm.name}, which does not fit its ${fields.keyType} key`);
  }
  return { hash: algorithm.hash, keyType: fields.keyType, signed: elementBytes(bytes, fields.info), key: fields.key, signature: fields.signature };
}

/**
 * Throws CsrError unless the CSR's signature verifies with its own key: the proof it holds that
 * key. EC keys go to the native check (ec_verify.ts). Other keys go to node:crypto as a JWK
 * rather than as the SPKI DER: OpenSSL 3.0 sets up its whole decoder framework for every DER key,
 * which costs about twice the JWK import's direct construction. Every path checks the key itself
 * (an EC point must be on its curve). No KeyObject is kept, so nothing waits for the garbage
 * collector to free it.
 */
export function verifyCsrProof(proof: CsrProof): void {
  if (!signatureVerifies(proof)) {
    throw new CsrError("badSignature", "the CSR signature does not verify with the CSR's own public key; sign the request with the private key it names");
  }
}

function signatureVerifies({ hash, keyType, signed, key, signature }: CsrProof): boolean {
  if ("point" in key) {
    // proofOf pairs an EC key only with an ECDSA algorithm, and every ECDSA algorithm has a hash.
    if (hash === null) throw new Error(`an ECDSA proof for a ${keyType} key has no hash`);
    try {
      return verifyEcdsa(key.curve, hash, key.point, signed, signature);
    } catch (err) {
      if (err instanceof EcKeyError) throw new CsrError("malformed", `the CSR's ${keyType} public key is not a valid key`);
      throw err;
    }
  }
  try {
    return verify(hash, signed, { key: key.jwk, format: "jwk" }, signature);
  } catch (err) {
    if (err instanceof Error && "code" in err && err.code === "ERR_CRYPTO_INVALID_JWK") throw new CsrError("malformed", `the CSR's ${keyType} public key is not a valid key`);
    return false; // OpenSSL throws for some malformed signatures; to the caller it is simply a bad one
  }
}
