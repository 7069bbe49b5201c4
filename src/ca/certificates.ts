// CA certificates: the self-signed root, the intermediate that signs leaves, the cross-signed root
// that carries trust across a rotation, and a strict decoder for certificates of any origin
// (Cairn's own and operators' imported ones). This is the slow path, run a few times per rotation,
// so it favours plain concatenating DER builders over the leaf signer's precomputed templates.

import { type KeyObject, createPublicKey, randomBytes, sign, verify } from "node:crypto";
import {
  DER_TRUE,
  type DerElement,
  DerError,
  DerReader,
  Tag,
  contextTag,
  der,
  elementBytes,
  encodeBitString,
  encodeNamedBits,
  encodeOctetString,
  encodeOid,
  encodeSmallInteger,
  encodeTime,
  encodeUtf8String,
  pemDecodeBlocks,
  pemEncode,
  readBitStringOctets,
  readBoolean,
  readDirectoryString,
  readIntegerBytes,
  readNamedBits,
  readOid,
  readPrintableAscii,
  readSmallInteger,
  readTime,
  valueOf,
  wholeSecondMs,
} from "../common/der.js";
import { EXTENSION_OID, GENERAL_NAME_TAG, KEY_USAGE_BIT, encodeExtension } from "../common/x509.js";
import {
  type AlgorithmIdentifier,
  type CaKeyType,
  type SigningAlgorithm,
  type SpkiParts,
  bytesEqual,
  caKeyTypeOf,
  describeKey,
  keyIdentifier,
  keyKindOf,
  readAlgorithmIdentifier,
  readSpki,
  signingAlgorithmFor,
  spkiDerOf,
  verificationAlgorithmOf,
} from "./keys.js";

export class CertificateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CertificateError";
  }
}

export interface CaCertificateOptions {
  /** e.g. "cairn.local"; the certificate carries the URI SAN spiffe://<trustDomain>. */
  readonly trustDomain: string;
  /** e.g. "Cairn Root CA 3f2a"; at most 64 characters (X.520's bound). */
  readonly commonName: string;
  /** Encoded to the second; the fraction is dropped. */
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
}

export interface CertificateInfo {
  readonly serialHex: string;
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
  /** RFC 4514 form, most specific attribute first: "CN=Cairn Root CA 3f2a,O=cairn.local". */
  readonly subject: string;
  readonly issuer: string;
  readonly isCa: boolean;
  /** Issued by its own subject and signed by its own key. */
  readonly selfSigned: boolean;
  /** The subjectKeyIdentifier extension, or (when a certificate lacks one) RFC 5280's method 1 computed from its key. */
  readonly subjectKeyIdHex: string;
  /** The authorityKeyIdentifier's key identifier, if the certificate has one. */
  readonly authorityKeyIdHex: string | undefined;
  readonly uris: string[];
  readonly publicKey: KeyObject;
  readonly keyType: CaKeyType | "other";
}

const ATTRIBUTE_NAMES: ReadonlyMap<string, string> = new Map([
  ["2.5.4.3", "CN"],
  ["2.5.4.5", "serialNumber"],
  ["2.5.4.6", "C"],
  ["2.5.4.7", "L"],
  ["2.5.4.8", "ST"],
  ["2.5.4.10", "O"],
  ["2.5.4.11", "OU"],
  ["0.9.2342.19200300.100.1.25", "DC"],
  ["1.2.840.113549.1.9.1", "emailAddress"],
]);
const COMMON_NAME_OID = "2.5.4.3";
const ORGANIZATION_OID = "2.5.4.10";

/** X.520's upper bound for a common name. */
const COMMON_NAME_CHARS_MAX = 64;
const TRUST_DOMAIN = /^[a-z0-9._-]{1,255}$/;
/** 128-bit serials: 126 random bits, above CA/Browser Forum's 64, in a fixed 16-byte positive INTEGER. */
export const SERIAL_BYTES = 16;
const VERSION_3 = der(contextTag(0, true), encodeSmallInteger(2));

