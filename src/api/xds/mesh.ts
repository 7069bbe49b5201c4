// The mesh's xDS resources: mutual TLS between workloads and the authorization policy that
// intentions describe, as proxyless gRPC (gRFC A29 security, A36 server listeners, A41 RBAC) and
// Envoy read them. Everything here is pure: names, intentions and settings in, encoded protobuf
// out. server_listeners.ts decides which listener a server gets and when it changes.
//
//   Server listener `grpc/server?xds.resource.listening_address=IP:PORT`: the address, and one
//   filter chain with a DownstreamTlsContext (the workload's certificate, the trust bundle, a
//   client certificate required) and an HttpConnectionManager whose filters are the RBAC filter,
//   generated from the destination's intentions, then the router.
//   Client cluster (cache.ts, for a service in the mesh): an UpstreamTlsContext that presents the
//   client's certificate and accepts only the destination's SPIFFE ID.
//
// Certificates never travel here: both contexts name certificate provider instances, which the
// workload's own bootstrap defines (gRPC's file_watcher over the files `cairn cert watch` keeps
// fresh). The name is DEFAULT_CERTIFICATE_PROVIDER unless the workload's node metadata names
// another under CERTIFICATE_PROVIDER_METADATA_KEY.

import { isIP } from "node:net";
import { decide, type IntentionRule, WILDCARD } from "../../intentions/precedence.js";
import { encodeMessage, type XdsProtos } from "./protos.js";
import { HTTP_CONNECTION_MANAGER_TYPE_URL, routerFilter } from "./resources.js";

/** What a server's bootstrap sets as server_listener_resource_name_template, with %s the address. */
export const SERVER_LISTENER_NAME_PREFIX = "grpc/server?xds.resource.listening_address=";

/** The certificate provider instance both TLS contexts name, unless the workload's node metadata says otherwise. */
export const DEFAULT_CERTIFICATE_PROVIDER = "default";
/** The node metadata key (a string) that names another certificate provider instance. */
export const CERTIFICATE_PROVIDER_METADATA_KEY = "cairn.certificate_provider";

export const DOWNSTREAM_TLS_CONTEXT_TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
export const UPSTREAM_TLS_CONTEXT_TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
export const RBAC_TYPE_URL = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
const TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls";
const RBAC_FILTER_NAME = "envoy.filters.http.rbac";
const RBAC_POLICY_NAME = "cairn-intentions";

/** The certificate provider instance a workload's TLS contexts name. */
export function certificateProviderOf(metadata: ReadonlyMap<string, string> | undefined): string {
  const named = metadata?.get(CERTIFICATE_PROVIDER_METADATA_KEY);
  return named === undefined || named === "" ? DEFAULT_CERTIFICATE_PROVIDER : named;
}

export interface ListeningAddress {
  readonly host: string;
  readonly port: number;
}

/** The address a server listener's name asks for, or undefined when the name is not one (or not an IP and port). */
export function serverListenerAddress(name: string): ListeningAddress | undefined {
  if (!name.startsWith(SERVER_LISTENER_NAME_PREFIX)) return undefined;
  const hostPort = name.slice(SERVER_LISTENER_NAME_PREFIX.length);
  const bracketed = /^\[([^\]]+)\]:(\d{1,5})$/.exec(hostPort);
  const plain = /^([^:[\]]+):(\d{1,5})$/.exec(hostPort);
  const match = bracketed ?? plain;
  if (match === null) return undefined;
  const port = Number(match[2]);
  if (port < 1 || port > 65_535) return undefined;
  const host = match[1];
  if (isIP(host) === 0 || (bracketed !== null) !== (isIP(host) === 6)) return undefined;
  return { host, port };
}

/**
 * The SPIFFE IDs a service's workloads hold, as a regular expression (RE2, matched whole): both
 * shapes the CA issues, in any namespace (src/ca/spiffe.ts: /ns/N/svc/S and Consul's
 * /ns/N/dc/D/svc/S), in this trust domain only.
 */
export function serviceIdPattern(trustDomain: string, service: string): string {
  return `spiffe://${escapeRegex(trustDomain)}/ns/[^/]+/(dc/[^/]+/)?svc/${escapeRegex(service)}`;
}

function escapeRegex(text: string): string {
  return text.replace(/[\\^$.*+?()[\]{}|]/g, "\\$&");
}

/**
 * The RBAC rules that make the same decision as the destination's intentions for every caller.
 * Intentions name exact sources or `*`. A caller no intention names exactly gets what the
 * wildcard intentions (or the default) decide; each named source gets its own decision. So when
 * the wildcard decision allows, the rules deny the named sources that are denied; when it denies,
 * they allow the named sources that are allowed. Sources come out sorted, so the same intentions
 * encode to the same bytes on every node.
 */
