// The encoded xDS resources of every service, built from this node's applied registry state.
// Each resource is encoded once per version and the bytes are shared by every stream that sends
// it: a change costs one encoding, not one per subscriber.
//
// Versions are a digest of the encoded resource, so the same state gives the same versions on
// every node (a client that moves to another node and says what it holds is not sent it again),
// and a write that leaves a resource's bytes unchanged (a tag, a check going from warning to
// critical on an instance that was not passing anyway) pushes nothing.
//
// The registry's change listener runs inside Raft's apply, so it only notes which services were
// touched; the rebuild runs on a later turn of the event loop, in slices of services, and then
// tells the streams which resources changed. A listener depends on the service's name alone and
// is built once per service, a cluster also on whether its instances speak mTLS (mesh.ts); a service's endpoints, the one resource whose cost
// grows with its instances, are encoded only while some stream subscribes to them, so a node
// nobody asks for endpoints spends nothing on them however fast its registry changes.
//
// A service of more than SYNC_BUILD_INSTANCES_MAX instances is rebuilt apart from the others, in
// slices (src/common/slices.ts): its instances come from the registry's service views, and its
// endpoints are filtered, sorted, assembled and hashed a few milliseconds at a time, so that a
// service of 100,000 instances never holds the event loop (and with it Raft's ticks) for long.
// One such build per service is in flight at a time; a change meanwhile is noted and rebuilt
// after it, so builds publish in the order they started and a newer change always ends in a newer
// build. While one runs, streams get the previous assignment, or, before the first, nothing yet
// (pending): they are told when it lands.

import { createHash } from "node:crypto";
import type { Logger } from "pino";
import { SliceClock } from "../../common/slices.js";
import { type Instance, speaksMtls } from "../../registry/model.js";
import type { ServiceViews } from "../../registry/service_views.js";
import type { RegistryState } from "../../registry/state.js";
import { errorMessage } from "../../common/errors.js";
import { EndpointEncoder, type AssembledAssignment } from "./assignment.js";
import { DEFAULT_CERTIFICATE_PROVIDER, upstreamTlsSocket } from "./mesh.js";
import { frameField, type XdsProtos } from "./protos.js";
import { encodeCluster, encodeListener, encodeLoadAssignment, passingCandidates, passingCandidatesInSlices, RESOURCE_TYPES, type RegistryResourceKind, type ResourceKind, type ResourceType, type SkippedInstance } from "./resources.js";

/** Hex digits of the SHA-256 of a resource's bytes that make its version: 64 bits. */
const VERSION_HEX_DIGITS = 16;

/** One resource at one version, encoded. Immutable: a new version is a new object. */
export class EncodedResource {
  /** The resource as a google.protobuf.Any, framed as one element of DiscoveryResponse.resources. */
  readonly sotwField: Uint8Array;
  private deltaFieldBytes: Uint8Array | undefined;

  constructor(
    private readonly protos: XdsProtos,
    readonly type: ResourceType,
    readonly name: string,
    readonly version: string,
    /** The resource as a google.protobuf.Any's fields. */
    readonly any: { readonly type_url: string; readonly value: Uint8Array },
  ) {
    this.sotwField = frameField(protos.sotwResourceKey, protos.Any.encode(any).finish());
  }

  /** As an envoy.service.discovery.v3.Resource {name, version, resource}, framed for DeltaDiscoveryResponse.resources; encoded on first use. */
  get deltaField(): Uint8Array {
    this.deltaFieldBytes ??= frameField(this.protos.deltaResourceKey, this.protos.Resource.encode({ name: this.name, version: this.version, resource: this.any }).finish());
    return this.deltaFieldBytes;
  }
}

/** Which resource of which type changed (or appeared, or went away). */
export interface ResourceKey {
  readonly kind: ResourceKind;
  readonly name: string;
  /** Only streams that name it hear of it: a wildcard subscription never covers it (a server listener). */
  readonly namedOnly?: boolean;
}

