// Keys and signature algorithms: the CA key types Cairn generates, how each CA key signs, which
// signature algorithms Cairn accepts on what it verifies, and the parts of a SubjectPublicKeyInfo.

import { type KeyObject, createHash, createPublicKey, generateKeyPairSync } from "node:crypto";
import { DER_NULL, type DerElement, DerReader, Tag, der, encodeOid, readBitStringOctets, readOid, valueEquals } from "../common/der.js";

/** Key types for Cairn's own CA keys; ECDSA P-256 is the default (fast to sign and verify, small). */
export type CaKeyType = "ec-p256" | "rsa-2048" | "ed25519";
export const CA_KEY_TYPES: readonly CaKeyType[] = ["ec-p256", "rsa-2048", "ed25519"];

export interface CaKey {
  /** PKCS#8 PEM, for sealing into the replicated state; never logged. */
  readonly privateKeyPem: string;
  readonly publicKey: KeyObject;
  readonly privateKey: KeyObject;
}

export function generateCaKey(type: CaKeyType): CaKey {
  const pair = generatePair(type);
  const privateKeyPem = pair.privateKey.export({ type: "pkcs8", format: "pem" }).toString();
  return { privateKeyPem, publicKey: pair.publicKey, privateKey: pair.privateKey };
}

function generatePair(type: CaKeyType): { publicKey: KeyObject; privateKey: KeyObject } {
  switch (type) {
    case "ec-p256":
      return generateKeyPairSync("ec", { namedCurve: "P-256" });
    case "rsa-2048":
      return generateKeyPairSync("rsa", { modulusLength: 2048 });
    case "ed25519":
      return generateKeyPairSync("ed25519");
  }
}

/** The CA key type a key is, or "other" for a key Cairn would not generate (RSA-4096, P-384, ...). */
export function caKeyTypeOf(key: KeyObject): CaKeyType | "other" {
  const details = key.asymmetricKeyDetails;
  switch (key.asymmetricKeyType) {
    case "ec":
      return details?.namedCurve === "prime256v1" ? "ec-p256" : "other";
    case "rsa":
      return details?.modulusLength === 2048 ? "rsa-2048" : "other";
    case "ed25519":
      return "ed25519";
    default:
      return "other";
  }
}

/** A key's kind and size for messages, e.g. "RSA 1024 bits" or "EC secp256k1". Never its material. */
export function describeKey(key: KeyObject): string {
  const details = key.asymmetricKeyDetails;
  switch (key.asymmetricKeyType) {
    case "ec":
      return `EC ${details?.namedCurve ?? "on an unnamed curve"}`;
    case "rsa":
      return `RSA ${details?.modulusLength ?? "?"} bits`;
    case "rsa-pss":
      return `RSA-PSS ${details?.modulusLength ?? "?"} bits`;
    default:
      return key.asymmetricKeyType?.toUpperCase() ?? "an unknown key type";
  }
}

// ---------------------------------------------------------------- signing with a CA key

export type SignatureHash = "sha256" | "sha384" | "sha512";

/** How a CA key signs: what to write as the signature AlgorithmIdentifier and how to call crypto.sign. */
export interface SigningAlgorithm {
  readonly name: string;
  /** The whole AlgorithmIdentifier SEQUENCE, written verbatim into TBSCertificate and Certificate. */
  readonly algorithmIdentifierDer: Uint8Array;
  /** The digest for crypto.sign; null for Ed25519, which hashes internally. */
  readonly hash: SignatureHash | null;
  /** The longest signature this key can produce, to size the output buffer before signing. */
  readonly signatureBytesMax: number;
}

/** The object identifiers of the keys and signature algorithms Cairn knows. */
export const OID = {
  ecPublicKey: "1.2.840.10045.2.1",
  prime256v1: "1.2.840.10045.3.1.7",
  secp384r1: "1.3.132.0.34",
  rsaEncryption: "1.2.840.113549.1.1.1",
  ed25519: "1.3.101.112",
  ecdsaWithSha256: "1.2.840.10045.4.3.2",
  ecdsaWithSha384: "1.2.840.10045.4.3.3",
  ecdsaWithSha512: "1.2.840.10045.4.3.4",
  sha256WithRsa: "1.2.840.113549.1.1.11",
  sha384WithRsa: "1.2.840.113549.1.1.12",
  sha512WithRsa: "1.2.840.113549.1.1.13",
} as const;

