// envoy.service.discovery.v3.AggregatedDiscoveryService on the public gRPC port: state of the
// world (StreamAggregatedResources) and delta (DeltaAggregatedResources), served from this
// node's applied registry state. See docs/xds.md.
//
// The methods are registered with pass-through serializers: requests are decoded here, strictly,
// and responses are assembled from resources encoded once per version in the cache, so the bytes
// go out as they are, never re-encoded per stream.

import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { ServiceViews } from "../../registry/service_views.js";
import type { RegistryState } from "../../registry/state.js";
import { errorMessage } from "../../common/errors.js";
import { AdmissionGate, type AdmissionClock, type AdmissionLimits, realAdmissionClock } from "./admission.js";
import { type EncodedResource, type ResourceKey, ResourceCache, type ResourceCacheLimits } from "./cache.js";
import { DeltaSession } from "./delta.js";
import { fanOut, PushScheduler, SubscriberIndex } from "./fanout.js";
import { loadXdsProtos, type XdsProtos } from "./protos.js";
import type { ResourceType } from "./resources.js";
import { registrySources, type ResourceSources, type StreamIdentity, type Subscription, type XdsCall, type XdsHub, type XdsLimits, type XdsSession } from "./session.js";
import type { ResourceSource } from "./subscription.js";
import { ServerListeners } from "./server_listeners.js";
import { SotwSession } from "./sotw.js";
import type { IntentionsView } from "../../intentions/intentions.js";
import { XdsStats } from "./stats.js";
import { type GuardedRegistrar, onCallTokenChange, permissionsOfCall } from "../acl/grpc.js";
import { presentedGrpcToken } from "../../acl/presented.js";

export const ADS_SERVICE_NAME = "envoy.service.discovery.v3.AggregatedDiscoveryService";
/** SDS on its own (Envoy's sds_config with an api_config_source): the same streams, serving secrets only. */
export const SDS_SERVICE_NAME = "envoy.service.secret.v3.SecretDiscoveryService";

const passThrough = (bytes: Buffer): Buffer => bytes;

/** Refused streams per warning logged. */
const REFUSALS_PER_LOG_LINE = 1000;

function bidiMethod(name: string, service = ADS_SERVICE_NAME): grpc.MethodDefinition<Buffer, Buffer> {
  return {
    path: `/${service}/${name}`,
    requestStream: true,
    responseStream: true,
    requestSerialize: passThrough,
    requestDeserialize: passThrough,
    responseSerialize: passThrough,
    responseDeserialize: passThrough,
  };
}

/** The service as grpc-js sees it; also what a raw test or bench client calls. */
export const adsServiceDefinition = {
  StreamAggregatedResources: bidiMethod("StreamAggregatedResources"),
  DeltaAggregatedResources: bidiMethod("DeltaAggregatedResources"),
} satisfies grpc.ServiceDefinition;

/** SDS's streaming methods (its unary FetchSecrets is not served). */
export const sdsServiceDefinition = {
  StreamSecrets: bidiMethod("StreamSecrets", SDS_SERVICE_NAME),
  DeltaSecrets: bidiMethod("DeltaSecrets", SDS_SERVICE_NAME),
} satisfies grpc.ServiceDefinition;

export interface XdsServerLimits extends XdsLimits, ResourceCacheLimits {
  readonly admission: AdmissionLimits;
  /** Streams flushed per turn of the event loop when a change fans out. */
  readonly fanoutSliceStreams: number;
}

/**
 * The defaults. Admission: a node answers a stream's first requests from encoded resources in
 * well under a millisecond, so 500 new streams a second is far below what it can take, while a
 * fleet of 10,000 reconnecting at once is spread over 20 s instead of landing in one instant.
 * A waiting stream waits at most waitingMax / rate = 10 s, under the 15 s a gRPC client gives a
 * resource before it decides it does not exist.
 */
export const xdsServerDefaults: XdsServerLimits = {
  admission: { ratePerSecond: 500, burst: 200, waitingMax: 5000 },
  fanoutSliceStreams: 128,
  subscribedNamesMax: 10_000,
  nackDetailLoggedMax: 2048,
  nackNamesLoggedMax: 20,
  rebuildSliceServices: 256,
  absentEndpointsCachedMax: 1024,
  skipWarningsMax: 1000,
  rebuildCostHoldFactor: 4,
};

/**
 * Resources served beside the registry's by a module of their own: server listeners (mesh.ts),
 * SDS secrets. Each sees every stream's sources in turn and may serve some names itself.
 */
