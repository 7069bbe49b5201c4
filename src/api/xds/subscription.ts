// What one xDS stream has asked for of one resource type, what the client holds, and what it
// must be sent next: the protocol's bookkeeping, shared by state-of-the-world and delta streams,
// with no I/O. The stream decodes requests into calls here and encodes what takeResponse()
// returns.
//
// Per resource name, as far as this stream knows:
//   held      the version the client last accepted (ACKed), or ABSENT: it was told there is none
//   rejected  a version the client NACKed; it is not sent again (the client would only refuse it
//             again) until the resource moves to another version
//   inFlight  what the one unacknowledged response carried
// A response goes out only when a covered resource's current version is neither held nor
// rejected, or a request asked for something new. At most one response per type is unacknowledged
// (the ACK or NACK opens the window again), so changes that arrive meanwhile are coalesced into
// `dirty`, bounded by the names subscribed: a slow client costs O(resources), never O(changes).

import type { Flushable } from "./fanout.js";
import type { ResourceType } from "./resources.js";

/** The version recorded for a resource the client was told does not exist. */
export const ABSENT = "";
/** The explicit wildcard subscription name. */
export const WILDCARD = "*";

export interface Versioned {
  readonly name: string;
  readonly version: string;
}

/** Where the current resources come from: the node's resource cache. */
export interface ResourceSource<R extends Versioned> {
  /** The current resource, or undefined when none exists under that name. */
  get(name: string): R | undefined;
  /** Every existing resource's name: what a wildcard subscription covers. */
  names(): Iterable<string>;
  /**
   * Whether a resource get() gave nothing for is still being built: it is then neither sent nor
   * reported absent, and the source's change notification marks it when it lands.
   */
  pending(name: string): boolean;
}

/**
 * How a response of this type is shaped. `full-state`: state-of-the-world LDS and CDS, where a
 * response lists every covered resource and one left out is deleted on the client.
 * `incremental`: state-of-the-world EDS and every delta type, where a response carries only the
 * resources that changed (and, in delta, the names removed).
 */
export type ResponseShape = "full-state" | "incremental";

export interface ResponsePlan<R> {
  readonly resources: readonly R[];
  /** Names the client must drop, or learn do not exist (delta only). */
  readonly removed: readonly string[];
}

/** Maintains, for the fan-out, which subscriptions cover which names. */
export interface SubscriberRegistry<S> {
  add(sub: S, name: string): void;
  remove(sub: S, name: string): void;
  setWildcard(sub: S, on: boolean): void;
}

/** A subscription would pass its bound of names. */
export class SubscriptionLimitError extends Error {
  constructor(typeUrl: string, limit: number) {
    super(`the stream subscribes to more than ${limit} resources of ${typeUrl}; subscribe with a wildcard instead, or spread the names over several streams`);
    this.name = "SubscriptionLimitError";
  }
}

export class TypeSubscription<R extends Versioned> {
  private wildcardOn = false;
  /** Whether a request ever named resources: after that an empty list is no longer a (legacy) wildcard. */
  private namedEver = false;
  /** A request asked for something the client must hear about even if nothing changed. */
  private mustRespond = false;
  private readonly explicit = new Set<string>();
  private readonly held = new Map<string, string>();
  private readonly rejected = new Map<string, string>();
  private readonly dirty = new Set<string>();
  private inFlight: Map<string, string> | undefined;
  /** The nonce of the latest response of this type on the stream; "" before the first. */
  nonce = "";

  constructor(
    /** The stream this subscription belongs to: flushed when a covered resource changes. */
    readonly owner: Flushable,
    readonly type: ResourceType,
    private readonly shape: ResponseShape,
    private readonly source: ResourceSource<R>,
    private readonly registry: SubscriberRegistry<TypeSubscription<R>>,
    private readonly namesMax: number,
  ) {}

  get wildcard(): boolean {
    return this.wildcardOn;
  }

  get awaitingAck(): boolean {
    return this.inFlight !== undefined;
  }

  /** Names subscribed explicitly (not through the wildcard). */
  get subscribedNames(): ReadonlySet<string> {
    return this.explicit;
  }

  // ---------------------------------------------------------------- requests

  /** State of the world: a request's resource_names are the whole subscription. */
  replaceNames(requested: readonly string[]): void {
    const wildcard = this.type.wildcard && (requested.includes(WILDCARD) || (requested.length === 0 && !this.namedEver));
    if (requested.length > 0) this.namedEver = true;
    const next = new Set(requested.filter((n) => n !== WILDCARD));
    if (next.size > this.namesMax) throw new SubscriptionLimitError(this.type.typeUrl, this.namesMax);
    for (const name of this.explicit) if (!next.has(name)) this.dropExplicit(name);
    for (const name of next) if (!this.explicit.has(name)) this.addExplicit(name, true);
    this.setWildcard(wildcard);
  }

  /**
   * Delta, the first request of the type on a stream: the versions the client already holds
   * (from its previous stream, maybe to another node). Those it holds at the current version are
   * not sent again.
   */
  initialVersions(versions: ReadonlyMap<string, string>): void {
    if (versions.size > this.namesMax) throw new SubscriptionLimitError(this.type.typeUrl, this.namesMax);
    for (const [name, version] of versions) {
      this.held.set(name, version);
      this.dirty.add(name);
    }
  }

  /**
   * Delta: names added to the subscription. Each is sent even if the client is believed to hold
   * it (it may have dropped it and asked again before its unsubscribe arrived), except those its
   * first request declared in initial_resource_versions. An empty first request of a wildcard
   * type is the legacy wildcard.
   */
  subscribe(names: readonly string[], first: boolean, declared: ReadonlyMap<string, string>): void {
    if (first && names.length === 0 && this.type.wildcard) this.setWildcard(true);
    for (const name of names) {
      if (name === WILDCARD) {
        if (this.type.wildcard) this.setWildcard(true);
        continue;
      }
      this.addExplicit(name, !declared.has(name));
    }
  }