export function encodeAuthorityKeyIdentifier(keyId: Uint8Array): Uint8Array {
  return encodeExtension(EXTENSION_OID.authorityKeyIdentifier, false, der(Tag.sequence, der(contextTag(0, false), keyId)));
}

/**
 * Makes 16 random bytes (at `offset`) a positive serial with no redundant leading byte: the top
 * bit is cleared (positive) and the next one set (so the first byte is never 0x00), which keeps
 * every serial exactly 16 bytes long for fixed-size templates.
 */
export function shapeSerial(bytes: Uint8Array, offset: number): void {
  bytes[offset] = (bytes[offset] & 0x3f) | 0x40;
}

export function randomSerial(): Uint8Array {
  const serial = randomBytes(SERIAL_BYTES);
  shapeSerial(serial, 0);
  return der(Tag.integer, serial);
}

// ---------------------------------------------------------------- decoding

export interface CertificateExtension {
  readonly oid: string;
  readonly critical: boolean;
  /** extnValue's contents: the DER of the extension's own structure. */
  readonly value: Uint8Array;
  /** The whole Extension SEQUENCE, for copying verbatim. */
  readonly der: Uint8Array;
}

/** Every field of a certificate Cairn needs, as views into its DER. */
export interface DecodedCertificate {
  readonly der: Uint8Array;
  /** The signed bytes: the whole TBSCertificate element. */
  readonly tbs: Uint8Array;
  readonly version: number;
  /** The serial INTEGER's value bytes. */
  readonly serial: Uint8Array;
  readonly issuerDer: Uint8Array;
  readonly subjectDer: Uint8Array;
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
  readonly spkiDer: Uint8Array;
  readonly spki: SpkiParts;
  readonly extensions: readonly CertificateExtension[];
  readonly signatureAlgorithm: AlgorithmIdentifier;
  readonly signature: Uint8Array;
  readonly isCa: boolean;
  readonly pathLength: number | undefined;
  /** keyUsage named bits (see KEY_USAGE_BIT), or undefined without the extension. */
  readonly keyUsage: number | undefined;
  /** The extension's key identifier, or undefined without the extension. */
  readonly subjectKeyId: Uint8Array | undefined;
  readonly authorityKeyId: Uint8Array | undefined;
  readonly uris: readonly string[];
}

/** A bound well above any real certificate, so a pasted blob cannot make us parse megabytes. */
const CERTIFICATE_BYTES_MAX = 64 * 1024;

/** One certificate from PEM (exactly one CERTIFICATE block) or DER. Throws CertificateError. */
export function decodeCertificate(input: string | Uint8Array): DecodedCertificate {
  const bytes = typeof input === "string" ? onePemCertificate(input) : input;
  if (bytes.length > CERTIFICATE_BYTES_MAX) throw new CertificateError(`the certificate is ${bytes.length} bytes, over the ${CERTIFICATE_BYTES_MAX}-byte bound`);
  try {
    return decodeCertificateDer(bytes);
  } catch (err) {
    if (err instanceof DerError) throw new CertificateError(`the certificate is malformed: ${err.message}`);
    throw err;
  }
}

function onePemCertificate(pem: string): Uint8Array {
  if (pem.length > 2 * CERTIFICATE_BYTES_MAX) throw new CertificateError(`the certificate PEM is ${pem.length} characters, over the bound of ${2 * CERTIFICATE_BYTES_MAX}`);
  let blocks;
  try {
    blocks = pemDecodeBlocks(pem);
  } catch (err) {
    if (err instanceof DerError) throw new CertificateError(`the certificate PEM is malformed: ${err.message}`);
    throw err;
  }
  if (blocks.length !== 1 || blocks[0].label !== "CERTIFICATE") {
    const found = blocks.length === 0 ? "no PEM block" : blocks.map((b) => `"${b.label}"`).join(", ");
    throw new CertificateError(`expected exactly one PEM block labelled CERTIFICATE, found ${found}`);
  }
  return blocks[0].der;
}