export interface ResourceModule {
  /** Called once the protos are loaded, before the first stream starts; `subscribed` says whether some stream names a resource. */
  start(protos: XdsProtos, subscribed: (type: ResourceType, name: string) => boolean): void;
  /**
   * `stream`'s source of `type`: `inner` (the registry's, or the previous module's; undefined
   * for a type neither serves) as it is, or a source that serves this module's names and asks
   * `inner` for the rest.
   */
  sourceFor(type: ResourceType, stream: StreamIdentity, inner: ResourceSource<EncodedResource> | undefined): ResourceSource<EncodedResource> | undefined;
  /** Called with the resources of this module that changed. */
  onChange(listener: (changes: readonly ResourceKey[]) => void): void;
  close(): void;
}

export interface XdsServiceOptions {
  readonly state: RegistryState;
  /** The registry's service views, which large services' endpoints are built from in slices; the cache keeps its own without them. */
  readonly views?: ServiceViews;
  readonly logger: Logger;
  /** Who answers, in each response's control_plane.identifier (the node id). */
  readonly controlPlaneId: string;
  readonly limits?: Partial<Omit<XdsServerLimits, "admission">> & { readonly admission?: Partial<AdmissionLimits> };
  /** For tests of admission: time and timers. */
  readonly admissionClock?: AdmissionClock;
  /** Resources beyond the registry's, in the order they wrap its sources. */
  readonly modules?: readonly ResourceModule[];
  /** The mesh: server listeners with RBAC from intentions, and mTLS clusters. Without it, neither is served. */
  readonly mesh?: { readonly trustDomain: string; readonly intentions: IntentionsView };
}

export interface XdsService {
  readonly stats: XdsStats;
  /**
   * Loads the protos and builds every service's resources now, rather than when the first stream
   * arrives; resolves once done. A node that never serves xDS never does this work.
   */
  warmUp(): Promise<void>;
  /** Ends every stream (their clients move to another node) and stops the fan-out. */
  close(): void;
}

/** Options resolved once, with the relations between them checked. */
export function resolveXdsLimits(given: XdsServiceOptions["limits"] = {}): XdsServerLimits {
  const limits: XdsServerLimits = { ...xdsServerDefaults, ...given, admission: { ...xdsServerDefaults.admission, ...given.admission } };
  for (const key of ["fanoutSliceStreams", "subscribedNamesMax", "nackDetailLoggedMax", "nackNamesLoggedMax", "rebuildSliceServices", "absentEndpointsCachedMax", "skipWarningsMax"] as const) {
    const v = limits[key];
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`xDS limit ${key} = ${v}: give a whole number of at least 1`);
  }
  if (!(limits.rebuildCostHoldFactor >= 0)) throw new RangeError(`xDS limit rebuildCostHoldFactor = ${limits.rebuildCostHoldFactor}: give a number of at least 0 (0 never holds a rebuild back)`);
  return limits;
}

