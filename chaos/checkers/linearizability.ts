// A linearizability checker for registers whose writes carry unique values and whose write
// order is known: the order in which the replicated log applied them (its revision).
//
// With the write order fixed, a history is linearizable exactly when every operation can be
// given a point inside its [invoked, completed] interval such that, per key, the points run
//   w1, reads of w1, w2, reads of w2, ...
// (reads of the initial value come before w1). Placing each point as early as its constraints
// allow is optimal, because every constraint is either a lower bound (invocation, the previous
// group) or an upper bound (completion) on one point. So one greedy pass per key decides it.
// Linearizability is local (Herlihy & Wing), so checking keys separately is complete.

export interface WriteOp {
  readonly kind: "write";
  readonly key: string;
  readonly value: string;
  readonly invokedAt: number;
  /** undefined when the client never learned the outcome (timeout, crash): it may land at any later time. */
  readonly completedAt: number | undefined;
  /** True when the client was told it succeeded. */
  readonly acknowledged: boolean;
}

export interface ReadOp {
  readonly kind: "read";
  readonly key: string;
  /** The value read, or null for a key never written. */
  readonly value: string | null;
  readonly invokedAt: number;
  readonly completedAt: number;
}

export type Operation = WriteOp | ReadOp;

export interface LinearizabilityResult {
  readonly ok: boolean;
  readonly problems: string[];
}

/**
 * `appliedOrder` maps each key to the values written to it, in the order the log applied them.
 */
export function checkLinearizable(
  history: readonly Operation[],
  appliedOrder: ReadonlyMap<string, readonly string[]>,
): LinearizabilityResult {
  const problems: string[] = [];
  const byKey = new Map<string, Operation[]>();
  for (const op of history) {
    const list = byKey.get(op.key);
    if (list === undefined) byKey.set(op.key, [op]);
    else list.push(op);
  }
  for (const [key, ops] of byKey) checkKey(key, ops, appliedOrder.get(key) ?? [], problems);
  return { ok: problems.length === 0, problems };
}

function checkKey(key: string, ops: readonly Operation[], order: readonly string[], problems: string[]): void {
  const writes = new Map<string, WriteOp>();
  for (const op of ops) {
    if (op.kind === "write") writes.set(op.value, op);
  }
  const position = new Map<string, number>();
  order.forEach((value, i) => position.set(value, i + 1));

  for (const w of writes.values()) {
    if (w.acknowledged && !position.has(w.value)) {
      problems.push(`key ${key}: acknowledged write ${w.value} was never applied (lost)`);
    }
  }
  // Group reads by the write they observed: group 0 is the initial (absent) value.
  const readsOf: ReadOp[][] = Array.from({ length: order.length + 1 }, () => []);
  for (const op of ops) {
    if (op.kind !== "read") continue;
    const at = op.value === null ? 0 : position.get(op.value);
    if (at === undefined) {
      problems.push(`key ${key}: a read returned ${op.value}, which no applied write wrote`);
      continue;
    }
    (readsOf[at]).push(op);
  }

  let t = Number.NEGATIVE_INFINITY;
  /** The read that pushed `t` to where it is, if a read did: it is the stale one when a write cannot fit. */
  let pushedBy: ReadOp | undefined;
  for (let i = 0; i <= order.length; i++) {
    if (i > 0) {
      const value = order[i - 1];
      const w = writes.get(value);
      if (w === undefined) {
        problems.push(`key ${key}: the log applied ${value}, which no client wrote`);
        return;
      }
      const point = Math.max(t, w.invokedAt);
      if (w.completedAt !== undefined && point > w.completedAt) {
        if (pushedBy !== undefined && pushedBy.invokedAt > w.completedAt) {
          const saw = pushedBy.value === null ? "the initial value" : pushedBy.value;
          problems.push(`key ${key}: a read invoked at ${pushedBy.invokedAt} saw ${saw}, although write ${value} ` +
            `was acknowledged at ${w.completedAt}, before the read began (stale read)`);
        } else {
          problems.push(`key ${key}: write ${value} (invoked ${w.invokedAt}, acknowledged ${w.completedAt}) is ordered after ` +
            `something that happened later than its acknowledgement; the log order contradicts real time`);
        }
        return;
      }
      if (point > t) pushedBy = undefined;
      t = point;
    }
    let groupEnd = t;
    for (const r of readsOf[i]) {
      const point = Math.max(t, r.invokedAt);
      if (point > r.completedAt) {
        const saw = r.value === null ? "the initial value" : r.value;
        problems.push(`key ${key}: a read invoked at ${r.invokedAt} and completed at ${r.completedAt} saw ${saw}, ` +
          `but a newer write had already completed before the read began (stale read)`);
        return;
      }
      if (point > groupEnd) {
        groupEnd = point;
        pushedBy = r;
      }
    }
    t = groupEnd;
  }
}
