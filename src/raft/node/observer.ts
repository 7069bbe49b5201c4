// What a running node reports about itself, for metrics. The driver calls a RaftObserver at the
// moments only it sees (a write became durable, a follower acknowledged an append, an election
// began); the server wires it to src/metrics. It is declared here, so src/raft imports nothing
// above it. Figures that are state rather than events (term, role, indexes, follower lag) are
// read from the driver when they are wanted, not pushed.
//
// Every method is called on the event loop, in the middle of the Ready loop: an observer must
// return at once and never throw.

import { Fifo } from "../../common/fifo.js";
import type { AppendResponse, Message, NodeId } from "../core/types.js";
import type { Clock } from "./ports.js";

export type SnapshotEvent =
  /** This node compacted its log into a snapshot of its own. */
  | "compacted"
  /** This node installed a snapshot the leader sent it. */
  | "installed"
  /** This node, leading, sent a snapshot to a follower too far behind for appends. */
  | "sent";

export interface RaftObserver {
  /** One Ready's batch was written to the log and fsynced (it held entries, a snapshot, a new term or a vote). */
  logSynced(durationSeconds: number): void;
  /** A follower acknowledged entries this leader appended to it, `durationSeconds` after they were sent. */
  appendAcknowledged(follower: NodeId, durationSeconds: number): void;
  /** This node learned of a leader other than the one it knew (its own win included). */
  leaderChanged(leader: NodeId, term: number): void;
  /** This node began an election: it became a candidate in a new term. */
  electionStarted(term: number): void;
  snapshot(event: SnapshotEvent): void;
  /** A proposal made on this node was applied here, or failed (refused, timed out, lost to a leader change). */
  proposalSettled(applied: boolean): void;
}

export const silentRaftObserver: RaftObserver = {
  logSynced: () => {},
  appendAcknowledged: () => {},
  leaderChanged: () => {},
  electionStarted: () => {},
  snapshot: () => {},
  proposalSettled: () => {},
};

/**
 * Appends awaiting acknowledgement, per follower, at most this many: the core's in-flight window
 * (inflightMessagesMax) is the same size, so a full queue means the follower stopped answering;
 * the oldest is then forgotten, unmeasured.
 */
export const PENDING_APPENDS_PER_FOLLOWER_MAX = 256;

interface SentAppend {
  /** The last index the append carried: an acknowledgement at or past it covers it. */
  readonly lastIndex: number;
  readonly sentAtMs: number;
}

/**
 * Times appends from the moment the leader sends them to the follower's acknowledgement (Consul's
 * raft.replication.appendEntries.rpc): the network both ways and the follower's own fsync.
 *
 * Invariant per follower: the queued lastIndex values strictly increase, so an acknowledgement
 * settles a prefix. A resend of entries already queued keeps the first send's time.
 */
export class AppendTimer {
  private readonly pending = new Map<NodeId, Fifo<SentAppend>>();

  constructor(private readonly clock: Clock, private readonly observer: RaftObserver) {}

  /** Notes the appends that carry entries among `messages`, which are leaving now. */
  sent(messages: readonly Message[]): void {
    for (const m of messages) {
      if (m.type !== "append" || m.entries.length === 0) continue;
      const lastIndex = m.prevLogIndex + m.entries.length;
      let queue = this.pending.get(m.to);
      if (queue === undefined) {
        queue = new Fifo<SentAppend>();
        this.pending.set(m.to, queue);
      }
      const newest = queue.peek(queue.length - 1);
      if (newest !== undefined && newest.lastIndex >= lastIndex) continue;
      if (queue.length >= PENDING_APPENDS_PER_FOLLOWER_MAX) queue.shift();
      queue.push({ lastIndex, sentAtMs: this.clock.nowMs() });
    }
  }

  /** An answer to an append: a success settles every append it covers; a rejection forgets the follower's (it is probed afresh). */
  received(m: AppendResponse): void {
    const queue = this.pending.get(m.from);
    if (queue === undefined) return;
    if (m.reject) {
      queue.clear();
      return;
    }
    const nowMs = this.clock.nowMs();
    for (let head = queue.peek(); head !== undefined && head.lastIndex <= m.index; head = queue.peek()) {
      queue.shift();
      this.observer.appendAcknowledged(m.from, Math.max(0, nowMs - head.sentAtMs) / 1000);
    }
  }

  /** Leadership changed hands: appends of an earlier term are answered, if ever, by a different log. */
  clear(): void {
    this.pending.clear();
  }
}
