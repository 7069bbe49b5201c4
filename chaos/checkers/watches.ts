// Watch streams: every watcher saw revisions in order, missed no change unless told by a reset,
// and ended holding the final state.
//
// gRPC and SSE records. A message's revision means "after this message the stream is complete up
// to this revision" (the hub's contract). The anchor is the revision of the last events, reset or
// progress message; a reconnect keeps it (the watcher resumes from it). Rules:
//   1. order: message revisions never go down across the whole record, reconnects included;
//      every event of a message at revision b, after anchor a, has a < revision <= b; event
//      revisions strictly increase within and across messages (two events of one message may
//      share a revision when they are for different instances: one command can change several);
//   2. no gap: for consecutive anchors a < b where the message at b is not a reset, every ok
//      register or deregister of a watched service whose revision r lies in (a, b] is covered by
//      an event of the message at b for the same instance with revision in [r, b]. A coalesced
//      message may skip intermediate revisions of an instance (a later change of it covers an
//      earlier one) but never the instance. A reset at b replaces the state, so it needs no
//      cover; before the first anchor the watcher owes nothing;
//   3. convergence: replaying the record (a reset replaces the set, upsert and health add, delete
//      removes) ends with exactly the instances of each watched service in the final read,
//      and the watcher's last revision is >= that read's revision (the service's index, which
//      never exceeds the cluster's revision a stream reports);
//   4. reset contents: a reset at revision R lists exactly the instances of the watched services
//      present at R, judged for every instance whose presence at R the writes decide
//      (presence.ts: an unknown write leaves some undecided, and those are only counted); an
//      instance never registered at all is never listed;
//   5. event revisions: an upsert or health event at revision e is for an instance present at e
//      (when decided), and a delete event at e is for an instance some deregister may have
//      removed, at exactly the revision of its deregister when every deregister of it is ok
//      with a revision (only a deregister deletes: the workload sets no deregister-after).
// Events of a service the record does not watch are anomalies too (an empty list watches all).
//
// xDS records: on one stream, consecutive ACKed assignments never repeat, neither their
// version_info nor their endpoints (what is ACKed is not sent again, under any version: the
// watched services have no checks and EDS carries nothing else of them that changes; a new
// stream, on any node, starts with the full state, which may carry what the client already
// held, as the protocol allows), and the last assignment's endpoints ("address:port",
// from the RegisterOps) are exactly those of the final read of the watched services. EDS carries
// only passing endpoints; the workload's services watched over xDS have no checks, so every one
// of their instances is passing and the final read is the expected set.

import type { RegisterOp, RunHistory, Verdict, WatchMessage, WatchRecord } from "../history.js";
import { pushTo } from "./group.js";
import { type InstanceWrites, deletionOf, instanceWritesOf, presenceAt } from "./presence.js";
import { AnomalyLog } from "./verdicts.js";

type WriteWithRevision = { readonly id: number; readonly kind: "register" | "deregister"; readonly service: string; readonly instance: string; readonly revision: number };

interface Facts {
  /** ok writes with a revision, per service, sorted by revision. */
  readonly writesByService: Map<string, WriteWithRevision[]>;
  readonly registerOf: Map<string, RegisterOp>;
  /** Every instance's writes that did not fail, and the instances a register of each service may have created. */
  readonly writesOf: Map<string, InstanceWrites>;
  readonly instancesByService: Map<string, string[]>;
  /** The first final read of each service: what a watcher must converge to. */
  readonly finalByService: Map<string, { readonly instances: readonly string[]; readonly revision: number }>;
}

interface Counts {
  messages: number;
  events: number;
  coalescedMessages: number;
  readonly resets: Map<string, number>;
  /** (reset, instance) pairs whose presence at the reset's revision was decided, or could not be. */
  resetInstancesJudged: number;
  resetInstancesIndeterminate: number;
  /** Events whose revision was checked against the writes, or could not be. */
  eventRevisionsJudged: number;
  eventRevisionsIndeterminate: number;
}

export function checkWatches(history: RunHistory): Verdict {
  const anomalies = new AnomalyLog();
  const facts = collectFacts(history);
  const counts: Counts = {
    messages: 0, events: 0, coalescedMessages: 0, resets: new Map(),
    resetInstancesJudged: 0, resetInstancesIndeterminate: 0, eventRevisionsJudged: 0, eventRevisionsIndeterminate: 0,
  };
  for (const record of history.watches) {
    counts.messages += record.messages.length;
    if (record.transport === "xds") checkXds(record, facts, anomalies);
    else checkStream(record, facts, anomalies, counts);
  }
  const stats: Record<string, number | string> = {
    watchers: history.watches.length, messages: counts.messages, events: counts.events, coalescedMessages: counts.coalescedMessages,
    resetInstancesJudged: counts.resetInstancesJudged, resetInstancesIndeterminate: counts.resetInstancesIndeterminate,
    eventRevisionsJudged: counts.eventRevisionsJudged, eventRevisionsIndeterminate: counts.eventRevisionsIndeterminate,
  };
  for (const [reason, n] of counts.resets) stats[`resets.${reason}`] = n;
  return anomalies.verdict("watches", stats);
}

