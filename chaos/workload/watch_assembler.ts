// Turns a watch stream's pieces (event batches that may come in fragments, resets that come in
// chunks, progress) into the complete messages the history records. The gRPC and SSE streams
// carry the same pieces in different encodings; this is the one place they are put together.
//
// Invariant: `revision` is the revision of the last complete message; it is what a reconnect
// resumes from, so a partial batch or reset is never counted as held.

import type { WatchEvent, WatchMessage } from "../history.js";

export type WatchPiece =
  | { readonly kind: "events"; readonly revision: number; readonly coalesced: boolean; readonly fragment: boolean; readonly events: readonly WatchEvent[] }
  | { readonly kind: "reset"; readonly revision: number; readonly reason: string; readonly first: boolean; readonly last: boolean; readonly instances: readonly string[] }
  | { readonly kind: "progress"; readonly revision: number };

/** Events and reset chunks joined in one message, at most; past it the stream is broken off as misbehaving. */
export const PARTIAL_ITEMS_MAX = 1_000_000;

export class WatchAssembler {
  revision = 0;
  private events: WatchEvent[] = [];
  private coalesced = false;
  private resetInstances: string[] | undefined;

  constructor(private readonly now: () => number, private readonly emit: (m: WatchMessage) => void) {}

  /** Applies one piece; returns an error text when the stream broke the protocol (the caller reconnects). */
  apply(p: WatchPiece): string | undefined {
    if (p.kind === "progress") {
      if (this.events.length > 0 || this.resetInstances !== undefined) return `progress at ${p.revision} in the middle of a batch or reset`;
      this.complete({ atMs: this.now(), kind: "progress", revision: p.revision });
      return undefined;
    }
    if (p.kind === "events") {
      if (this.resetInstances !== undefined) return `events at ${p.revision} in the middle of a reset`;
      this.events.push(...p.events);
      this.coalesced ||= p.coalesced;
      if (this.events.length > PARTIAL_ITEMS_MAX) return `a batch of more than ${PARTIAL_ITEMS_MAX} events`;
      if (p.fragment) return undefined;
      const message: WatchMessage = { atMs: this.now(), kind: "events", revision: p.revision, coalesced: this.coalesced, events: this.events };
      this.events = [];
      this.coalesced = false;
      this.complete(message);
      return undefined;
    }
    if (this.events.length > 0) return `a reset at ${p.revision} in the middle of a fragmented batch`;
    if (p.first) this.resetInstances = [];
    if (this.resetInstances === undefined) return `a reset chunk at ${p.revision} without its first chunk`;
    this.resetInstances.push(...p.instances);
    if (this.resetInstances.length > PARTIAL_ITEMS_MAX) return `a reset of more than ${PARTIAL_ITEMS_MAX} instances`;
    if (!p.last) return undefined;
    const message: WatchMessage = { atMs: this.now(), kind: "reset", revision: p.revision, reason: p.reason, instances: this.resetInstances };
    this.resetInstances = undefined;
    this.complete(message);
    return undefined;
  }

  /** The stream broke: what was only partly received is dropped, and will be sent again after the resume. */
  abandonPartial(): void {
    this.events = [];
    this.coalesced = false;
    this.resetInstances = undefined;
  }

  private complete(m: WatchMessage & { readonly revision: number }): void {
    // The revision a resume starts from never goes down; the checker judges what was sent.
    this.revision = Math.max(this.revision, m.revision);
    this.emit(m);
  }
}
