// One build per (query, version), shared by every reader that asks for it: 10,000 blocking
// queries woken by one change cost one evaluation and one encoding, not 10,000 (the idea of
// Consul's PR #5050). The latest answer of each query is kept until its version moves on, within
// a bound on entries and on bytes.

import type { EncodedBody } from "./json_chunks.js";
import { WakeQueue } from "./slices.js";

export interface SharedAnswersLimits {
  /** Queries whose latest answer is kept, at most; the least recently used goes first. */
  readonly entriesMax: number;
  /** Bytes of kept answers, at most. A larger answer is shared only by the readers that asked while it was built. */
  readonly bytesMax: number;
  /** Readers of a finished build released per event-loop iteration, at most: each one then sends its answer. */
  readonly releasePerTurn: number;
}

export const sharedAnswersDefaults: SharedAnswersLimits = {
  entriesMax: 1024,
  bytesMax: 64 * 1024 * 1024,
  releasePerTurn: 64,
};

interface Entry {
  readonly version: number;
  /** Set once built, if kept. */
  body: EncodedBody | undefined;
  /** Set while the build runs. */
  building: Promise<EncodedBody> | undefined;
}

export class SharedAnswers {
  /** In order of use, least recent first (a Map keeps insertion order; a use re-inserts). */
  private readonly entries = new Map<string, Entry>();
  private keptBytes = 0;
  private readonly limits: SharedAnswersLimits;
  private readonly release: WakeQueue;

  constructor(limits: Partial<SharedAnswersLimits> = {}) {
    this.limits = { ...sharedAnswersDefaults, ...limits };
    const { entriesMax, bytesMax } = this.limits;
    if (!Number.isInteger(entriesMax) || entriesMax < 1) throw new RangeError(`entriesMax ${entriesMax} must be a whole number >= 1`);
    if (!Number.isInteger(bytesMax) || bytesMax < 0) throw new RangeError(`bytesMax ${bytesMax} must be a whole number >= 0`);
    this.release = new WakeQueue(this.limits.releasePerTurn);
  }

  /**
   * The answer to `query` at `version`: the kept one, the one being built, or a new build.
   * `build` must capture the state at `version` synchronously, when it is called.
   */
  get(query: string, version: number, build: () => Promise<EncodedBody>): EncodedBody | Promise<EncodedBody> {
    const known = this.entries.get(query);
    if (known !== undefined && known.version === version) {
      this.entries.delete(query);
      this.entries.set(query, known);
      // An entry is either being built or kept: a finished build that is not kept leaves the map.
      if (known.body !== undefined) return known.body;
      if (known.building !== undefined) return this.joined(known.building);
    }
    const building = build();
    // An older version than the one kept (indexes went back with a snapshot) is built for this reader alone.
    if (known === undefined || version > known.version) {
      this.drop(query);
      const entry: Entry = { version, body: undefined, building };
      this.entries.set(query, entry);
      this.evictOverEntries();
      building.then((body) => this.built(query, entry, body), () => {
        if (this.entries.get(query) === entry) this.entries.delete(query);
      });
    }
    return building;
  }

  /** Forgets every kept answer (after a snapshot replaced the state, say). */
  clear(): void {
    this.entries.clear();
    this.keptBytes = 0;
  }

  get size(): number {
    return this.entries.size;
  }

  get bytes(): number {
    return this.keptBytes;
  }

  /** A reader that joined a running build is released with the others a few per iteration. */
  private joined(building: Promise<EncodedBody>): Promise<EncodedBody> {
    return building.then((body) => new Promise<EncodedBody>((resolve) => this.release.push(() => resolve(body))));
  }

  private built(query: string, entry: Entry, body: EncodedBody): void {
    if (this.entries.get(query) !== entry) return;
    entry.building = undefined;
    if (body.bytes > this.limits.bytesMax) {
      this.entries.delete(query);
      return;
    }
    entry.body = body;
    this.keptBytes += body.bytes;
    for (const [key, e] of this.entries) {
      if (this.keptBytes <= this.limits.bytesMax) break;
      if (e !== entry && e.body !== undefined) this.drop(key);
    }
  }

  private drop(query: string): void {
    const e = this.entries.get(query);
    if (e === undefined) return;
    if (e.body !== undefined) this.keptBytes -= e.body.bytes;
    this.entries.delete(query);
  }

  private evictOverEntries(): void {
    for (const key of this.entries.keys()) {
      if (this.entries.size <= this.limits.entriesMax) return;
      this.drop(key);
    }
  }
}
