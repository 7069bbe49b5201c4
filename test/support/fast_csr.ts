// Many distinct PKCS#10 CSRs, fast: a small pool of P-256 keys, each signing CSRs that differ in
// a DNS SAN, encoded here with Cairn's DER writer and signed with node:crypto (tens of thousands
// a second, where a generator library takes milliseconds each). Cairn's strict CSR parser and
// openssl read them like any other; see test/api/rate_limit.test.ts for the check.

import { type KeyObject, generateKeyPairSync, sign } from "node:crypto";
import { Tag, contextTag, der, encodeBitString, encodeOctetString, encodeOid, encodeSmallInteger, pemEncode } from "../../src/common/der.js";

const OID_EXTENSION_REQUEST = "1.2.840.113549.1.9.14";
const OID_SUBJECT_ALT_NAME = "2.5.29.17";
const OID_ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2";
const URI_TAG = 0x86;
const DNS_TAG = 0x82;

export interface CsrKey {
  readonly privateKey: KeyObject;
  readonly spkiDer: Uint8Array;
}

export function csrKeys(count: number): CsrKey[] {
  return Array.from({ length: count }, () => {
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    return { privateKey, spkiDer: publicKey.export({ format: "der", type: "spki" }) };
  });
}

/** A PEM CSR from `key` asking for `spiffeId`, made distinct by `dnsName` when given. */
export function csrPem(key: CsrKey, spiffeId: string, dnsName?: string): string {
  const text = new TextEncoder();
  const names = [der(URI_TAG, text.encode(spiffeId)), ...(dnsName === undefined ? [] : [der(DNS_TAG, text.encode(dnsName))])];
  const san = der(Tag.sequence, encodeOid(OID_SUBJECT_ALT_NAME), encodeOctetString(der(Tag.sequence, ...names)));
  const extensionRequest = der(Tag.sequence, encodeOid(OID_EXTENSION_REQUEST), der(Tag.set, der(Tag.sequence, san)));
  const info = der(Tag.sequence, encodeSmallInteger(0), der(Tag.sequence), key.spkiDer, der(contextTag(0, true), extensionRequest));
  const signature = sign("sha256", info, { key: key.privateKey, dsaEncoding: "der" });
  const request = der(Tag.sequence, info, der(Tag.sequence, encodeOid(OID_ECDSA_WITH_SHA256)), encodeBitString(signature));
  return pemEncode("CERTIFICATE REQUEST", request);
}
