// The peer CA and node certificates `cairn tls` makes, in the manner of `consul tls`: a
// self-signed CA that exists only to vouch for the cluster's nodes to each other, and one
// certificate per node, usable both as a TLS server (it accepts peers' calls) and as a client
// (it calls them). The peer CA is not the workload CA: a workload's SVID can never pass as a node.
//
// A node certificate names its node by the URI SAN urn:cairn:node:<id> (src/common/peer_identity.ts),
// which is what peers check; its DNS and IP SANs are for other tools (openssl s_client, curl).

import { type KeyObject, createPrivateKey, generateKeyPairSync, randomBytes } from "node:crypto";
import { isIPv4, isIPv6 } from "node:net";
import { DER_TRUE, DerReader, Tag, der, encodeNamedBits, encodeOctetString, encodeOid, encodeSmallInteger } from "../common/der.js";
import { peerNodeUri } from "../common/peer_identity.js";
import { EXTENDED_KEY_USAGE_OID, EXTENSION_OID, GENERAL_NAME_TAG, KEY_USAGE_BIT, encodeExtension } from "../common/x509.js";
import {
  CertificateError,
  checkedIssuer,
  encodeAuthorityKeyIdentifier,
  encodeName,
  issue,
  keyIdOf,
  randomSerial,
  signingAlgorithmOrThrow,
} from "../ca/certificates.js";
import { keyIdentifier, readSpki, spkiDerOf } from "../ca/keys.js";

/** The organization every peer certificate carries, so an operator can tell them from workload certificates. */
const PEER_ORGANIZATION = "Cairn peers";
const DAY_MS = 24 * 60 * 60_000;
/** consul tls's defaults: a CA for five years, a node certificate for one. */
export const PEER_CA_DAYS_DEFAULT = 1825;
export const NODE_CERTIFICATE_DAYS_DEFAULT = 365;
/** Far beyond any sane rotation, and inside X.509's years. */
export const CERTIFICATE_DAYS_MAX = 100 * 365;
/** Clock skew between the machine that makes a certificate and the nodes that check it. */
const BACKDATE_MS = 60_000;
/** A node certificate carries at most this many DNS plus IP SANs: enough for any node's names, bounded. */
export const NODE_SANS_MAX = 64;
/** RFC 1035: a name is at most 253 characters in text form. */
const DNS_NAME_CHARS_MAX = 253;
const DNS_NAME = /^(\*\.)?([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;
/** config.ts's ID_PATTERN, repeated here because src/tls sits below the CLI. */
const NODE_ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/;

/** PEM text of a certificate and its private key (PKCS#8). */
export interface CertificateAndKey {
  readonly certificatePem: string;
  readonly keyPem: string;
}

export interface NodeCertificateRequest {
  readonly nodeId: string;
  /** DNS SANs; with neither these nor `ips`, the certificate gets localhost and 127.0.0.1, as consul tls does. */
  readonly dnsNames: readonly string[];
  readonly ips: readonly string[];
  readonly days: number;
}

function checkDays(days: number): void {
  if (!Number.isInteger(days) || days < 1 || days > CERTIFICATE_DAYS_MAX) {
    throw new CertificateError(`--days must be a whole number of days from 1 to ${CERTIFICATE_DAYS_MAX}, not ${days}`);
  }
}

function newKey(): { privateKey: KeyObject; publicKey: KeyObject } {
  // P-256: what the workload CA defaults to, fast to handshake, and every TLS stack speaks it.
  return generateKeyPairSync("ec", { namedCurve: "P-256" });
}

function keyPemOf(privateKey: KeyObject): string {
  return privateKey.export({ format: "pem", type: "pkcs8" }).toString();
}

function keyIdOfPublic(publicKey: KeyObject): Uint8Array {
  const spkiDer = spkiDerOf(publicKey);
  return keyIdentifier(readSpki(spkiDer, new DerReader(spkiDer).read("a public key", Tag.sequence)).keyBits);
}

/** A new peer CA: cA=true with path length 0 (it signs node certificates only), keyCertSign+cRLSign. */
export function createPeerCa(days: number = PEER_CA_DAYS_DEFAULT, nowMs: number = Date.now()): CertificateAndKey {
  checkDays(days);
  const key = newKey();
  const keyId = keyIdOfPublic(key.publicKey);
  const name = encodeName(PEER_ORGANIZATION, `Cairn Peer CA ${Buffer.from(randomBytes(4)).toString("hex")}`);
  const certificatePem = issue(
    {
      serial: randomSerial(),
      issuerDer: name,
      notBeforeMs: nowMs - BACKDATE_MS,
      notAfterMs: nowMs + days * DAY_MS,
      subjectDer: name,
      spkiDer: spkiDerOf(key.publicKey),
      extensions: [
        encodeExtension(EXTENSION_OID.basicConstraints, true, der(Tag.sequence, DER_TRUE, encodeSmallInteger(0))),
        encodeExtension(EXTENSION_OID.keyUsage, true, encodeNamedBits([KEY_USAGE_BIT.keyCertSign, KEY_USAGE_BIT.cRLSign])),
        encodeExtension(EXTENSION_OID.subjectKeyIdentifier, false, encodeOctetString(keyId)),
      ],
    },
    key.privateKey,
    signingAlgorithmOrThrow(key.privateKey, "peer CA"),
  );
  return { certificatePem, keyPem: keyPemOf(key.privateKey) };
}

/** An IP address as an iPAddress GeneralName holds it: 4 bytes for IPv4, 16 for IPv6. */
export function ipAddressBytes(ip: string): Uint8Array {
  if (isIPv4(ip)) return Uint8Array.from(ip.split(".").map(Number));
  if (!isIPv6(ip)) throw new CertificateError(`--ip "${ip}" is not an IPv4 or IPv6 address`);
  let text = ip.replace(/%.*$/, "");
  // An embedded IPv4 tail (::ffff:1.2.3.4) is two groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4 !== null) {
    const [a, b, c, d] = v4[1].split(".").map(Number);
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.includes("::") ? text.split("::") : [text, undefined];
  const headGroups = head === "" ? [] : head.split(":");
  const tailGroups = tail === undefined || tail === "" ? [] : tail.split(":");
  const groups = tail === undefined ? headGroups : [...headGroups, ...Array<string>(8 - headGroups.length - tailGroups.length).fill("0"), ...tailGroups];
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    const n = parseInt(g, 16);
    out[2 * i] = n >> 8;
    out[2 * i + 1] = n & 0xff;
  });
  return out;
}

