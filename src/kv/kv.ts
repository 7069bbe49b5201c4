// A small replicated key/value state machine. It lets the server, its tests and its benchmark
// exercise the whole write and read path before the registry (which will replace it) exists.

import type { Chunks } from "../common/codec.js";
import type { StateMachine } from "../raft/state_machine.js";

export interface KvRecord {
  readonly value: string;
  /** Revision (Raft index) of the write that created the key, and of the latest write. */
  readonly createIndex: number;
  readonly modifyIndex: number;
}

export type KvCommand = { readonly op: "put"; readonly key: string; readonly value: string } | { readonly op: "delete"; readonly key: string };

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

export function encodeKvCommand(cmd: KvCommand): Uint8Array {
  return textEncoder.encode(JSON.stringify(cmd));
}

export class KvStateMachine implements StateMachine {
  private records = new Map<string, KvRecord>();

  apply(index: number, data: Uint8Array): void {
    const cmd = JSON.parse(textDecoder.decode(data)) as KvCommand;
    if (cmd.op === "put") {
      const prev = this.records.get(cmd.key);
      this.records.set(cmd.key, { value: cmd.value, createIndex: prev?.createIndex ?? index, modifyIndex: index });
    } else {
      this.records.delete(cmd.key);
    }
  }

  get(key: string): KvRecord | undefined {
    return this.records.get(key);
  }

  get size(): number {
    return this.records.size;
  }

  snapshot(): Chunks {
    return [textEncoder.encode(JSON.stringify([...this.records]))];
  }

  restore(data: Uint8Array): void {
    this.records = new Map<string, KvRecord>(data.byteLength === 0 ? [] : (JSON.parse(textDecoder.decode(data)) as [string, KvRecord][]));
  }
}
