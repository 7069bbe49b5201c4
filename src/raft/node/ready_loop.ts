// The Ready loop: the one place that turns the core's output into I/O, in the order types.ts
// prescribes. Inputs (ticks, messages, proposals) schedule one pump, which loops: take the Ready,
// send the leader's appends at once, apply the committed entries (already durable here) while
// this batch's write runs, send the rest once it is durable, then advance the core. Everything
// that arrives while a write is in flight goes into the next Ready, so one fsync carries as many
// proposals as arrived meanwhile: that batching is where the throughput comes from.

import type { Logger } from "pino";
import { asError } from "../../common/errors.js";
import { SENDABLE_BEFORE_PERSIST, type RaftNode } from "../core/raft.js";
import { SNAPSHOT_DATA_ON_DISK } from "../core/log.js";
import { type Entry, type HardState, type Message, NONE, type Ready, type Snapshot, type SnapshotRequest } from "../core/types.js";
import type { LogStorage } from "../storage/log_storage.js";
import { AppendTimer } from "./observer.js";
import type { PeerNetwork } from "./ports.js";
import type { DriverSettings } from "./settings.js";

/** What the rest of the node does at each step of a Ready. */
export interface ReadyHandlers {
  /** Before each Ready: queued proposals enter the core. */
  beforeReady(): void;
  /** Committed entries, in log order. */
  apply(entries: readonly Entry[]): void;
  /** A snapshot received from the leader, now durable: the state machine restores it. */
  restore(snapshot: Snapshot): void;
  /** After advance(): confirmed and failed reads, a change of role, compaction. */
  afterReady(rd: Ready): void;
  running(): boolean;
  fail(err: Error): void;
}

export class ReadyLoop {
  private pumping = false;
  private pumpAgain = false;
  private readonly idleWaiters: (() => void)[] = [];
  private persistedTerm: number;
  private persistedVote: string;
  /** Appends sent and not yet acknowledged, timed for the observer; the driver hands it the answers. */
  readonly appends: AppendTimer;

  constructor(
    private readonly settings: DriverSettings,
    private readonly core: RaftNode,
    private readonly storage: LogStorage,
    private readonly network: PeerNetwork,
    private readonly log: Logger,
    private readonly handlers: ReadyHandlers,
    persisted: HardState | undefined,
  ) {
    this.persistedTerm = persisted?.term ?? 0;
    this.persistedVote = persisted?.vote ?? NONE;
    this.appends = new AppendTimer(settings.clock, settings.observer);
  }

  /** Runs the loop soon, or once more if it is running now. */
  schedule(): void {
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    this.settings.clock.soon(() => void this.pump());
  }

