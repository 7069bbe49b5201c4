// What Cairn serves over xDS, per registry service S, and how each resource is built. Everything
// here is pure: a service's instances in, encoded protobuf out.
//
//   LDS  Listener S: an api_listener holding an HttpConnectionManager whose routes are inline
//        (one virtual host, every path to cluster S) and whose HTTP filters end with the router.
//   CDS  Cluster S: type EDS, endpoints from ADS, ROUND_ROBIN.
//   EDS  ClusterLoadAssignment S: the passing instances, one locality per zone.
//
// Routes are inline rather than served over RDS: proxyless gRPC and Envoy both accept them, it
// is one resource type and one round trip fewer, and a route that only names its own service's
// cluster has nothing to share between listeners.

import { isIP } from "node:net";
import { aggregateStatus, type Instance } from "../../registry/model.js";
import { forEachInSlices, sortInSlices, type SliceClock } from "../../common/slices.js";
import { encodeMessage, type XdsProtos } from "./protos.js";

/** The kinds built from the registry, named by service. */
export type RegistryResourceKind = "listener" | "cluster" | "endpoint";
/** Every kind served: the registry's, and SDS secrets. */
export type ResourceKind = RegistryResourceKind | "secret";

export interface ResourceType {
  readonly kind: ResourceKind;
  readonly typeUrl: string;
  /**
   * State-of-the-world responses of this type carry every subscribed resource, and a resource
   * left out is deleted on the client (Envoy and gRPC treat LDS and CDS so). Other types are sent
   * one changed resource at a time.
   */
  readonly fullStateInSotw: boolean;
  /** An empty (legacy) or "*" subscription means every resource of the type. */
  readonly wildcard: boolean;
}

