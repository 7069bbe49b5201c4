// Server listeners (gRFC A36): what an XdsServer bound to IP:PORT asks for, by the name its
// bootstrap's server_listener_resource_name_template makes. The listener belongs to the service
// whose instance is registered at that address and port; its RBAC filter follows that
// destination's intentions, and it asks for a client certificate when the instance speaks mTLS
// (mesh.ts). A name no instance is registered at is absent: the server waits, not serving, until
// one is, as gRPC does for a listener that does not exist. A server bound to every address
// (0.0.0.0 or ::) names no instance's address, so its listener belongs to the service its xDS
// node's `cluster` names, through that service's instance on the port: one name, then, is a
// listener per claimed service, and each is kept apart.
//
// Only names some stream asked for are built, and kept while a stream subscribes to them; a
// registry change re-resolves only the listeners it can have moved (those of the services it
// touched, those a touched instance is at, and those not yet resolved), an intention change
// re-encodes only its destinations' listeners. The registry's
// listener runs inside Raft's apply, so changes are noted there and rebuilt on a later turn.

import type { IntentionsView } from "../../intentions/intentions.js";
import { type Instance, speaksMtls } from "../../registry/model.js";
import type { RegistryState } from "../../registry/state.js";
import { type EncodedResource, encodeResource, type ResourceKey } from "./cache.js";
import { certificateProviderOf, encodeServerListener, type ListeningAddress, rbacRulesFor, serverListenerAddress } from "./mesh.js";
import type { XdsProtos } from "./protos.js";
import { LISTENER_TYPE, type ResourceType } from "./resources.js";
import type { ResourceModule } from "./service.js";
import type { StreamIdentity } from "./session.js";
import type { XdsStats } from "./stats.js";
import type { ResourceSource } from "./subscription.js";

/** Server listeners kept at once (each some stream subscribes to); past it a new one is absent until others go. */
const LISTENERS_KEPT_MAX = 100_000;
/** Encodings kept per listener, one per certificate provider name streams asked with; past it encoded per request. */
const PROVIDER_VARIANTS_MAX = 16;

/** 0.0.0.0 or ::, which a server binds to listen on every address. */
function isUnspecified(host: string): boolean {
  return host === "0.0.0.0" || host === "::";
}

export interface ServerListenerOptions {
  readonly state: RegistryState;
  /** Where the kept listeners and their updates are counted. */
  readonly stats?: XdsStats;
  readonly intentions: IntentionsView;
  readonly trustDomain: string;
}

interface ListenerEntry {
  readonly name: string;
  readonly address: ListeningAddress;
  /** For an unspecified address: the service the node's `cluster` names, whose instance on the port it is. */
  readonly claimedBy: string | undefined;
  /** The service whose instance is registered at the address; undefined while none is. */
  service: string | undefined;
  mtls: boolean;
  /** Encoded per certificate provider instance name that streams asked with. */
  readonly variants: Map<string, EncodedResource>;
}

export class ServerListeners implements ResourceModule {
  private readonly entries = new Map<string, ListenerEntry>();
  private readonly touchedServices = new Set<string>();
  private touchedDestinations: Set<string> | "all" = new Set();
  /** A restore replaced the registry: every listener is resolved again. */
  private registryReplaced = false;
  private scheduled = false;
  private closed = false;
  private protos: XdsProtos | undefined;
  private subscribed: (name: string) => boolean = () => false;
  private readonly listeners: ((changes: readonly ResourceKey[]) => void)[] = [];

  constructor(private readonly opts: ServerListenerOptions) {
    opts.state.onChange((_revision, services, _catalogChanged, delta) => {
      if (delta.kind === "restored") this.registryReplaced = true;
      for (const s of services) this.touchedServices.add(s);
      this.schedule();
    });
    opts.intentions.onChange((destinations) => {
      if (destinations === "all" || this.touchedDestinations === "all") this.touchedDestinations = "all";
      else for (const d of destinations) this.touchedDestinations.add(d);
      this.schedule();
    });
  }

  start(protos: XdsProtos, subscribed: (type: ResourceType, name: string) => boolean): void {
    this.protos = protos;
    this.subscribed = (name) => subscribed(LISTENER_TYPE, name);
  }

  onChange(listener: (changes: readonly ResourceKey[]) => void): void {
    this.listeners.push(listener);
  }

  close(): void {
    this.closed = true;
  }

  /** Listeners being kept, for tests and stats. */
  get size(): number {
    return this.entries.size;
  }

  sourceFor(type: ResourceType, stream: StreamIdentity, inner: ResourceSource<EncodedResource> | undefined): ResourceSource<EncodedResource> | undefined {
    if (type.kind !== "listener") return inner;
    const provider = certificateProviderOf(stream.client?.metadata);
    const visible = stream.visible ?? ((): boolean => true);
    const cluster = stream.client?.cluster ?? "";
    // A server listener is never among the names a wildcard covers: inner's names() stay as they are.
    return {
      get: (name) => (serverListenerAddress(name) === undefined ? inner?.get(name) : this.get(name, cluster, provider, visible)),
      names: () => inner?.names() ?? [],
      pending: (name) => serverListenerAddress(name) === undefined && (inner?.pending(name) ?? false),
    };
  }

