// Peer credentials on disk: where `cairn tls` puts them, how they are written (a private key is
// readable by its owner only, and nothing is overwritten unless asked), and how a server reads
// and checks them before it listens, so a wrong file fails at start with its name rather than as
// a handshake error on every peer.

import { createPrivateKey, X509Certificate } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { errorMessage } from "../common/errors.js";
import { nodeIdsInSubjectAltName } from "../common/peer_identity.js";
import { type CertificateAndKey, NODE_CERTIFICATE_DAYS_DEFAULT, createNodeCertificate, createPeerCa } from "./peer_certificates.js";

export class TlsFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TlsFileError";
  }
}

export interface CaPaths {
  readonly certFile: string;
  readonly keyFile: string;
}

export interface PeerCredentialPaths {
  readonly certFile: string;
  readonly keyFile: string;
  readonly caFile: string;
}

/** The peer credentials as PEM, checked against each other. */
export interface PeerCredentials {
  readonly caPem: Buffer;
  readonly certPem: Buffer;
  readonly keyPem: Buffer;
}

export function caPaths(dir: string): CaPaths {
  return { certFile: join(dir, "ca.pem"), keyFile: join(dir, "ca-key.pem") };
}

export function nodePaths(dir: string, nodeId: string): PeerCredentialPaths {
  return { certFile: join(dir, `${nodeId}.pem`), keyFile: join(dir, `${nodeId}-key.pem`), caFile: caPaths(dir).certFile };
}

/** A private key is the owner's alone; a certificate is public. */
const KEY_FILE_MODE = 0o600;
const CERTIFICATE_FILE_MODE = 0o644;

/** Writes a certificate and its key, refusing to replace either unless `overwrite`. */
function writePair(certFile: string, keyFile: string, pair: CertificateAndKey, overwrite: boolean): void {
  if (!overwrite) {
    const existing = [certFile, keyFile].filter((f) => existsSync(f));
    if (existing.length > 0) throw new TlsFileError(`${existing.join(" and ")} already exist${existing.length === 1 ? "s" : ""}; remove them or give --force to replace them`);
  }
  // The key first, created with its mode (not chmod after): it is never readable by others, even for a moment.
  // "w" replaces only when overwrite allowed it; "wx" fails rather than race another writer.
  const flag = overwrite ? "w" : "wx";
  writeOne(keyFile, pair.keyPem, KEY_FILE_MODE, flag);
  writeOne(certFile, pair.certificatePem, CERTIFICATE_FILE_MODE, flag);
}

function writeOne(file: string, text: string, mode: number, flag: string): void {
  try {
    writeFileSync(file, text, { mode, flag });
    // The mode given applies only to a new file; a replaced one would keep its old mode: set it.
    chmodSync(file, mode);
  } catch (err) {
    throw new TlsFileError(`cannot write ${file}: ${errorMessage(err)}`);
  }
}

function readCa(dir: string): CertificateAndKey {
  const paths = caPaths(dir);
  try {
    return { certificatePem: readFileSync(paths.certFile, "utf8"), keyPem: readFileSync(paths.keyFile, "utf8") };
  } catch (err) {
    throw new TlsFileError(`cannot read the peer CA in ${dir}: ${errorMessage(err)}; make one with: cairn tls ca create --dir ${dir}`);
  }
}

/** `cairn tls ca create`: D/ca.pem and D/ca-key.pem. */
export function writePeerCa(dir: string, opts: { readonly days?: number; readonly overwrite?: boolean } = {}): CaPaths {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw new TlsFileError(`cannot make the directory ${dir}: ${errorMessage(err)}`);
  }
  const paths = caPaths(dir);
  writePair(paths.certFile, paths.keyFile, createPeerCa(opts.days), opts.overwrite ?? false);
  return paths;
}

export interface NodeCertificateOptions {
  readonly dnsNames?: readonly string[];
  readonly ips?: readonly string[];
  readonly days?: number;
  readonly overwrite?: boolean;
}

/** `cairn tls cert create`: D/ID.pem and D/ID-key.pem, signed by D/ca.pem. */
export function writeNodeCertificate(dir: string, nodeId: string, opts: NodeCertificateOptions = {}): PeerCredentialPaths {
  const ca = readCa(dir);
  const paths = nodePaths(dir, nodeId);
  const pair = createNodeCertificate(ca, { nodeId, dnsNames: opts.dnsNames ?? [], ips: opts.ips ?? [], days: opts.days ?? NODE_CERTIFICATE_DAYS_DEFAULT });
  writePair(paths.certFile, paths.keyFile, pair, opts.overwrite ?? false);
  return paths;
}

/**
 * A CA and a certificate per node under `dir`, made once and reused after: what `cairn dev` and
 * the test harnesses use. A node whose files are missing gets new ones from the existing CA.
 */
