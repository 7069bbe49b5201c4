// What every chaos client shares: the recorder, a node picker, its own seeded randomness, and a
// loop that runs one operation at a time until the workload stops.

import { setMaxListeners } from "node:events";
import { SeededRandom } from "../../src/raft/core/random.js";
import type { Recorder } from "./recorder.js";
import type { NodeTarget } from "./http.js";
import type { Settled } from "./outcome.js";

export interface ClientContext {
  readonly name: string;
  readonly recorder: Recorder;
  readonly random: SeededRandom;
  readonly opTimeoutMs: number;
  /** The current members, asked again at every pick: membership may change during a run. */
  readonly targets: () => readonly NodeTarget[];
}

export function pickNode(ctx: ClientContext): NodeTarget | undefined {
  const nodes = ctx.targets();
  return nodes.length === 0 ? undefined : ctx.random.pick(nodes);
}

/** The fields every operation record has, from when it was invoked and how it settled. */
export function opBase(ctx: ClientContext, node: NodeTarget, invokedAtMs: number, settled: Settled): {
  id: number; client: string; node: string; invokedAtMs: number; completedAtMs: number | undefined;
  outcome: Settled["outcome"]; status?: number; error?: string;
} {
  return {
    id: ctx.recorder.nextId(),
    client: ctx.name,
    node: node.id,
    invokedAtMs,
    completedAtMs: settled.outcome === "unknown" ? undefined : ctx.recorder.now(),
    outcome: settled.outcome,
    ...(settled.status === undefined ? {} : { status: settled.status }),
    ...(settled.error === undefined ? {} : { error: settled.error }),
  };
}

/** Clients that may pause on one stop signal at once. */
const CLIENT_LISTENERS_MAX = 10_000;

/** Stops every client loop at once, waking the ones that are pausing. */
export class StopSignal {
  private readonly controller = new AbortController();

  constructor() {
    // Every pausing client listens on this one signal; more than ten at once is the design, not a leak.
    setMaxListeners(CLIENT_LISTENERS_MAX, this.controller.signal);
  }

  get stopped(): boolean {
    return this.controller.signal.aborted;
  }

  stop(): void {
    this.controller.abort();
  }

  /** Resolves after `ms`, or at once when stopped. */
  pause(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const signal = this.controller.signal;
      function done(): void {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      }
      signal.addEventListener("abort", done, { once: true });
    });
  }
}

/** Runs `step` then pauses `pauseMs()`, over and over, until stopped; a step that throws is a bug, so it ends the loop loudly. */
export async function runLoop(stop: StopSignal, pauseMs: () => number, step: () => Promise<void>): Promise<void> {
  while (!stop.stopped) {
    await step();
    await stop.pause(pauseMs());
  }
}

/** Derives each client's seed from the run's, in the order clients are made, so a seed replays the same choices. */
export class SeedSource {
  private readonly master: SeededRandom;

  constructor(seed: number) {
    this.master = new SeededRandom(seed);
  }

  next(): SeededRandom {
    return new SeededRandom(this.master.nextUint32());
  }
}