export function addXdsService(server: GuardedRegistrar, options: XdsServiceOptions): XdsService {
  const limits = resolveXdsLimits(options.limits);
  const logger = options.logger;
  const stats = new XdsStats();
  const index = new SubscriberIndex<Subscription>((sub) => sub.type.kind);
  const cache = new ResourceCache(options.state, limits, logger, (service) => index.hasNamed("endpoint", service), options.views ?? new ServiceViews(options.state), options.mesh?.trustDomain);
  const gate = new AdmissionGate(limits.admission, options.admissionClock ?? realAdmissionClock);
  const scheduler = new PushScheduler(limits.fanoutSliceStreams);
  const sessions = new Set<XdsSession>();
  /** Streams not yet started (waiting for admission or for the protos): ended too when the node stops. */
  const unstarted = new Set<XdsCall>();
  let closed = false;
  const mesh = options.mesh;
  const modules = [
    ...(mesh === undefined ? [] : [new ServerListeners({ state: options.state, stats, intentions: mesh.intentions, trustDomain: mesh.trustDomain })]),
    ...(options.modules ?? []),
  ];
  const onChanges = (changes: readonly ResourceKey[]): void => {
    stats.coalesced += fanOut(index, scheduler, changes);
  };
  cache.onChange(onChanges);
  for (const m of modules) m.onChange(onChanges);
  const registry = registrySources(cache);
  const sources: ResourceSources = {
    sourceFor: (type, stream) => modules.reduce((inner, m) => m.sourceFor(type, stream, inner), registry.sourceFor(type, stream)),
  };

  // Loading Envoy's protos parses about 70 files (a few hundred milliseconds of CPU), so it waits
  // for the first stream (or warmUp): a node nobody asks for xDS spends nothing on it.
  let hub: Promise<XdsHub> | undefined;
  const activate = (): Promise<XdsHub> => {
    if (hub !== undefined) return hub;
    const startedMs = Date.now();
    hub = loadXdsProtos().then(async (protos): Promise<XdsHub> => {
      cache.start(protos);
      for (const m of modules) m.start(protos, (type, name) => index.hasNamed(type.kind, name));
      await cache.built;
      logger.info({ durationMs: Date.now() - startedMs, revision: cache.builtRevision }, "xDS ready: Envoy's protos loaded and every service's listener and cluster built");
      return { protos, cache, index, scheduler, stats, logger, limits, controlPlaneId: options.controlPlaneId, sources };
    });
    hub.catch((err: unknown) => logger.error({ err: errorMessage(err) }, "xDS cannot start: Envoy's protos did not load; xDS streams fail with UNAVAILABLE"));
    return hub;
  };

  // An SDS stream is an ADS stream that is served secrets and nothing else.
  const secretSources: ResourceSources = { sourceFor: (type, stream) => (type.kind === "secret" ? sources.sourceFor(type, stream) : undefined) };

  const open = (call: XdsCall, protocol: "sotw" | "delta", streamSources: ResourceSources = sources): void => {
    if (closed) {
      call.emit("error", { code: grpc.status.UNAVAILABLE, details: "this Cairn node is shutting down; connect to another node" });
      return;
    }
    let session: XdsSession | undefined;
    let ended = false;
    const end = (): void => {
      if (ended) return;
      ended = true;
      unstarted.delete(call);
      ticket?.cancel();
      stats.streamsWaiting = gate.waitingCount;
      session?.close();
    };
    call.on("cancelled", end);
    call.on("error", end);
    call.on("close", end);
    const begin = (hub: XdsHub): void => {
      if (ended || closed) return;
      unstarted.delete(call);
      const onClose = (s: XdsSession): void => {
        sessions.delete(s);
        stats.streamsActive = sessions.size;
      };
      // A token that may not read every service sees the others as absent: never their listeners, clusters or endpoints.
      const permissions = permissionsOfCall(call);
      const presentedToken = presentedGrpcToken(call.metadata);
      const streamHub: XdsHub = permissions.readsAll("service")
        ? { ...hub, sources: streamSources, permissions, presentedToken }
        : { ...hub, sources: streamSources, permissions, presentedToken, visible: (service) => permissions.allows("service", "read", service) };
      session = protocol === "sotw" ? new SotwSession(streamHub, call, onClose) : new DeltaSession(streamHub, call, onClose);
      const opened = session;
      // Resources already sent were chosen by the old permissions: the client reconnects (as xDS
      // clients do on UNAVAILABLE) and gets the view its token now allows.
      onCallTokenChange(call, () => opened.fail(grpc.status.UNAVAILABLE, "this stream's ACL token changed; reconnect to get the resources it now allows"));
      sessions.add(session);
      stats.streamsActive = sessions.size;
      session.start();
    };
    const ticket = gate.enter(() => {
      stats.streamsWaiting = gate.waitingCount;
      activate().then(begin, (err: unknown) => {
        if (!ended) call.emit("error", { code: grpc.status.UNAVAILABLE, details: `xDS is not available on this node: ${errorMessage(err)}` });
      });
    });
    if (ticket === undefined) {
      stats.admissionRefused++;
      // A reconnect storm refuses thousands: the first, then one line per thousand.
      if (stats.admissionRefused % REFUSALS_PER_LOG_LINE === 1) {
        logger.warn({ peer: call.getPeer(), waiting: gate.waitingCount, refusedSoFar: stats.admissionRefused }, "xDS stream refused: too many streams are waiting for admission");
      }
      call.emit("error", {
        code: grpc.status.RESOURCE_EXHAUSTED,
        details: `this Cairn node already has ${limits.admission.waitingMax} xDS streams waiting to be admitted (at ${limits.admission.ratePerSecond} a second); retry with backoff or connect to another node`,
      });
      return;
    }
    unstarted.add(call);
    if (ticket.waited) stats.admissionWaits++;
    stats.streamsWaiting = gate.waitingCount;
  };

  const xdsRule = { filtered: "service" } as const;
  server.addService(adsServiceDefinition, {
    StreamAggregatedResources: (call: XdsCall) => open(call, "sotw"),
    DeltaAggregatedResources: (call: XdsCall) => open(call, "delta"),
  }, { StreamAggregatedResources: xdsRule, DeltaAggregatedResources: xdsRule });
  // The same rule as ADS: the stream is let in, and each secret decides who may have it (secrets.ts).
  server.addService(sdsServiceDefinition, {
    StreamSecrets: (call: XdsCall) => open(call, "sotw", secretSources),
    DeltaSecrets: (call: XdsCall) => open(call, "delta", secretSources),
  }, { StreamSecrets: xdsRule, DeltaSecrets: xdsRule });

  return {
    stats,
    warmUp: () => activate().then(() => undefined),
    close: () => {
      if (closed) return;
      closed = true;
      cache.close();
      for (const m of modules) m.close();
      gate.close();
      stats.streamsWaiting = 0;
      const details = "this Cairn node is shutting down; connect to another node";
      for (const s of [...sessions]) s.fail(grpc.status.UNAVAILABLE, details);
      for (const call of [...unstarted]) call.emit("error", { code: grpc.status.UNAVAILABLE, details });
      unstarted.clear();
    },
  };
}
