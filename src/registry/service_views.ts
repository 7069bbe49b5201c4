// Each service's instances in answer order (by node, then ID), kept at the service's latest
// index and shared by every reader: Consul's health and catalog reads, Cairn's own, and the
// blocking queries among them. Sorting 100,000 instances takes 50-150 ms in one call, and even
// listing them from the state takes 20-30 ms; here neither happens in one piece.
//
// A view is a sorted base plus the changes made since (from the state's change feed, recorded
// in O(1) inside apply). A read captures the pending changes and merges them into the base in
// slices; so does a background compaction once they grow past a bound, so they never hold more
// than about half the service. A snapshot restore (and start-up) rebuilds every view from a copy
// of the state's instances taken at that moment, with the changes made after it pending on top.
//
// Invariant, per service, at every capture: base + the pending changes captured == the state's
// instances of the service at the capture's index.

import { SliceClock, filterInSlices, mergeInSlices, sortInSlices, sliceScheduler } from "../common/slices.js";
import type { Instance } from "./model.js";
import type { RegistryDelta, RegistryState } from "./state.js";

/** Pending changes a view holds before they are merged in the background, at least... */
export const PENDING_MERGE_MIN = 1024;
/** ...or this fraction of the service's size, if that is more: merging is linear in the size. */
const PENDING_MERGE_FRACTION = 0.5;