function collectFacts(history: RunHistory): Facts {
  const writesByService = new Map<string, WriteWithRevision[]>();
  const registerOf = new Map<string, RegisterOp>();
  for (const op of history.ops) {
    if (op.kind === "register" && op.outcome !== "fail") registerOf.set(op.instance, op);
    if ((op.kind === "register" || op.kind === "deregister") && op.outcome === "ok" && op.revision !== undefined) {
      pushTo(writesByService, op.service, { id: op.id, kind: op.kind, service: op.service, instance: op.instance, revision: op.revision });
    }
  }
  for (const list of writesByService.values()) list.sort((a, b) => a.revision - b.revision);
  const writesOf = instanceWritesOf(history.ops);
  const instancesByService = new Map<string, string[]>();
  for (const w of writesOf.values()) {
    for (const service of new Set(w.registers.map((r) => r.service))) pushTo(instancesByService, service, w.instance);
  }
  const finalByService = new Map<string, { instances: readonly string[]; revision: number }>();
  for (const f of history.finalReads) if (!finalByService.has(f.service)) finalByService.set(f.service, f);
  return { writesByService, registerOf, writesOf, instancesByService, finalByService };
}

function watchedServices(record: WatchRecord, facts: Facts): string[] {
  if (record.services.length > 0) return [...record.services];
  return [...new Set([...facts.writesByService.keys(), ...facts.finalByService.keys()])];
}

/** The writes of `services` with revision in (after, upTo]. */
function writesBetween(facts: Facts, services: readonly string[], after: number, upTo: number): WriteWithRevision[] {
  const out: WriteWithRevision[] = [];
  for (const s of services) {
    const list = facts.writesByService.get(s) ?? [];
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid].revision > after) hi = mid;
      else lo = mid + 1;
    }
    for (let i = lo; i < list.length && list[i].revision <= upTo; i++) out.push(list[i]);
  }
  return out;
}

function checkStream(record: WatchRecord, facts: Facts, anomalies: AnomalyLog, counts: Counts): void {
  const who = `watcher ${record.watcher} (${record.transport})`;
  const services = watchedServices(record, facts);
  const watched = new Set(services);
  const held = new Map<string, Set<string>>(services.map((s) => [s, new Set<string>()]));
  let anchor: number | undefined;
  let lastEventRevision = Number.NEGATIVE_INFINITY;
  for (const m of record.messages) {
    if (m.kind === "connected") {
      if (anchor === undefined && m.sinceRevision > 0) anchor = m.sinceRevision;
      continue;
    }
    if (m.kind === "disconnected" || m.kind === "xds") continue;
    if (anchor !== undefined && m.revision < anchor) {
      anomalies.add({ message: `${who}: ${m.kind} message at ${m.atMs} ms has revision ${m.revision}, below the ${anchor} it had already reached`, atMs: m.atMs });
    }
    if (m.kind === "reset") {
      counts.resets.set(m.reason, (counts.resets.get(m.reason) ?? 0) + 1);
      for (const set of held.values()) set.clear();
      for (const instance of m.instances) {
        const service = facts.registerOf.get(instance)?.service;
        const set = service === undefined ? undefined : held.get(service);
        if (set !== undefined) set.add(instance);
        else if (service !== undefined) {
          anomalies.add({ message: `${who}: reset at revision ${m.revision} (${m.atMs} ms) lists instance ${instance} of service ${service}, which it does not watch`, atMs: m.atMs });
        }
      }
      checkResetContents(who, m, services, facts, anomalies, counts);
    } else if (m.kind === "events") {
      counts.events += m.events.length;
      if (m.coalesced) counts.coalescedMessages++;
      lastEventRevision = checkEventOrder(who, m, anchor, lastEventRevision, watched, anomalies);
      checkEventRevisions(who, m, watched, facts, anomalies, counts);
      for (const e of m.events) {
        const set = held.get(e.service);
        if (set === undefined) continue;
        // A health event carries the instance as it is after the change: in a coalesced batch it may
        // be all that is left of the registration that came before it.
        if (e.type === "upsert" || e.type === "health") set.add(e.instance);
        if (e.type === "delete") set.delete(e.instance);
      }
    }
    if (m.kind !== "reset" && anchor !== undefined && m.revision > anchor) checkCovered(who, m, anchor, facts, services, anomalies);
    anchor = Math.max(anchor ?? m.revision, m.revision);
  }
  checkConverged(who, anchor, held, facts, anomalies);
}

