// The vocabulary of the Raft core: entries, messages, persisted state and the Ready batch.
// Everything here is plain data so that the core stays pure and the simulator can copy it freely.

export type NodeId = string;

/** The empty id: "no vote cast" and "no known leader". */
export const NONE: NodeId = "";

export type EntryData = Uint8Array;

/** A membership change. One change is in flight at a time (see confchange.ts for why that is safe). */
export type ConfChange =
  // `context` is opaque to the core; the server uses it for the new node's peer address.
  | { readonly type: "addLearner"; readonly node: NodeId; readonly context?: string }
  | { readonly type: "promote"; readonly node: NodeId }
  | { readonly type: "remove"; readonly node: NodeId };

export type Entry =
  | { readonly index: number; readonly term: number; readonly type: "normal"; readonly data: EntryData }
  | { readonly index: number; readonly term: number; readonly type: "confChange"; readonly change: ConfChange };

/** The voters and learners of one configuration. Disjoint; a learner never votes. */
export interface ConfState {
  readonly voters: readonly NodeId[];
  readonly learners: readonly NodeId[];
}

/** What must be on disk before any message that depends on it leaves the node. */
export interface HardState {
  readonly term: number;
  readonly vote: NodeId;
  readonly commit: number;
}

export interface SnapshotMetadata {
  readonly index: number;
  readonly term: number;
  readonly conf: ConfState;
}

export interface Snapshot {
  readonly metadata: SnapshotMetadata;
  readonly data: Uint8Array;
}

export type Role = "follower" | "preCandidate" | "candidate" | "leader";

/** State that is not persisted but that callers want to observe when it changes. */
export interface SoftState {
  readonly leader: NodeId;
  readonly role: Role;
}

/** A read that is now safe to serve once the state machine has applied `index`. */
export interface ReadState {
  readonly index: number;
  readonly context: string;
}

interface MessageBase {
  readonly from: NodeId;
  readonly to: NodeId;
  readonly term: number;
}

/** Vote and PreVote requests. A PreVote carries the term the sender would campaign in. */
export interface VoteRequest extends MessageBase {
  readonly type: "vote" | "preVote";
  readonly lastLogIndex: number;
  readonly lastLogTerm: number;
  /** Set when the campaign follows a leadership transfer, so it may break a leader's lease. */
  readonly transfer: boolean;
}

export interface VoteResponse extends MessageBase {
  readonly type: "voteResp" | "preVoteResp";
  readonly reject: boolean;
  /**
   * On reject: the voter's commit index and its term there. A candidate holding that entry learns
   * it is committed, which may be how it learns a membership change that lets it win.
   */
  readonly commitIndex?: number;
  readonly commitTerm?: number;
}

export interface AppendRequest extends MessageBase {
  readonly type: "append";
  readonly prevLogIndex: number;
  readonly prevLogTerm: number;
  readonly entries: readonly Entry[];
  readonly commit: number;
}

export interface AppendResponse extends MessageBase {
  readonly type: "appendResp";
  readonly reject: boolean;
  /** On success, the highest index now known to match the leader; on reject, the probed index. */
  readonly index: number;
  /** On reject: the follower's guess at the highest index that could match, and its term there. */
  readonly rejectHintIndex: number;
  readonly rejectHintTerm: number;
}

export interface HeartbeatRequest extends MessageBase {
  readonly type: "heartbeat";
  readonly commit: number;
  /** The ReadIndex round this heartbeat confirms leadership for, or "" for none. */
  readonly readContext: string;
}

export interface HeartbeatResponse extends MessageBase {
  readonly type: "heartbeatResp";
  readonly readContext: string;
}

export interface SnapshotRequest extends MessageBase {
  readonly type: "snapshot";
  readonly snapshot: Snapshot;
}

export interface SnapshotStatus extends MessageBase {
  /** Sent by the driver on the leader's behalf, never over the wire: did the transfer fail? */
  readonly type: "snapshotStatus";
  readonly reject: boolean;
}

export interface Unreachable extends MessageBase {
  /** Sent by the driver on the leader's behalf when the transport to `from` broke. */
  readonly type: "unreachable";
}

export interface TimeoutNow extends MessageBase {
  readonly type: "timeoutNow";
}

/** A follower asks the leader for a read index on behalf of its own client. */
export interface ReadIndexRequest extends MessageBase {
  readonly type: "readIndex";
  readonly context: string;
}

export interface ReadIndexResponse extends MessageBase {
  readonly type: "readIndexResp";
  readonly context: string;
  readonly index: number;
}

export type Message =
  | VoteRequest
  | VoteResponse
  | AppendRequest
  | AppendResponse
  | HeartbeatRequest
  | HeartbeatResponse
  | SnapshotRequest
  | SnapshotStatus
  | Unreachable
  | TimeoutNow
  | ReadIndexRequest
  | ReadIndexResponse;

export type MessageType = Message["type"];

/** Local-only messages that the driver feeds to the leader; they never cross the network. */
export function isLocalMessage(m: Message): boolean {
  return m.type === "snapshotStatus" || m.type === "unreachable";
}

/**
 * One batch of work for the driver, in this order:
 * 1. persist `hardState`, `entries` (which may overwrite a suffix from entries[0].index) and
 *    `snapshot`, durably (fsync);
 * 2. send `messages`;
 * 3. if `snapshot` is set, restore the state machine from it; then apply `committedEntries`;
 * 4. call `advance(ready)`.
 * Messages must not leave before step 1 is durable: they may promise a vote or an append.
 * `committedEntries` were all persisted by earlier Readies, so when there is no `snapshot` the
 * driver may apply them before or while it performs step 1.
 */
export interface Ready {
  readonly softState: SoftState | undefined;
  readonly hardState: HardState | undefined;
  readonly entries: readonly Entry[];
  readonly snapshot: Snapshot | undefined;
  readonly committedEntries: readonly Entry[];
  readonly messages: readonly Message[];
  readonly readStates: readonly ReadState[];
  /** Contexts of this node's reads that can no longer be confirmed (leadership was lost). */
  readonly failedReads: readonly string[];
}

/** Why the core refused a proposal, a read or a change. Never silent: the caller always hears. */
export type RefusalReason =
  | "notLeader"
  | "transferInProgress"
  | "tooMuchUncommitted"
  | "confChangePending"
  | "invalidConfChange"
  | "notVoter"
  | "noLeader"
  | "duplicateRead";

export class RaftRefusal extends Error {
  constructor(
    readonly reason: RefusalReason,
    message: string,
    /** The leader the caller should try instead, or NONE when none is known. */
    readonly leaderHint: NodeId = NONE,
  ) {
    super(message);
    this.name = "RaftRefusal";
  }
}

/** A broken invariant is a bug in Cairn, never an operating error: crash rather than go on. */
export class RaftInvariantError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RaftInvariantError";
  }
}

export function invariant(condition: boolean, message: string | (() => string)): asserts condition {
  if (!condition) throw new RaftInvariantError(typeof message === "string" ? message : message());
}

/** The size a payload counts for in byte-based flow-control limits. */
export function entryPayloadBytes(e: Entry): number {
  return e.type === "normal" ? e.data.byteLength : 16;
}
