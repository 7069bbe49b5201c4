// How a peer certificate names the node it belongs to. `cairn tls cert create` writes the name
// and the peer transport checks it, so both read it from here.
//
// A node's identity is its node id, carried as the URI SAN "urn:cairn:node:<id>". Peers dial
// each other by whatever address a node advertises (an IP on loopback, a proxy's address under
// --peer-via, a container name), so the address is not the identity: a peer is who its
// certificate says it is, and only the peer CA can say so.

/** The URI SAN prefix of a node's peer certificate; the node id follows it. */
export const PEER_NODE_URI_PREFIX = "urn:cairn:node:";

export function peerNodeUri(nodeId: string): string {
  return `${PEER_NODE_URI_PREFIX}${nodeId}`;
}

/** Bounds the parse of a certificate's SAN text, whoever made the certificate. */
const SUBJECT_ALT_NAME_CHARS_MAX = 64 * 1024;

/**
 * The node ids a certificate names, from Node's `PeerCertificate.subjectaltname` text
 * ("URI:urn:cairn:node:n1, IP Address:127.0.0.1"). Node ids contain no ", " (config.ts's
 * ID_PATTERN), so splitting on it cannot cut one in two; a URI that does is not a node id.
 */
export function nodeIdsInSubjectAltName(subjectAltName: string | undefined): string[] {
  if (subjectAltName === undefined || subjectAltName.length > SUBJECT_ALT_NAME_CHARS_MAX) return [];
  const prefix = `URI:${PEER_NODE_URI_PREFIX}`;
  return subjectAltName
    .split(", ")
    .filter((name) => name.startsWith(prefix))
    .map((name) => name.slice(prefix.length))
    .filter((id) => /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/.test(id));
}