  private get(name: string, cluster: string, provider: string, visible: (service: string) => boolean): EncodedResource | undefined {
    const protos = this.protos;
    if (protos === undefined || this.closed) return undefined;
    const address = serverListenerAddress(name);
    if (address === undefined) return undefined;
    const claimedBy = isUnspecified(address.host) ? cluster : undefined;
    const key = claimedBy === undefined ? name : `${name}\u0000${claimedBy}`;
    let entry = this.entries.get(key);
    if (entry === undefined) {
      if (this.entries.size >= LISTENERS_KEPT_MAX) return undefined;
      entry = { name, address, claimedBy, service: undefined, mtls: false, variants: new Map() };
      this.resolveEntry(entry, undefined);
      this.entries.set(key, entry);
      this.countKept();
    }
    if (entry.service === undefined || !visible(entry.service)) return undefined;
    let resource = entry.variants.get(provider);
    if (resource === undefined) {
      resource = this.encode(protos, name, entry, provider);
      if (entry.variants.size < PROVIDER_VARIANTS_MAX) entry.variants.set(provider, resource);
    }
    return resource;
  }

  /**
   * Sets which instance `entry` is: for a claimed listener, the claiming service's instance on the
   * port; otherwise the one registered at the address by resolve()'s rule, among every instance.
   * With `touched` (the instances of the services a change touched), only what the change can
   * have moved is looked at again: an unresolved listener can only have gained an instance there,
   * and a resolved one is resolved again in full only when its own service changed or a touched
   * instance is at its address, so the owner is always the one the rule picks, whatever the order
   * of the changes.
   */
  private resolveEntry(entry: ListenerEntry, touched: { readonly services: ReadonlySet<string>; readonly instances: readonly Instance[] } | undefined): void {
    let found: Instance | undefined;
    if (entry.claimedBy !== undefined) {
      if (touched !== undefined && !touched.services.has(entry.claimedBy)) return;
      found = this.first(this.opts.state.instancesOf(entry.claimedBy), (inst) => inst.port === entry.address.port);
    } else if (touched === undefined) {
      found = this.atAddress(entry.address, this.opts.state.allInstances());
    } else {
      const hit = this.atAddress(entry.address, touched.instances);
      if (entry.service === undefined) found = hit;
      else if (hit !== undefined || touched.services.has(entry.service)) found = this.atAddress(entry.address, this.opts.state.allInstances());
      else return;
    }
    entry.service = found?.service;
    entry.mtls = found !== undefined && speaksMtls(found);
  }

  private encode(protos: XdsProtos, name: string, entry: ListenerEntry, provider: string): EncodedResource {
    const service = entry.service ?? "";
    const { intentions, defaultAllow } = this.opts.intentions.forDestination(service);
    const bytes = encodeServerListener(protos, {
      name,
      address: entry.address,
      provider,
      trustDomain: this.opts.trustDomain,
      mtls: entry.mtls,
      rules: rbacRulesFor(service, intentions, defaultAllow),
    });
    return encodeResource(protos, LISTENER_TYPE, name, bytes);
  }

  /** The instance registered at `address`, the first in (service, id) order when several are. */
  private atAddress(address: ListeningAddress, instances: Iterable<Instance>): Instance | undefined {
    return this.first(instances, (inst) => (inst.address === "" ? inst.nodeAddress : inst.address) === address.host && inst.port === address.port);
  }

  /** The first of `instances` that `accept`s in (service, id) order, so every node chooses the same. */
  private first(instances: Iterable<Instance>, accept: (inst: Instance) => boolean): Instance | undefined {
    let best: Instance | undefined;
    for (const inst of instances) {
      if (!accept(inst)) continue;
      if (best === undefined || inst.service < best.service || (inst.service === best.service && inst.id < best.id)) best = inst;
    }
    return best;
  }

  private schedule(): void {
    if (this.scheduled || this.closed || this.protos === undefined) return;
    this.scheduled = true;
    setImmediate(() => this.rebuild());
  }

  private rebuild(): void {
    this.scheduled = false;
    const protos = this.protos;
    if (protos === undefined || this.closed) return;
    const services = new Set(this.touchedServices);
    const destinations = this.touchedDestinations;
    const replaced = this.registryReplaced;
    this.touchedServices.clear();
    this.touchedDestinations = new Set();
    this.registryReplaced = false;
    const touchedInstances: Instance[] = [];
    if (!replaced) for (const s of services) touchedInstances.push(...this.opts.state.instancesOf(s));
    const touched = replaced ? undefined : { services, instances: touchedInstances };
    const changes: ResourceKey[] = [];
    for (const [key, entry] of this.entries) {
      const name = entry.name;
      if (!this.subscribed(name)) {
        this.entries.delete(key);
        continue;
      }
      const before = { service: entry.service, mtls: entry.mtls };
      if (replaced || services.size > 0) this.resolveEntry(entry, touched);
      const affected = before.service !== entry.service || before.mtls !== entry.mtls
        || (entry.service !== undefined && (destinations === "all" || destinations.has(entry.service)));
      if (!affected) continue;
      const previous = new Map([...entry.variants].map(([provider, r]) => [provider, r.version]));
      entry.variants.clear();
      if (entry.service === undefined) {
        if (previous.size > 0) changes.push({ kind: "listener", name, namedOnly: true });
        continue;
      }
      let changed = previous.size === 0;
      for (const [provider, version] of previous) {
        const resource = this.encode(protos, name, entry, provider);
        entry.variants.set(provider, resource);
        if (resource.version !== version) changed = true;
      }
      if (changed) changes.push({ kind: "listener", name, namedOnly: true });
    }
    this.countKept();
    if (this.opts.stats !== undefined) this.opts.stats.serverListenerUpdates += changes.length;
    if (changes.length > 0) for (const l of this.listeners) l(changes);
  }

  private countKept(): void {
    if (this.opts.stats !== undefined) this.opts.stats.serverListeners = this.entries.size;
  }
}