/** `value`, the encoded resource `name` of `type`, at the version its digest gives. */
export function encodeResource(protos: XdsProtos, type: ResourceType, name: string, value: Uint8Array): EncodedResource {
  return versionedResource(protos, type, name, value, createHash("sha256").update(value).digest("hex"));
}

function versionedResource(protos: XdsProtos, type: ResourceType, name: string, value: Uint8Array, sha256Hex: string): EncodedResource {
  return new EncodedResource(protos, type, name, sha256Hex.slice(0, VERSION_HEX_DIGITS), { type_url: type.typeUrl, value });
}

export interface ResourceCacheLimits {
  /** Services rebuilt in one turn of the event loop; the rest wait for the next. */
  readonly rebuildSliceServices: number;
  /** Empty assignments kept for names no service has (EDS of an unknown service); past it the oldest is dropped and re-encoded when asked again. */
  readonly absentEndpointsCachedMax: number;
  /** Distinct skipped instance addresses warned about; past it they are not logged again. */
  readonly skipWarningsMax: number;
  /**
   * After rebuilding a service's endpoints took t ms (t of at least 2 ms), that service
   * is not rebuilt again for this many times t: a service of 100,000 instances that changes
   * without pause costs xDS about 1 / (1 + factor) of a core, and coalesces its changes meanwhile.
   */
  readonly rebuildCostHoldFactor: number;
}

/**
 * Services of up to this many instances are rebuilt in one call (filtering, sorting and encoding
 * 2,000 endpoints takes a few milliseconds here, mostly less once their encodings are cached);
 * larger ones in slices.
 */
export const SYNC_BUILD_INSTANCES_MAX = 2000;

/** Clusters kept per service, one per certificate provider name streams asked with; past it they are encoded per request. */
const CLUSTER_VARIANTS_MAX = 16;

/** Rebuilds cheaper than this (a service of a few hundred instances) are never held back. */
const REBUILD_HOLD_MIN_COST_MS = 2;

interface ServiceResources {
  readonly listener: EncodedResource;
  /** Whether some instance speaks mTLS: then the cluster carries an UpstreamTlsContext. */
  mtls: boolean;
  /** The cluster, per certificate provider instance name a stream asked with (only the default while it is plaintext). */
  readonly clusters: Map<string, EncodedResource>;
  /** Encoded on first request, and kept up to date while someone subscribes to them; else dropped. */
  endpoints: EncodedResource | undefined;
  /** No passing endpoint: the same bytes, and so the same version, as the assignment of an unknown name. */
  endpointsEmpty: boolean;
}

/** A sliced build in flight: whether a change came in meanwhile, to be rebuilt after it. */
interface SlicedBuild {
  again: boolean;
}

const typeOf = new Map(RESOURCE_TYPES.map((t) => [t.kind, t]));

export class ResourceCache {
  private readonly services = new Map<string, ServiceResources>();
  private readonly absentEndpoints = new Map<string, EncodedResource>();
  private readonly dirty = new Set<string>();
  /** Services whose last rebuild was costly, and the time before which they are not rebuilt again. */
  private readonly heldUntilMs = new Map<string, number>();
  private rebuildAll = false;
  /** While the service names are listed in slices after a start or a restore. */
  private listing = false;
  /** Services last seen with more than SYNC_BUILD_INSTANCES_MAX instances: rebuilt in slices. */
  private readonly largeServices = new Set<string>();
  private readonly slicedBuilds = new Map<string, SlicedBuild>();
  private encoder: EndpointEncoder | undefined;
  private rebuildScheduled = false;
  private holdTimer: NodeJS.Timeout | undefined;
  private protos: XdsProtos | undefined;
  private closed = false;
  private readonly listeners: ((changes: readonly ResourceKey[]) => void)[] = [];
  private readonly warnedSkips = new Set<string>();
  private builtRevisionValue = 0;
  private resolveBuilt: (() => void) | undefined;
  /** Resolves once the first full build has completed, so lookups reflect the state. */
  readonly built: Promise<void> = new Promise((resolve) => (this.resolveBuilt = resolve));

