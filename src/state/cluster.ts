// The state machine the driver applies: it routes each command to the registry, the CA, the ACLs
// or the key/value store by its tag, and snapshots them together.

import { type Chunks, Reader, Writer, chunksLength } from "../common/codec.js";
import type { StateMachine } from "../raft/state_machine.js";
import { STATE_TAG_ACL, STATE_TAG_CA, STATE_TAG_KV, STATE_TAG_REGISTRY } from "./tags.js";

export class ClusterStateMachine implements StateMachine {
  private readonly machines: ReadonlyMap<number, StateMachine>;

  constructor(parts: { readonly kv: StateMachine; readonly registry: StateMachine; readonly ca: StateMachine; readonly acl?: StateMachine }) {
    this.machines = new Map([[STATE_TAG_KV, parts.kv], [STATE_TAG_REGISTRY, parts.registry], [STATE_TAG_CA, parts.ca],
      ...(parts.acl === undefined ? [] : [[STATE_TAG_ACL, parts.acl] as const])]);
  }

  apply(index: number, data: Uint8Array): void {
    const machine = this.machines.get(data[0] ?? 0);
    // An unknown tag is a bug or a newer build's command; applying nothing would diverge silently.
    if (machine === undefined) throw new Error(`entry ${index} names unknown state machine ${data[0] ?? "(empty)"}`);
    machine.apply(index, data.subarray(1));
  }

  snapshot(): Promise<Chunks> {
    // Capture every machine now, in one go, so they all describe the same revision.
    const parts = [...this.machines].map(([tag, m]) => [tag, m.snapshot()] as const);
    return (async () => {
      // Only small headers are written here; the machines' chunks pass through uncopied.
      const count = new Writer(16);
      count.uint(parts.length);
      const out: Uint8Array[] = [count.finish()];
      for (const [tag, pending] of parts) {
        const chunks = await pending;
        const header = new Writer(32);
        header.uint(tag);
        header.uint(chunksLength(chunks));
        out.push(header.finish(), ...chunks);
      }
      return out;
    })();
  }

  restore(data: Uint8Array): void {
    const parts = new Map<number, Uint8Array>();
    if (data.byteLength > 0) {
      const r = new Reader(data);
      const n = r.uint();
      for (let i = 0; i < n; i++) parts.set(r.uint(), r.bytes());
      r.done();
    }
    for (const [tag, m] of this.machines) m.restore(parts.get(tag) ?? new Uint8Array(0));
  }
}
