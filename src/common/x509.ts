// X.509's vocabulary: the object identifiers, tags and bit numbers that name the parts of a
// certificate (RFC 5280) or a certificate signing request (RFC 2986, RFC 2985), and the encoder
// of one extension.
//
// Why src/common and not src/ca: the CA reads CSRs and writes certificates in these words, and the
// client library writes its CSRs in them, and the client depends only on the protocol and on
// src/common, never on a server module. These are the standards' constants with no Cairn policy
// in them; what Cairn decides (which extensions a leaf carries, which keys and algorithms the CA
// accepts) stays in src/ca. One copy below both, rather than one in each, so they cannot drift.

import { DER_TRUE, Tag, contextTag, der, encodeOctetString, encodeOid } from "./der.js";

export const EXTENSION_OID = {
  subjectKeyIdentifier: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  authorityKeyIdentifier: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
} as const;

export const EXTENDED_KEY_USAGE_OID = { serverAuth: "1.3.6.1.5.5.7.3.1", clientAuth: "1.3.6.1.5.5.7.3.2" } as const;

/** Bit numbers of the keyUsage named bit list (RFC 5280 section 4.2.1.3). */
export const KEY_USAGE_BIT = { digitalSignature: 0, keyEncipherment: 2, keyCertSign: 5, cRLSign: 6 } as const;

/** The GeneralName choices Cairn reads and writes in a subjectAltName (RFC 5280 section 4.2.1.6). */
export const GENERAL_NAME_TAG = { dnsName: contextTag(2, false), uri: contextTag(6, false), ipAddress: contextTag(7, false) } as const;

/** PKCS#9's extensionRequest: the CSR attribute that carries the extensions asked for (RFC 2985 section 5.4.2). */
export const CSR_ATTRIBUTE_OID = { extensionRequest: "1.2.840.113549.1.9.14" } as const;

/** One Extension SEQUENCE: the OID, `critical` only when true (DER omits a default), the value's DER in an OCTET STRING. */
export function encodeExtension(oid: string, critical: boolean, value: Uint8Array): Uint8Array {
  return critical ? der(Tag.sequence, encodeOid(oid), DER_TRUE, encodeOctetString(value)) : der(Tag.sequence, encodeOid(oid), encodeOctetString(value));
}
