// A generic linearizability search over one small sequential model: Wing & Gong's depth-first
// search as Lowe improved it (and Porcupine implements it), with memoization of every
// (set of operations linearized, model state) already explored, so that no configuration is
// searched twice.
//
// The history is a list of call and return entries in time order, linked so that an operation
// can be taken out (linearized) and put back (backtracking) in O(1). The search walks the list
// from its head: at a call it tries to linearize that operation now; at a return it has met an
// operation that had to be linearized before this point and was not, so it backtracks.
//
// Real-time order: operation a precedes b only when a returned strictly before b was invoked.
// Equal times count as concurrent (calls sort before returns), so that the coarse resolution of
// a millisecond clock never makes a correct history look wrong.
//
// The memo holds a 64-bit hash of each configuration (two independent 32-bit Zobrist hashes of
// the linearized set, kept up to date as operations are linearized and put back), not the set
// itself: that keeps memory at a few dozen bytes per configuration whatever the number of
// operations. A collision could only prune a configuration never searched, so at worst it reports
// a correct history as not linearizable, never the reverse; at the bound below (1e6 configurations)
// the chance of one is below 1e-7.

import { SeededRandom } from "../../src/raft/core/random.js";

export interface WglModel<State, Input> {
  readonly init: State;
  /** The state after `input` is applied in `state`, or undefined when `input` cannot happen there. */
  step(state: State, input: Input): State | undefined;
  /** Equal for equal states: part of the memo key. */
  stateKey(state: State): number | string;
  /** Whether `input` may change the state (true for writes): names the last write in a diagnosis. */
  changesState(input: Input): boolean;
}

export interface WglOp<Input> {
  readonly input: Input;
  readonly invokedAtMs: number;
  /** Infinity when the outcome is unknown: it may take effect at any later time. */
  readonly completedAtMs: number;
}

/** Why a history is not linearizable, as far as the deepest linearization the search reached. */
export interface WglDiagnosis {
  /** Operations the deepest linearization placed. */
  readonly depth: number;
  /** The operation (index into ops) that could not be placed before its return. */
  readonly blockedOp: number;
  /** The last state-changing operation of that linearization (index into ops), if any. */
  readonly lastWriteOp: number | undefined;
}

export type WglResult =
  | { readonly outcome: "linearizable"; readonly statesExplored: number }
  | { readonly outcome: "not-linearizable"; readonly statesExplored: number; readonly diagnosis: WglDiagnosis }
  /** The search met its bound of explored configurations before deciding. */
  | { readonly outcome: "undecided"; readonly statesExplored: number };

/** The bound on explored configurations the search allows itself, when not told. */
export const WGL_STATES_MAX_DEFAULT = 1_000_000;

const HASH_SEED = 0x5eed_c0de;