/** Hex bytes as X.509 tools print serials and key ids: "3a:0f:...". */
export function colonHex(hex: string): string {
  return (hex.length % 2 === 1 ? `0${hex}` : hex).match(/../g)?.join(":") ?? "";
}

/** The parts of X.509's SIGNED envelope, which certificates and CSRs share. */
export interface SignedParts {
  readonly signed: DerElement;
  readonly signatureAlgorithm: DerElement;
  readonly signature: Uint8Array;
}

/**
 * Reads SEQUENCE { to-be-signed SEQUENCE, signatureAlgorithm, signature BIT STRING } filling all
 * of `bytes`. `names` say what each is called in errors: the whole, its DER, the signed body.
 */
export function readSigned(bytes: Uint8Array, names: { readonly whole: string; readonly der: string; readonly body: string }): SignedParts {
  const outer = new DerReader(bytes);
  const whole = outer.read(names.whole, Tag.sequence);
  outer.finish(names.der);
  const r = DerReader.inside(bytes, whole);
  const signed = r.read(names.body, Tag.sequence);
  const signatureAlgorithm = r.read("the signatureAlgorithm", Tag.sequence);
  const signature = readBitStringOctets(bytes, r.read("the signature", Tag.bitString), "the signature");
  r.finish(names.whole);
  return { signed, signatureAlgorithm, signature };
}

function decodeCertificateDer(bytes: Uint8Array): DecodedCertificate {
  const { signed: tbsElement, signatureAlgorithm: signatureAlgorithmElement, signature } =
    readSigned(bytes, { whole: "the Certificate", der: "the certificate DER", body: "the TBSCertificate" });

  const t = DerReader.inside(bytes, tbsElement);
  const versionElement = t.readOptional("the version", contextTag(0, true));
  let version = 1;
  if (versionElement !== undefined) {
    const v = DerReader.inside(bytes, versionElement);
    version = readSmallInteger(bytes, v.read("the version", Tag.integer), "the version") + 1;
    v.finish("the version");
    // DER omits a DEFAULT value, so an explicit v1 is not DER.
    if (version < 2 || version > 3) throw new DerError(`the version field says v${version}; only v1 (omitted), v2 and v3 exist`);
  }
  const serial = readIntegerBytes(bytes, t.read("the serialNumber", Tag.integer), "the serialNumber");
  const innerSignatureAlgorithm = t.read("the TBSCertificate signature algorithm", Tag.sequence);
  if (!bytesEqual(elementBytes(bytes, innerSignatureAlgorithm), elementBytes(bytes, signatureAlgorithmElement))) {
    throw new DerError("the signature algorithm inside the TBSCertificate differs from the one outside it");
  }
  const issuer = t.read("the issuer", Tag.sequence);
  const validity = DerReader.inside(bytes, t.read("the validity", Tag.sequence));
  const notBeforeElement = validity.read("notBefore");
  const notAfterElement = validity.read("notAfter");
  validity.finish("the validity");
  const subject = t.read("the subject", Tag.sequence);
  const spkiElement = t.read("the subjectPublicKeyInfo", Tag.sequence);
  t.readOptional("the issuerUniqueID", contextTag(1, false));
  t.readOptional("the subjectUniqueID", contextTag(2, false));
  const extensionsElement = t.readOptional("the extensions", contextTag(3, true));
  t.finish("the TBSCertificate");
  if (extensionsElement !== undefined && version !== 3) throw new DerError(`a v${version} certificate carries extensions, which only v3 may`);

  const extensions = extensionsElement === undefined ? [] : readExtensions(bytes, extensionsElement);
  const decoded = {
    der: bytes,
    tbs: elementBytes(bytes, tbsElement),
    version,
    serial,
    issuerDer: elementBytes(bytes, issuer),
    subjectDer: elementBytes(bytes, subject),
    notBeforeMs: readTime(bytes, notBeforeElement, "notBefore"),
    notAfterMs: readTime(bytes, notAfterElement, "notAfter"),
    spkiDer: elementBytes(bytes, spkiElement),
    spki: readSpki(bytes, spkiElement),
    extensions,
    signatureAlgorithm: readAlgorithmIdentifier(bytes, signatureAlgorithmElement, "the signature"),
    signature,
  };
  return { ...decoded, ...readKnownExtensions(extensions) };
}

