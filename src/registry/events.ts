// The registry's retained event window: the instance changes of the most recent revisions, in
// apply order, which watch streams resume from. It is this node's own record, built by its own
// apply, so every node holds the same events under the same revisions (revisions are Raft
// indexes), whichever node a watcher resumes on.
//
//   floor <= (revision of every retained event) <= head
//
// Every change with a revision in (floor, head] is retained. A watcher that resumes from a
// revision below the floor has missed changes the window no longer holds: it must be given the
// full current state (a reset), never a silent gap.

import type { InstanceChange } from "./state.js";

export interface RegistryEvent {
  readonly revision: number;
  readonly change: InstanceChange;
}

/** The events of (after, upTo], and the same events by service, computed once per range. */
export interface EventRange {
  readonly after: number;
  readonly upTo: number;
  readonly events: readonly RegistryEvent[];
  readonly byService: ReadonlyMap<string, readonly RegistryEvent[]>;
}

export const eventWindowDefaults = {
  /**
   * Events retained. One event is about a hundred bytes of its own, and keeps the instance it
   * carries alive (a few hundred more); at 5,000 changes a second this covers ten seconds, longer
   * than a watcher takes to fail over to another node.
   */
  eventsMax: 50_000,
} as const;

/** Ranges remembered: watchers mostly sit at one or two cursors, so a few cover a fan-out. */
const RANGES_REMEMBERED = 4;

export class EventWindow {
  private events: RegistryEvent[] = [];
  /** events[0..start) have been dropped; the array is compacted once that is half of it. */
  private start = 0;
  private floorValue = 0;
  private headValue = 0;
  private epochValue = 0;
  private ranges: EventRange[] = [];

  constructor(readonly eventsMax: number = eventWindowDefaults.eventsMax) {
    if (!Number.isInteger(eventsMax) || eventsMax < 1) throw new RangeError(`eventsMax ${eventsMax} must be a whole number >= 1`);
  }

  /** Every change with a revision above this one is retained. */
  get floor(): number {
    return this.floorValue;
  }

  /** The last revision appended (or restored to). */
  get head(): number {
    return this.headValue;
  }

  /**
   * Moves on every restart. A watcher's position from an earlier epoch means nothing now (the
   * state it followed was replaced, perhaps by an older one), so it must be reset.
   */
  get epoch(): number {
    return this.epochValue;
  }

  get size(): number {
    return this.events.length - this.start;
  }

  /** Records one revision's changes. Revisions only move forward. */
  append(revision: number, changes: readonly InstanceChange[]): void {
    if (revision <= this.headValue) throw new Error(`event window: revision ${revision} is not after the head ${this.headValue}`);
    for (const change of changes) this.events.push({ revision, change });
    this.headValue = revision;
    this.ranges = [];
    let excess = this.size - this.eventsMax;
    while (excess > 0) {
      // Whole revisions leave together, so a revision is either fully retained or not at all.
      const dropped = this.events[this.start].revision;
      while (this.start < this.events.length && this.events[this.start].revision === dropped) {
        this.start++;
        excess--;
      }
      this.floorValue = dropped;
    }
    if (this.start > 1024 && this.start * 2 > this.events.length) {
      this.events = this.events.slice(this.start);
      this.start = 0;
    }
  }

  /** The state was replaced at `revision` (a snapshot): nothing before it can be replayed. */
  restart(revision: number): void {
    this.events = [];
    this.start = 0;
    this.floorValue = revision;
    this.headValue = revision;
    this.epochValue++;
    this.ranges = [];
  }

  /**
   * The events with revisions in (after, upTo], or undefined when some of them have left the
   * window (after < floor): the caller must reset its watcher instead.
   */
  range(after: number, upTo: number = this.headValue): EventRange | undefined {
    if (after < this.floorValue) return undefined;
    for (const r of this.ranges) if (r.after === after && r.upTo === upTo) return r;
    const events: RegistryEvent[] = [];
    const byService = new Map<string, RegistryEvent[]>();
    for (let i = this.firstAfter(after); i < this.events.length; i++) {
      const e = this.events[i];
      if (e.revision > upTo) break;
      events.push(e);
      const service = serviceOf(e);
      let list = byService.get(service);
      if (list === undefined) byService.set(service, (list = []));
      list.push(e);
    }
    const range: EventRange = { after, upTo, events, byService };
    this.ranges.unshift(range);
    if (this.ranges.length > RANGES_REMEMBERED) this.ranges.pop();
    return range;
  }

  /** The position of the first retained event with a revision above `after`: a binary search. */
  private firstAfter(after: number): number {
    let lo = this.start;
    let hi = this.events.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.events[mid].revision <= after) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

export function serviceOf(e: RegistryEvent): string {
  return e.change.kind === "delete" ? e.change.service : e.change.instance.service;
}

export function instanceIdOf(e: RegistryEvent): string {
  return e.change.kind === "delete" ? e.change.id : e.change.instance.id;
}