  /** Delta: names removed from the subscription. */
  unsubscribe(names: readonly string[]): void {
    for (const name of names) {
      if (name === WILDCARD) this.setWildcard(false);
      else if (this.explicit.has(name)) this.dropExplicit(name);
    }
  }

  private addExplicit(name: string, forget: boolean): void {
    if (!this.explicit.has(name)) {
      if (this.explicit.size >= this.namesMax) throw new SubscriptionLimitError(this.type.typeUrl, this.namesMax);
      this.explicit.add(name);
      this.registry.add(this, name);
    }
    if (forget) {
      this.held.delete(name);
      this.rejected.delete(name);
    }
    this.dirty.add(name);
    this.mustRespond = true;
  }

  private dropExplicit(name: string): void {
    this.explicit.delete(name);
    this.registry.remove(this, name);
    this.held.delete(name);
    this.rejected.delete(name);
    // Still covered by the wildcard: the client is told again whether to keep it.
    if (this.wildcardOn) this.dirty.add(name);
    else this.dirty.delete(name);
  }

  private setWildcard(on: boolean): void {
    if (on === this.wildcardOn) return;
    this.wildcardOn = on;
    this.registry.setWildcard(this, on);
    if (on) {
      for (const name of this.source.names()) this.dirty.add(name);
      this.mustRespond = true;
      return;
    }
    // The client drops what only the wildcard gave it.
    for (const name of [...this.held.keys()]) {
      if (this.explicit.has(name)) continue;
      this.held.delete(name);
      this.rejected.delete(name);
      this.dirty.delete(name);
    }
  }

  // ---------------------------------------------------------------- changes and responses

  /** A covered resource has a new version, or appeared, or went away. Returns true when it was already waiting to be sent (the change is coalesced). */
  markChanged(name: string): boolean {
    if (this.dirty.has(name)) return true;
    this.dirty.add(name);
    return false;
  }

  /** Whether takeResponse() might have something to send. */
  get hasWork(): boolean {
    return this.inFlight === undefined && (this.dirty.size > 0 || this.mustRespond);
  }

  /**
   * The next response of this type, or undefined when there is nothing to send or one is still
   * unacknowledged. The caller sends it, with a new nonce it records in `nonce`.
   */
  takeResponse(): ResponsePlan<R> | undefined {
    if (!this.hasWork) return undefined;
    const changed: string[] = [];
    let pendingSkipped = false;
    for (const name of this.dirty) {
      const resource = this.source.get(name);
      if (resource === undefined && this.source.pending(name)) {
        pendingSkipped = true;
        continue;
      }
      const version = resource?.version ?? ABSENT;
      const covered = this.explicit.has(name) || (this.wildcardOn && resource !== undefined);
      if (!covered) {
        // A resource only the wildcard covered went away: the client must drop it.
        if (this.held.has(name) && this.held.get(name) !== ABSENT && this.rejected.get(name) !== ABSENT) changed.push(name);
        continue;
      }
      if (version === this.held.get(name) || version === this.rejected.get(name)) continue;
      changed.push(name);
    }
    this.dirty.clear();
    // A response that would hold nothing but the absence of what is still being built waits for it.
    if (changed.length === 0 && (!this.mustRespond || pendingSkipped)) return undefined;
    this.mustRespond = false;
    const inFlight = new Map<string, string>();
    this.inFlight = inFlight;
    if (this.shape === "full-state") {
      const resources: R[] = [];
      for (const name of this.explicit) {
        const resource = this.source.get(name);
        inFlight.set(name, resource?.version ?? ABSENT);
        if (resource !== undefined) resources.push(resource);
      }
      if (this.wildcardOn) {
        for (const name of this.source.names()) {
          if (this.explicit.has(name)) continue;
          const resource = this.source.get(name);
          if (resource === undefined) continue;
          inFlight.set(name, resource.version);
          resources.push(resource);
        }
      }
      return { resources, removed: [] };
    }
    const resources: R[] = [];
    const removed: string[] = [];
    for (const name of changed) {
      const resource = this.source.get(name);
      if (resource === undefined) removed.push(name);
      else resources.push(resource);
      inFlight.set(name, resource?.version ?? ABSENT);
    }
    return { resources, removed };
  }

  /** The client accepted the unacknowledged response. Returns false when there was none. */
  ack(): boolean {
    const sent = this.inFlight;
    if (sent === undefined) return false;
    this.inFlight = undefined;
    // A full-state response replaced everything the client held of this type.
    if (this.shape === "full-state") this.held.clear();
    for (const [name, version] of sent) {
      this.rejected.delete(name);
      if (version === ABSENT && !this.explicit.has(name)) this.held.delete(name);
      else this.held.set(name, version);
    }
    return true;
  }

  /**
   * The client rejected the unacknowledged response and keeps what it held. Every resource the
   * response changed is marked rejected at the version sent. Returns those names, or undefined
   * when no response was unacknowledged.
   */
  nack(): string[] | undefined {
    const sent = this.inFlight;
    if (sent === undefined) return undefined;
    this.inFlight = undefined;
    const names: string[] = [];
    for (const [name, version] of sent) {
      if (this.held.get(name) === version) continue;
      this.rejected.set(name, version);
      names.push(name);
    }
    return names;
  }

  /** The stream ended: leaves the fan-out's index. */
  close(): void {
    for (const name of this.explicit) this.registry.remove(this, name);
    if (this.wildcardOn) this.registry.setWildcard(this, false);
    this.explicit.clear();
    this.wildcardOn = false;
  }
}
