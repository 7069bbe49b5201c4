// From "these resources changed" to responses on every stream that covers them. Marking is cheap
// (a set insert per covered subscription); building and writing the responses is the cost, so
// streams are flushed a slice at a time, yielding to the event loop between slices: one change
// to thousands of streams never holds up requests, Raft or other streams for long.

import type { ResourceKey } from "./cache.js";
import type { ResourceKind } from "./resources.js";

/** Anything the scheduler can ask to send what it has pending. */
export interface Flushable {
  flush(): void;
}

/** A subscription as the index sees it: which stream it belongs to, and how to mark a name changed. */
export interface IndexedSubscription {
  readonly owner: Flushable;
  /** Returns true when the name was already waiting to be sent. */
  markChanged(name: string): boolean;
  readonly subscribedNames: ReadonlySet<string>;
}

/** Which subscriptions cover which names, per resource kind; wildcard subscriptions cover every name of their kind. */
export class SubscriberIndex<S extends IndexedSubscription> {
  private readonly byName = new Map<ResourceKind, Map<string, Set<S>>>();
  private readonly wildcards = new Map<ResourceKind, Set<S>>();

  constructor(private readonly kindOf: (sub: S) => ResourceKind) {}

  add(sub: S, name: string): void {
    const kind = this.kindOf(sub);
    let names = this.byName.get(kind);
    if (names === undefined) this.byName.set(kind, (names = new Map<string, Set<S>>()));
    let subs = names.get(name);
    if (subs === undefined) names.set(name, (subs = new Set<S>()));
    subs.add(sub);
  }

  remove(sub: S, name: string): void {
    const names = this.byName.get(this.kindOf(sub));
    const subs = names?.get(name);
    if (subs === undefined) return;
    subs.delete(sub);
    if (subs.size === 0) names?.delete(name);
  }

  setWildcard(sub: S, on: boolean): void {
    const kind = this.kindOf(sub);
    let subs = this.wildcards.get(kind);
    if (subs === undefined) this.wildcards.set(kind, (subs = new Set<S>()));
    if (on) subs.add(sub);
    else subs.delete(sub);
  }

  /** Whether some subscription names `name` explicitly. */
  hasNamed(kind: ResourceKind, name: string): boolean {
    return this.byName.get(kind)?.has(name) ?? false;
  }

  /** Each subscription covering `name`, once; with `namedOnly`, only those that name it. */
  *subscribersOf(kind: ResourceKind, name: string, namedOnly = false): Generator<S> {
    const named = this.byName.get(kind)?.get(name);
    if (named !== undefined) yield* named;
    if (namedOnly) return;
    for (const sub of this.wildcards.get(kind) ?? []) if (!sub.subscribedNames.has(name)) yield sub;
  }

  /** Subscriptions indexed under a name, for tests and stats. */
  get namedCount(): number {
    let n = 0;
    for (const names of this.byName.values()) for (const subs of names.values()) n += subs.size;
    return n;
  }
}

/**
 * Streams with something to send, flushed `sliceStreams` at a time per turn of the event loop.
 * Each stream is queued at most once however many changes it gathers, so the queue is bounded by
 * the number of streams.
 */
export class PushScheduler {
  private readonly queue = new Set<Flushable>();
  private scheduled = false;

  constructor(private readonly sliceStreams: number) {}

  enqueue(stream: Flushable): void {
    this.queue.add(stream);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.run);
  }

  /** A closed stream leaves the queue. */
  delete(stream: Flushable): void {
    this.queue.delete(stream);
  }

  get queued(): number {
    return this.queue.size;
  }

  private readonly run = (): void => {
    this.scheduled = false;
    let flushed = 0;
    for (const stream of this.queue) {
      if (flushed++ >= this.sliceStreams) break;
      this.queue.delete(stream);
      stream.flush();
    }
    if (this.queue.size > 0 && !this.scheduled) {
      this.scheduled = true;
      setImmediate(this.run);
    }
  };
}

/** Marks each changed resource on every subscription covering it and queues their streams. Returns how many marks were coalesced into an unsent change. */
export function fanOut<S extends IndexedSubscription>(index: SubscriberIndex<S>, scheduler: PushScheduler, changes: readonly ResourceKey[]): number {
  let coalesced = 0;
  for (const { kind, name, namedOnly } of changes) {
    for (const sub of index.subscribersOf(kind, name, namedOnly)) {
      if (sub.markChanged(name)) coalesced++;
      scheduler.enqueue(sub.owner);
    }
  }
  return coalesced;
}
