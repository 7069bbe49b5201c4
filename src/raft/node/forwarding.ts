// Requests a follower carries to the leader: its clients' proposals (batched, one call per turn of
// the event loop), membership changes, application requests only the leader can answer (a TTL
// heartbeat, say), and questions about the cluster only the leader knows (each member's progress
// and contact). The leader's side of these calls is RaftDriver's onForward.
//
// Every answer says whether a refused request certainly had no effect: only then does the
// follower try it again with the next leader.

import { CodecError, Reader, Writer } from "../../common/codec.js";
import type { RaftNode } from "../core/raft.js";
import { type ConfChange, NONE, type NodeId, RaftRefusal } from "../core/types.js";
import { NotAvailableError, forwardFailure } from "./errors.js";
import type { PeerNetwork } from "./ports.js";
import type { DriverSettings } from "./settings.js";
import { MEMBER_ROLES, type MemberStatus, type NodeStatus, ROLES } from "./status.js";

/** Proposals in one forwarded call, at most: bounds the message and the leader's burst. */
export const FORWARD_BATCH_MAX = 1024;

export type ForwardRequest =
  /** Proposals a follower's clients made in one turn of its event loop, forwarded as one call. */
  | { readonly kind: "propose"; readonly data: readonly Uint8Array[] }
  | { readonly kind: "confChange"; readonly change: ConfChange }
  /** Application requests only the leader can answer, such as a TTL heartbeat: opaque here. */
  | { readonly kind: "app"; readonly data: Uint8Array }
  /** An operator's request, made on a follower, that the leader hand leadership to `to`. */
  | { readonly kind: "transferLeadership"; readonly to: NodeId }
  /** What the leader knows of the cluster: its status, with each member's match and contact. */
  | { readonly kind: "leaderStatus" };

interface QueuedProposal {
  readonly data: Uint8Array;
  readonly resolve: (index: number) => void;
  readonly reject: (err: Error) => void;
}

export class ForwardQueue {
  private readonly queue: QueuedProposal[] = [];
  private flushScheduled = false;
  private failure: Error | undefined;

  constructor(
    private readonly settings: DriverSettings,
    private readonly core: RaftNode,
    private readonly network: PeerNetwork,
  ) {}

  /**
   * Sends `data` to the leader together with the other proposals made in this turn; resolves with
   * its index once the leader has applied it.
   */
  propose(data: Uint8Array): Promise<number> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.queue.length >= this.settings.proposalQueueMax) {
      return Promise.reject(new NotAvailableError(
        `${this.settings.proposalQueueMax} proposals are already waiting to be forwarded to the leader; retry shortly`, this.core.leader, true));
    }
    return new Promise<number>((resolve, reject) => {
      this.queue.push({ data, resolve, reject });
      if (this.flushScheduled) return;
      this.flushScheduled = true;
      this.settings.clock.soon(() => {
        this.flushScheduled = false;
        void this.flush();
      });
    });
  }

  /** One request to the leader on its own; resolves with the leader's reply. */
  async call(request: ForwardRequest): Promise<Uint8Array> {
    if (this.failure !== undefined) throw this.failure;
    const leader = this.core.leader;
    if (leader === NONE) throw new NotAvailableError("no leader is known; retry after the election", NONE, true);
    return await this.network.forward(leader, encodeForwardRequest(request), this.settings.requestTimeoutMs)
      .catch((err: unknown) => { throw forwardFailure(err, leader); });
  }

  failAll(err: Error): void {
    this.failure = err;
    for (const p of this.queue.splice(0)) p.reject(err);
  }

  /** Sends the queued proposals to the leader, FORWARD_BATCH_MAX per call. */
  private async flush(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, FORWARD_BATCH_MAX);
      const leader = this.core.leader;
      // Each batch goes on its own; the next one need not wait for this one's answer.
      void this.send(leader, batch);
    }
    return Promise.resolve();
  }

  private async send(leader: NodeId, batch: readonly QueuedProposal[]): Promise<void> {
    try {
      const reply = await this.call({ kind: "propose", data: batch.map((p) => p.data) });
      const results = decodeProposeBatchReply(reply, leader, batch.length);
      results.forEach((r, i) => {
        if (typeof r === "number") batch[i].resolve(r);
        else batch[i].reject(r);
      });
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      for (const p of batch) p.reject(e);
    }
  }
}

// ---------------------------------------------------------------- wire formats, private to nodes

const REQUEST_PROPOSE = 0;
const REQUEST_CONF_CHANGE = 1;
const REQUEST_APP = 2;
const REQUEST_TRANSFER_LEADERSHIP = 3;
const REQUEST_LEADER_STATUS = 4;

