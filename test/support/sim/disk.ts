// A simulated disk for one node: it outlives the node's crashes. Each incarnation opens it as a
// LogStorage. Writes run one at a time, in order (as LevelLogStorage serializes them), and take
// time: a synced write waits for its fsync, whose latency has a long tail; a write may fail with
// an I/O error, after which the store refuses every write (as LevelLogStorage does).
//
// What a crash keeps is MemoryLogStorage's model (see WriteJournal): everything whose fsync
// completed, plus a prefix of the writes after it, each whole. That includes the write in flight
// and commit-only writes made without fsync.

import type { Snapshot } from "../../../src/raft/core/types.js";
import { type DiskImage, EMPTY_IMAGE, WriteJournal, imageAfterCompaction, imageAfterReady } from "../../../src/raft/storage/memory.js";
import type { LogStorage, PersistedState, ReadyWrite } from "../../../src/raft/storage/log_storage.js";
import type { SeededRandom } from "../../../src/raft/core/random.js";
import type { SimProcess } from "./world.js";

export interface DiskProfile {
  /** Milliseconds an fsync takes. */
  syncLatencyMs(rng: SeededRandom): number;
  /** The chance that a write fails with an I/O error. */
  readonly errorRate: number;
}

/** Fast, as an idle SSD with a write cache: 0-3 ms. */
export const FAST_DISK: DiskProfile = { syncLatencyMs: (rng) => rng.nextInt(4), errorRate: 0 };

/** 0 to 50 ms, with a tail of hundreds of milliseconds and, rarely, seconds. */
export const SLOW_DISK: DiskProfile = {
  syncLatencyMs: (rng) => {
    const roll = rng.nextInt(1000);
    if (roll < 5) return 1000 + rng.nextInt(2000);
    if (roll < 50) return 100 + rng.nextInt(400);
    return rng.nextInt(51);
  },
  errorRate: 0,
};

/** A disk whose every fsync stalls for a third of a second to two seconds (a saturated or failing device). */
export const STALLING_DISK: DiskProfile = { syncLatencyMs: (rng) => 300 + rng.nextInt(1700), errorRate: 0 };

export class SimulatedIoError extends Error {
  constructor(what: string) {
    super(`simulated I/O error during ${what} (EIO)`);
    this.name = "SimulatedIoError";
  }
}

export class SimDisk {
  private journal: WriteJournal;
  profile: DiskProfile = FAST_DISK;
  /** Optional: every Ready write as it is issued, for the log matching checker. */
  onWrite: ((part: ReadyWrite) => void) | undefined;

  constructor(private readonly rng: SeededRandom, initial: DiskImage = EMPTY_IMAGE) {
    this.journal = new WriteJournal(initial);
  }

  /** What survives any crash: everything whose fsync completed. */
  get durable(): DiskImage {
    return this.journal.durable;
  }

  /** Everything written, synced or not. */
  get latest(): DiskImage {
    return this.journal.latest;
  }

  /** A storage handle for one incarnation of the node, whose process times its writes. */
  open(process: SimProcess): LogStorage {
    return new SimDiskStore(this, process, this.rng);
  }

  /**
   * The machine lost power (or the process was killed with writes in flight): the disk keeps what
   * was durable and a random prefix of the rest. Returns how many unsynced writes survived.
   */
  crash(): number {
    const keep = this.rng.nextInt(this.journal.unsyncedCount + 1);
    this.journal = new WriteJournal(this.journal.survivor(keep));
    return keep;
  }

  /** Used by the store handles. */
  journalNow(): WriteJournal {
    return this.journal;
  }
}

class SimDiskStore implements LogStorage {
  private tail: Promise<unknown> = Promise.resolve();
  private failure: Error | undefined;
  private readonly incarnation: number;

  constructor(
    private readonly disk: SimDisk,
    private readonly process: SimProcess,
    private readonly rng: SeededRandom,
  ) {
    this.incarnation = process.incarnationId;
  }

  load(): Promise<PersistedState> {
    return this.serially(async () => {
      await this.wait(this.rng.nextInt(3));
      const { hardState, snapshot, entries } = this.disk.journalNow().latest;
      return { hardState, snapshot, entries: [...entries] };
    });
  }

  saveReady(part: ReadyWrite, options: { readonly sync: boolean }): Promise<void> {
    return this.serially(async () => {
      const journal = this.disk.journalNow();
      const image = imageAfterReady(journal.latest, part);
      this.disk.onWrite?.(part);
      await this.write(journal, image, options.sync, "saveReady");
    });
  }

  saveSnapshot(snapshot: Snapshot): Promise<void> {
    return this.serially(async () => {
      const journal = this.disk.journalNow();
      const image = imageAfterCompaction(journal.latest, snapshot);
      if (image === journal.latest) return;
      await this.write(journal, image, true, "saveSnapshot");
    });
  }

  loadSnapshot(): Promise<Snapshot | undefined> {
    return this.serially(async () => {
      await this.wait(this.rng.nextInt(3));
      return this.disk.journalNow().latest.snapshot;
    });
  }

  close(): Promise<void> {
    return this.serially(() => Promise.resolve());
  }

  /** The write reaches the journal at once (a crash may keep it); with sync, it is durable once the fsync returns. */
  private async write(journal: WriteJournal, image: DiskImage, sync: boolean, what: string): Promise<void> {
    if (this.failure !== undefined) throw this.failure;
    journal.append(image);
    await this.wait(sync ? this.disk.profile.syncLatencyMs(this.rng) : 0);
    if (this.rng.chance(this.disk.profile.errorRate)) {
      // What reached the disk is uncertain: the write stays unsynced, for a crash to keep or lose.
      this.failure = new SimulatedIoError(what);
      throw this.failure;
    }
    // An fsync makes this write durable, and with it every earlier one: the disk is sequential.
    // The journal may have been replaced by a crash meanwhile; then this write is the crash's to judge.
    if (sync && journal === this.disk.journalNow()) journal.settle(journal.unsyncedCount);
  }

  private wait(ms: number): Promise<void> {
    return new Promise((resolve) => this.process.scheduleIn(ms, resolve, this.incarnation));
  }

  private serially<T>(op: () => Promise<T>): Promise<T> {
    const result = this.tail.then(op);
    this.tail = result.catch(() => undefined);
    return result;
  }
}
