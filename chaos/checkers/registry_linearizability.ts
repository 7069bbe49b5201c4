// Linearizability of the registry's register / deregister / linearizable read history.
//
// Linearizability is local (Herlihy & Wing): a history is linearizable exactly when, for every
// object, its sub-history is. The objects here are the (service, instance) pairs: a register
// makes the instance present, a deregister makes it absent, and a read of a service observes,
// for each instance, present (listed) or absent (not listed). Each pair is searched on its own
// with the WGL search of wgl.ts over that two-state model.
//
// What enters the search:
//   - a register or deregister that did not fail (a failed one did not take effect); an unknown
//     one may take effect at any time after it was invoked, or never (it returns at +infinity);
//   - ok linearizable reads only (stale reads are checked by stale_reads.ts); a read says
//     something only about instances of its own service.
//
// A read R of service S yields an observation of instance X of S only when it is informative:
//   X is listed in R, OR (X's register was invoked before R completed
//                        AND NOT (X's deregister is ok and completed before R was invoked)).
// Why leaving the others out never hides an anomaly. An omitted observation is "X absent" in a
// read R that either (a) completed no later than X's register was invoked, or there is no
// register that did not fail, or (b) was invoked after X's deregister D completed ok. Take any
// linearization of the pair's other operations (a point in each interval, in an order that
// agrees with the points) and add R:
//   (a) put R at R.completed, ordered before the register if they share the instant. Only the
//       register makes X present, and its point is >= its invocation >= R.completed, so X is
//       absent there.
//   (b) put R at R.invoked > D.completed >= D's point. The register was acknowledged before D
//       was sent (the workload's discipline), so its point precedes D's; every instance id is
//       registered at most once and nothing else makes it present, so X is absent there too.
// R's point lies in its interval and no other point moved, so the linearization still holds.
// Dropping observations can only make a history easier, so the pair is linearizable with the
// omitted observations exactly when it is without them.
//
// Pairs that break the discipline the proof rests on (two registers of one instance, say) get
// every read of their service instead, which needs no proof; stats.disciplineBroken counts them.

import type { DeregisterOp, ReadOp, RegisterOp, RunHistory, Verdict } from "../history.js";
import { pushTo } from "./group.js";
import { AnomalyLog, describeOp } from "./verdicts.js";
import { WGL_STATES_MAX_DEFAULT, type WglModel, type WglOp, checkLinearizableWgl } from "./wgl.js";

export interface RegistryLinearizabilityOptions {
  /** Configurations the search may explore per (service, instance) before calling it undecided. */
  readonly statesMaxPerInstance?: number;
}

/** Explored configurations per instance, at most: past it the instance is "undecided", never passed. */
export const STATES_MAX_PER_INSTANCE = WGL_STATES_MAX_DEFAULT;

type Observation =
  | { readonly kind: "register"; readonly op: RegisterOp }
  | { readonly kind: "deregister"; readonly op: DeregisterOp }
  | { readonly kind: "present" | "absent"; readonly op: ReadOp };

const ABSENT = 0;
const PRESENT = 1;

const presenceModel: WglModel<number, Observation> = {
  init: ABSENT,
  step(state, input) {
    switch (input.kind) {
      case "register": return PRESENT;
      case "deregister": return ABSENT;
      case "present": return state === PRESENT ? state : undefined;
      case "absent": return state === ABSENT ? state : undefined;
    }
  },
  stateKey: (state) => state,
  changesState: (input) => input.kind === "register" || input.kind === "deregister",
};

/** One service's ok linearizable reads, sorted by invocation, with what a window search needs. */
interface ServiceReads {
  readonly reads: ReadOp[];
  readonly invokedAtMs: Float64Array;
  readonly completedAtMs: Float64Array;
  /** The longest read: a read invoked this long before a time cannot complete after it. */
  readonly durationMsMax: number;
  /** Instance id to the indexes (ascending) of the reads that list it. */
  readonly listedBy: Map<string, number[]>;
}

interface InstanceWrites {
  readonly service: string;
  readonly instance: string;
  readonly registers: RegisterOp[];
  readonly deregisters: DeregisterOp[];
}

export function checkRegistryLinearizability(history: RunHistory, options: RegistryLinearizabilityOptions = {}): Verdict {
  const statesMax = options.statesMaxPerInstance ?? STATES_MAX_PER_INSTANCE;
  const anomalies = new AnomalyLog();
  const readsByService = indexReads(history);
  const writes = indexWrites(history);

  // Every pair a read listed or a write touched, each once.
  const pairs = new Map<string, { service: string; instance: string }>();
  for (const w of writes.values()) pairs.set(pairKey(w.service, w.instance), w);
  for (const [service, r] of readsByService) {
    for (const instance of r.listedBy.keys()) pairs.set(pairKey(service, instance), { service, instance });
  }

  let opsChecked = 0;
  let observations = 0;
  let statesExploredMax = 0;
  let undecided = 0;
  let disciplineBroken = 0;
  for (const [key, { service, instance }] of pairs) {
    const w = writes.get(key) ?? { service, instance, registers: [], deregisters: [] };
    const reads = readsByService.get(service);
    const broken = w.registers.length > 1 || w.deregisters.length > 1;
    if (broken) disciplineBroken++;
    const readObservations = reads === undefined ? [] : observationsOf(reads, instance, w, broken);
    observations += readObservations.length;
    const ops: WglOp<Observation>[] = [
      ...w.registers.map((op) => wglOp({ kind: "register", op })),
      ...w.deregisters.map((op) => wglOp({ kind: "deregister", op })),
      ...readObservations,
    ];
    opsChecked += w.registers.length + w.deregisters.length;
    const result = checkLinearizableWgl(presenceModel, ops, statesMax);
    statesExploredMax = Math.max(statesExploredMax, result.statesExplored);
    if (result.outcome === "undecided") undecided++;
    if (result.outcome !== "not-linearizable") continue;
    const blocked = ops[result.diagnosis.blockedOp].input;
    const lastWrite = result.diagnosis.lastWriteOp === undefined ? undefined : ops[result.diagnosis.lastWriteOp].input;
    anomalies.add({
      message: `instance ${instance} of service ${service}: not linearizable (${ops.length} operations). ${explainBlocked(blocked, lastWrite)}`,
      opIds: lastWrite === undefined ? [blocked.op.id] : [blocked.op.id, lastWrite.op.id],
      atMs: blocked.op.invokedAtMs,
    });
  }
  for (const r of readsByService.values()) opsChecked += r.reads.length;

  return anomalies.verdict("linearizable", {
    opsChecked, instancesChecked: pairs.size, observations, statesExploredMax, undecided, disciplineBroken,
    statesMaxPerInstance: statesMax,
  });
}

