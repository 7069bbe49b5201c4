// A run's history on disk (history.jsonl): one JSON object per line, each tagged with its type,
// streamed both ways, since a long run's history is too large for one string. Reading it back
// lets `npm run chaos -- --check DIR` judge a saved run again with the current checkers.

import { once } from "node:events";
import { createReadStream, createWriteStream } from "node:fs";
import { createInterface } from "node:readline";
import type { ClusterObservation, FaultRecord, FinalRead, Operation, RoleChange, RunHistory, RunSettings, WatchRecord } from "./history.js";

export async function writeHistory(path: string, history: RunHistory): Promise<void> {
  const out = createWriteStream(path);
  const write = async (record: object): Promise<void> => {
    // events.once rejects on "error" and removes both of its listeners either way.
    if (!out.write(`${JSON.stringify(record)}\n`)) await once(out, "drain");
  };
  await write({ type: "settings", ...history.settings });
  for (const op of history.ops) await write({ type: "op", ...op });
  for (const f of history.faults) await write({ type: "fault", ...f });
  for (const o of history.observations) await write({ type: "observation", ...o });
  for (const r of history.roleChanges) await write({ type: "role", ...r });
  for (const r of history.finalReads) await write({ type: "final", ...r });
  for (const w of history.watches) await write({ type: "watch", ...w });
  await write({ type: "abandoned", instances: history.abandonedInstances });
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
}

/** Reads what writeHistory wrote; a line it cannot place is an error naming the line. */
export async function readHistory(path: string): Promise<RunHistory> {
  let settings: RunSettings | undefined;
  const ops: Operation[] = [];
  const faults: FaultRecord[] = [];
  const observations: ClusterObservation[] = [];
  const roleChanges: RoleChange[] = [];
  const finalReads: FinalRead[] = [];
  const watches: WatchRecord[] = [];
  let abandonedInstances: string[] = [];
  let lineNumber = 0;
  for await (const line of createInterface({ input: createReadStream(path), crlfDelay: Infinity })) {
    lineNumber++;
    if (line === "") continue;
    const parsed: unknown = JSON.parse(line);
    if (typeof parsed !== "object" || parsed === null || !("type" in parsed) || typeof parsed.type !== "string") {
      throw new Error(`${path}:${lineNumber}: not a history record (no "type")`);
    }
    const { type, ...record } = parsed as { type: string } & Record<string, unknown>;
    switch (type) {
      case "settings": settings = record as unknown as RunSettings; break;
      case "op": ops.push(record as unknown as Operation); break;
      case "fault": faults.push(record as unknown as FaultRecord); break;
      case "observation": observations.push(record as unknown as ClusterObservation); break;
      case "role": roleChanges.push(record as unknown as RoleChange); break;
      case "final": finalReads.push(record as unknown as FinalRead); break;
      case "watch": watches.push(record as unknown as WatchRecord); break;
      case "abandoned":
        if (!Array.isArray(record.instances)) throw new Error(`${path}:${lineNumber}: "abandoned" without an instances list`);
        abandonedInstances = record.instances.map(String);
        break;
      default: throw new Error(`${path}:${lineNumber}: unknown record type "${type}"`);
    }
  }
  if (settings === undefined) throw new Error(`${path} has no settings record: is it a chaos history?`);
  return { settings, ops, faults, observations, roleChanges, finalReads, watches, abandonedInstances };
}