export const LISTENER_TYPE: ResourceType = { kind: "listener", typeUrl: "type.googleapis.com/envoy.config.listener.v3.Listener", fullStateInSotw: true, wildcard: true };
export const CLUSTER_TYPE: ResourceType = { kind: "cluster", typeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster", fullStateInSotw: true, wildcard: true };
export const ENDPOINT_TYPE: ResourceType = {
  kind: "endpoint", typeUrl: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment", fullStateInSotw: false, wildcard: false,
};
/** SDS: a workload's certificate and key, or a trust bundle (envoy.extensions.transport_sockets.tls.v3.Secret). */
export const SECRET_TYPE: ResourceType = { kind: "secret", typeUrl: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", fullStateInSotw: false, wildcard: false };
export const RESOURCE_TYPES: readonly ResourceType[] = [LISTENER_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE, SECRET_TYPE];

const typesByUrl = new Map(RESOURCE_TYPES.map((t) => [t.typeUrl, t]));

/** The resource type a request names, or undefined for one Cairn does not serve (RDS, SDS, ...). */
export function resourceTypeOf(typeUrl: string): ResourceType | undefined {
  return typesByUrl.get(typeUrl);
}

export const HTTP_CONNECTION_MANAGER_TYPE_URL = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
export const ROUTER_TYPE_URL = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const ROUTER_FILTER_NAME = "envoy.filters.http.router";

/**
 * An endpoint's weight is the instance's passing weight, capped here: Envoy refuses a locality
 * whose endpoint weights add up past 2^32 - 1, and this cap keeps any locality of fewer than
 * 65,537 endpoints under it.
 */
export const ENDPOINT_WEIGHT_MAX = 65_535;
/** gRPC refuses a priority whose locality weights add up past this (uint32). */
export const LOCALITY_WEIGHTS_TOTAL_MAX = 0xffff_ffff;

export interface Endpoint {
  readonly address: string;
  readonly port: number;
  readonly weight: number;
}

/** One locality's endpoints. `zone` is the instances' zone ("" when they gave none). */
export interface LocalityEndpoints {
  readonly zone: string;
  readonly weight: number;
  readonly endpoints: readonly Endpoint[];
}

/** Why a passing instance is not among the endpoints. */
export interface SkippedInstance {
  readonly id: string;
  readonly address: string;
  readonly reason: string;
}

/** A passing instance that can be an endpoint, with the address it is reached at (its own, or its node's). */
export interface EndpointCandidate {
  readonly inst: Instance;
  readonly address: string;
}

/** One locality's candidates, in endpoint order, and the locality's weight. */
export interface CandidateLocality {
  readonly zone: string;
  readonly weight: number;
  readonly members: readonly EndpointCandidate[];
}

/**
 * `inst` as an endpoint candidate, or undefined when it is not passing or cannot be an endpoint
 * (then pushed onto `skipped` with the reason). gRPC refuses a whole assignment over one address
 * that is not an IP literal, so such instances are left out.
 */
export function endpointCandidate(inst: Instance, skipped: SkippedInstance[]): EndpointCandidate | undefined {
  if (aggregateStatus(inst.checks) !== "passing") return undefined;
  const address = inst.address === "" ? inst.nodeAddress : inst.address;
  if (isIP(address) === 0) {
    skipped.push({ id: inst.id, address, reason: "its address is not an IP literal, and xDS clients accept only IP addresses: register it with one" });
    return undefined;
  }
  if (inst.port < 1 || inst.port > 65_535) {
    skipped.push({ id: inst.id, address, reason: `its port ${inst.port} is not one a client can connect to: register it with its port` });
    return undefined;
  }
  return { inst, address };
}

/** Endpoint order: (address, port, zone, id), so a duplicate address keeps the same instance on every node. */
export function compareCandidates(a: EndpointCandidate, b: EndpointCandidate): number {
  return compare(a.address, b.address) || a.inst.port - b.inst.port || compare(a.inst.zone, b.inst.zone) || compare(a.inst.id, b.inst.id);
}

/** An instance's endpoint weight: its passing weight, at least 1 and at most ENDPOINT_WEIGHT_MAX. */
export function endpointWeight(inst: Instance): number {
  return Math.min(ENDPOINT_WEIGHT_MAX, Math.max(1, inst.weights.passing));
}

/**
 * Groups candidates by zone, fed in compareCandidates order: a duplicate address keeps the first
 * (and is reported in `skipped`), and each zone's weight is summed as its members come. No map of
 * addresses: growing one of 100,000 entries rehashes it in one piece of several milliseconds.
 */
export class ZoneGrouper {
  private readonly byZone = new Map<string, { members: EndpointCandidate[]; weightSum: number }>();
  /** The last candidate kept: in compareCandidates order a duplicate address follows the one it repeats. */
  private previous: EndpointCandidate | undefined;

  constructor(private readonly skipped: SkippedInstance[]) {}

  readonly add = (candidate: EndpointCandidate): void => {
    const { inst, address } = candidate;
    const first = this.previous;
    if (first !== undefined && first.address === address && first.inst.port === inst.port) {
      const key = `${address}:${inst.port}`;
      this.skipped.push({ id: inst.id, address, reason: `${key} is already the endpoint of instance ${first.inst.id}, and xDS clients refuse duplicate addresses: give each instance its own address and port` });
      return;
    }
    this.previous = candidate;
    let zone = this.byZone.get(inst.zone);
    if (zone === undefined) this.byZone.set(inst.zone, (zone = { members: [], weightSum: 0 }));
    zone.members.push(candidate);
    zone.weightSum += endpointWeight(inst);
  };

  /** The localities, by zone. */
  localities(): CandidateLocality[] {
    const zones = [...this.byZone.keys()].sort(compare);
    const total = zones.reduce((sum, zone) => sum + (this.byZone.get(zone)?.weightSum ?? 0), 0);
    // Locality weights are the sums of their endpoints' weights, so traffic splits as the instances'
    // weights say; scaled down together in the rare case their total would pass gRPC's limit.
    const scale = total > LOCALITY_WEIGHTS_TOTAL_MAX ? LOCALITY_WEIGHTS_TOTAL_MAX / total : 1;
    return zones.map((zone) => {
      const { members, weightSum } = this.byZone.get(zone) ?? { members: [], weightSum: 0 };
      return { zone, weight: Math.max(1, Math.floor(weightSum * scale)), members };
    });
  }
}

/**
 * A service's passing instances as endpoint candidates grouped by zone, in one call: filter, sort,
 * group. A service of a few thousand instances or more goes through passingCandidatesInSlices.
 */
export function passingCandidates(instances: Iterable<Instance>): { readonly localities: CandidateLocality[]; readonly skipped: SkippedInstance[] } {
  const skipped: SkippedInstance[] = [];
  const candidates: EndpointCandidate[] = [];
  for (const inst of instances) {
    const candidate = endpointCandidate(inst, skipped);
    if (candidate !== undefined) candidates.push(candidate);
  }
  candidates.sort(compareCandidates);
  const grouper = new ZoneGrouper(skipped);
  for (const candidate of candidates) grouper.add(candidate);
  return { localities: grouper.localities(), skipped };
}

/** passingCandidates in slices: the same result, never holding the loop past the clock's budget. */
export async function passingCandidatesInSlices(instances: readonly Instance[], clock: SliceClock): Promise<{ readonly localities: CandidateLocality[]; readonly skipped: SkippedInstance[] }> {
  const skipped: SkippedInstance[] = [];
  const candidates: EndpointCandidate[] = [];
  await forEachInSlices(instances, (inst) => {
    const candidate = endpointCandidate(inst, skipped);
    if (candidate !== undefined) candidates.push(candidate);
  }, clock);
  const sorted = await sortInSlices(candidates, compareCandidates, clock);
  const grouper = new ZoneGrouper(skipped);
  await forEachInSlices(sorted, grouper.add, clock);
  return { localities: grouper.localities(), skipped };
}

/**
 * The endpoints of a service's passing instances, grouped by zone. An instance's address "" is
 * its node's address. gRPC refuses a whole assignment over one address that is not an IP literal
 * or that appears twice, so such instances are left out (and reported in `skipped`): a duplicate
 * keeps the first in (address, port, zone, id) order, so every node makes the same choice.
 * Localities and endpoints come out sorted, so the same instances always encode to the same bytes.
 */
export function passingEndpoints(instances: Iterable<Instance>): { readonly localities: LocalityEndpoints[]; readonly skipped: SkippedInstance[] } {
  const { localities, skipped } = passingCandidates(instances);
  return { localities: localities.map(localityEndpoints), skipped };
}

/** A locality's candidates as the endpoints they become. */
export function localityEndpoints(locality: CandidateLocality): LocalityEndpoints {
  return { zone: locality.zone, weight: locality.weight, endpoints: locality.members.map(({ inst, address }) => ({ address, port: inst.port, weight: endpointWeight(inst) })) };
}

/** Code-unit order: the same on every node, whatever its locale. */
function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function encodeListener(protos: XdsProtos, service: string): Uint8Array {
  const connectionManager = encodeMessage(protos.HttpConnectionManager, {
    stat_prefix: service,
    route_config: {
      name: service,
      // The listener is the service's own, so every authority a client dials it by (with or
      // without a port) belongs to it.
      virtual_hosts: [{ name: service, domains: ["*"], routes: [{ match: { prefix: "" }, route: { cluster: service } }] }],
    },
    // The router must be the last filter: gRPC refuses a listener whose list does not end with it.
    http_filters: [routerFilter(protos)],
  });
  return encodeMessage(protos.Listener, {
    name: service,
    api_listener: { api_listener: { type_url: HTTP_CONNECTION_MANAGER_TYPE_URL, value: connectionManager } },
  });
}

/** The router HTTP filter, which must end every HttpConnectionManager's filters. */
export function routerFilter(protos: XdsProtos): object {
  return { name: ROUTER_FILTER_NAME, typed_config: { type_url: ROUTER_TYPE_URL, value: encodeMessage(protos.Router, {}) } };
}

/** `transportSocket`: how clients connect to the service's endpoints (mesh.ts's upstreamTlsSocket); absent, plaintext. */
export function encodeCluster(protos: XdsProtos, service: string, transportSocket?: object): Uint8Array {
  return encodeMessage(protos.Cluster, {
    name: service,
    type: "EDS",
    eds_cluster_config: { eds_config: { ads: {}, resource_api_version: "V3" }, service_name: service },
    lb_policy: "ROUND_ROBIN",
    ...(transportSocket === undefined ? {} : { transport_socket: transportSocket }),
  });
}

/**
 * The assignment is the one resource whose size grows with the service (100,000 instances make
 * 100,000 endpoints), so it is encoded from plain objects in the proto's own shape, skipping
 * protobufjs' fromObject conversion, which costs several times the encoding itself.
 */
export function encodeLoadAssignment(protos: XdsProtos, service: string, localities: readonly LocalityEndpoints[]): Uint8Array {
  return protos.ClusterLoadAssignment.encode({
    cluster_name: service,
    endpoints: localities.map((l) => ({
      // Set on every group, also when the zone is empty: gRPC refuses a group without a locality.
      locality: { zone: l.zone },
      load_balancing_weight: { value: l.weight },
      lb_endpoints: l.endpoints.map((e) => ({
        endpoint: { address: { socket_address: { address: e.address, port_value: e.port } } },
        health_status: protos.healthStatusHealthy,
        load_balancing_weight: { value: e.weight },
      })),
    })),
  }).finish();
}
