// Who the members are and where to reach them. The core knows member ids; the address book maps
// them to peer addresses. An address arrives as the context of the addLearner change that added
// the member, and travels inside every snapshot (an envelope around the state machine's own bytes),
// so a node that catches up by snapshot knows its peers too.

import type { Logger } from "pino";
import { type Chunks, Reader, Writer, chunksLength, writeChunks } from "../../common/codec.js";
import type { RaftNode } from "../core/raft.js";
import { type ConfChange, type NodeId, RaftRefusal } from "../core/types.js";
import type { PeerNetwork } from "./ports.js";

const SNAPSHOT_ENVELOPE_VERSION = 1;

export class AddressBook {
  private members = new Map<NodeId, string>();
  /** The network learns of peers only once it has started. */
  private networkStarted = false;

  constructor(
    private readonly selfId: NodeId,
    private readonly network: PeerNetwork,
    private readonly log: Logger,
  ) {}

  get all(): ReadonlyMap<NodeId, string> {
    return this.members;
  }

  addressOf(id: NodeId): string | undefined {
    return this.members.get(id);
  }

  /** The network is up: tell it every peer. */
  networkUp(): void {
    this.networkStarted = true;
    for (const [id, address] of this.members) this.setPeer(id, address);
  }

  /** The book a snapshot carries replaces ours. */
  replace(members: readonly (readonly [NodeId, string])[]): void {
    this.members = new Map(members);
    for (const [id, address] of this.members) this.setPeer(id, address);
  }

  /** A member we were told of before the log says so (the peers a joining node contacts). */
  learnOf(id: NodeId, address: string): void {
    if (this.members.has(id)) return;
    this.members.set(id, address);
    this.setPeer(id, address);
  }

  /** A membership change, as the log applies it. */
  apply(change: ConfChange): void {
    if (change.type === "addLearner" && change.context !== undefined && change.context !== "") {
      this.members.set(change.node, change.context);
      this.setPeer(change.node, change.context);
    } else if (change.type === "remove") {
      this.members.delete(change.node);
      if (this.networkStarted && change.node !== this.selfId) this.network.removePeer(change.node);
    }
    this.log.info({ change }, "membership change applied");
  }

  private setPeer(id: NodeId, address: string): void {
    if (this.networkStarted && id !== this.selfId) this.network.setPeer(id, address);
  }
}

/** Learners are promoted, one at a time, once they hold everything the leader has committed. */
export function promoteCaughtUpLearners(core: RaftNode, log: Logger): void {
  for (const id of core.conf.learners) {
    const pr = core.progressOf(id);
    if (pr === undefined || pr.match < core.log.committed) continue;
    try {
      core.proposeConfChange({ type: "promote", node: id });
      log.info({ node: id, match: pr.match }, "promoting caught-up learner to voter");
    } catch (err) {
      if (!(err instanceof RaftRefusal)) throw err;
    }
    return;
  }
}

/** The snapshot the core carries: the member address book, then the state machine's own bytes. */
export function encodeSnapshotEnvelope(members: ReadonlyMap<NodeId, string>, app: Chunks): Uint8Array {
  let membersBytes = 0;
  for (const [id, address] of members) membersBytes += 16 + 3 * (id.length + address.length);
  // The one copy of the whole state: sized exactly once.
  const w = new Writer(32 + membersBytes + chunksLength(app));
  w.u8(SNAPSHOT_ENVELOPE_VERSION);
  const ids = [...members.keys()].sort();
  w.uint(ids.length);
  for (const id of ids) {
    w.string(id);
    w.string(members.get(id) as string);
  }
  writeChunks(w, app);
  return w.finish();
}

export function decodeSnapshotEnvelope(data: Uint8Array): { members: [NodeId, string][]; app: Uint8Array } {
  if (data.byteLength === 0) return { members: [], app: data };
  const r = new Reader(data);
  const version = r.u8();
  if (version !== SNAPSHOT_ENVELOPE_VERSION) throw new Error(`unknown snapshot envelope version ${version}`);
  const count = r.uint();
  const members: [NodeId, string][] = [];
  for (let i = 0; i < count; i++) members.push([r.string(), r.string()]);
  const app = r.bytes();
  r.done();
  return { members, app };
}