/** Rule 1 for one events message; returns the last event revision. */
function checkEventOrder(who: string, m: Extract<WatchMessage, { kind: "events" }>, anchor: number | undefined, lastEventRevision: number,
  watched: ReadonlySet<string>, anomalies: AnomalyLog): number {
  let last = lastEventRevision;
  const atLast = new Set<string>();
  for (const e of m.events) {
    if (!watched.has(e.service)) {
      anomalies.add({ message: `${who}: event for instance ${e.instance} of service ${e.service}, which it does not watch, at ${m.atMs} ms`, atMs: m.atMs });
    }
    // Equal to the previous event's revision is allowed only within this message, for another instance.
    if (e.revision < last || (e.revision === last && (atLast.size === 0 || atLast.has(e.instance)))) {
      anomalies.add({ message: `${who}: event for ${e.instance} at revision ${e.revision} (${m.atMs} ms) does not follow the previous event's revision ${last}`, atMs: m.atMs });
    }
    if ((anchor !== undefined && e.revision <= anchor) || e.revision > m.revision) {
      anomalies.add({
        message: `${who}: event for ${e.instance} at revision ${e.revision} lies outside (${anchor ?? "start"}, ${m.revision}], ` +
          `between the revision the stream was complete up to and the message's own (${m.atMs} ms)`, atMs: m.atMs,
      });
    }
    if (e.revision > last) {
      atLast.clear();
      last = e.revision;
    }
    if (e.revision === last) atLast.add(e.instance);
  }
  return last;
}

/** Rule 4: the reset lists exactly the decidable instances present at its revision, and no instance never registered. */
function checkResetContents(who: string, m: Extract<WatchMessage, { kind: "reset" }>, services: readonly string[], facts: Facts,
  anomalies: AnomalyLog, counts: Counts): void {
  const listed = new Set(m.instances);
  const where = `reset at revision ${m.revision} (${m.atMs} ms)`;
  for (const service of services) {
    for (const instance of facts.instancesByService.get(service) ?? []) {
      const presence = presenceAt(facts.writesOf.get(instance), m.revision);
      if (presence.kind === "indeterminate") {
        counts.resetInstancesIndeterminate++;
        continue;
      }
      counts.resetInstancesJudged++;
      if ((presence.kind === "present") === listed.has(instance)) continue;
      const what = presence.kind === "present" ? "lacks" : "lists";
      anomalies.add({
        message: `${who}: ${where} ${what} instance ${instance} of service ${service}, ${presence.kind} at ${m.revision}: ${presence.why}`,
        opIds: presence.opIds, atMs: m.atMs,
      });
    }
  }
  for (const instance of listed) {
    if ((facts.writesOf.get(instance)?.registers.length ?? 0) > 0) continue;
    anomalies.add({ message: `${who}: ${where} lists instance ${instance}, which was never registered (no register of it took effect or may have)`, atMs: m.atMs });
  }
}

/** Rule 5: each event of a watched service agrees with the writes of its instance, where they decide it. */
function checkEventRevisions(who: string, m: Extract<WatchMessage, { kind: "events" }>, watched: ReadonlySet<string>, facts: Facts,
  anomalies: AnomalyLog, counts: Counts): void {
  for (const e of m.events) {
    if (!watched.has(e.service)) continue;
    const writes = facts.writesOf.get(e.instance);
    const what = `${e.type} event for instance ${e.instance} at revision ${e.revision} (${m.atMs} ms)`;
    if (e.type === "delete") {
      const deletion = deletionOf(writes);
      if (deletion.kind === "indeterminate") {
        counts.eventRevisionsIndeterminate++;
        continue;
      }
      counts.eventRevisionsJudged++;
      if (deletion.kind === "none") {
        anomalies.add({ message: `${who}: ${what}, but no deregister of it took effect or may have, and nothing else deletes an instance`, atMs: m.atMs });
      } else if (deletion.revision !== e.revision) {
        anomalies.add({
          message: `${who}: ${what}, but its deregister #${deletion.opId} committed at revision ${deletion.revision}`,
          opIds: [deletion.opId], atMs: m.atMs,
        });
      }
      continue;
    }
    const presence = presenceAt(writes, e.revision);
    if (presence.kind === "indeterminate") {
      counts.eventRevisionsIndeterminate++;
      continue;
    }
    counts.eventRevisionsJudged++;
    if (presence.kind === "absent") {
      anomalies.add({ message: `${who}: ${what}, but the instance was absent at ${e.revision}: ${presence.why}`, opIds: presence.opIds, atMs: m.atMs });
    }
  }
}

