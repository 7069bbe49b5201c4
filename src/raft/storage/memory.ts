// A log store in memory, with the same contract as the LevelDB one (log_storage.ts), for tests
// and the simulator. What makes it more than a map is its crash model: every write is journaled
// until it is durable, and crash() keeps exactly what a real disk may keep:
//
//   durable image ── unsynced write 1 ── unsynced write 2 ── ... (oldest first)
//   a crash keeps the durable image plus any prefix of the unsynced writes, each whole or not at all
//
// Each write is whole or absent because LevelDB's write-ahead log checksums every batch and drops a
// torn one on recovery; a prefix because the log is sequential, so a later write survives only
// with every earlier one.

import { type Entry, type HardState, type Snapshot, invariant } from "../core/types.js";
import { type LogStorage, type PersistedState, type ReadyWrite, layoutReadyWrite } from "./log_storage.js";

/** One state of a store's contents. Immutable: every write makes a new image. */
export interface DiskImage {
  readonly hardState: HardState | undefined;
  readonly snapshot: Snapshot | undefined;
  /** The entries after the snapshot's index, consecutive. */
  readonly entries: readonly Entry[];
}

export const EMPTY_IMAGE: DiskImage = { hardState: undefined, snapshot: undefined, entries: [] };

function snapshotIndexOf(image: DiskImage): number {
  return image.snapshot?.metadata.index ?? 0;
}

function lastIndexOf(image: DiskImage): number {
  return snapshotIndexOf(image) + image.entries.length;
}

/** The image after one Ready's write, refused (RaftInvariantError) where every store refuses it. */
export function imageAfterReady(image: DiskImage, part: ReadyWrite): DiskImage {
  const layout = layoutReadyWrite({ snapshotIndex: snapshotIndexOf(image), lastIndex: lastIndexOf(image) }, part);
  const base = part.snapshot === undefined ? image.entries : [];
  const entries = part.entries.length === 0 ? base : base.slice(0, layout.keptEntries).concat(part.entries);
  return { hardState: part.hardState ?? image.hardState, snapshot: part.snapshot ?? image.snapshot, entries };
}

/** The image after a local compaction into `snapshot`; a stale snapshot leaves it as it was. */
export function imageAfterCompaction(image: DiskImage, snapshot: Snapshot): DiskImage {
  const { index, term } = snapshot.metadata;
  const snapshotIndex = snapshotIndexOf(image);
  if (index <= snapshotIndex) return image;
  const stored = image.entries[index - snapshotIndex - 1];
  invariant(stored === undefined || stored.term === term,
    () => `snapshot at index ${index} has term ${term}, but the stored entry there has term ${stored?.term}`);
  return { hardState: image.hardState, snapshot, entries: image.entries.slice(index - snapshotIndex) };
}

/**
 * The writes a store has taken since its last durable point. A synced write that completes makes
 * itself and every write before it durable (the disk is sequential); a crash keeps a prefix.
 */
export class WriteJournal {
  private durableImage: DiskImage;
  /** The image after each write not yet durable, oldest first. */
  private readonly unsynced: DiskImage[] = [];

  constructor(initial: DiskImage) {
    this.durableImage = initial;
  }

  /** What a reader sees: every write, durable or not. */
  get latest(): DiskImage {
    return this.unsynced[this.unsynced.length - 1] ?? this.durableImage;
  }

  get durable(): DiskImage {
    return this.durableImage;
  }

  get unsyncedCount(): number {
    return this.unsynced.length;
  }

  /** Records a write that leaves the store holding `image`; returns its position among the unsynced. */
  append(image: DiskImage): number {
    this.unsynced.push(image);
    return this.unsynced.length;
  }

  /** The oldest `count` unsynced writes are durable now. */
  settle(count: number): void {
    invariant(count >= 0 && count <= this.unsynced.length, () => `settle ${count} of ${this.unsynced.length} unsynced writes`);
    if (count === 0) return;
    this.durableImage = this.unsynced[count - 1];
    this.unsynced.splice(0, count);
  }

  /** What a crash leaves: the durable image and the oldest `keep` unsynced writes. */
  survivor(keep: number): DiskImage {
    invariant(keep >= 0 && keep <= this.unsynced.length, () => `a crash keeping ${keep} of ${this.unsynced.length} unsynced writes`);
    return keep === 0 ? this.durableImage : this.unsynced[keep - 1];
  }
}

export class MemoryLogStorage implements LogStorage {
  private readonly journal: WriteJournal;
  private loaded = false;
  private closed = false;

  constructor(initial: DiskImage = EMPTY_IMAGE) {
    this.journal = new WriteJournal(initial);
  }

  /** Everything written, durable or not: what load() would return if the process lived on. */
  get image(): DiskImage {
    return this.journal.latest;
  }

  async load(): Promise<PersistedState> {
    this.assertOpen();
    this.loaded = true;
    const { hardState, snapshot, entries } = this.journal.latest;
    return Promise.resolve({ hardState, snapshot, entries: [...entries] });
  }

  async saveReady(part: ReadyWrite, options: { readonly sync: boolean }): Promise<void> {
    this.assertReady("saveReady");
    this.write(imageAfterReady(this.journal.latest, part), options.sync);
    return Promise.resolve();
  }

  async saveSnapshot(snapshot: Snapshot): Promise<void> {
    this.assertReady("saveSnapshot");
    const image = imageAfterCompaction(this.journal.latest, snapshot);
    if (image !== this.journal.latest) this.write(image, true);
    return Promise.resolve();
  }

  async loadSnapshot(): Promise<Snapshot | undefined> {
    this.assertOpen();
    return Promise.resolve(this.journal.latest.snapshot);
  }

  async close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  /**
   * A new store holding what a crash now would leave on disk: everything synced, plus the oldest
   * `keepUnsynced` of the writes made without sync since.
   */
  crash(keepUnsynced = 0): MemoryLogStorage {
    return new MemoryLogStorage(this.journal.survivor(keepUnsynced));
  }

  /** Writes made without sync since the last synced one: what a crash may lose. */
  get unsyncedWrites(): number {
    return this.journal.unsyncedCount;
  }

  private write(image: DiskImage, sync: boolean): void {
    const position = this.journal.append(image);
    if (sync) this.journal.settle(position);
  }

  private assertOpen(): void {
    invariant(!this.closed, "memory log storage used after close()");
  }

  private assertReady(what: string): void {
    this.assertOpen();
    invariant(this.loaded, () => `${what}() called before load()`);
  }
}