/** A reply's first byte. */
const REPLY_REFUSED = 0;
const REPLY_OK = 1;
const REPLY_PROPOSE_BATCH = 3;
const REPLY_STATUS = 4;

/** Members in a status reply, at most: far more than any cluster has, so a damaged count fails fast. */
const STATUS_MEMBERS_MAX = 1024;
/** An optional number or boolean in a status reply: a presence byte, then the value. */
const ABSENT = 0;
const PRESENT = 1;

/** One proposal's outcome inside a batch reply. */
const ITEM_INDEX = 1;
const ITEM_NEVER_APPLIED = 0;
const ITEM_OUTCOME_UNKNOWN = 2;

export function encodeForwardRequest(req: ForwardRequest): Uint8Array {
  const w = new Writer(32);
  switch (req.kind) {
    case "propose":
      w.u8(REQUEST_PROPOSE);
      w.uint(req.data.length);
      for (const d of req.data) w.bytes(d);
      break;
    case "confChange":
      w.u8(REQUEST_CONF_CHANGE);
      w.string(req.change.type);
      w.string(req.change.node);
      w.string(req.change.type === "addLearner" ? (req.change.context ?? "") : "");
      break;
    case "app":
      w.u8(REQUEST_APP);
      w.bytes(req.data);
      break;
    case "transferLeadership":
      w.u8(REQUEST_TRANSFER_LEADERSHIP);
      w.string(req.to);
      break;
    case "leaderStatus":
      w.u8(REQUEST_LEADER_STATUS);
      break;
  }
  return w.finish();
}

export function decodeForwardRequest(buf: Uint8Array): ForwardRequest {
  const r = new Reader(buf);
  const kind = r.u8();
  let req: ForwardRequest;
  if (kind === REQUEST_PROPOSE) {
    const count = r.uint();
    if (count > FORWARD_BATCH_MAX) throw new Error(`a forwarded batch of ${count} proposals exceeds ${FORWARD_BATCH_MAX}`);
    const data: Uint8Array[] = [];
    for (let i = 0; i < count; i++) data.push(r.bytes());
    req = { kind: "propose", data };
  } else if (kind === REQUEST_APP) {
    req = { kind: "app", data: r.bytes() };
  } else if (kind === REQUEST_TRANSFER_LEADERSHIP) {
    req = { kind: "transferLeadership", to: r.string() };
  } else if (kind === REQUEST_LEADER_STATUS) {
    req = { kind: "leaderStatus" };
  } else if (kind === REQUEST_CONF_CHANGE) {
    const type = r.string();
    const node = r.string();
    const context = r.string();
    if (type === "addLearner") req = { kind: "confChange", change: { type, node, context } };
    else if (type === "promote" || type === "remove") req = { kind: "confChange", change: { type, node } };
    else throw new Error(`unknown membership change ${type}`);
  } else {
    throw new Error(`unknown forwarded request kind ${kind}`);
  }
  r.done();
  return req;
}

/** The whole call was refused; `err` says whether it certainly had no effect. */
export function encodeRefusal(err: Error): Uint8Array {
  const w = new Writer(64);
  w.u8(REPLY_REFUSED);
  w.string(err.message);
  w.string(err instanceof NotAvailableError ? err.leaderHint : NONE);
  // A refusal of the core never touched the log.
  w.u8((err instanceof NotAvailableError && err.neverApplied) || err instanceof RaftRefusal ? 1 : 0);
  return w.finish();
}

/** A success: the applied index of a membership change, or an application reply. */
export function encodeIndexReply(index: number): Uint8Array {
  const w = new Writer(16);
  w.u8(REPLY_OK);
  w.uint(index);
  return w.finish();
}

/** A success that carries nothing: the leader has begun what was asked (a leadership transfer). */
export function encodeAcknowledgement(): Uint8Array {
  const w = new Writer(1);
  w.u8(REPLY_OK);
  return w.finish();
}

export function decodeAcknowledgement(buf: Uint8Array, leader: NodeId): void {
  openReply(buf, leader).done();
}

export function encodeAppReply(data: Uint8Array): Uint8Array {
  const w = new Writer(16 + data.byteLength);
  w.u8(REPLY_OK);
  w.bytes(data);
  return w.finish();
}

/** Per proposal: its index, or why it failed and whether it certainly had no effect. */
export function encodeProposeBatchReply(results: readonly (number | Error)[]): Uint8Array {
  const w = new Writer(16 + 8 * results.length);
  w.u8(REPLY_PROPOSE_BATCH);
  w.uint(results.length);
  for (const r of results) {
    if (typeof r === "number") {
      w.u8(ITEM_INDEX);
      w.uint(r);
    } else {
      w.u8(r instanceof NotAvailableError && r.neverApplied ? ITEM_NEVER_APPLIED : ITEM_OUTCOME_UNKNOWN);
      w.string(r.message);
    }
  }
  return w.finish();
}