  /**
   * `subscribed(name)` says whether some stream subscribes to a service's endpoints: only then
   * are they rebuilt on a change.
   */
  constructor(
    private readonly state: RegistryState,
    private readonly limits: ResourceCacheLimits,
    private readonly logger: Logger,
    private readonly subscribed: (service: string) => boolean,
    private readonly views: ServiceViews,
    /** The mesh's trust domain, which mTLS clusters accept their servers' SPIFFE IDs in; undefined: clusters are always plaintext. */
    private readonly trustDomain?: string,
  ) {
    state.onChange((_revision, services, _catalogChanged, delta) => {
      // Before start() nothing is built, and start() builds everything.
      if (this.closed || this.protos === undefined) return;
      // A restored snapshot may have dropped services no listener was told about.
      if (delta.kind === "restored") this.rebuildAll = true;
      else for (const s of services) this.dirty.add(s);
      this.scheduleRebuild();
    });
  }

  /** Called once the protos are loaded: builds every service, then keeps up with changes. */
  start(protos: XdsProtos): void {
    this.protos = protos;
    this.encoder = new EndpointEncoder(protos);
    this.rebuildAll = true;
    this.scheduleRebuild();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.holdTimer);
  }

  /** Called with the resources each rebuild slice changed. */
  onChange(listener: (changes: readonly ResourceKey[]) => void): void {
    this.listeners.push(listener);
  }

  /** Sliced builds of large services in flight: at most one per service. */
  get buildsInFlight(): number {
    return this.slicedBuilds.size;
  }

  /** The registry revision the resources were last brought up to. */
  get builtRevision(): number {
    return this.builtRevisionValue;
  }

  /**
   * The current resource `name` of `kind`; undefined when no such listener or cluster exists.
   * Endpoints always exist: a service with no passing instance, or none at all, has an empty
   * assignment (the client then has no endpoints, which is the truth).
   */
  get(kind: RegistryResourceKind, name: string): EncodedResource | undefined {
    const service = this.services.get(name);
    switch (kind) {
      case "listener":
        return service?.listener;
      case "cluster":
        return this.cluster(name, DEFAULT_CERTIFICATE_PROVIDER);
      case "endpoint":
        if (service === undefined) return this.absentEndpointsOf(name);
        if (service.endpoints === undefined && this.protos !== undefined && !this.slicedBuilds.has(name)) {
          if (this.largeServices.has(name)) this.startSlicedBuild(this.protos, name, undefined);
          else this.buildEndpoints(this.protos, name, service, this.state.instancesOf(name));
        }
        return service.endpoints;
    }
  }

  /** The cluster `name` as a stream whose TLS contexts name `provider` gets it. */
  cluster(name: string, provider: string): EncodedResource | undefined {
    const service = this.services.get(name);
    const protos = this.protos;
    if (service === undefined || protos === undefined) return undefined;
    const key = service.mtls ? provider : DEFAULT_CERTIFICATE_PROVIDER;
    let cluster = service.clusters.get(key);
    if (cluster === undefined) {
      cluster = this.encodeCluster(protos, name, service.mtls, key);
      if (service.clusters.size < CLUSTER_VARIANTS_MAX) service.clusters.set(key, cluster);
    }
    return cluster;
  }

  private encodeCluster(protos: XdsProtos, name: string, mtls: boolean, provider: string): EncodedResource {
    const tls = mtls && this.trustDomain !== undefined ? upstreamTlsSocket(protos, this.trustDomain, name, provider) : undefined;
    return this.encode(protos, "cluster", name, encodeCluster(protos, name, tls));
  }

  /** Records whether a service's instances speak mTLS; a change re-encodes its clusters. */
  private setMtls(name: string, service: ServiceResources, mtls: boolean, changes: ResourceKey[]): void {
    if (service.mtls === mtls) return;
    service.mtls = mtls;
    service.clusters.clear();
    changes.push({ kind: "cluster", name });
  }

  /** Whether `name` of `kind` is being built for the first time: get() gave nothing yet, and onChange will say when it lands. */
  pending(kind: RegistryResourceKind, name: string): boolean {
    return kind === "endpoint" && this.services.get(name)?.endpoints === undefined && this.slicedBuilds.has(name);
  }

  /** Every service name: what a wildcard subscription covers. */
  names(): IterableIterator<string> {
    return this.services.keys();
  }

  private absentEndpointsOf(name: string): EncodedResource | undefined {
    if (this.protos === undefined) return undefined;
    let resource = this.absentEndpoints.get(name);
    if (resource !== undefined) return resource;
    resource = this.encode(this.protos, "endpoint", name, encodeLoadAssignment(this.protos, name, []));
    if (this.absentEndpoints.size >= this.limits.absentEndpointsCachedMax) {
      const oldest = this.absentEndpoints.keys().next();
      if (oldest.done !== true) this.absentEndpoints.delete(oldest.value);
    }
    this.absentEndpoints.set(name, resource);
    return resource;
  }

  private scheduleRebuild(): void {
    if (this.rebuildScheduled || this.protos === undefined || this.closed) return;
    this.rebuildScheduled = true;
    setImmediate(() => this.rebuildSlice());
  }

  private rebuildSlice(): void {
    this.rebuildScheduled = false;
    const protos = this.protos;
    if (protos === undefined || this.closed) return;
    if (this.rebuildAll) {
      this.rebuildAll = false;
      this.listServices();
      return;
    }
    const changes: ResourceKey[] = [];
    const nowMs = performance.now();
    let done = 0;
    let heldBackUntilMs = Number.POSITIVE_INFINITY;
    let ready = 0;
    for (const name of this.dirty) {
      const heldUntil = this.heldUntilMs.get(name);
      if (heldUntil !== undefined && heldUntil > nowMs) {
        heldBackUntilMs = Math.min(heldBackUntilMs, heldUntil);
        continue;
      }
      const inFlight = this.slicedBuilds.get(name);
      if (inFlight !== undefined) {
        inFlight.again = true;
        this.dirty.delete(name);
        continue;
      }
      if (done >= this.limits.rebuildSliceServices) {
        ready++;
        break;
      }
      done++;
      this.dirty.delete(name);
      if (this.largeServices.has(name)) {
        this.startSlicedBuild(protos, name, undefined);
        continue;
      }
      const costMs = this.rebuildService(protos, name, changes);
      if (costMs >= REBUILD_HOLD_MIN_COST_MS && this.limits.rebuildCostHoldFactor > 0) this.heldUntilMs.set(name, nowMs + costMs * this.limits.rebuildCostHoldFactor);
      else this.heldUntilMs.delete(name);
    }
    this.builtRevisionValue = this.state.revision;
    if (ready > 0) this.scheduleRebuild();
    else if (heldBackUntilMs !== Number.POSITIVE_INFINITY) this.scheduleHeld(heldBackUntilMs - nowMs);
    else if (!this.listing) this.resolveBuilt?.();
    this.publish(changes);
  }

  private publish(changes: readonly ResourceKey[]): void {
    if (changes.length > 0) for (const l of this.listeners) l(changes);
  }

  /**
   * Every service is rebuilt (start-up, restore): their names and sizes come from the views in
   * slices, since the state's services() walks every instance in one call (60-80 ms at 100,000).
   */
  private listServices(): void {
    this.listing = true;
    this.views.catalog().services.then((catalog) => {
      this.listing = false;
      if (this.closed) return;
      for (const name of this.services.keys()) this.dirty.add(name);
      for (const { name, instances } of catalog) {
        this.dirty.add(name);
        if (instances > SYNC_BUILD_INSTANCES_MAX) this.largeServices.add(name);
        else this.largeServices.delete(name);
      }
      this.scheduleRebuild();
    }, (err: unknown) => {
      this.listing = false;
      this.logger.error({ err: errorMessage(err) }, "xDS could not list the registry's services; their resources are rebuilt at the next restore");
    });
  }

  private scheduleHeld(delayMs: number): void {
    if (this.holdTimer !== undefined) return;
    this.holdTimer = setTimeout(() => {
      this.holdTimer = undefined;
      this.scheduleRebuild();
    }, Math.max(1, Math.ceil(delayMs)));
  }

  /** Brings one service's resources up to date; returns how long its endpoints took, in milliseconds. */
  private rebuildService(protos: XdsProtos, name: string, changes: ResourceKey[]): number {
    const instances = this.state.instancesOf(name);
    if (instances.length === 0) {
      this.dropService(name, changes);
      return 0;
    }
    if (instances.length > SYNC_BUILD_INSTANCES_MAX) {
      // From now on rebuilt in slices, from the views; this once from the list at hand.
      this.largeServices.add(name);
      this.startSlicedBuild(protos, name, instances);
      return 0;
    }
    const service = this.serviceOf(protos, name, changes);
    this.setMtls(name, service, instances.some(speaksMtls), changes);
    if (!this.subscribed(name)) {
      service.endpoints = undefined;
      return 0;
    }
    // Subscribers hold the previous assignment, or the empty one of a service that did not exist.
    const heldVersion = this.heldEndpointsVersion(name, service);
    const startedMs = performance.now();
    this.buildEndpoints(protos, name, service, instances);
    const costMs = performance.now() - startedMs;
    if (service.endpoints?.version !== heldVersion) changes.push({ kind: "endpoint", name });
    return costMs;
  }

  private heldEndpointsVersion(name: string, service: ServiceResources): string | undefined {
    return service.endpoints?.version ?? this.absentEndpointsOf(name)?.version;
  }

  private dropService(name: string, changes: ResourceKey[]): void {
    this.heldUntilMs.delete(name);
    this.largeServices.delete(name);
    const previous = this.services.get(name);
    if (previous === undefined) return;
    this.services.delete(name);
    changes.push({ kind: "listener", name }, { kind: "cluster", name });
    // An empty assignment encodes the same with or without the service, so is no change.
    if (previous.endpoints !== undefined && !previous.endpointsEmpty) changes.push({ kind: "endpoint", name });
  }

  /** The service's resources, created with its listener and cluster if it had none. */
  private serviceOf(protos: XdsProtos, name: string, changes: ResourceKey[]): ServiceResources {
    let service = this.services.get(name);
    if (service === undefined) {
      service = {
        listener: this.encode(protos, "listener", name, encodeListener(protos, name)),
        mtls: false,
        clusters: new Map(),
        endpoints: undefined,
        endpointsEmpty: true,
      };
      this.services.set(name, service);
      this.absentEndpoints.delete(name);
      changes.push({ kind: "listener", name }, { kind: "cluster", name });
    }
    return service;
  }

  private buildEndpoints(protos: XdsProtos, name: string, service: ServiceResources, instances: readonly Instance[]): void {
    const { localities, skipped } = passingCandidates(instances);
    this.warnSkipped(name, skipped);
    this.setEndpoints(protos, name, service, this.encoderOf(protos).assemble(name, localities), localities.length === 0);
  }

  private setEndpoints(protos: XdsProtos, name: string, service: ServiceResources, assembled: AssembledAssignment, empty: boolean): void {
    service.endpoints = this.encodeVersioned(protos, "endpoint", name, assembled.bytes, assembled.sha256Hex);
    service.endpointsEmpty = empty;
  }

  private encoderOf(protos: XdsProtos): EndpointEncoder {
    this.encoder ??= new EndpointEncoder(protos);
    return this.encoder;
  }

  /**
   * Starts the sliced rebuild of a large service, from `listed` (its instances, listed now) or
   * from a snapshot of its view taken now: either way the build is of the state at this moment.
   */
  private startSlicedBuild(protos: XdsProtos, name: string, listed: readonly Instance[] | undefined): void {
    const build: SlicedBuild = { again: false };
    this.slicedBuilds.set(name, build);
    const instances = listed !== undefined ? Promise.resolve(listed) : this.views.snapshot(name).instances;
    const startedMs = performance.now();
    this.slicedBuild(protos, name, instances).catch((err: unknown) => {
      this.logger.error({ service: name, err: errorMessage(err) }, `xDS could not rebuild the resources of ${name}; they are rebuilt at its next change`);
    }).finally(() => {
      this.slicedBuilds.delete(name);
      if (this.closed) return;
      // Wall time, slices of other work included: a hold at least as long as the CPU time would be.
      const costMs = performance.now() - startedMs;
      if (costMs >= REBUILD_HOLD_MIN_COST_MS && this.limits.rebuildCostHoldFactor > 0) this.heldUntilMs.set(name, performance.now() + costMs * this.limits.rebuildCostHoldFactor);
      if (build.again) {
        this.dirty.add(name);
        this.scheduleRebuild();
      }
    });
  }

  private async slicedBuild(protos: XdsProtos, name: string, listing: Promise<readonly Instance[]>): Promise<void> {
    const instances = await listing;
    if (this.closed) return;
    const changes: ResourceKey[] = [];
    if (instances.length === 0) {
      this.dropService(name, changes);
      this.publish(changes);
      return;
    }
    if (instances.length <= SYNC_BUILD_INSTANCES_MAX) this.largeServices.delete(name);
    const service = this.serviceOf(protos, name, changes);
    this.setMtls(name, service, instances.some(speaksMtls), changes);
    if (!this.subscribed(name)) {
      service.endpoints = undefined;
      this.publish(changes);
      return;
    }
    const clock = new SliceClock();
    const { localities, skipped } = await passingCandidatesInSlices(instances, clock);
    const assembled = await this.encoderOf(protos).assembleInSlices(name, localities, clock);
    // Nothing else rebuilds this service while its build is in flight, but it may have been
    // unsubscribed meanwhile, or the cache closed.
    if (this.closed || this.services.get(name) !== service) return;
    if (!this.subscribed(name)) {
      service.endpoints = undefined;
      this.publish(changes);
      return;
    }
    this.warnSkipped(name, skipped);
    // Streams that asked while it was pending wait for word that it landed, whatever its version.
    const wasPending = service.endpoints === undefined;
    const heldVersion = this.heldEndpointsVersion(name, service);
    this.setEndpoints(protos, name, service, assembled, localities.length === 0);
    if (wasPending || service.endpoints?.version !== heldVersion) changes.push({ kind: "endpoint", name });
    this.publish(changes);
  }

  private encode(protos: XdsProtos, kind: ResourceKind, name: string, value: Uint8Array): EncodedResource {
    return encodeResource(protos, this.typeOf(kind), name, value);
  }

  /** `value` as a resource whose version comes from `sha256Hex`, the SHA-256 of `value`. */
  private encodeVersioned(protos: XdsProtos, kind: ResourceKind, name: string, value: Uint8Array, sha256Hex: string): EncodedResource {
    return versionedResource(protos, this.typeOf(kind), name, value, sha256Hex);
  }

  private typeOf(kind: ResourceKind): ResourceType {
    const type = typeOf.get(kind);
    if (type === undefined) throw new Error(`no xDS resource type ${kind}`);
    return type;
  }

  /** Says once per instance and address why a passing instance is not served. */
  private warnSkipped(service: string, skipped: readonly SkippedInstance[]): void {
    for (const s of skipped) {
      const key = `${s.id}\u0000${s.address}`;
      if (this.warnedSkips.has(key) || this.warnedSkips.size > this.limits.skipWarningsMax) continue;
      this.warnedSkips.add(key);
      if (this.warnedSkips.size > this.limits.skipWarningsMax) {
        this.logger.warn({ limit: this.limits.skipWarningsMax }, "more passing instances are left out of xDS endpoints than are logged; no more are reported");
      } else {
        this.logger.warn({ service, instance: s.id, address: s.address }, `instance ${s.id} of ${service} is left out of its xDS endpoints: ${s.reason}`);
      }
    }
  }
}