export function ensurePeerCredentials(dir: string, nodeIds: readonly string[]): Map<string, PeerCredentialPaths> {
  const ca = caPaths(dir);
  if (!existsSync(ca.certFile) || !existsSync(ca.keyFile)) writePeerCa(dir);
  const out = new Map<string, PeerCredentialPaths>();
  for (const id of nodeIds) {
    const paths = nodePaths(dir, id);
    if (!existsSync(paths.certFile) || !existsSync(paths.keyFile)) writeNodeCertificate(dir, id, { overwrite: true });
    out.set(id, paths);
  }
  return out;
}

/** Bounds the CAs one file may hold: a rotation needs two. */
const CA_FILE_CERTIFICATES_MAX = 16;

function pemCertificates(pem: Buffer): string[] {
  const blocks = pem.toString("latin1").match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length > CA_FILE_CERTIFICATES_MAX) throw new TlsFileError(`a peer CA file holds ${blocks.length} certificates; at most ${CA_FILE_CERTIFICATES_MAX} are read`);
  return blocks;
}

/** The flags that hand a node its peer credentials, for harnesses that spawn `cairn server`. */
export function peerCredentialFlags(paths: PeerCredentialPaths): string[] {
  return ["--peer-cert-file", paths.certFile, "--peer-key-file", paths.keyFile, "--peer-ca-file", paths.caFile];
}

function readFlagFile(flag: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new TlsFileError(`cannot read ${flag} ${path}: ${errorMessage(err)}`);
  }
}

/**
 * Reads a node's peer credentials and checks what would otherwise fail later, on every
 * handshake: the key is the certificate's, the certificate was issued by the CA, is valid now,
 * and names this node.
 */
export function readPeerCredentials(paths: PeerCredentialPaths, nodeId: string, nowMs: number = Date.now()): PeerCredentials {
  const caPem = readFlagFile("--peer-ca-file", paths.caFile);
  const certPem = readFlagFile("--peer-cert-file", paths.certFile);
  const keyPem = readFlagFile("--peer-key-file", paths.keyFile);
  // The CA file may hold several CAs (old and new, while a CA rotation overlaps them): any may be the issuer.
  const cas = pemCertificates(caPem).flatMap((pem) => {
    try {
      return [new X509Certificate(pem)];
    } catch (err) {
      throw new TlsFileError(`--peer-ca-file ${paths.caFile} holds a certificate that does not parse: ${errorMessage(err)}`);
    }
  });
  if (cas.length === 0) throw new TlsFileError(`--peer-ca-file ${paths.caFile} holds no PEM certificate; give the ca.pem cairn tls ca create wrote`);
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch (err) {
    throw new TlsFileError(`--peer-cert-file ${paths.certFile} does not hold a PEM certificate: ${errorMessage(err)}`);
  }
  let keyMatches: boolean;
  try {
    keyMatches = cert.checkPrivateKey(createPrivateKey(keyPem));
  } catch (err) {
    throw new TlsFileError(`--peer-key-file ${paths.keyFile} does not hold a PEM private key: ${errorMessage(err)}`);
  }
  if (!keyMatches) throw new TlsFileError(`--peer-key-file ${paths.keyFile} is not the key of --peer-cert-file ${paths.certFile}; give the pair cairn tls cert create wrote together`);
  const notCa = cas.find((ca) => !ca.ca);
  if (notCa !== undefined) throw new TlsFileError(`--peer-ca-file ${paths.caFile} holds ${notCa.subject.replaceAll("\n", ", ")}, which is not a CA certificate; give the ca.pem cairn tls ca create wrote`);
  if (!cas.some((ca) => cert.checkIssued(ca) && cert.verify(ca.publicKey))) {
    throw new TlsFileError(`--peer-cert-file ${paths.certFile} was not issued by --peer-ca-file ${paths.caFile}; every node's certificate must come from the one peer CA`);
  }
  const validFrom = Date.parse(cert.validFrom);
  const validTo = Date.parse(cert.validTo);
  if (nowMs < validFrom || nowMs > validTo) {
    throw new TlsFileError(`--peer-cert-file ${paths.certFile} is valid only from ${cert.validFrom} to ${cert.validTo}; make a new one with cairn tls cert create --node ${nodeId} --force`);
  }
  const named = nodeIdsInSubjectAltName(cert.subjectAltName);
  if (!named.includes(nodeId)) {
    throw new TlsFileError(
      `--peer-cert-file ${paths.certFile} names ${named.length === 0 ? "no node" : `node ${named.join(", ")}`}, not this node (${nodeId}); make its own with cairn tls cert create --node ${nodeId}`,
    );
  }
  return { caPem, certPem, keyPem };
}