function readExtensions(bytes: Uint8Array, explicit: DerElement): CertificateExtension[] {
  const wrapper = DerReader.inside(bytes, explicit);
  const list = wrapper.read("the extensions", Tag.sequence);
  wrapper.finish("the extensions");
  const r = DerReader.inside(bytes, list);
  const extensions: CertificateExtension[] = [];
  const seen = new Set<string>();
  while (!r.atEnd) {
    const extension = r.read("an extension", Tag.sequence);
    const e = DerReader.inside(bytes, extension);
    const oid = readOid(bytes, e.read("an extension's id", Tag.oid), "an extension's id");
    const criticalElement = e.readOptional(`extension ${oid}'s critical flag`, Tag.boolean);
    const critical = criticalElement !== undefined && readBoolean(bytes, criticalElement, `extension ${oid}'s critical flag`);
    // DER omits a DEFAULT value, so an explicit FALSE is not DER.
    if (criticalElement !== undefined && !critical) throw new DerError(`extension ${oid} spells out critical=FALSE, which DER omits`);
    const value = valueOf(bytes, e.read(`extension ${oid}'s value`, Tag.octetString));
    e.finish(`extension ${oid}`);
    if (seen.has(oid)) throw new DerError(`extension ${oid} appears twice`);
    seen.add(oid);
    extensions.push({ oid, critical, value, der: elementBytes(bytes, extension) });
  }
  if (extensions.length === 0) throw new DerError("the extensions field is present but empty");
  return extensions;
}

type KnownExtensions = Pick<DecodedCertificate, "isCa" | "pathLength" | "keyUsage" | "subjectKeyId" | "authorityKeyId" | "uris">;

function readKnownExtensions(extensions: readonly CertificateExtension[]): KnownExtensions {
  const known: { -readonly [K in keyof KnownExtensions]: KnownExtensions[K] } = {
    isCa: false,
    pathLength: undefined,
    keyUsage: undefined,
    subjectKeyId: undefined,
    authorityKeyId: undefined,
    uris: [],
  };
  for (const extension of extensions) {
    const v = extension.value;
    const r = new DerReader(v);
    switch (extension.oid) {
      case EXTENSION_OID.basicConstraints: {
        const s = DerReader.inside(v, r.read("basicConstraints", Tag.sequence));
        const ca = s.readOptional("basicConstraints cA", Tag.boolean);
        known.isCa = ca !== undefined && readBoolean(v, ca, "basicConstraints cA");
        const pathLength = s.readOptional("basicConstraints pathLenConstraint", Tag.integer);
        if (pathLength !== undefined) known.pathLength = readSmallInteger(v, pathLength, "basicConstraints pathLenConstraint");
        s.finish("basicConstraints");
        break;
      }
      case EXTENSION_OID.keyUsage:
        known.keyUsage = readNamedBits(v, r.read("keyUsage", Tag.bitString), "keyUsage");
        break;
      case EXTENSION_OID.subjectKeyIdentifier:
        known.subjectKeyId = valueOf(v, r.read("subjectKeyIdentifier", Tag.octetString));
        break;
      case EXTENSION_OID.authorityKeyIdentifier: {
        const s = DerReader.inside(v, r.read("authorityKeyIdentifier", Tag.sequence));
        const keyId = s.readOptional("authorityKeyIdentifier keyIdentifier", contextTag(0, false));
        if (keyId !== undefined) known.authorityKeyId = valueOf(v, keyId);
        break; // issuer name and serial, if present, are not used
      }
      case EXTENSION_OID.subjectAltName: {
        const s = DerReader.inside(v, r.read("subjectAltName", Tag.sequence));
        const uris: string[] = [];
        while (!s.atEnd) {
          const name = s.read("a subjectAltName entry");
          if (name.tag === GENERAL_NAME_TAG.uri) uris.push(readPrintableAscii(v, name, "a URI SAN"));
        }
        known.uris = uris;
        break;
      }
      default:
        continue; // other extensions are carried, not interpreted
    }
    r.finish(`extension ${extension.oid}`);
  }
  return known;
}