function checkRequest(req: NodeCertificateRequest): void {
  if (!NODE_ID.test(req.nodeId)) throw new CertificateError(`--node "${req.nodeId}" must be a node id: 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  checkDays(req.days);
  if (req.dnsNames.length + req.ips.length > NODE_SANS_MAX) throw new CertificateError(`a node certificate carries at most ${NODE_SANS_MAX} --dns and --ip names in all`);
  for (const name of req.dnsNames) {
    if (name.length > DNS_NAME_CHARS_MAX || !DNS_NAME.test(name)) throw new CertificateError(`--dns "${name}" is not a DNS name (letters, digits and '-' in dot-separated labels)`);
  }
}

/**
 * A node's certificate, signed by the peer CA: cA=false, keyUsage digitalSignature (critical),
 * extKeyUsage serverAuth+clientAuth, and SANs: its node URI, then its DNS names and IPs.
 * Its notAfter is clipped to the CA's.
 */
export function createNodeCertificate(ca: CertificateAndKey, req: NodeCertificateRequest, nowMs: number = Date.now()): CertificateAndKey {
  checkRequest(req);
  const caKey = createPrivateKey(ca.keyPem);
  const caCert = checkedIssuer({ certificatePem: ca.certificatePem, privateKey: caKey });
  const defaults = req.dnsNames.length === 0 && req.ips.length === 0;
  const dnsNames = defaults ? ["localhost"] : req.dnsNames;
  const ips = defaults ? ["127.0.0.1"] : req.ips;
  const names = [
    der(GENERAL_NAME_TAG.uri, Buffer.from(peerNodeUri(req.nodeId), "latin1")),
    ...dnsNames.map((n) => der(GENERAL_NAME_TAG.dnsName, Buffer.from(n, "latin1"))),
    ...ips.map((ip) => der(GENERAL_NAME_TAG.ipAddress, ipAddressBytes(ip))),
  ];
  const key = newKey();
  const notAfterMs = Math.min(nowMs + req.days * DAY_MS, caCert.notAfterMs);
  if (notAfterMs <= nowMs) throw new CertificateError(`the peer CA expired on ${new Date(caCert.notAfterMs).toISOString()}; make a new one with: cairn tls ca create`);
  const certificatePem = issue(
    {
      serial: randomSerial(),
      issuerDer: caCert.subjectDer,
      notBeforeMs: nowMs - BACKDATE_MS,
      notAfterMs,
      subjectDer: encodeName(PEER_ORGANIZATION, req.nodeId),
      spkiDer: spkiDerOf(key.publicKey),
      extensions: [
        encodeExtension(EXTENSION_OID.basicConstraints, true, der(Tag.sequence)),
        encodeExtension(EXTENSION_OID.keyUsage, true, encodeNamedBits([KEY_USAGE_BIT.digitalSignature])),
        encodeExtension(
          EXTENSION_OID.extKeyUsage,
          false,
          der(Tag.sequence, encodeOid(EXTENDED_KEY_USAGE_OID.serverAuth), encodeOid(EXTENDED_KEY_USAGE_OID.clientAuth)),
        ),
        encodeExtension(EXTENSION_OID.subjectKeyIdentifier, false, encodeOctetString(keyIdOfPublic(key.publicKey))),
        encodeAuthorityKeyIdentifier(keyIdOf(caCert)),
        // The subject is not empty, so the SAN need not be critical (RFC 5280 4.2.1.6).
        encodeExtension(EXTENSION_OID.subjectAltName, false, der(Tag.sequence, ...names)),
      ],
    },
    caKey,
    signingAlgorithmOrThrow(caKey, "peer CA"),
  );
  return { certificatePem, keyPem: keyPemOf(key.privateKey) };
}