function algorithmIdentifier(oid: string, withNull: boolean): Uint8Array {
  return withNull ? der(Tag.sequence, encodeOid(oid), DER_NULL) : der(Tag.sequence, encodeOid(oid));
}

/** An ECDSA signature is a SEQUENCE of two INTEGERs, each at most one byte longer than the field. */
function ecdsaSignatureBytesMax(fieldBytes: number): number {
  const integer = 2 + fieldBytes + 1;
  return 2 + 1 + 2 * integer;
}

/**
 * How `privateKey` signs certificates, or undefined for a key Cairn cannot sign with. The digest
 * follows the key's strength, as CA/Browser Forum rules and openssl's defaults do.
 */
export function signingAlgorithmFor(privateKey: KeyObject): SigningAlgorithm | undefined {
  if (privateKey.type !== "private") return undefined;
  const details = privateKey.asymmetricKeyDetails;
  switch (privateKey.asymmetricKeyType) {
    case "ec":
      if (details?.namedCurve === "prime256v1") {
        return { name: "ecdsa-with-SHA256", algorithmIdentifierDer: algorithmIdentifier(OID.ecdsaWithSha256, false), hash: "sha256", signatureBytesMax: ecdsaSignatureBytesMax(32) };
      }
      if (details?.namedCurve === "secp384r1") {
        return { name: "ecdsa-with-SHA384", algorithmIdentifierDer: algorithmIdentifier(OID.ecdsaWithSha384, false), hash: "sha384", signatureBytesMax: ecdsaSignatureBytesMax(48) };
      }
      return undefined;
    case "rsa": {
      const bits = details?.modulusLength ?? 0;
      if (bits < 2048 || bits > 8192) return undefined;
      return { name: "sha256WithRSAEncryption", algorithmIdentifierDer: algorithmIdentifier(OID.sha256WithRsa, true), hash: "sha256", signatureBytesMax: Math.ceil(bits / 8) };
    }
    case "ed25519":
      return { name: "Ed25519", algorithmIdentifierDer: algorithmIdentifier(OID.ed25519, false), hash: null, signatureBytesMax: 64 };
    default:
      return undefined;
  }
}

// ---------------------------------------------------------------- verifying

export type KeyKind = "ec" | "rsa" | "ed25519";

/** A signature algorithm Cairn accepts on a CSR or certificate it verifies. */
export interface VerificationAlgorithm {
  readonly name: string;
  readonly keyKind: KeyKind;
  readonly hash: SignatureHash | null;
  /** RFC 4055 lets RSA's NULL parameters be absent; RFC 5758 and 8410 say ECDSA and Ed25519 have none. */
  readonly nullParametersAllowed: boolean;
}

/** Keyed by the OID's value bytes, compared byte for byte: the CSR hot path never builds dotted strings. */
const VERIFICATION_ALGORITHMS: readonly (readonly [Uint8Array, VerificationAlgorithm])[] = [
  [oidValue(OID.ecdsaWithSha256), { name: "ecdsa-with-SHA256", keyKind: "ec", hash: "sha256", nullParametersAllowed: false }],
  [oidValue(OID.ecdsaWithSha384), { name: "ecdsa-with-SHA384", keyKind: "ec", hash: "sha384", nullParametersAllowed: false }],
  [oidValue(OID.ecdsaWithSha512), { name: "ecdsa-with-SHA512", keyKind: "ec", hash: "sha512", nullParametersAllowed: false }],
  [oidValue(OID.sha256WithRsa), { name: "sha256WithRSAEncryption", keyKind: "rsa", hash: "sha256", nullParametersAllowed: true }],
  [oidValue(OID.sha384WithRsa), { name: "sha384WithRSAEncryption", keyKind: "rsa", hash: "sha384", nullParametersAllowed: true }],
  [oidValue(OID.sha512WithRsa), { name: "sha512WithRSAEncryption", keyKind: "rsa", hash: "sha512", nullParametersAllowed: true }],
  [oidValue(OID.ed25519), { name: "Ed25519", keyKind: "ed25519", hash: null, nullParametersAllowed: false }],
];

