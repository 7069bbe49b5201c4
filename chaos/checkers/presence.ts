// Whether an instance was present at a revision, as far as the history can tell, and at which
// revision its deletion must have happened. Revisions are Raft indexes, and an ok write carries
// the index it committed at, so an ok write with a revision is a known point on the revision
// axis. A failed write never happened. An unknown one (or an ok one whose answer carried no
// revision) may have happened at some revision we cannot name, or never.
//
// The workload's discipline makes most instances decidable: an id is registered once and is
// deregistered only after its registration was acknowledged, nothing else removes an instance
// (no deregister-after, no re-registration under another service), so an instance's life is one
// interval [register, first deregister). Hence, at revision R:
//   - absent, if an ok deregister has revision <= R (absent from then on, whatever else is unknown);
//   - absent, if no register took effect or may have (never registered);
//   - otherwise undecidable, if the register is not ok with a revision (or there are several);
//   - absent, if the register's revision is > R;
//   - otherwise undecidable, if a deregister is not ok with a revision (it may have come before R);
//   - otherwise present.

import type { DeregisterOp, Operation, RegisterOp } from "../history.js";
import { pushTo } from "./group.js";

/** One instance's registers and deregisters that took effect or may have: failed ones are left out. */
export interface InstanceWrites {
  readonly instance: string;
  readonly registers: readonly RegisterOp[];
  readonly deregisters: readonly DeregisterOp[];
}

/** `why` names the writes that decide it, for an anomaly; `opIds` are theirs. */
export type Presence =
  | { readonly kind: "present" | "absent"; readonly why: string; readonly opIds: readonly number[] }
  | { readonly kind: "indeterminate" };

/** Where an instance's delete event must be: nowhere, at a known revision, or we cannot tell. */
export type Deletion =
  | { readonly kind: "none" }
  | { readonly kind: "at"; readonly revision: number; readonly opId: number }
  | { readonly kind: "indeterminate" };

type Known<T extends RegisterOp | DeregisterOp> = T & { readonly revision: number };

function isKnown<T extends RegisterOp | DeregisterOp>(op: T): op is Known<T> {
  return op.outcome === "ok" && op.revision !== undefined;
}

/** Every instance's writes that did not fail, by instance id. */
export function instanceWritesOf(ops: readonly Operation[]): Map<string, InstanceWrites> {
  const registers = new Map<string, RegisterOp[]>();
  const deregisters = new Map<string, DeregisterOp[]>();
  for (const op of ops) {
    if (op.kind === "register" && op.outcome !== "fail") pushTo(registers, op.instance, op);
    if (op.kind === "deregister" && op.outcome !== "fail") pushTo(deregisters, op.instance, op);
  }
  const out = new Map<string, InstanceWrites>();
  for (const instance of new Set([...registers.keys(), ...deregisters.keys()])) {
    out.set(instance, { instance, registers: registers.get(instance) ?? [], deregisters: deregisters.get(instance) ?? [] });
  }
  return out;
}

/** The instance's presence at `revision`; `writes` undefined means it has none. Called per (reset, instance): no allocation until it decides. */
export function presenceAt(writes: InstanceWrites | undefined, revision: number): Presence {
  const deregisters = writes?.deregisters ?? [];
  const deleting = earliestKnown(deregisters, revision);
  if (deleting !== undefined) return { kind: "absent", why: `deregistered by #${deleting.id} at revision ${deleting.revision}`, opIds: [deleting.id] };
  const registers = writes?.registers ?? [];
  if (registers.length === 0) return { kind: "absent", why: "never registered (no register of it took effect or may have)", opIds: [] };
  const register = registers[0];
  if (registers.length > 1 || !isKnown(register)) return { kind: "indeterminate" };
  if (register.revision > revision) {
    return { kind: "absent", why: `registered by #${register.id} only at revision ${register.revision}`, opIds: [register.id] };
  }
  if (!deregisters.every(isKnown)) return { kind: "indeterminate" };
  const later = earliestKnown(deregisters, Number.POSITIVE_INFINITY);
  const until = later === undefined ? "never deregistered" : `deregistered by #${later.id} only at revision ${later.revision}`;
  return {
    kind: "present", why: `registered by #${register.id} at revision ${register.revision}, ${until}`,
    opIds: later === undefined ? [register.id] : [register.id, later.id],
  };
}

/** Where the instance's delete event must be: only a deregister deletes (see the discipline above). */
export function deletionOf(writes: InstanceWrites | undefined): Deletion {
  const deregisters = writes?.deregisters ?? [];
  if (!deregisters.every(isKnown)) return { kind: "indeterminate" };
  const first = earliestKnown(deregisters, Number.POSITIVE_INFINITY);
  return first === undefined ? { kind: "none" } : { kind: "at", revision: first.revision, opId: first.id };
}

/** The ok deregister with a revision <= upTo that has the lowest revision. */
function earliestKnown(deregisters: readonly DeregisterOp[], upTo: number): Known<DeregisterOp> | undefined {
  let best: Known<DeregisterOp> | undefined;
  for (const d of deregisters) if (isKnown(d) && d.revision <= upTo && (best === undefined || d.revision < best.revision)) best = d;
  return best;
}
