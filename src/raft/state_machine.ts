// The contract between Raft and what it replicates: the registry, the CA and the key/value store
// implement it, and the node applies committed entries to it in log order.

import type { Chunks } from "../common/codec.js";

/** What the driver applies committed entries to. Must be deterministic: same entries, same state. */
export interface StateMachine {
  apply(index: number, data: Uint8Array): void;
  /**
   * The state as of the last apply. It must be captured before the call returns (later applies
   * must not leak in), but may be encoded asynchronously, so a large state does not stall the
   * event loop while it is written out.
   */
  snapshot(): Chunks | Promise<Chunks>;
  restore(data: Uint8Array): void;
}
