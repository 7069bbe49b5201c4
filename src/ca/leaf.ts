// X.509-SVID leaves: the issuance hot path. Everything that is the same for every leaf of one
// intermediate (the issuer name, the signature AlgorithmIdentifier, the AKI, basicConstraints,
// keyUsage and extKeyUsage) is encoded once, in the constructor. Per leaf, sign() sizes the
// certificate, writes it into one buffer with no intermediate strings or arrays, signs the TBS
// in place with node:crypto, and appends the signature. The tests check the result with openssl,
// and check that @peculiar/x509 encodes the same fields to the same TBS bytes.

import * as nodeCrypto from "node:crypto";
import { type KeyObject, createHash, randomFillSync, sign } from "node:crypto";
import { DerError, DerReader, Tag, concatBytes, contextTag, der, encodeNamedBits, encodeOctetString, encodeOid, headerBytes, pemEncode, valueEquals, wholeSecondMs, writeHeader, writeTime } from "../common/der.js";
import { EXTENDED_KEY_USAGE_OID, EXTENSION_OID, GENERAL_NAME_TAG, KEY_USAGE_BIT, encodeExtension } from "../common/x509.js";
import { CertificateError, SERIAL_BYTES, certificateMatchesKey, decodeCertificate, encodeAuthorityKeyIdentifier, keyIdOf, shapeSerial } from "./certificates.js";
import { OID, describeKey, oidValue, signingAlgorithmFor } from "./keys.js";

export { pemDecodeAll, pemEncode } from "../common/der.js";

export interface LeafRequest {
  /** A SubjectPublicKeyInfo (e.g. ParsedCsr.subjectPublicKeyInfoDer), copied verbatim into the leaf. */
  readonly subjectPublicKeyInfoDer: Uint8Array;
  /** The one URI SAN: a SPIFFE ID with a path, in the intermediate's trust domain. */
  readonly spiffeId: string;
  readonly dnsNames?: readonly string[];
  /** iPAddress SANs, 4 bytes (IPv4) or 16 (IPv6) each: a node's own certificate for its public ports has them, workload SVIDs do not. */
  readonly ipAddresses?: readonly Uint8Array[];
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
}

export interface SignedLeaf {
  readonly der: Uint8Array;
  readonly pem: string;
  readonly serialHex: string;
  /** What the certificate says: the requested times to the whole second, notAfter clipped to the intermediate's. */
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
}