export interface RbacRules {
  readonly action: "ALLOW" | "DENY";
  /** The source services the action applies to. */
  readonly sources: readonly string[];
}

export function rbacRulesFor(destination: string, intentions: readonly IntentionRule[], defaultAllow: boolean): RbacRules {
  // Each source is decided among its own intentions and the wildcard ones only (at most four,
  // whatever the total), so a destination of thousands of sources costs linear time.
  const wildcardOnly = intentions.filter((i) => i.source === WILDCARD);
  const othersAllowed = decide(wildcardOnly, WILDCARD, destination, defaultAllow).allowed;
  const bySource = new Map<string, IntentionRule[]>();
  for (const i of intentions) {
    if (i.source === WILDCARD) continue;
    let own = bySource.get(i.source);
    if (own === undefined) bySource.set(i.source, (own = [...wildcardOnly]));
    own.push(i);
  }
  const sources: string[] = [];
  for (const [source, candidates] of bySource) if (decide(candidates, source, destination, defaultAllow).allowed !== othersAllowed) sources.push(source);
  return { action: othersAllowed ? "DENY" : "ALLOW", sources: sources.sort() };
}

/** The HTTP RBAC filter's config for `rules`. */
export function rbacFilterConfig(trustDomain: string, rules: RbacRules): object {
  // A policy must name at least one principal, so "nobody" is no policy: ALLOW with none denies
  // every call, DENY with none denies none.
  const policies = rules.sources.length === 0 ? {} : {
    [RBAC_POLICY_NAME]: {
      permissions: [{ any: true }],
      principals: rules.sources.map((source) => ({ authenticated: { principal_name: { safe_regex: { regex: serviceIdPattern(trustDomain, source) } } } })),
    },
  };
  return { rules: { action: rules.action, policies } };
}

/** A CommonTlsContext that presents `provider`'s certificate and validates peers against its roots. */
function commonTlsContext(provider: string, peerSanPattern?: string): object {
  return {
    tls_certificate_provider_instance: { instance_name: provider },
    validation_context: {
      ca_certificate_provider_instance: { instance_name: provider },
      ...(peerSanPattern === undefined ? {} : { match_subject_alt_names: [{ safe_regex: { regex: peerSanPattern } }] }),
    },
  };
}

export interface ServerListenerSpec {
  readonly name: string;
  readonly address: ListeningAddress;
  readonly provider: string;
  readonly trustDomain: string;
  /** Whether the server speaks mutual TLS; without it callers are unauthenticated, and only a rule for every caller lets them in. */
  readonly mtls: boolean;
  readonly rules: RbacRules;
}

export function encodeServerListener(protos: XdsProtos, spec: ServerListenerSpec): Uint8Array {
  const rbac = encodeMessage(protos.Rbac, rbacFilterConfig(spec.trustDomain, spec.rules));
  const connectionManager = encodeMessage(protos.HttpConnectionManager, {
    stat_prefix: "inbound",
    route_config: {
      name: "inbound",
      // Every call the server gets is for the server itself: gRPC requires the non-forwarding action.
      virtual_hosts: [{ name: "inbound", domains: ["*"], routes: [{ match: { prefix: "" }, non_forwarding_action: {} }] }],
    },
    http_filters: [{ name: RBAC_FILTER_NAME, typed_config: { type_url: RBAC_TYPE_URL, value: rbac } }, routerFilter(protos)],
  });
  const tls = spec.mtls ? encodeMessage(protos.DownstreamTlsContext, {
    common_tls_context: commonTlsContext(spec.provider),
    require_client_certificate: { value: true },
  }) : undefined;
  return encodeMessage(protos.Listener, {
    name: spec.name,
    address: { socket_address: { address: spec.address.host, port_value: spec.address.port } },
    filter_chains: [{
      filters: [{ name: "envoy.filters.network.http_connection_manager", typed_config: { type_url: HTTP_CONNECTION_MANAGER_TYPE_URL, value: connectionManager } }],
      ...(tls === undefined ? {} : { transport_socket: { name: TLS_TRANSPORT_SOCKET, typed_config: { type_url: DOWNSTREAM_TLS_CONTEXT_TYPE_URL, value: tls } } }),
    }],
  });
}

/** A cluster's transport socket for a destination in the mesh: the client's certificate, and only the destination's SPIFFE ID accepted. */
export function upstreamTlsSocket(protos: XdsProtos, trustDomain: string, destination: string, provider: string): object {
  const tls = encodeMessage(protos.UpstreamTlsContext, { common_tls_context: commonTlsContext(provider, serviceIdPattern(trustDomain, destination)) });
  return { name: TLS_TRANSPORT_SOCKET, typed_config: { type_url: UPSTREAM_TLS_CONTEXT_TYPE_URL, value: tls } };
}