function pairKey(service: string, instance: string): string {
  return `${service}\u0000${instance}`;
}

function wglOp(input: Observation): WglOp<Observation> {
  return { input, invokedAtMs: input.op.invokedAtMs, completedAtMs: input.op.completedAtMs ?? Number.POSITIVE_INFINITY };
}

function explainBlocked(blocked: Observation, lastWrite: Observation | undefined): string {
  const before = lastWrite === undefined
    ? "no register can have taken effect before it"
    : `the last write a linearization can place before it is ${lastWrite.kind} ${describeOp(lastWrite.op)} (${lastWrite.op.outcome})`;
  switch (blocked.kind) {
    case "present":
    case "absent":
      return `Read ${describeOp(blocked.op)} on ${blocked.op.node} saw it ${blocked.kind}, but ${before}.`;
    case "register":
    case "deregister":
      return `${blocked.kind} ${describeOp(blocked.op)} cannot be placed within its interval; ${before}.`;
  }
}

function indexReads(history: RunHistory): Map<string, ServiceReads> {
  const grouped = new Map<string, ReadOp[]>();
  for (const op of history.ops) {
    if (op.kind !== "read" || op.consistency !== "linearizable" || op.outcome !== "ok" || op.completedAtMs === undefined) continue;
    pushTo(grouped, op.service, op);
  }
  const out = new Map<string, ServiceReads>();
  for (const [service, reads] of grouped) {
    reads.sort((a, b) => a.invokedAtMs - b.invokedAtMs || a.id - b.id);
    const invokedAtMs = Float64Array.from(reads, (r) => r.invokedAtMs);
    const completedAtMs = Float64Array.from(reads, (r) => r.completedAtMs ?? r.invokedAtMs);
    let durationMsMax = 0;
    const listedBy = new Map<string, number[]>();
    reads.forEach((r, i) => {
      durationMsMax = Math.max(durationMsMax, completedAtMs[i] - invokedAtMs[i]);
      for (const instance of r.instances ?? []) {
        const list = listedBy.get(instance);
        if (list === undefined) listedBy.set(instance, [i]);
        else if (list[list.length - 1] !== i) list.push(i);
      }
    });
    out.set(service, { reads, invokedAtMs, completedAtMs, durationMsMax, listedBy });
  }
  return out;
}

function indexWrites(history: RunHistory): Map<string, InstanceWrites> {
  const out = new Map<string, InstanceWrites>();
  for (const op of history.ops) {
    if ((op.kind !== "register" && op.kind !== "deregister") || op.outcome === "fail") continue;
    const key = pairKey(op.service, op.instance);
    let w = out.get(key);
    if (w === undefined) out.set(key, (w = { service: op.service, instance: op.instance, registers: [], deregisters: [] }));
    if (op.kind === "register") w.registers.push(op);
    else w.deregisters.push(op);
  }
  return out;
}

/** The first index whose value is > `bound` in an ascending array. */
function firstAbove(values: Float64Array, bound: number): number {
  let lo = 0;
  let hi = values.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (values[mid] > bound) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** The informative observations of `instance` in its service's reads (see the header), in read order. */
function observationsOf(r: ServiceReads, instance: string, w: InstanceWrites, everyRead: boolean): WglOp<Observation>[] {
  const listed = r.listedBy.get(instance) ?? [];
  const window: number[] = [];
  if (everyRead) {
    for (let i = 0; i < r.reads.length; i++) window.push(i);
  } else if (w.registers.length === 1) {
    const registerInvokedMs = w.registers[0].invokedAtMs;
    const deregister = w.deregisters.length === 1 && w.deregisters[0].outcome === "ok" ? w.deregisters[0] : undefined;
    const end = deregister?.completedAtMs === undefined ? r.reads.length : firstAbove(r.invokedAtMs, deregister.completedAtMs);
    // A read invoked at or before registerInvokedMs - durationMsMax completed by registerInvokedMs.
    for (let i = firstAbove(r.invokedAtMs, registerInvokedMs - r.durationMsMax); i < end; i++) {
      if (r.completedAtMs[i] > registerInvokedMs) window.push(i);
    }
  }
  // Merge the window with the reads that list the instance (both ascending), each read once.
  const out: WglOp<Observation>[] = [];
  let a = 0;
  let b = 0;
  while (a < window.length || b < listed.length) {
    const fromWindow = a < window.length ? window[a] : Number.POSITIVE_INFINITY;
    const fromListed = b < listed.length ? listed[b] : Number.POSITIVE_INFINITY;
    const i = Math.min(fromWindow, fromListed);
    if (fromWindow === i) a++;
    if (fromListed === i) b++;
    out.push(wglOp({ kind: fromListed === i ? "present" : "absent", op: r.reads[i] }));
  }
  return out;
}
