// When this node last heard from each peer, and so, on the leader, which members are reachable.
//
// Any message from a peer counts: a follower answers every append and heartbeat, so a leader
// hears from each live follower at least once per heartbeat interval. Check-quorum's
// `recentActive` says the same thing as a flag that resets every election timeout; this keeps the
// time instead, so a status page can show "last contact 40 ms ago" and never reads a flag in the
// instant after its reset. Only the leader's view means anything: followers talk to the leader,
// not to each other.

import type { NodeId } from "../core/types.js";

/** What the leader can say about a member's reachability. */
export interface MemberContact {
  /** Milliseconds since this node last heard from the member: 0 for itself, undefined if never. */
  readonly lastContactMs: number | undefined;
  /**
   * Heard from within `reachableWithinMs`. Undefined while that cannot be told yet: this node
   * has led for less than that window and has not heard from the member since it took over.
   */
  readonly reachable: boolean | undefined;
}

export class PeerContact {
  private readonly heardAtMs = new Map<NodeId, number>();
  private leadingSinceMs: number | undefined;

  /**
   * @param selfId this node, always in contact with itself
   * @param reachableWithinMs how recently a member must have been heard from to count as
   *   reachable: the election timeout, the silence after which a follower gives up on a leader,
   *   so the leader gives up on a follower after the same silence.
   */
  constructor(private readonly selfId: NodeId, private readonly reachableWithinMs: number) {
    if (!(reachableWithinMs > 0)) throw new RangeError(`reachableWithinMs must be positive, not ${reachableWithinMs}`);
  }

  heard(peer: NodeId, nowMs: number): void {
    if (peer !== this.selfId) this.heardAtMs.set(peer, nowMs);
  }

  /** This node became the leader at `nowMs`, or stopped leading (undefined). */
  leading(nowMs: number | undefined): void {
    this.leadingSinceMs = nowMs;
  }

  /** Forgets peers that are no longer members, so the map stays as small as the membership. */
  retainOnly(members: readonly NodeId[]): void {
    for (const id of this.heardAtMs.keys()) if (!members.includes(id)) this.heardAtMs.delete(id);
  }

  /** The member's contact as the leader sees it; undefined when this node does not lead. */
  of(member: NodeId, nowMs: number): MemberContact | undefined {
    if (this.leadingSinceMs === undefined) return undefined;
    if (member === this.selfId) return { lastContactMs: 0, reachable: true };
    const heardAtMs = this.heardAtMs.get(member);
    const lastContactMs = heardAtMs === undefined ? undefined : Math.max(0, Math.round(nowMs - heardAtMs));
    if (lastContactMs !== undefined && lastContactMs <= this.reachableWithinMs) return { lastContactMs, reachable: true };
    // Silent for the window, but the window began before this node led: it may simply not have asked yet.
    const ledLongEnough = nowMs - this.leadingSinceMs > this.reachableWithinMs;
    return { lastContactMs, reachable: ledLongEnough ? false : undefined };
  }
}