/** Whether `publicKey` verifies the certificate's signature under an algorithm Cairn accepts. */
export function certificateSignedBy(cert: DecodedCertificate, publicKey: KeyObject): boolean {
  const algorithm = verificationAlgorithmOf(cert.signatureAlgorithm);
  if (typeof algorithm === "string" || keyKindOf(publicKey) !== algorithm.keyKind) return false;
  try {
    return verify(algorithm.hash, cert.tbs, publicKey, cert.signature);
  } catch {
    return false; // a signature that does not even parse does not verify
  }
}

/** The key identifier a certificate is known by: its SKI, or RFC 5280 method 1 if it has none. */
export function keyIdOf(cert: DecodedCertificate): Uint8Array {
  return cert.subjectKeyId ?? keyIdentifier(cert.spki.keyBits);
}

export function publicKeyOf(cert: DecodedCertificate): KeyObject {
  try {
    return createPublicKey({ key: Buffer.from(cert.spkiDer), format: "der", type: "spki" });
  } catch {
    throw new CertificateError("the certificate's public key is of a kind this node cannot read");
  }
}

// ---------------------------------------------------------------- names

/** An RDNSequence of O=<organization>, CN=<commonName>, as UTF8Strings (RFC 5280's choice for new names). */
export function encodeName(organization: string, commonName: string): Uint8Array {
  const attribute = (oid: string, value: string): Uint8Array => der(Tag.set, der(Tag.sequence, encodeOid(oid), encodeUtf8String(value)));
  return der(Tag.sequence, attribute(ORGANIZATION_OID, organization), attribute(COMMON_NAME_OID, commonName));
}

/** A Name in RFC 4514's string form (most specific first); attributes without a short name as OID=#hex. */
export function formatName(nameDer: Uint8Array): string {
  const r = new DerReader(nameDer);
  const rdns: string[] = [];
  const s = DerReader.inside(nameDer, r.read("a Name", Tag.sequence));
  while (!s.atEnd) {
    const set = DerReader.inside(nameDer, s.read("a relative distinguished name", Tag.set));
    const parts: string[] = [];
    while (!set.atEnd) {
      const a = DerReader.inside(nameDer, set.read("a name attribute", Tag.sequence));
      const oid = readOid(nameDer, a.read("a name attribute's type", Tag.oid), "a name attribute's type");
      const valueElement = a.read("a name attribute's value");
      a.finish("a name attribute");
      const short = ATTRIBUTE_NAMES.get(oid);
      if (short === undefined) {
        parts.push(`${oid}=#${Buffer.from(elementBytes(nameDer, valueElement)).toString("hex")}`);
      } else {
        parts.push(`${short}=${escapeRdnValue(readDirectoryString(nameDer, valueElement, short))}`);
      }
    }
    rdns.push(parts.join("+"));
  }
  return rdns.reverse().join(",");
}