/** Rule 2: the message at m.revision covers every write of a watched service in (anchor, m.revision]. */
function checkCovered(who: string, m: Extract<WatchMessage, { kind: "events" | "progress" }>, anchor: number, facts: Facts,
  services: readonly string[], anomalies: AnomalyLog): void {
  const latest = new Map<string, number>();
  if (m.kind === "events") for (const e of m.events) latest.set(e.instance, Math.max(latest.get(e.instance) ?? 0, e.revision));
  for (const w of writesBetween(facts, services, anchor, m.revision)) {
    if ((latest.get(w.instance) ?? Number.NEGATIVE_INFINITY) >= w.revision) continue;
    anomalies.add({
      message: `${who}: gap: ${w.kind} #${w.id} of instance ${w.instance} (service ${w.service}) committed at revision ${w.revision}, ` +
        `but the ${m.kind} message at ${m.atMs} ms took the stream from revision ${anchor} to ${m.revision} with no event for it`,
      opIds: [w.id], atMs: m.atMs,
    });
  }
}

function sameEndpoints(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((e, i) => e === b[i]);
}

function checkConverged(who: string, lastRevision: number | undefined, held: Map<string, Set<string>>, facts: Facts, anomalies: AnomalyLog): void {
  for (const [service, set] of held) {
    const final = facts.finalByService.get(service);
    if (final === undefined) {
      anomalies.add({ message: `${who}: no final read of watched service ${service}, so its convergence could not be checked` });
      continue;
    }
    if (lastRevision === undefined || lastRevision < final.revision) {
      anomalies.add({ message: `${who}: never converged on service ${service}: its last revision is ${lastRevision ?? "none"}, below the final read's ${final.revision}` });
      continue;
    }
    const expected = new Set(final.instances);
    const extra = [...set].filter((i) => !expected.has(i));
    const missing = [...expected].filter((i) => !set.has(i));
    if (extra.length === 0 && missing.length === 0) continue;
    anomalies.add({
      message: `${who}: never converged on service ${service}: at revision ${lastRevision} it holds [${extra.join(", ")}] that the final read ` +
        `(revision ${final.revision}) does not, and lacks [${missing.join(", ")}]`,
    });
  }
}

function checkXds(record: WatchRecord, facts: Facts, anomalies: AnomalyLog): void {
  const who = `watcher ${record.watcher} (xds)`;
  let previous: Extract<WatchMessage, { kind: "xds" }> | undefined;
  /** The previous assignment on the same stream: a new stream starts from nothing. */
  let previousOnStream: Extract<WatchMessage, { kind: "xds" }> | undefined;
  for (const m of record.messages) {
    if (m.kind === "connected" || m.kind === "disconnected") previousOnStream = undefined;
    if (m.kind !== "xds") continue;
    if (previousOnStream !== undefined && previousOnStream.version === m.version) {
      anomalies.add({ message: `${who}: version ${m.version} was sent again on the same stream at ${m.atMs} ms after it was ACKed at ${previousOnStream.atMs} ms`, atMs: m.atMs });
    } else if (previousOnStream !== undefined && sameEndpoints(previousOnStream.endpoints, m.endpoints)) {
      anomalies.add({
        message: `${who}: the assignment ACKed at ${previousOnStream.atMs} ms (version ${previousOnStream.version}) was sent again on the same stream at ${m.atMs} ms as version ${m.version}, with the same endpoints`,
        atMs: m.atMs,
      });
    }
    previous = m;
    previousOnStream = m;
  }
  const expected: string[] = [];
  for (const service of watchedServices(record, facts)) {
    const final = facts.finalByService.get(service);
    if (final === undefined) {
      anomalies.add({ message: `${who}: no final read of watched service ${service}, so its endpoints could not be checked` });
      return;
    }
    for (const instance of final.instances) {
      const reg = facts.registerOf.get(instance);
      expected.push(reg === undefined ? `unknown instance ${instance}` : `${reg.address}:${reg.port}`);
    }
  }
  if (previous === undefined) {
    anomalies.add({ message: `${who}: never received an endpoint assignment` });
    return;
  }
  const got = [...previous.endpoints].sort();
  expected.sort();
  if (got.join("\n") !== expected.join("\n")) {
    anomalies.add({
      message: `${who}: last assignment (version ${previous.version}, ${previous.atMs} ms) has endpoints [${got.join(", ")}], ` +
        `but the final state is [${expected.join(", ")}]`, atMs: previous.atMs,
    });
  }
}
