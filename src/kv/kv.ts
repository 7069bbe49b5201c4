// A small replicated key/value state machine. It lets the server, its tests and its benchmark
// exercise the whole write and read path before the registry (which will replace it) exists.

import { type Chunks, CodecError } from "../common/codec.js";
import { type FieldKinds, jsonArray, jsonRecord, parseJson } from "../common/json_shape.js";
import type { StateMachine } from "../raft/state_machine.js";

export interface KvRecord {
  readonly value: string;
  /** Revision (Raft index) of the write that created the key, and of the latest write. */
  readonly createIndex: number;
  readonly modifyIndex: number;
}

export type KvCommand = { readonly op: "put"; readonly key: string; readonly value: string } | { readonly op: "delete"; readonly key: string };

const RECORD_FIELDS: FieldKinds<KvRecord> = { value: "string", createIndex: "whole", modifyIndex: "whole" };

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();
const strictTextDecoder = new TextDecoder("utf-8", { fatal: true });

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

  /**
   * Replaces the state with a backup's (snapshot() bytes, from this cluster or another), as if
   * every key in it were written at `revision`. Strict: a backup that does not decode (each entry
   * a [key, {value, createIndex, modifyIndex}] pair, each key once) throws CodecError and changes nothing.
   */
  restoreBackup(data: Uint8Array, revision: number): void {
    let text: string;
    try {
      text = strictTextDecoder.decode(data);
    } catch {
      throw new CodecError("the key/value snapshot is not UTF-8 text");
    }
    const records = new Map<string, KvRecord>();
    jsonArray(parseJson(text, "the key/value snapshot"), "kv").forEach((entry, i) => {
      const pair = jsonArray(entry, `kv[${i}]`);
      const key = pair[0];
      if (pair.length !== 2 || typeof key !== "string") throw new CodecError(`kv[${i}]: expected a [key, record] pair`);
      if (records.has(key)) throw new CodecError(`kv[${i}]: key ${JSON.stringify(key)} appears twice`);
      const record = jsonRecord<KvRecord>(pair[1], RECORD_FIELDS, `kv[${i}][1]`);
      records.set(key, { value: record.value, createIndex: revision, modifyIndex: revision });
    });
    this.records = records;
  }

  restore(data: Uint8Array): void {
    this.records = new Map<string, KvRecord>(data.byteLength === 0 ? [] : (JSON.parse(textDecoder.decode(data)) as [string, KvRecord][]));
  }
}
