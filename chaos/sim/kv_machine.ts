// The simulator's state machine: registers "key=value" with a running digest of everything applied,
// so two nodes' states compare in O(1) and a restored snapshot can be checked against what was
// applied at its index. It can be slow: applying an entry may block its process's event loop, as
// a heavy apply does in a real node, and encoding a snapshot takes time beside the loop.

import type { Chunks } from "../../src/common/codec.js";
import type { StateMachine } from "../../src/raft/state_machine.js";
import type { SimProcess } from "../../test/support/sim/world.js";

const textDecoder = new TextDecoder();
const textEncoder = new TextEncoder();

export interface KvSnapshotState {
  readonly kv: [string, string][];
  readonly digest: number;
  /** The last index this state machine applied a command at (not every log index carries one). */
  readonly lastIndex: number;
}

export interface KvObserver {
  /** A command applied at `index`; `digest` is the state after it. */
  applied(index: number, command: string, digest: number): void;
  /** A snapshot restored; `state` is what it holds. */
  restored(state: KvSnapshotState): void;
}

export class KvMachine implements StateMachine {
  kv = new Map<string, string>();
  digest = 0;
  lastIndex = 0;
  /** Each apply blocks the process for this long (a slow state machine). */
  applyBusyMs = 0;
  /** Encoding a snapshot takes this long, beside the Ready loop. */
  snapshotEncodeMs = 0;

  constructor(
    private readonly process: SimProcess,
    private readonly observer: KvObserver,
  ) {}

  apply(index: number, data: Uint8Array): void {
    const command = textDecoder.decode(data);
    const eq = command.indexOf("=");
    if (eq < 0) throw new Error(`entry ${index} is not a key=value command: ${JSON.stringify(command)}`);
    this.kv.set(command.slice(0, eq), command.slice(eq + 1));
    this.digest = mixDigest(this.digest, command);
    this.lastIndex = index;
    this.observer.applied(index, command, this.digest);
    if (this.applyBusyMs > 0) this.process.pauseUntilIn(this.applyBusyMs);
  }

  snapshot(): Promise<Chunks> {
    // Captured now; only the encoding waits.
    const state: KvSnapshotState = { kv: [...this.kv], digest: this.digest, lastIndex: this.lastIndex };
    const bytes = textEncoder.encode(JSON.stringify(state));
    if (this.snapshotEncodeMs === 0) return Promise.resolve([bytes]);
    return this.process.sleep(this.snapshotEncodeMs).then(() => [bytes]);
  }

  restore(data: Uint8Array): void {
    const state: KvSnapshotState = data.byteLength === 0
      ? { kv: [], digest: 0, lastIndex: 0 }
      : (JSON.parse(textDecoder.decode(data)) as KvSnapshotState);
    this.kv = new Map(state.kv);
    this.digest = state.digest;
    this.lastIndex = state.lastIndex;
    this.observer.restored(state);
  }
}

export function mixDigest(h: number, s: string): number {
  let x = h ^ 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    x ^= s.charCodeAt(i);
    x = Math.imul(x, 0x01000193);
  }
  return x >>> 0;
}