/** Names of signature algorithms that are refused, so a message can say what was found. */
const REFUSED_ALGORITHM_NAMES: ReadonlyMap<string, string> = new Map([
  ["1.2.840.113549.1.1.4", "md5WithRSAEncryption"],
  ["1.2.840.113549.1.1.5", "sha1WithRSAEncryption"],
  ["1.2.840.113549.1.1.10", "RSASSA-PSS"],
  ["1.2.840.113549.1.1.14", "sha224WithRSAEncryption"],
  ["1.2.840.10045.4.1", "ecdsa-with-SHA1"],
  ["1.2.840.10045.4.3.1", "ecdsa-with-SHA224"],
  ["1.3.101.113", "Ed448"],
  ["1.2.840.10040.4.3", "dsa-with-SHA1"],
]);

/** An OID's value bytes (without tag and length), for comparing with valueEquals. */
export function oidValue(dotted: string): Uint8Array {
  const encoded = encodeOid(dotted);
  if (encoded[1] >= 0x80) throw new RangeError(`OID ${dotted} is too long to compare as a value`);
  return encoded.subarray(2);
}

export interface AlgorithmIdentifier {
  /** The bytes the elements below point into. */
  readonly bytes: Uint8Array;
  /** The algorithm's OID element: compare with valueEquals, name with readOid. */
  readonly oid: DerElement;
  /** The parameters element, if any. */
  readonly parameters: DerElement | undefined;
}

/** Reads an AlgorithmIdentifier SEQUENCE { OID, parameters ANY OPTIONAL }. Throws DerError. */
export function readAlgorithmIdentifier(bytes: Uint8Array, element: DerElement, what: string): AlgorithmIdentifier {
  const r = DerReader.inside(bytes, element);
  const oid = r.read(`${what} algorithm`, Tag.oid);
  const parameters = r.atEnd ? undefined : r.read(`${what} parameters`);
  r.finish(what);
  return { bytes, oid, parameters };
}

/** The dotted OID of an AlgorithmIdentifier, for messages. */
export function algorithmOid(id: AlgorithmIdentifier): string {
  return readOid(id.bytes, id.oid, "an algorithm");
}

/**
 * The accepted algorithm an AlgorithmIdentifier names, or a sentence saying why it is refused
 * (an unknown OID, or parameters where there must be none).
 */
export function verificationAlgorithmOf(id: AlgorithmIdentifier): VerificationAlgorithm | string {
  const entry = VERIFICATION_ALGORITHMS.find(([oid]) => valueEquals(id.bytes, id.oid, oid));
  if (entry === undefined) {
    const oid = algorithmOid(id);
    return `it is signed with ${REFUSED_ALGORITHM_NAMES.get(oid) ?? oid}`;
  }
  const algorithm = entry[1];
  if (id.parameters !== undefined) {
    const isNull = id.parameters.tag === Tag.null && id.parameters.end === id.parameters.valueStart;
    if (!(isNull && algorithm.nullParametersAllowed)) return `its ${algorithm.name} AlgorithmIdentifier carries parameters it must not have`;
  }
  return algorithm;
}

/** The kind of a public or private KeyObject, as far as signature algorithms care. */
export function keyKindOf(key: KeyObject): KeyKind | undefined {
  const type = key.asymmetricKeyType;
  return type === "ec" || type === "rsa" || type === "ed25519" ? type : undefined;
}

// ---------------------------------------------------------------- SubjectPublicKeyInfo

export interface SpkiParts {
  readonly algorithm: AlgorithmIdentifier;
  /** The subjectPublicKey BIT STRING's octets: what a key identifier hashes. */
  readonly keyBits: Uint8Array;
}

/** Splits a SubjectPublicKeyInfo element into its algorithm and key bits. Throws DerError. */
export function readSpki(bytes: Uint8Array, element: DerElement): SpkiParts {
  const r = DerReader.inside(bytes, element);
  const algorithm = readAlgorithmIdentifier(bytes, r.read("the public key's AlgorithmIdentifier", Tag.sequence), "the public key's");
  const keyBits = readBitStringOctets(bytes, r.read("the public key", Tag.bitString), "the public key");
  r.finish("the SubjectPublicKeyInfo");
  return { algorithm, keyBits };
}

/** RFC 5280 section 4.2.1.2 method 1: the SHA-1 of the subjectPublicKey bits. Identifies, never secures. */
export function keyIdentifier(keyBits: Uint8Array): Uint8Array {
  return createHash("sha1").update(keyBits).digest();
}

/** A public key's SubjectPublicKeyInfo DER (also accepts a private key: its public half). */
export function spkiDerOf(key: KeyObject): Uint8Array {
  const publicKey = key.type === "private" ? createPublicKey(key) : key;
  const buf = publicKey.export({ type: "spki", format: "der" });
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}