/** Reads a reply's first byte; throws the refusal it carries, if it is one. */
function openReply(buf: Uint8Array, leader: NodeId): Reader {
  const r = new Reader(buf);
  if (r.u8() === REPLY_REFUSED) {
    const message = r.string();
    const hint = r.string();
    throw new NotAvailableError(`leader ${leader} refused: ${message}`, hint, r.u8() === 1);
  }
  return r;
}

export function decodeIndexReply(buf: Uint8Array, leader: NodeId): number {
  const index = openReply(buf, leader).uint();
  return index;
}

export function decodeAppReply(buf: Uint8Array, leader: NodeId): Uint8Array {
  return openReply(buf, leader).bytes();
}

function decodeProposeBatchReply(buf: Uint8Array, leader: NodeId, expected: number): (number | NotAvailableError)[] {
  const r = new Reader(buf);
  const tag = r.u8();
  if (tag === REPLY_REFUSED) {
    openReply(buf, leader);
  }
  if (tag !== REPLY_PROPOSE_BATCH) throw new Error(`unexpected reply to forwarded proposals (tag ${tag})`);
  const count = r.uint();
  if (count !== expected) throw new Error(`leader ${leader} answered ${count} of ${expected} forwarded proposals`);
  const out: (number | NotAvailableError)[] = [];
  for (let i = 0; i < count; i++) {
    const item = r.u8();
    if (item === ITEM_INDEX) out.push(r.uint());
    else out.push(new NotAvailableError(`leader ${leader} refused: ${r.string()}`, leader, item === ITEM_NEVER_APPLIED));
  }
  r.done();
  return out;
}

// ---------------------------------------------------------------- the leader's status

function writeOptionalUint(w: Writer, v: number | undefined): void {
  if (v === undefined) {
    w.u8(ABSENT);
    return;
  }
  w.u8(PRESENT);
  w.uint(v);
}

function readOptionalUint(r: Reader): number | undefined {
  return r.bool() ? r.uint() : undefined;
}

function writeOptionalBool(w: Writer, v: boolean | undefined): void {
  if (v === undefined) {
    w.u8(ABSENT);
    return;
  }
  w.u8(PRESENT);
  w.u8(v ? 1 : 0);
}

function readOptionalBool(r: Reader): boolean | undefined {
  return r.bool() ? r.bool() : undefined;
}

/** One of `allowed`, or a CodecError naming what arrived. */
function readOneOf<T extends string>(r: Reader, allowed: readonly T[], what: string): T {
  const text = r.string();
  const found = allowed.find((a) => a === text);
  if (found === undefined) throw new CodecError(`unknown ${what} ${JSON.stringify(text.slice(0, 40))} in a status reply`);
  return found;
}

export function encodeStatusReply(status: NodeStatus): Uint8Array {
  const w = new Writer(64 + 64 * status.members.length);
  w.u8(REPLY_STATUS);
  w.string(status.id);
  w.string(status.role);
  w.string(status.leader);
  w.uint(status.term);
  w.uint(status.commitIndex);
  w.uint(status.appliedIndex);
  writeOptionalUint(w, status.lastContactMs);
  w.uint(status.members.length);
  for (const m of status.members) {
    w.string(m.id);
    w.string(m.peerAddress);
    w.string(m.role);
    writeOptionalUint(w, m.match);
    writeOptionalUint(w, m.lastContactMs);
    writeOptionalBool(w, m.reachable);
  }
  return w.finish();
}

export function decodeStatusReply(buf: Uint8Array, leader: NodeId): NodeStatus {
  const r = openReply(buf, leader);
  // openReply read the first byte; a success here must be a status.
  if (buf[0] !== REPLY_STATUS) throw new CodecError(`leader ${leader} answered a status request with reply tag ${buf[0]}`);
  const id = r.string();
  const role = readOneOf(r, ROLES, "role");
  const leaderId = r.string();
  const term = r.uint();
  const commitIndex = r.uint();
  const appliedIndex = r.uint();
  const lastContactMs = readOptionalUint(r);
  const count = r.uint();
  if (count > STATUS_MEMBERS_MAX) throw new CodecError(`a status reply of ${count} members exceeds ${STATUS_MEMBERS_MAX}`);
  const members: MemberStatus[] = [];
  for (let i = 0; i < count; i++) {
    members.push({
      id: r.string(),
      peerAddress: r.string(),
      role: readOneOf(r, MEMBER_ROLES, "member role"),
      match: readOptionalUint(r),
      lastContactMs: readOptionalUint(r),
      reachable: readOptionalBool(r),
    });
  }
  r.done();
  return { id, role, leader: leaderId, term, commitIndex, appliedIndex, lastContactMs, members };
}
