// Each node's role over the run, from what the runner's polls of GET /v1/cluster saw. A node that
// did not answer a poll leaves a hole in its observations; a hole longer than the bound is drawn as
// "unreachable" (crashed, paused or cut off from the runner), since its role there is unknown.

import type { ClusterObservation } from "../history.js";

export type LaneState = "leader" | "follower" | "candidate" | "other" | "unreachable";

/** One stretch of a node's lane, [startMs, endMs], in one state and one term. */
export interface LaneSegment {
  readonly state: LaneState;
  /** The role the node reported ("" when unreachable). */
  readonly role: string;
  readonly term: number;
  readonly startMs: number;
  readonly endMs: number;
}

/** The first observation of a node in a new term. */
export interface TermChange {
  readonly atMs: number;
  readonly fromTerm: number;
  readonly toTerm: number;
}

export interface NodeLane {
  readonly node: string;
  readonly segments: readonly LaneSegment[];
  readonly termChanges: readonly TermChange[];
}

/** Node names in the order a person expects: n2 before n10. */
export function compareNodeNames(a: string, b: string): number {
  return a.localeCompare(b, "en", { numeric: true });
}

/**
 * One lane per node in `nodes` (in that order; a node never observed gets an empty lane).
 * `observationGapMsMax`: two polls further apart than this leave the node unreachable in between.
 */
export function leaderLanes(observations: readonly ClusterObservation[], nodes: readonly string[], observationGapMsMax: number): NodeLane[] {
  const byNode = new Map<string, ClusterObservation[]>(nodes.map((node) => [node, []]));
  for (const observation of observations) byNode.get(observation.node)?.push(observation);
  return nodes.map((node) => laneOf(node, byNode.get(node) ?? [], observationGapMsMax));
}

function laneOf(node: string, unsorted: readonly ClusterObservation[], observationGapMsMax: number): NodeLane {
  const seen = [...unsorted].sort((a, b) => a.atMs - b.atMs);
  const segments: LaneSegment[] = [];
  const termChanges: TermChange[] = [];
  for (let i = 0; i < seen.length; i++) {
    const current = seen[i];
    const next = seen[i + 1] as ClusterObservation | undefined;
    if (i > 0 && seen[i - 1].term !== current.term) termChanges.push({ atMs: current.atMs, fromTerm: seen[i - 1].term, toTerm: current.term });
    if (next === undefined) {
      // The last poll stands for as long as the one before it did, so a lone final state still shows.
      const previousIntervalMs = i > 0 ? current.atMs - seen[i - 1].atMs : 0;
      append(segments, stateSegment(current, current.atMs + Math.min(previousIntervalMs, observationGapMsMax)));
    } else if (next.atMs - current.atMs > observationGapMsMax) {
      append(segments, { state: "unreachable", role: "", term: current.term, startMs: current.atMs, endMs: next.atMs });
    } else {
      append(segments, stateSegment(current, next.atMs));
    }
  }
  return { node, segments, termChanges };
}

function stateSegment(observation: ClusterObservation, endMs: number): LaneSegment {
  return { state: stateOf(observation.role), role: observation.role, term: observation.term, startMs: observation.atMs, endMs };
}

function stateOf(role: string): LaneState {
  if (role === "leader" || role === "follower") return role;
  if (role === "candidate" || role === "preCandidate") return "candidate";
  return "other";
}

/** Polls in the same state extend one segment, so a long run draws a few rects per node, not one per poll. */
function append(segments: LaneSegment[], segment: LaneSegment): void {
  const last = segments.at(-1);
  if (last !== undefined && last.state === segment.state && last.role === segment.role && last.term === segment.term && last.endMs === segment.startMs) {
    segments[segments.length - 1] = { ...last, endMs: segment.endMs };
  } else {
    segments.push(segment);
  }
}
