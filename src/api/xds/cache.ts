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
// tells the streams which resources changed.

import { createHash } from "node:crypto";
import type { Logger } from "pino";
import type { RegistryState } from "../../registry/state.js";
import { frameField, type XdsProtos } from "./protos.js";
import { encodeCluster, encodeListener, encodeLoadAssignment, passingEndpoints, RESOURCE_TYPES, type ResourceKind, type ResourceType, type SkippedInstance } from "./resources.js";

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
    private readonly any: { readonly type_url: string; readonly value: Uint8Array },
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
}

export interface ResourceCacheLimits {
  /** Services rebuilt in one turn of the event loop; the rest wait for the next. */
  readonly rebuildSliceServices: number;
  /** Empty assignments kept for names no service has (EDS of an unknown service); past it the oldest is dropped and re-encoded when asked again. */
  readonly absentEndpointsCachedMax: number;
  /** Distinct skipped instance addresses warned about; past it they are not logged again. */
  readonly skipWarningsMax: number;
}

interface ServiceResources {
  readonly listener: EncodedResource;
  readonly cluster: EncodedResource;
  endpoints: EncodedResource;
  /** No passing endpoint: the same bytes, and so the same version, as the assignment of an unknown name. */
  endpointsEmpty: boolean;
}

const typeOf = new Map(RESOURCE_TYPES.map((t) => [t.kind, t]));

export class ResourceCache {
  private readonly services = new Map<string, ServiceResources>();
  private readonly absentEndpoints = new Map<string, EncodedResource>();
  private readonly dirty = new Set<string>();
  private rebuildAll = false;
  private rebuildScheduled = false;
  private protos: XdsProtos | undefined;
  private closed = false;
  private readonly listeners: ((changes: readonly ResourceKey[]) => void)[] = [];
  private readonly warnedSkips = new Set<string>();
  private builtRevisionValue = 0;
  private resolveBuilt: (() => void) | undefined;
  /** Resolves once the first full build has completed, so lookups reflect the state. */
  readonly built: Promise<void> = new Promise((resolve) => (this.resolveBuilt = resolve));

  constructor(
    private readonly state: RegistryState,
    private readonly limits: ResourceCacheLimits,
    private readonly logger: Logger,
  ) {
    state.onChange((_revision, services, _catalogChanged, delta) => {
      if (this.closed) return;
      // A restored snapshot may have dropped services no listener was told about.
      if (delta.kind === "restored") this.rebuildAll = true;
      else for (const s of services) this.dirty.add(s);
      this.scheduleRebuild();
    });
  }

  /** Called once the protos are loaded: builds every service, then keeps up with changes. */
  start(protos: XdsProtos): void {
    this.protos = protos;
    this.rebuildAll = true;
    this.scheduleRebuild();
  }

  close(): void {
    this.closed = true;
  }

  /** Called with the resources each rebuild slice changed. */
  onChange(listener: (changes: readonly ResourceKey[]) => void): void {
    this.listeners.push(listener);
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
  get(kind: ResourceKind, name: string): EncodedResource | undefined {
    const service = this.services.get(name);
    switch (kind) {
      case "listener":
        return service?.listener;
      case "cluster":
        return service?.cluster;
      case "endpoint":
        return service?.endpoints ?? this.absentEndpointsOf(name);
    }
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
      for (const name of this.services.keys()) this.dirty.add(name);
      for (const name of this.state.services().keys()) this.dirty.add(name);
    }
    const changes: ResourceKey[] = [];
    let done = 0;
    for (const name of this.dirty) {
      if (done++ >= this.limits.rebuildSliceServices) break;
      this.dirty.delete(name);
      this.rebuildService(protos, name, changes);
    }
    this.builtRevisionValue = this.state.revision;
    if (this.dirty.size > 0) this.scheduleRebuild();
    else this.resolveBuilt?.();
    if (changes.length > 0) for (const l of this.listeners) l(changes);
  }

  private rebuildService(protos: XdsProtos, name: string, changes: ResourceKey[]): void {
    const instances = this.state.instancesOf(name);
    const previous = this.services.get(name);
    if (instances.length === 0) {
      if (previous === undefined) return;
      this.services.delete(name);
      changes.push({ kind: "listener", name }, { kind: "cluster", name });
      // An empty assignment encodes the same with or without the service, so is no change.
      if (!previous.endpointsEmpty) changes.push({ kind: "endpoint", name });
      return;
    }
    const { localities, skipped } = passingEndpoints(instances);
    this.warnSkipped(name, skipped);
    const endpoints = this.encode(protos, "endpoint", name, encodeLoadAssignment(protos, name, localities));
    const endpointsEmpty = localities.length === 0;
    if (previous === undefined) {
      // A listener and a cluster depend on the name alone: built once, while the service exists.
      this.services.set(name, {
        listener: this.encode(protos, "listener", name, encodeListener(protos, name)),
        cluster: this.encode(protos, "cluster", name, encodeCluster(protos, name)),
        endpoints,
        endpointsEmpty,
      });
      this.absentEndpoints.delete(name);
      changes.push({ kind: "listener", name }, { kind: "cluster", name });
      if (!endpointsEmpty) changes.push({ kind: "endpoint", name });
      return;
    }
    if (previous.endpoints.version === endpoints.version) return;
    previous.endpoints = endpoints;
    previous.endpointsEmpty = endpointsEmpty;
    changes.push({ kind: "endpoint", name });
  }

  private encode(protos: XdsProtos, kind: ResourceKind, name: string, value: Uint8Array): EncodedResource {
    const type = typeOf.get(kind);
    if (type === undefined) throw new Error(`no xDS resource type ${kind}`);
    const version = createHash("sha256").update(value).digest("hex").slice(0, VERSION_HEX_DIGITS);
    return new EncodedResource(protos, type, name, version, { type_url: type.typeUrl, value });
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