export function checkLinearizableWgl<State, Input>(
  model: WglModel<State, Input>, ops: readonly WglOp<Input>[], statesMax: number = WGL_STATES_MAX_DEFAULT,
): WglResult {
  const n = ops.length;
  // Entries: 0 is the head, 2i+1 the call of op i, 2i+2 its return, 2n+1 the tail.
  const head = 0;
  const tail = 2 * n + 1;
  const entryTimeMs = new Float64Array(2 * n + 1);
  ops.forEach((op, i) => {
    entryTimeMs[2 * i + 1] = op.invokedAtMs;
    entryTimeMs[2 * i + 2] = op.completedAtMs;
  });
  const order = Array.from({ length: 2 * n }, (_, k) => k + 1);
  order.sort((a, b) => entryTimeMs[a] - entryTimeMs[b] || (b % 2) - (a % 2) || a - b);
  const next = new Int32Array(2 * n + 2);
  const prev = new Int32Array(2 * n + 2);
  let last = head;
  for (const entry of order) {
    next[last] = entry;
    prev[entry] = last;
    last = entry;
  }
  next[last] = tail;
  prev[tail] = last;

  const random = new SeededRandom(HASH_SEED);
  const zobristLow = Uint32Array.from({ length: n }, () => random.nextUint32());
  const zobristHigh = Uint32Array.from({ length: n }, () => random.nextUint32());
  let hashLow = 0;
  let hashHigh = 0;
  const seen = new ConfigurationSet();
  const stateIds = new Map<number | string, number>();
  const remember = (state: State): boolean => {
    const key = model.stateKey(state);
    let stateId = stateIds.get(key);
    if (stateId === undefined) stateIds.set(key, (stateId = stateIds.size));
    return seen.add(hashLow, hashHigh, stateId);
  };
  const toggle = (i: number): void => {
    hashLow ^= zobristLow[i];
    hashHigh ^= zobristHigh[i];
  };
  const lift = (call: number): void => {
    const ret = call + 1;
    next[prev[call]] = next[call];
    prev[next[call]] = prev[call];
    next[prev[ret]] = next[ret];
    prev[next[ret]] = prev[ret];
  };
  const unlift = (call: number): void => {
    const ret = call + 1;
    next[prev[ret]] = ret;
    prev[next[ret]] = ret;
    next[prev[call]] = call;
    prev[next[call]] = call;
  };

  // The stack of linearized calls, the state before each, and the last write at each depth.
  const stackCalls: number[] = [];
  const stackStates: State[] = [];
  const stackLastWrite: (number | undefined)[] = [];
  let state = model.init;
  let lastWrite: number | undefined;
  let statesExplored = 0;
  let diagnosis: WglDiagnosis | undefined;
  let entry = next[head];
  while (next[head] !== tail) {
    if (entry % 2 === 1) {
      const i = (entry - 1) >> 1;
      const after = model.step(state, ops[i].input);
      let placed = false;
      if (after !== undefined) {
        toggle(i);
        if (remember(after)) {
          statesExplored++;
          if (statesExplored > statesMax) return { outcome: "undecided", statesExplored };
          stackCalls.push(entry);
          stackStates.push(state);
          stackLastWrite.push(lastWrite);
          if (model.changesState(ops[i].input)) lastWrite = i;
          state = after;
          lift(entry);
          entry = next[head];
          placed = true;
        } else {
          toggle(i);
        }
      }
      if (!placed) entry = next[entry];
    } else {
      const blockedOp = (entry - 2) >> 1;
      if (diagnosis === undefined || stackCalls.length > diagnosis.depth) diagnosis = { depth: stackCalls.length, blockedOp, lastWriteOp: lastWrite };
      const call = stackCalls.pop();
      if (call === undefined) return { outcome: "not-linearizable", statesExplored, diagnosis };
      state = stackStates.pop() as State;
      lastWrite = stackLastWrite.pop();
      toggle((call - 1) >> 1);
      unlift(call);
      entry = next[call];
    }
  }
  return { outcome: "linearizable", statesExplored };
}

/** Most instances see a few dozen operations: start small, double at half full. */
const CONFIGURATION_SLOTS_INITIAL = 64;

/** An open-addressing set of configurations: (64-bit hash of the linearized set, state id). */
class ConfigurationSet {
  private low = new Uint32Array(CONFIGURATION_SLOTS_INITIAL);
  private high = new Uint32Array(CONFIGURATION_SLOTS_INITIAL);
  /** State id + 1; 0 marks an empty slot. */
  private state = new Uint32Array(CONFIGURATION_SLOTS_INITIAL);
  private size = 0;

  /** False when the configuration was already there. */
  add(low: number, high: number, stateId: number): boolean {
    if (2 * (this.size + 1) > this.state.length) this.grow();
    return this.insert(low >>> 0, high >>> 0, stateId + 1);
  }

  private insert(low: number, high: number, stateTag: number): boolean {
    const mask = this.state.length - 1;
    let slot = (Math.imul(low ^ high, 0x9e3779b1) ^ stateTag) & mask;
    for (;;) {
      const tag = this.state[slot];
      if (tag === 0) {
        this.low[slot] = low;
        this.high[slot] = high;
        this.state[slot] = stateTag;
        this.size++;
        return true;
      }
      if (tag === stateTag && this.low[slot] === low && this.high[slot] === high) return false;
      slot = (slot + 1) & mask;
    }
  }

  private grow(): void {
    const { low, high, state } = this;
    this.low = new Uint32Array(low.length * 2);
    this.high = new Uint32Array(low.length * 2);
    this.state = new Uint32Array(low.length * 2);
    this.size = 0;
    for (let i = 0; i < state.length; i++) if (state[i] !== 0) this.insert(low[i], high[i], state[i]);
  }
}
