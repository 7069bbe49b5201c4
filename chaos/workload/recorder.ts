// Every operation a chaos client runs, on one monotonic clock. All clients live in the runner's
// process, so one clock orders them all, whatever the nodes' clocks say.

import { performance } from "node:perf_hooks";
import type { Operation } from "../history.js";

export class Recorder {
  readonly ops: Operation[] = [];
  private readonly startMs = performance.now();
  private lastId = 0;
  private failedCount = 0;
  private unknownCount = 0;

  /**
   * Milliseconds since construction, unrounded: rounding could make two overlapping operations
   * look ordered, which a linearizability checker would then hold against the cluster.
   */
  now(): number {
    return performance.now() - this.startMs;
  }

  nextId(): number {
    return ++this.lastId;
  }

  record(op: Operation): void {
    this.ops.push(op);
    if (op.outcome === "fail") this.failedCount++;
    else if (op.outcome === "unknown") this.unknownCount++;
  }

  counts(): { ops: number; failed: number; unknown: number } {
    return { ops: this.ops.length, failed: this.failedCount, unknown: this.unknownCount };
  }
}
