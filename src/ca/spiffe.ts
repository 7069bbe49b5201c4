// SPIFFE IDs: the one place that knows their syntax and the two path shapes Cairn issues,
// its own (/ns/<namespace>/svc/<service>) and Consul's (/ns/<namespace>/dc/<dc>/svc/<service>).

/** A SPIFFE ID is at most 2048 bytes (the SPIFFE ID standard). */
const SPIFFE_ID_BYTES_MAX = 2048;
/** Trust domains are lowercase DNS-like names: letters, digits, '.', '-' and '_'. */
const TRUST_DOMAIN = /^[a-z0-9._-]{1,255}$/;
/** Path segments: letters, digits, '.', '-' and '_', and never "." or "..". */
const PATH_SEGMENT = /^[a-zA-Z0-9._-]+$/;
/** Namespaces and service names: DNS labels, as registry service names are. */
const LABEL = /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/;

export class SpiffeIdError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SpiffeIdError";
  }
}

export interface SpiffeId {
  readonly trustDomain: string;
  /** Path segments after the trust domain; empty for the trust domain's own ID. */
  readonly segments: readonly string[];
  /** The ID as text, `spiffe://<trust-domain>/<segments>`. */
  readonly uri: string;
}

/** What a workload SPIFFE ID names: its namespace and service (Consul's form adds a datacenter). */
export interface WorkloadName {
  readonly namespace: string;
  readonly service: string;
  readonly datacenter?: string;
}

export function validateTrustDomain(trustDomain: string): string | undefined {
  if (!TRUST_DOMAIN.test(trustDomain)) return `trust domain "${trustDomain}" must be 1-255 lowercase letters, digits, '.', '-' or '_'`;
  return undefined;
}

export function parseSpiffeId(uri: string): SpiffeId {
  if (uri.length > SPIFFE_ID_BYTES_MAX) throw new SpiffeIdError(`SPIFFE ID is longer than ${SPIFFE_ID_BYTES_MAX} bytes`);
  if (!uri.startsWith("spiffe://")) throw new SpiffeIdError(`"${uri}" is not a SPIFFE ID: it must start with spiffe://`);
  const rest = uri.slice("spiffe://".length);
  const slash = rest.indexOf("/");
  const trustDomain = slash < 0 ? rest : rest.slice(0, slash);
  const tdProblem = validateTrustDomain(trustDomain);
  if (tdProblem !== undefined) throw new SpiffeIdError(`"${uri}": ${tdProblem}`);
  if (slash < 0) return { trustDomain, segments: [], uri };
  const segments = rest.slice(slash + 1).split("/");
  for (const s of segments) {
    if (!PATH_SEGMENT.test(s) || s === "." || s === "..") {
      throw new SpiffeIdError(`"${uri}": path segment "${s}" must be letters, digits, '.', '-' or '_' (and not "." or "..")`);
    }
  }
  return { trustDomain, segments, uri };
}

/** The workload an ID names, in either of the two shapes Cairn issues; undefined for any other path. */
export function workloadOf(id: SpiffeId): WorkloadName | undefined {
  const s = id.segments;
  if (s.length === 4 && s[0] === "ns" && s[2] === "svc" && LABEL.test(s[1]) && LABEL.test(s[3])) return { namespace: s[1], service: s[3] };
  if (s.length === 6 && s[0] === "ns" && s[2] === "dc" && s[4] === "svc" && LABEL.test(s[1]) && LABEL.test(s[5])) {
    return { namespace: s[1], datacenter: s[3], service: s[5] };
  }
  return undefined;
}

export function workloadSpiffeId(trustDomain: string, namespace: string, service: string): string {
  return `spiffe://${trustDomain}/ns/${namespace}/svc/${service}`;
}

/** Consul Connect's service identity: `spiffe://<trust-domain>/ns/<ns>/dc/<dc>/svc/<service>`. */
export function consulServiceSpiffeId(trustDomain: string, datacenter: string, service: string, namespace = "default"): string {
  return `spiffe://${trustDomain}/ns/${namespace}/dc/${datacenter}/svc/${service}`;
}

/**
 * A Cairn node's own identity, on the certificate its public ports serve with --tls auto:
 * `spiffe://<trust-domain>/cairn/node/<id>`. It is not a workload shape, so workloadOf() answers
 * undefined and no caller can ask the CA for it: only the node itself issues it, in process.
 */
export function nodeSpiffeId(trustDomain: string, nodeId: string): string {
  return `spiffe://${trustDomain}/cairn/node/${nodeId}`;
}

export function trustDomainSpiffeId(trustDomain: string): string {
  return `spiffe://${trustDomain}`;
}

export function isServiceLabel(name: string): boolean {
  return LABEL.test(name);
}