/** A leaf names one workload; a few DNS names are normal, hundreds are a mistake. */
export const LEAF_DNS_NAMES_MAX = 32;
/** A node listens on a few addresses; more IP SANs than this is a mistake. */
export const LEAF_IP_ADDRESSES_MAX = 16;
const SPIFFE_ID_CHARS_MAX = 2048;
const DNS_NAME_CHARS_MAX = 253;
/** spiffe://<trust domain>/<segments>, with at least one segment and none empty, "." or "..". */
const SPIFFE_ID = /^spiffe:\/\/[a-z0-9._-]+(?:\/(?!\.\.?(?:\/|$))[A-Za-z0-9._-]+)+$/;
/** LDH labels, optionally under a leading wildcard label. */
const DNS_NAME = /^(?:\*\.)?(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const NO_NAMES: readonly string[] = [];
const NO_ADDRESSES: readonly Uint8Array[] = [];

/** [0] EXPLICIT INTEGER 2 (v3), then the serial INTEGER's tag and fixed length. */
const VERSION_AND_SERIAL_HEADER = Buffer.from([contextTag(0, true), 3, Tag.integer, 1, 2, Tag.integer, SERIAL_BYTES]);
const EMPTY_NAME = Buffer.from([Tag.sequence, 0]);
const KEY_ID_BYTES = 20;
/** subjectKeyIdentifier: SEQUENCE { OID, OCTET STRING { OCTET STRING (20 bytes) } }, all but the key id. */
const SKI_EXTENSION_HEADER = Buffer.from(encodeExtension(EXTENSION_OID.subjectKeyIdentifier, false, encodeOctetString(new Uint8Array(KEY_ID_BYTES))).subarray(0, -KEY_ID_BYTES));
/** The subjectAltName's id and critical flag: critical because the subject is empty (RFC 5280 4.2.1.6). */
const SAN_ID_AND_CRITICAL = Buffer.from([...encodeOid(EXTENSION_OID.subjectAltName), Tag.boolean, 1, 0xff]);
/** The Certificate SEQUENCE's header is written last, in front of the TBS; this is room for the longest. */
const CERTIFICATE_HEADER_BYTES_MAX = 6;

const KEY_OID_VALUE = { ec: oidValue(OID.ecPublicKey), rsa: oidValue(OID.rsaEncryption), ed25519: oidValue(OID.ed25519) };

/** Random serials come from one pool refilled by a single randomFillSync: one syscall per 1024 leaves. */
const SERIAL_POOL = Buffer.allocUnsafe(1024 * SERIAL_BYTES);
let serialPoolOffset = SERIAL_POOL.length;

function takeSerial(out: Buffer, pos: number): void {
  if (serialPoolOffset + SERIAL_BYTES > SERIAL_POOL.length) {
    randomFillSync(SERIAL_POOL);
    serialPoolOffset = 0;
  }
  SERIAL_POOL.copy(out, pos, serialPoolOffset, serialPoolOffset + SERIAL_BYTES);
  serialPoolOffset += SERIAL_BYTES;
  shapeSerial(out, pos);
}

/**
 * The extensions a leaf shares with every other leaf of the intermediate, for one kind of
 * subject key, followed by the subjectKeyIdentifier's header: the key id is written right after.
 */
function fixedExtensions(keyUsageBits: readonly number[], authorityKeyId: Uint8Array): Buffer {
  return Buffer.from(
    concatBytes([
      encodeExtension(EXTENSION_OID.basicConstraints, true, der(Tag.sequence)),
      encodeExtension(EXTENSION_OID.keyUsage, true, encodeNamedBits(keyUsageBits)),
      encodeExtension(EXTENSION_OID.extKeyUsage, false, der(Tag.sequence, encodeOid(EXTENDED_KEY_USAGE_OID.serverAuth), encodeOid(EXTENDED_KEY_USAGE_OID.clientAuth))),
      encodeAuthorityKeyIdentifier(authorityKeyId),
      SKI_EXTENSION_HEADER,
    ]),
  );
}

/**
 * The encoding of the last time asked for. Leaves signed within the same second share their
 * notBefore (and usually notAfter), so at any real rate nearly every call is a copy of 15 bytes.
 */
class TimeEncoding {
  private ms = Number.NaN;
  private readonly bytes = Buffer.alloc(17);
  private view = this.bytes.subarray(0, 0);

  /** The DER of `ms` (whole seconds), valid until the next call. */
  of(ms: number): Buffer {
    if (ms !== this.ms) {
      this.view = this.bytes.subarray(0, writeTime(this.bytes, 0, ms));
      this.ms = ms;
    }
    return this.view;
  }
}

export class LeafSigner {
  private readonly signOptions: { readonly key: KeyObject; readonly dsaEncoding: "der" };
  private readonly hash: string | null;
  private readonly algorithmIdentifier: Buffer;
  /** The signature AlgorithmIdentifier and the issuer Name, adjacent in every TBSCertificate. */
  private readonly algorithmAndIssuer: Buffer;
  private readonly notBeforeEncoding = new TimeEncoding();
  private readonly notAfterEncoding = new TimeEncoding();
  private readonly signatureBytesMax: number;
  private readonly intermediateNotAfterMs: number;
  /** "spiffe://<trust domain>/" when the intermediate carries a SPIFFE ID; leaves must fall under it. */
  private readonly spiffeIdPrefix: string | undefined;
  /** keyUsage digitalSignature only: for EC and Ed25519 subject keys. */
  private readonly extensionsSigning: Buffer;
  /** keyUsage digitalSignature + keyEncipherment: RSA keys may also carry TLS 1.2 RSA key exchange. */
  private readonly extensionsRsa: Buffer;

  /** Throws CertificateError if the intermediate is not a CA, or its key is unusable or not the certificate's. */
  constructor(intermediate: { certificatePem: string; privateKey: KeyObject }) {
    const cert = decodeCertificate(intermediate.certificatePem);
    if (!cert.isCa) throw new CertificateError("the intermediate certificate is not a CA (basicConstraints cA is not set)");
    if (cert.keyUsage !== undefined && (cert.keyUsage & (1 << KEY_USAGE_BIT.keyCertSign)) === 0) {
      throw new CertificateError("the intermediate certificate's keyUsage does not allow keyCertSign");
    }
    const algorithm = signingAlgorithmFor(intermediate.privateKey);
    if (algorithm === undefined) {
      const kind = intermediate.privateKey.type === "private" ? describeKey(intermediate.privateKey) : `a ${intermediate.privateKey.type} key`;
      throw new CertificateError(`the intermediate key is ${kind}; it must be a private ECDSA P-256/P-384, RSA 2048-8192 or Ed25519 key`);
    }
    if (!certificateMatchesKey(intermediate.certificatePem, intermediate.privateKey)) {
      throw new CertificateError("the intermediate's private key does not belong to the intermediate certificate");
    }
    this.signOptions = { key: intermediate.privateKey, dsaEncoding: "der" };
    this.hash = algorithm.hash;
    this.algorithmIdentifier = Buffer.from(algorithm.algorithmIdentifierDer);
    this.algorithmAndIssuer = Buffer.from(concatBytes([algorithm.algorithmIdentifierDer, cert.subjectDer]));
    this.signatureBytesMax = algorithm.signatureBytesMax;
    this.intermediateNotAfterMs = cert.notAfterMs;
    const caId = cert.uris.find((u) => u.startsWith("spiffe://"));
    this.spiffeIdPrefix = caId === undefined ? undefined : `${caId}/`;
    const authorityKeyId = keyIdOf(cert);
    this.extensionsSigning = fixedExtensions([KEY_USAGE_BIT.digitalSignature], authorityKeyId);
    this.extensionsRsa = fixedExtensions([KEY_USAGE_BIT.digitalSignature, KEY_USAGE_BIT.keyEncipherment], authorityKeyId);
  }

  /**
   * Issues an X.509-SVID: v3, empty subject, one URI SAN (the SPIFFE ID) plus any DNS and IP SANs
   * in a critical SAN extension, keyUsage digitalSignature (+keyEncipherment for RSA keys), EKU
   * serverAuth+clientAuth, cA=false, SKI and AKI, a random 128-bit serial. Throws
   * CertificateError for a request that breaks those rules.
   */
  sign(req: LeafRequest): SignedLeaf {
    const spki = req.subjectPublicKeyInfoDer;
    const { keyBits, isRsa } = readSubjectKey(spki);
    const spiffeId = req.spiffeId;
    this.checkSpiffeId(spiffeId);
    const dnsNames = req.dnsNames ?? NO_NAMES;
    checkDnsNames(dnsNames);
    const ipAddresses = req.ipAddresses ?? NO_ADDRESSES;
    checkIpAddresses(ipAddresses);
    const notBeforeMs = checkedTime("notBeforeMs", req.notBeforeMs);
    const requestedNotAfterMs = checkedTime("notAfterMs", req.notAfterMs);
    const notAfterMs = Math.min(requestedNotAfterMs, this.intermediateNotAfterMs);
    if (notAfterMs <= notBeforeMs) {
      throw new CertificateError(
        notAfterMs < requestedNotAfterMs
          ? `the intermediate expires at ${new Date(this.intermediateNotAfterMs).toISOString()}, before the leaf's notBefore; rotate the CA`
          : `notAfterMs (${req.notAfterMs}) must be at least a second after notBeforeMs (${req.notBeforeMs})`,
      );
    }

    // Size every element from the inside out, so the whole certificate is written once.
    let generalNamesBytes = headerBytes(spiffeId.length) + spiffeId.length;
    for (const name of dnsNames) generalNamesBytes += headerBytes(name.length) + name.length;
    for (const ip of ipAddresses) generalNamesBytes += headerBytes(ip.length) + ip.length;
    const sanSequenceBytes = headerBytes(generalNamesBytes) + generalNamesBytes;
    const sanValueBytes = SAN_ID_AND_CRITICAL.length + headerBytes(sanSequenceBytes) + sanSequenceBytes;
    const fixed = isRsa ? this.extensionsRsa : this.extensionsSigning;
    const extensionsBytes = fixed.length + KEY_ID_BYTES + headerBytes(sanValueBytes) + sanValueBytes;
    const extensionsSequenceBytes = headerBytes(extensionsBytes) + extensionsBytes;
    const notBefore = this.notBeforeEncoding.of(notBeforeMs);
    const notAfter = this.notAfterEncoding.of(notAfterMs);
    const validityBytes = notBefore.length + notAfter.length;
    const tbsBytes =
      VERSION_AND_SERIAL_HEADER.length +
      SERIAL_BYTES +
      this.algorithmAndIssuer.length +
      headerBytes(validityBytes) +
      validityBytes +
      EMPTY_NAME.length +
      spki.length +
      headerBytes(extensionsSequenceBytes) +
      extensionsSequenceBytes;
    const signatureBytesMax = headerBytes(this.signatureBytesMax + 1) + 1 + this.signatureBytesMax;
    const out = Buffer.allocUnsafe(CERTIFICATE_HEADER_BYTES_MAX + headerBytes(tbsBytes) + tbsBytes + this.algorithmIdentifier.length + signatureBytesMax);

    const tbsStart = CERTIFICATE_HEADER_BYTES_MAX;
    let pos = writeHeader(out, tbsStart, Tag.sequence, tbsBytes);
    pos = put(out, pos, VERSION_AND_SERIAL_HEADER);
    const serialStart = pos;
    takeSerial(out, pos);
    pos += SERIAL_BYTES;
    pos = put(out, pos, this.algorithmAndIssuer);
    pos = writeHeader(out, pos, Tag.sequence, validityBytes);
    pos = put(out, pos, notBefore);
    pos = put(out, pos, notAfter);
    pos = put(out, pos, EMPTY_NAME);
    pos = put(out, pos, spki);
    pos = writeHeader(out, pos, contextTag(3, true), extensionsSequenceBytes);
    pos = writeHeader(out, pos, Tag.sequence, extensionsBytes);
    pos = put(out, pos, fixed);
    pos = writeKeyIdentifier(out, pos, keyBits);
    pos = writeHeader(out, pos, Tag.sequence, sanValueBytes);
    pos = put(out, pos, SAN_ID_AND_CRITICAL);
    pos = writeHeader(out, pos, Tag.octetString, sanSequenceBytes);
    pos = writeHeader(out, pos, Tag.sequence, generalNamesBytes);
    pos = writeHeader(out, pos, GENERAL_NAME_TAG.uri, spiffeId.length);
    pos += out.write(spiffeId, pos, "latin1");
    for (const name of dnsNames) {
      pos = writeHeader(out, pos, GENERAL_NAME_TAG.dnsName, name.length);
      pos += out.write(name, pos, "latin1");
    }
    for (const ip of ipAddresses) {
      pos = writeHeader(out, pos, GENERAL_NAME_TAG.ipAddress, ip.length);
      pos = put(out, pos, ip);
    }
    if (pos !== tbsStart + headerBytes(tbsBytes) + tbsBytes) throw new Error(`leaf TBS sizing is wrong: wrote ${pos - tbsStart} bytes, sized ${headerBytes(tbsBytes) + tbsBytes}`);

    const signature = sign(this.hash, out.subarray(tbsStart, pos), this.signOptions);
    if (signature.length > this.signatureBytesMax) throw new Error(`a ${signature.length}-byte signature exceeds the ${this.signatureBytesMax} bytes reserved for it`);
    pos = put(out, pos, this.algorithmIdentifier);
    pos = writeHeader(out, pos, Tag.bitString, signature.length + 1);
    out[pos++] = 0; // no unused bits
    pos = put(out, pos, signature);
    const certificateBytes = pos - tbsStart;
    const start = tbsStart - headerBytes(certificateBytes);
    writeHeader(out, start, Tag.sequence, certificateBytes);
    const certificate = out.subarray(start, pos);
    return {
      der: certificate,
      pem: pemEncode("CERTIFICATE", certificate),
      serialHex: out.toString("hex", serialStart, serialStart + SERIAL_BYTES),
      notBeforeMs,
      notAfterMs,
    };
  }

  private checkSpiffeId(id: string): void {
    if (id.length > SPIFFE_ID_CHARS_MAX || !SPIFFE_ID.test(id)) {
      throw new CertificateError(`"${id.slice(0, 100)}" is not a SPIFFE ID with a path (spiffe://<trust domain>/<path>) of at most ${SPIFFE_ID_CHARS_MAX} characters`);
    }
    if (this.spiffeIdPrefix !== undefined && !id.startsWith(this.spiffeIdPrefix)) {
      throw new CertificateError(`${id} is outside this intermediate's trust domain ${this.spiffeIdPrefix.slice(0, -1)}`);
    }
  }
}

/**
 * Writes the SHA-1 of the key bits (the SKI) at `pos`. Node 20.12+ has one-shot crypto.hash,
 * which skips a Hash object per leaf; its "binary" (latin1) string carries the digest bytes unchanged.
 */
const writeKeyIdentifier: (out: Buffer, pos: number, keyBits: Uint8Array) => number =
  typeof nodeCrypto.hash === "function"
    ? (out, pos, keyBits) => pos + out.write(nodeCrypto.hash("sha1", keyBits, "binary"), pos, "latin1")
    : (out, pos, keyBits) => put(out, pos, createHash("sha1").update(keyBits).digest());

function put(out: Buffer, pos: number, bytes: Uint8Array): number {
  out.set(bytes, pos);
  return pos + bytes.length;
}

/** The key bits (for the SKI) and whether the key is RSA (for keyUsage); CertificateError if it is not one well-formed SPKI. */
function readSubjectKey(spki: Uint8Array): { keyBits: Uint8Array; isRsa: boolean } {
  try {
    const outer = new DerReader(spki);
    const r = DerReader.inside(spki, outer.read("the subject public key info", Tag.sequence));
    outer.finish("the subject public key info");
    const algorithm = DerReader.inside(spki, r.read("the subject key algorithm", Tag.sequence));
    const oid = algorithm.read("the subject key algorithm", Tag.oid);
    const keyBits = r.read("the subject key", Tag.bitString);
    r.finish("the subject public key info");
    if (keyBits.end - keyBits.valueStart < 2 || spki[keyBits.valueStart] !== 0) throw new DerError("the subject key is not whole bytes");
    const isRsa = valueEquals(spki, oid, KEY_OID_VALUE.rsa);
    if (!isRsa && !valueEquals(spki, oid, KEY_OID_VALUE.ec) && !valueEquals(spki, oid, KEY_OID_VALUE.ed25519)) {
      throw new CertificateError("the subject key must be an EC, RSA or Ed25519 key");
    }
    return { keyBits: spki.subarray(keyBits.valueStart + 1, keyBits.end), isRsa };
  } catch (err) {
    if (err instanceof DerError) throw new CertificateError(`the subject public key info is malformed: ${err.message}`);
    throw err;
  }
}

function checkDnsNames(names: readonly string[]): void {
  if (names.length > LEAF_DNS_NAMES_MAX) throw new CertificateError(`a leaf carries at most ${LEAF_DNS_NAMES_MAX} DNS names; ${names.length} were asked for`);
  for (const name of names) {
    if (name.length > DNS_NAME_CHARS_MAX || !DNS_NAME.test(name)) {
      throw new CertificateError(`DNS SAN "${name.slice(0, 100)}" is not a DNS name (letters, digits and '-' in dot-separated labels, optionally under "*.")`);
    }
  }
}

function checkIpAddresses(addresses: readonly Uint8Array[]): void {
  if (addresses.length > LEAF_IP_ADDRESSES_MAX) throw new CertificateError(`a leaf carries at most ${LEAF_IP_ADDRESSES_MAX} IP addresses; ${addresses.length} were asked for`);
  for (const ip of addresses) {
    if (ip.length !== 4 && ip.length !== 16) throw new CertificateError(`an IP SAN is 4 bytes (IPv4) or 16 (IPv6), not ${ip.length}`);
  }
}

/** Years 1950-9999: what UTCTime and GeneralizedTime can say, and nothing a leaf should need before. */
const TIME_MS_MIN = Date.parse("1950-01-01T00:00:00Z");
const TIME_MS_MAX = Date.parse("9999-12-31T23:59:59Z");

function checkedTime(name: string, ms: number): number {
  if (!Number.isFinite(ms) || ms < TIME_MS_MIN || ms > TIME_MS_MAX) throw new CertificateError(`${name}=${ms} is not a time between 1950 and 9999`);
  return wholeSecondMs(ms);
}