/** The order every list of a service's instances is answered in: by node, then by ID (Consul's). */
export function compareInstances(a: Instance, b: Instance): number {
  if (a.node !== b.node) return a.node < b.node ? -1 : 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** A service as the catalog lists it: its name, the union of its instances' tags, and how many there are. */
export interface CatalogService {
  readonly name: string;
  readonly tags: readonly string[];
  readonly instances: number;
}

export interface CatalogSnapshot {
  /** The catalog's index when the snapshot was taken. */
  readonly index: number;
  /** Every service with an instance, by name. */
  readonly services: Promise<readonly CatalogService[]>;
}

export interface ServiceSnapshot {
  /** The service's index when the snapshot was taken: what the instances are at. */
  readonly index: number;
  /** Its instances in compareInstances order. */
  readonly instances: Promise<readonly Instance[]>;
}

interface View {
  /** The instances as of the last capture, sorted: what `pending` applies to. */
  latest: Promise<readonly Instance[]>;
  /** Changes since the last capture, by instance ID: the instance now, or null once it is gone. */
  pending: Map<string, Instance | null>;
  /** Instances in the last merged base: sizes the compaction bound. */
  size: number;
  compactionScheduled: boolean;
}

interface Scan {
  readonly done: Promise<void>;
  readonly found: Map<string, Instance[]>;
}

const NO_INSTANCES: Promise<readonly Instance[]> = Promise.resolve([]);

export class ServiceViews {
  private views = new Map<string, View>();
  /** While views are rebuilt from the state (start-up, restore): the pass, and what it has found. */
  private scan: Scan | undefined;
  private generation = 0;

  constructor(private readonly state: RegistryState) {
    state.onChange((_revision, _services, _catalogChanged, delta) => this.record(delta));
    this.rebuild();
  }

  /**
   * The service's instances at its current index. Taken synchronously: a caller that reads the
   * index and calls this in the same synchronous step gets exactly that index's instances.
   */
  snapshot(service: string): ServiceSnapshot {
    const index = this.state.serviceIndex(service);
    const view = this.scan === undefined ? this.views.get(service) : this.viewOf(service);
    if (view === undefined) return { index, instances: NO_INSTANCES };
    this.capture(service, view);
    return { index, instances: view.latest };
  }

  /**
   * Every service with its tags and instance count, at the catalog's current index, built in
   * slices from the views (the state's services() walks every instance in one call: 60-80 ms
   * at 100,000). Taken synchronously, as snapshot() is.
   */
  catalog(): CatalogSnapshot {
    const index = this.state.catalogIndex;
    const captured = new Map<string, Promise<readonly Instance[]>>();
    for (const [service, view] of this.views) {
      this.capture(service, view);
      captured.set(service, view.latest);
    }
    const scan = this.scan;
    if (scan === undefined) return { index, services: catalogOf(captured) };
    // While views are rebuilt: a service the pass finds that had no view now has not changed
    // since the pass began, so what the pass found is what it holds now.
    const services = scan.done.then(() => {
      for (const [service, list] of scan.found) if (!captured.has(service)) captured.set(service, Promise.resolve(list));
      return catalogOf(captured);
    });
    return { index, services };
  }

  /** Pending changes held for `service`: what the compaction bound limits. */
  pendingChanges(service: string): number {
    return this.views.get(service)?.pending.size ?? 0;
  }

  /** Services with a view. */
  get size(): number {
    return this.views.size;
  }

  // ---------------------------------------------------------------- the change feed (inside apply: O(1) per change)

  private record(delta: RegistryDelta): void {
    if (delta.kind === "restored") {
      this.rebuild();
      return;
    }
    for (const change of delta.changes) {
      const service = change.kind === "delete" ? change.service : change.instance.service;
      const id = change.kind === "delete" ? change.id : change.instance.id;
      const view = this.viewOf(service);
      view.pending.set(id, change.kind === "delete" ? null : change.instance);
      if (!view.compactionScheduled && view.pending.size >= Math.max(PENDING_MERGE_MIN, view.size * PENDING_MERGE_FRACTION)) {
        view.compactionScheduled = true;
        // Not inside apply: the merge is captured at the next turn.
        void sliceScheduler.turn().then(() => {
          view.compactionScheduled = false;
          if (this.views.get(service) === view) this.capture(service, view);
        });
      }
    }
  }

  private viewOf(service: string): View {
    let view = this.views.get(service);
    if (view === undefined) {
      const scan = this.scan;
      const latest = scan === undefined ? NO_INSTANCES : scan.done.then(() => sortInSlices(scan.found.get(service) ?? [], compareInstances));
      view = { latest, pending: new Map(), size: 0, compactionScheduled: false };
      this.views.set(service, view);
    }
    return view;
  }

  // ---------------------------------------------------------------- merging

  /** Makes `view.latest` the base with every pending change merged in. */
  private capture(service: string, view: View): void {
    if (view.pending.size === 0) return;
    const pending = view.pending;
    view.pending = new Map();
    view.latest = view.latest.then(async (base) => {
      const merged = await mergePending(base, pending);
      view.size = merged.length;
      // A service whose last instance left keeps no view (unless changes arrived meanwhile).
      if (merged.length === 0 && view.pending.size === 0 && this.views.get(service) === view) this.views.delete(service);
      return merged;
    });
  }

  // ---------------------------------------------------------------- rebuilding from the state

  /**
   * Replaces every view with one built from the state's instances as they are now: one copy of
   * the list (about 1 ms at 100,000; restore itself took far longer), grouped by service in
   * slices after the first turn (this runs inside apply). Every change made meanwhile is pending
   * on top of it, so base + pending stays exact for every capture.
   */
  private rebuild(): void {
    const generation = ++this.generation;
    const found = new Map<string, Instance[]>();
    const instances = [...this.state.allInstances()];
    const done = (async () => {
      const clock = new SliceClock();
      await clock.pause();
      for (const inst of instances) {
        // A newer rebuild (another restore) has replaced this one.
        if (generation !== this.generation) return;
        let list = found.get(inst.service);
        if (list === undefined) found.set(inst.service, (list = []));
        list.push(inst);
        if (clock.tick()) await clock.pause();
      }
      if (generation !== this.generation) return;
      // Every service the pass found gets its view; the ones read or changed meanwhile have theirs.
      for (const service of found.keys()) this.viewOf(service).size = found.get(service)?.length ?? 0;
      this.scan = undefined;
    })();
    this.views = new Map();
    this.scan = { done, found };
  }
}

/** Each captured service by name, with its tags (in the order its instances first carry them) and count; empty ones left out. */
async function catalogOf(captured: ReadonlyMap<string, Promise<readonly Instance[]>>): Promise<CatalogService[]> {
  const clock = new SliceClock();
  const out: CatalogService[] = [];
  for (const name of [...captured.keys()].sort()) {
    const latest = captured.get(name) as Promise<readonly Instance[]>;
    const instances = await latest;
    if (instances.length === 0) continue;
    const tags = new Set<string>();
    for (const inst of instances) {
      for (const t of inst.tags) tags.add(t);
      if (clock.tick()) await clock.pause();
    }
    out.push({ name, tags: [...tags], instances: instances.length });
  }
  return out;
}

/** The base without the instances pending replaces or removes, merged with pending's instances. */
async function mergePending(base: readonly Instance[], pending: ReadonlyMap<string, Instance | null>): Promise<readonly Instance[]> {
  const clock = new SliceClock();
  const kept = await filterInSlices(base, (inst) => !pending.has(inst.id), clock);
  const added: Instance[] = [];
  for (const inst of pending.values()) if (inst !== null) added.push(inst);
  const sortedAdded = await sortInSlices(added, compareInstances, clock);
  return mergeInSlices(kept, sortedAdded, compareInstances, clock);
}
