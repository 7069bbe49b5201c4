// No lost writes, judged from the final reads (a linearizable read of each service on each node,
// taken after every fault was healed):
//   - an ok register whose instance has no ok or unknown deregister is listed in every final read
//     of its service (a missing one is lost);
//   - the instance of an ok deregister is listed in none (a listed one came back: also lost);
//   - no final read lists an instance that was never registered in that service (a register that
//     failed counts as never; one whose outcome is unknown may have taken effect);
//   - the final reads of one service agree with each other, whichever node answered;
//   - there are final reads at all, and one for every service an acknowledged write touched:
//     without them nothing can be checked, and a check that cannot run must not pass.
// `lost` counts instances, once each, however many nodes show the loss.

import type { DeregisterOp, FinalRead, RegisterOp, RunHistory, Verdict } from "../history.js";
import { pushTo } from "./group.js";
import { AnomalyLog, describeOp } from "./verdicts.js";

export function checkLostWrites(history: RunHistory): Verdict {
  const anomalies = new AnomalyLog();
  const registers = new Map<string, RegisterOp[]>();
  const deregisters = new Map<string, DeregisterOp[]>();
  for (const op of history.ops) {
    if (op.kind === "register") pushTo(registers, op.instance, op);
    if (op.kind === "deregister") pushTo(deregisters, op.instance, op);
  }
  const finalByService = new Map<string, FinalRead[]>();
  for (const f of history.finalReads) pushTo(finalByService, f.service, f);
  const listed = new Map(history.finalReads.map((f) => [f, new Set(f.instances)]));
  const lists = (f: FinalRead, instance: string): boolean => listed.get(f)?.has(instance) === true;
  if (history.finalReads.length === 0) {
    anomalies.add({ message: "no final reads: the run could not check for lost writes (the runner must read every service on every node after healing)" });
  }

  const lost = new Set<string>();
  let acknowledgedRegisters = 0;
  let acknowledgedDeregisters = 0;
  const unreadServices = new Set<string>();
  for (const [instance, regs] of registers) {
    for (const reg of regs) {
      if (reg.outcome !== "ok") continue;
      acknowledgedRegisters++;
      const deregs = deregisters.get(instance) ?? [];
      if (deregs.some((d) => d.outcome !== "fail")) continue;
      const finals = finalByService.get(reg.service);
      if (finals === undefined) {
        unreadServices.add(reg.service);
        continue;
      }
      const missingOn = finals.filter((f) => !lists(f, instance)).map((f) => f.node);
      if (missingOn.length === 0) continue;
      lost.add(instance);
      anomalies.add({
        message: `lost register: instance ${instance} of service ${reg.service}, acknowledged by ${describeOp(reg)} at revision ${reg.revision ?? "?"} ` +
          `and never deregistered, is missing from the final reads on ${missingOn.join(", ")}`,
        opIds: [reg.id], atMs: reg.completedAtMs,
      });
    }
  }
  for (const deregs of deregisters.values()) {
    for (const dereg of deregs) {
      if (dereg.outcome !== "ok") continue;
      acknowledgedDeregisters++;
      const finals = finalByService.get(dereg.service);
      if (finals === undefined) {
        unreadServices.add(dereg.service);
        continue;
      }
      const presentOn = finals.filter((f) => lists(f, dereg.instance)).map((f) => f.node);
      if (presentOn.length === 0) continue;
      lost.add(dereg.instance);
      anomalies.add({
        message: `lost deregister: instance ${dereg.instance} of service ${dereg.service}, deregistered by ${describeOp(dereg)} ` +
          `at revision ${dereg.revision ?? "?"}, is still listed in the final reads on ${presentOn.join(", ")}`,
        opIds: [dereg.id], atMs: dereg.completedAtMs,
      });
    }
  }
  if (history.finalReads.length > 0) {
    for (const service of unreadServices) {
      anomalies.add({ message: `no final read of service ${service}, which acknowledged writes touched: its writes could not be checked` });
    }
  }

  for (const [service, finals] of finalByService) {
    for (const f of finals) {
      for (const instance of f.instances) {
        const regs = (registers.get(instance) ?? []).filter((r) => r.service === service && r.outcome !== "fail");
        if (regs.length > 0) continue;
        anomalies.add({ message: `final read of service ${service} on ${f.node} lists instance ${instance}, which was never registered in that service` });
      }
    }
    const first = finals[0];
    const firstSet = listed.get(first) ?? new Set<string>();
    for (const f of finals.slice(1)) {
      const other = listed.get(f) ?? new Set<string>();
      const onlyFirst = [...firstSet].filter((i) => !other.has(i));
      const onlyOther = [...other].filter((i) => !firstSet.has(i));
      if (onlyFirst.length === 0 && onlyOther.length === 0) continue;
      anomalies.add({
        message: `final reads of service ${service} disagree: ${first.node} (revision ${first.revision}) alone lists [${onlyFirst.join(", ")}], ` +
          `${f.node} (revision ${f.revision}) alone lists [${onlyOther.join(", ")}]`,
      });
    }
  }
  return anomalies.verdict("lost-writes", { acknowledgedRegisters, acknowledgedDeregisters, lost: lost.size, finalReads: history.finalReads.length });
}
