// Peer credentials for the servers a test process starts: one peer CA per test process (node
// --test runs each file in its own), made by the same code as `cairn tls`, and one certificate
// per node id, made when a node of that id first starts. Removed when the process exits.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type PeerCredentialPaths, ensurePeerCredentials, peerCredentialFlags } from "../../src/tls/files.js";

let dir: string | undefined;

/** The folder holding this process's peer CA (ca.pem, ca-key.pem) and node certificates. */
export function testPeerTlsDir(): string {
  if (dir === undefined) {
    const made = mkdtempSync(join(tmpdir(), "cairn-peer-tls-"));
    process.once("exit", () => rmSync(made, { recursive: true, force: true }));
    dir = made;
  }
  return dir;
}

export function testPeerCredentials(nodeId: string): PeerCredentialPaths {
  return ensurePeerCredentials(testPeerTlsDir(), [nodeId]).get(nodeId) as PeerCredentialPaths;
}

/** --peer-cert-file, --peer-key-file and --peer-ca-file for node `nodeId`. */
export function testPeerTlsFlags(nodeId: string): string[] {
  return peerCredentialFlags(testPeerCredentials(nodeId));
}
