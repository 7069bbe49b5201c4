// Linearizable reads by ReadIndex (Raft thesis §6.4).
//
// The leader records its commit index when a read arrives, then confirms with a heartbeat round
// that a majority still follows it. Only then is the read safe: no other leader can have
// committed anything newer at that moment. A later round that reaches a majority also confirms
// every earlier pending read, because it started after them.

import { type NodeId, invariant } from "./types.js";

export interface PendingRead {
  readonly context: string;
  readonly index: number;
  /** Who asked: this node, or a follower that forwarded its client's read. */
  readonly requester: NodeId;
  readonly acks: Set<NodeId>;
}

export class ReadIndexTracker {
  private readonly byContext = new Map<string, PendingRead>();
  private queue: PendingRead[] = [];

  constructor(readonly pendingMax: number) {}

  get size(): number {
    return this.queue.length;
  }

  has(context: string): boolean {
    return this.byContext.has(context);
  }

  add(read: PendingRead): void {
    invariant(!this.byContext.has(read.context), () => `a second pending read with context ${read.context}`);
    this.byContext.set(read.context, read);
    this.queue.push(read);
  }

  /** The context to piggyback on heartbeats: the newest pending read, or "" when none. */
  lastContext(): string {
    return this.queue.length === 0 ? "" : (this.queue[this.queue.length - 1]).context;
  }

  /** Records `from`'s acknowledgement of a round; returns the round, or undefined if unknown. */
  ack(from: NodeId, context: string): PendingRead | undefined {
    const read = this.byContext.get(context);
    if (read !== undefined) read.acks.add(from);
    return read;
  }

  /** Removes and returns every read up to and including `context`, oldest first. */
  releaseThrough(context: string): PendingRead[] {
    const at = this.queue.findIndex((r) => r.context === context);
    if (at < 0) return [];
    const released = this.queue.slice(0, at + 1);
    this.queue = this.queue.slice(at + 1);
    for (const r of released) this.byContext.delete(r.context);
    return released;
  }

  clear(): PendingRead[] {
    const dropped = this.queue;
    this.queue = [];
    this.byContext.clear();
    return dropped;
  }
}