  whenIdle(): Promise<void> {
    if (!this.pumping) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Sends what the leader may send before its own write is durable: appends, heartbeats. */
  sendLeaderMessagesNow(): void {
    const now = this.core.takeLeaderMessages();
    if (now.length > 0) this.send(now);
  }

  private async pump(): Promise<void> {
    try {
      for (;;) {
        this.pumpAgain = false;
        if (!this.handlers.running()) break;
        this.handlers.beforeReady();
        if (!this.core.hasReady()) {
          if (!this.pumpAgain) break;
          continue;
        }
        await this.handle(this.core.ready());
      }
    } catch (err) {
      this.handlers.fail(asError(err));
    } finally {
      this.pumping = false;
      for (const idle of this.idleWaiters.splice(0)) idle();
    }
  }

  private async handle(rd: Ready): Promise<void> {
    const isLeader = this.core.role === "leader";
    const early: Message[] = [];
    const late: Message[] = [];
    const sendAllFirst = this.settings.plantedBug === "ackBeforeFsync";
    for (const m of rd.messages) (sendAllFirst || (isLeader && SENDABLE_BEFORE_PERSIST.has(m.type)) ? early : late).push(m);
    if (early.length > 0) this.send(early);
    // Committed entries are already durable here (the core hands out no others), so apply them
    // now and answer their clients while this batch's fsync runs, not after it. Not a membership
    // change, though: the core's configuration moves only in advance(), and a client answered
    // before then would see the old membership in this node's status.
    const applyFirst = rd.snapshot === undefined && !rd.committedEntries.some((e) => e.type === "confChange");
    if (applyFirst) this.handlers.apply(rd.committedEntries);
    if (rd.hardState !== undefined || rd.entries.length > 0 || rd.snapshot !== undefined) {
      // Like etcd's MustSync: only entries, a snapshot, a term or a vote need fsync before the
      // messages go out. A commit index alone is rewritten without waiting for the disk.
      const sync = rd.entries.length > 0 || rd.snapshot !== undefined ||
        (rd.hardState !== undefined && (rd.hardState.term !== this.persistedTerm || rd.hardState.vote !== this.persistedVote));
      // A new term with our own vote is a campaign of ours; a pre-vote writes nothing, so only real elections count.
      if (rd.hardState !== undefined && rd.hardState.term > this.persistedTerm && rd.hardState.vote === this.settings.id) {
        this.settings.observer.electionStarted(rd.hardState.term);
      }
      const writeStartMs = this.settings.clock.nowMs();
      await this.storage.saveReady({ hardState: rd.hardState, entries: rd.entries, snapshot: rd.snapshot }, { sync });
      if (sync) this.settings.observer.logSynced(Math.max(0, this.settings.clock.nowMs() - writeStartMs) / 1000);
      if (rd.hardState !== undefined) {
        this.persistedTerm = rd.hardState.term;
        this.persistedVote = rd.hardState.vote;
      }
    }
    if (!this.handlers.running()) return;
    if (late.length > 0) this.send(late);
    if (rd.snapshot !== undefined) {
      this.handlers.restore(rd.snapshot);
      this.settings.observer.snapshot("installed");
      this.log.info({ index: rd.snapshot.metadata.index }, "installed snapshot from the leader");
    }
    if (!applyFirst) this.handlers.apply(rd.committedEntries);
    this.core.advance();
    // Now persisted and restored: the core may forget the received snapshot's bytes.
    if (rd.snapshot !== undefined) this.core.log.releaseSnapshotData(rd.snapshot.metadata.index);
    this.handlers.afterReady(rd);
  }

  /**
   * Hands messages to the network. The core keeps only the metadata of a snapshot that is on
   * disk, so a snapshot message for it is sent once its bytes are read back, off the Ready loop.
   */
  send(messages: Message[]): void {
    const fromDisk = (m: Message): m is SnapshotRequest => m.type === "snapshot" && m.snapshot.data === SNAPSHOT_DATA_ON_DISK;
    if (!messages.some(fromDisk)) {
      this.handOver(messages);
      return;
    }
    const now: Message[] = [];
    for (const m of messages) {
      if (fromDisk(m)) void this.sendSnapshotFromDisk(m);
      else now.push(m);
    }
    if (now.length > 0) this.handOver(now);
  }

  /** The network takes them; appends start their clocks and snapshots are counted on the way. */
  private handOver(messages: Message[]): void {
    this.appends.sent(messages);
    for (const m of messages) if (m.type === "snapshot") this.settings.observer.snapshot("sent");
    this.network.send(messages);
  }

  private async sendSnapshotFromDisk(m: SnapshotRequest): Promise<void> {
    try {
      const stored = await this.storage.loadSnapshot();
      if (!this.handlers.running()) return;
      const want = m.snapshot.metadata;
      if (stored === undefined || stored.metadata.index !== want.index || stored.metadata.term !== want.term) {
        // A newer snapshot replaced it on disk meanwhile. Reported as failed, the core sends its
        // current snapshot instead, which is the one on disk.
        this.core.step({ type: "snapshotStatus", from: m.to, to: this.settings.id, term: 0, reject: true });
        this.schedule();
        return;
      }
      this.handOver([{ ...m, snapshot: stored }]);
    } catch (err) {
      this.handlers.fail(asError(err));
    }
  }
}