function escapeRdnValue(value: string): string {
  return value
    .replace(/[,+"\\<>;]/g, (c) => `\\${c}`)
    .replace(/^[ #]/, (c) => `\\${c}`)
    .replace(/ $/, "\\ ");
}

// ---------------------------------------------------------------- issuing

export interface TbsFields {
  readonly serial: Uint8Array;
  readonly issuerDer: Uint8Array;
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
  readonly subjectDer: Uint8Array;
  readonly spkiDer: Uint8Array;
  readonly extensions: readonly Uint8Array[];
}

export function issue(fields: TbsFields, privateKey: KeyObject, algorithm: SigningAlgorithm): string {
  const tbs = der(
    Tag.sequence,
    VERSION_3,
    fields.serial,
    algorithm.algorithmIdentifierDer,
    fields.issuerDer,
    der(Tag.sequence, encodeTime(fields.notBeforeMs), encodeTime(fields.notAfterMs)),
    fields.subjectDer,
    fields.spkiDer,
    der(contextTag(3, true), der(Tag.sequence, ...fields.extensions)),
  );
  const signature = sign(algorithm.hash, tbs, { key: privateKey, dsaEncoding: "der" });
  return pemEncode("CERTIFICATE", der(Tag.sequence, tbs, algorithm.algorithmIdentifierDer, encodeBitString(signature)));
}

export function signingAlgorithmOrThrow(privateKey: KeyObject, role: string): SigningAlgorithm {
  const algorithm = signingAlgorithmFor(privateKey);
  if (algorithm === undefined) {
    const kind = privateKey.type === "private" ? describeKey(privateKey) : `a ${privateKey.type} key`;
    throw new CertificateError(`the ${role} key is ${kind}; a CA key must be a private ECDSA P-256/P-384, RSA 2048-8192 or Ed25519 key`);
  }
  return algorithm;
}

function checkOptions(opts: CaCertificateOptions): void {
  if (!TRUST_DOMAIN.test(opts.trustDomain)) throw new CertificateError(`trust domain "${opts.trustDomain}" must be 1-255 lowercase letters, digits, '.', '-' or '_'`);
  if (opts.commonName.length === 0 || opts.commonName.length > COMMON_NAME_CHARS_MAX || /\p{Cc}/u.test(opts.commonName)) {
    throw new CertificateError(`common name must be 1-${COMMON_NAME_CHARS_MAX} characters without control characters`);
  }
  checkValidity(opts.notBeforeMs, opts.notAfterMs);
}

/** Years 0000-9999 are what X.509 times can say. */
const TIME_MS_MIN = Date.parse("0000-01-01T00:00:00Z");
const TIME_MS_MAX = Date.parse("9999-12-31T23:59:59Z");

function checkValidity(notBeforeMs: number, notAfterMs: number): void {
  for (const [name, ms] of [["notBeforeMs", notBeforeMs], ["notAfterMs", notAfterMs]] as const) {
    if (!Number.isFinite(ms) || ms < TIME_MS_MIN || ms > TIME_MS_MAX) throw new CertificateError(`${name}=${ms} is not a time within years 0000-9999`);
  }
  if (wholeSecondMs(notAfterMs) <= wholeSecondMs(notBeforeMs)) {
    throw new CertificateError(`the validity is empty: notAfter ${new Date(notAfterMs).toISOString()} is not after notBefore ${new Date(notBeforeMs).toISOString()}`);
  }
}

/** The issuer's certificate, checked to be a CA whose key is `privateKey`. */
export function checkedIssuer(issuer: { certificatePem: string; privateKey: KeyObject }): DecodedCertificate {
  const cert = decodeCertificate(issuer.certificatePem);
  if (!cert.isCa) throw new CertificateError("the issuer certificate is not a CA (basicConstraints cA is not set)");
  if (cert.keyUsage !== undefined && (cert.keyUsage & (1 << KEY_USAGE_BIT.keyCertSign)) === 0) {
    throw new CertificateError("the issuer certificate's keyUsage does not allow keyCertSign");
  }
  if (!keyMatches(cert, issuer.privateKey)) throw new CertificateError("the issuer's private key does not belong to the issuer certificate");
  return cert;
}

function caExtensions(trustDomain: string, keyId: Uint8Array, pathLength: number | undefined): Uint8Array[] {
  const basicConstraints = pathLength === undefined ? der(Tag.sequence, DER_TRUE) : der(Tag.sequence, DER_TRUE, encodeSmallInteger(pathLength));
  return [
    encodeExtension(EXTENSION_OID.basicConstraints, true, basicConstraints),
    encodeExtension(EXTENSION_OID.keyUsage, true, encodeNamedBits([KEY_USAGE_BIT.keyCertSign, KEY_USAGE_BIT.cRLSign])),
    encodeExtension(EXTENSION_OID.subjectKeyIdentifier, false, encodeOctetString(keyId)),
    // A CA's SPIFFE ID has no path; the subject is not empty, so the SAN need not be critical.
    encodeExtension(EXTENSION_OID.subjectAltName, false, der(Tag.sequence, der(GENERAL_NAME_TAG.uri, Buffer.from(`spiffe://${trustDomain}`, "latin1")))),
  ];
}

/**
 * A self-signed root: cA=true (critical, no path length), keyUsage keyCertSign+cRLSign (critical),
 * URI SAN spiffe://<trustDomain>, a subjectKeyIdentifier, and no authorityKeyIdentifier (RFC 5280
 * lets a self-signed certificate omit it, and leaving it out lets the root be cross-signed verbatim).
 */
export function createRootCertificate(key: { privateKey: KeyObject; publicKey: KeyObject }, opts: CaCertificateOptions): string {
  checkOptions(opts);
  const algorithm = signingAlgorithmOrThrow(key.privateKey, "root");
  const spkiDer = spkiDerOf(key.publicKey);
  if (!bytesEqual(spkiDer, spkiDerOf(key.privateKey))) throw new CertificateError("the root's public key is not the public half of its private key");
  const keyBits = readSpki(spkiDer, new DerReader(spkiDer).read("the root key", Tag.sequence)).keyBits;
  const name = encodeName(opts.trustDomain, opts.commonName);
  return issue(
    {
      serial: randomSerial(),
      issuerDer: name,
      notBeforeMs: opts.notBeforeMs,
      notAfterMs: opts.notAfterMs,
      subjectDer: name,
      spkiDer,
      extensions: caExtensions(opts.trustDomain, keyIdentifier(keyBits), undefined),
    },
    key.privateKey,
    algorithm,
  );
}

/**
 * An intermediate signed by `issuer`: cA=true with path length 0 (it signs leaves only),
 * keyUsage keyCertSign+cRLSign, URI SAN spiffe://<trustDomain>, SKI, and AKI = the issuer's key
 * id. notAfter is clipped to the issuer's notAfter; read the result with inspectCertificate.
 */
export function createIntermediateCertificate(subjectPublicKey: KeyObject, issuer: { certificatePem: string; privateKey: KeyObject }, opts: CaCertificateOptions): string {
  checkOptions(opts);
  const algorithm = signingAlgorithmOrThrow(issuer.privateKey, "issuer");
  if (subjectPublicKey.type !== "public") throw new CertificateError("the intermediate's key must be given as a public key");
  if (keyKindOf(subjectPublicKey) === undefined) {
    throw new CertificateError(`the intermediate's key is ${describeKey(subjectPublicKey)}; it must be ECDSA, RSA or Ed25519`);
  }
  const issuerCert = checkedIssuer(issuer);
  const notAfterMs = Math.min(opts.notAfterMs, issuerCert.notAfterMs);
  checkValidity(opts.notBeforeMs, notAfterMs);
  const spkiDer = spkiDerOf(subjectPublicKey);
  const keyBits = readSpki(spkiDer, new DerReader(spkiDer).read("the intermediate key", Tag.sequence)).keyBits;
  return issue(
    {
      serial: randomSerial(),
      issuerDer: issuerCert.subjectDer,
      notBeforeMs: opts.notBeforeMs,
      notAfterMs,
      subjectDer: encodeName(opts.trustDomain, opts.commonName),
      spkiDer,
      extensions: [...caExtensions(opts.trustDomain, keyIdentifier(keyBits), 0), encodeAuthorityKeyIdentifier(keyIdOf(issuerCert))],
    },
    issuer.privateKey,
    algorithm,
  );
}

/**
 * The root `certificatePem` issued again by `issuer` (normally the root it replaces): same
 * subject, key, SKI and extensions, but the issuer's name, a fresh serial, an AKI naming the
 * issuer's key, and validity clipped to the issuer's. A client that trusts only the old root
 * then accepts leaves chained through the new intermediate and this certificate.
 */
export function crossSignCertificate(certificatePem: string, issuer: { certificatePem: string; privateKey: KeyObject }): string {
  const algorithm = signingAlgorithmOrThrow(issuer.privateKey, "issuer");
  const cert = decodeCertificate(certificatePem);
  if (!cert.isCa) throw new CertificateError("only a CA certificate can be cross-signed; this one has cA unset");
  if (cert.version !== 3) throw new CertificateError(`the certificate to cross-sign is v${cert.version}; only v3 certificates are cross-signed`);
  const issuerCert = checkedIssuer(issuer);
  const notBeforeMs = Math.max(cert.notBeforeMs, issuerCert.notBeforeMs);
  const notAfterMs = Math.min(cert.notAfterMs, issuerCert.notAfterMs);
  if (notAfterMs <= notBeforeMs) throw new CertificateError("the certificate and its new issuer are never valid at the same time, so there is nothing to cross-sign");
  const extensions = cert.extensions.filter((e) => e.oid !== EXTENSION_OID.authorityKeyIdentifier).map((e) => e.der);
  return issue(
    {
      serial: randomSerial(),
      issuerDer: issuerCert.subjectDer,
      notBeforeMs,
      notAfterMs,
      subjectDer: cert.subjectDer,
      spkiDer: cert.spkiDer,
      extensions: [...extensions, encodeAuthorityKeyIdentifier(keyIdOf(issuerCert))],
    },
    issuer.privateKey,
    algorithm,
  );
}

// ---------------------------------------------------------------- inspecting

/** The facts the authority records about a certificate. Throws CertificateError on anything malformed. */
export function inspectCertificate(pem: string | Uint8Array): CertificateInfo {
  const cert = decodeCertificate(pem);
  const publicKey = publicKeyOf(cert);
  let subject: string;
  let issuer: string;
  try {
    subject = formatName(cert.subjectDer);
    issuer = formatName(cert.issuerDer);
  } catch (err) {
    if (err instanceof DerError) throw new CertificateError(`the certificate's names are malformed: ${err.message}`);
    throw err;
  }
  return {
    serialHex: Buffer.from(cert.serial).toString("hex"),
    notBeforeMs: cert.notBeforeMs,
    notAfterMs: cert.notAfterMs,
    subject,
    issuer,
    isCa: cert.isCa,
    selfSigned: bytesEqual(cert.subjectDer, cert.issuerDer) && certificateSignedBy(cert, publicKey),
    subjectKeyIdHex: Buffer.from(keyIdOf(cert)).toString("hex"),
    authorityKeyIdHex: cert.authorityKeyId === undefined ? undefined : Buffer.from(cert.authorityKeyId).toString("hex"),
    uris: [...cert.uris],
    publicKey,
    keyType: caKeyTypeOf(publicKey),
  };
}

/** Whether `privateKey` is the private half of the certificate's key (for operator-imported CA material). */
export function certificateMatchesKey(certificatePem: string, privateKey: KeyObject): boolean {
  return keyMatches(decodeCertificate(certificatePem), privateKey);
}

function keyMatches(cert: DecodedCertificate, privateKey: KeyObject): boolean {
  if (privateKey.type !== "private") throw new CertificateError(`expected a private key, got a ${privateKey.type} key`);
  // Both sides go through OpenSSL's encoder, so a compressed EC point in an imported certificate still matches.
  return bytesEqual(spkiDerOf(publicKeyOf(cert)), spkiDerOf(privateKey));
}
