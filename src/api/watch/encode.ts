// The watch stream's two wire encodings, protobuf (cairn.registry.v1, for gRPC) and JSON (for
// server-sent events). Each event, instance, batch and reset chunk is encoded once, however many
// streams it is written to: the hub hands every stream of a group the same objects, and these
// caches are keyed by them (weakly, so they go when the objects do).

import protobuf from "protobufjs";
import { aggregateStatus, type HealthStatus, type Instance } from "../../registry/model.js";
import type { RegistryEvent } from "../../registry/events.js";
import type { EventBatch, ResetChunk } from "../../registry/watch_hub.js";
import { loadProtoRoot } from "../protos.js";
import { present } from "../native/registry.js";

const root = loadProtoRoot("cairn/registry/v1/watch.proto");
const InstanceType = root.lookupType("cairn.registry.v1.Instance");
export const WatchRequestType = root.lookupType("cairn.registry.v1.WatchRequest");

// Enum numbers and field tags of watch.proto, named.
const KIND_EVENTS = 1;
const KIND_RESET = 2;
const KIND_PROGRESS = 3;
const KIND_CREATED = 4;
const KIND_CANCELED = 5;
const EVENT_TYPE = { upsert: 1, delete: 2, health: 3 } as const;
const HEALTH_STATUS: Record<HealthStatus, number> = { passing: 1, warning: 2, critical: 3 };
const WIRE_VARINT = 0;
const WIRE_BYTES = 2;
const tag = (field: number, wire: number): number => (field << 3) | wire;
const RESPONSE_KIND = tag(1, WIRE_VARINT);
const RESPONSE_REVISION = tag(2, WIRE_VARINT);
const RESPONSE_EVENTS = tag(3, WIRE_BYTES);
const RESPONSE_COALESCED = tag(4, WIRE_VARINT);
const RESPONSE_INSTANCES = tag(5, WIRE_BYTES);
const RESPONSE_RESET_FIRST = tag(6, WIRE_VARINT);
const RESPONSE_RESET_LAST = tag(7, WIRE_VARINT);
const RESPONSE_RESET_REASON = tag(8, WIRE_BYTES);
const RESPONSE_WATCH_ID = tag(9, WIRE_VARINT);
const RESPONSE_CANCEL_REASON = tag(10, WIRE_BYTES);
const RESPONSE_FRAGMENT = tag(11, WIRE_VARINT);

/**
 * Bytes of instances or events per gRPC message, at most (one larger instance goes alone): well
 * under the 4 MiB that gRPC clients accept by default.
 */
export const GRPC_MESSAGE_BYTES_MAX = 1024 * 1024;

const protoInstances = new WeakMap<Instance, Uint8Array>();
const protoEvents = new WeakMap<RegistryEvent, Uint8Array>();
const protoBatches = new WeakMap<EventBatch, readonly Buffer[]>();
const protoChunks = new WeakMap<ResetChunk, readonly Buffer[]>();

/** Cuts encoded items into runs of at most GRPC_MESSAGE_BYTES_MAX bytes (at least one item each). */
function runs(items: readonly Uint8Array[]): Uint8Array[][] {
  const out: Uint8Array[][] = [[]];
  let bytes = 0;
  for (const item of items) {
    const run = out[out.length - 1];
    if (run.length > 0 && bytes + item.byteLength > GRPC_MESSAGE_BYTES_MAX) {
      out.push([item]);
      bytes = item.byteLength;
    } else {
      run.push(item);
      bytes += item.byteLength;
    }
  }
  return out;
}

function protoInstance(inst: Instance): Uint8Array {
  let bytes = protoInstances.get(inst);
  if (bytes === undefined) {
    bytes = InstanceType.encode({
      id: inst.id,
      service: inst.service,
      address: inst.address === "" ? inst.nodeAddress : inst.address,
      port: inst.port,
      tags: inst.tags,
      meta: inst.meta,
      weight_passing: inst.weights.passing,
      weight_warning: inst.weights.warning,
      zone: inst.zone,
      node: inst.node,
      status: HEALTH_STATUS[aggregateStatus(inst.checks)],
      checks: inst.checks.map((c) => ({ id: c.checkId, name: c.name, kind: c.kind, status: HEALTH_STATUS[c.status], output: c.output })),
      create_revision: inst.createIndex,
      modify_revision: inst.modifyIndex,
    }).finish();
    protoInstances.set(inst, bytes);
  }
  return bytes;
}

function protoEvent(e: RegistryEvent): Uint8Array {
  let bytes = protoEvents.get(e);
  if (bytes === undefined) {
    const c = e.change;
    const w = protobuf.Writer.create();
    w.uint32(tag(1, WIRE_VARINT)).uint32(EVENT_TYPE[c.kind]);
    w.uint32(tag(2, WIRE_VARINT)).uint64(e.revision);
    if (c.kind === "delete") {
      w.uint32(tag(3, WIRE_BYTES)).string(c.service);
      w.uint32(tag(4, WIRE_BYTES)).string(c.id);
    } else {
      w.uint32(tag(3, WIRE_BYTES)).string(c.instance.service);
      w.uint32(tag(4, WIRE_BYTES)).string(c.instance.id);
      w.uint32(tag(5, WIRE_BYTES)).bytes(protoInstance(c.instance));
    }
    bytes = w.finish();
    protoEvents.set(e, bytes);
  }
  return bytes;
}

/**
 * A response's watch_id field, encoded once per watch. Protobuf fields may come in any order, so
 * appending it to a batch encoded once for every watch names that batch's watch without
 * re-encoding it.
 */
export function protoWatchIdField(watchId: number): Buffer {
  return Buffer.from(protobuf.Writer.create().uint32(RESPONSE_WATCH_ID).uint64(watchId).finish());
}

/** A batch as WatchResponses of kind EVENTS, without their watch_id: one, or fragments of it. */
export function protoBatch(batch: EventBatch): readonly Buffer[] {
  let messages = protoBatches.get(batch);
  if (messages === undefined) {
    const pieces = runs(batch.events.map(protoEvent));
    messages = pieces.map((events, i) => {
      const w = protobuf.Writer.create();
      w.uint32(RESPONSE_KIND).uint32(KIND_EVENTS);
      w.uint32(RESPONSE_REVISION).uint64(batch.revision);
      for (const e of events) w.uint32(RESPONSE_EVENTS).bytes(e);
      if (batch.coalesced) w.uint32(RESPONSE_COALESCED).bool(true);
      if (i < pieces.length - 1) w.uint32(RESPONSE_FRAGMENT).bool(true);
      return Buffer.from(w.finish());
    });
    protoBatches.set(batch, messages);
  }
  return messages;
}

/** A reset chunk as WatchResponses of kind RESET, without their watch_id: more chunks when it is large. */
export function protoResetChunk(chunk: ResetChunk): readonly Buffer[] {
  let messages = protoChunks.get(chunk);
  if (messages === undefined) {
    const pieces = runs(chunk.instances.map(protoInstance));
    messages = pieces.map((instances, i) => {
      const w = protobuf.Writer.create();
      w.uint32(RESPONSE_KIND).uint32(KIND_RESET);
      w.uint32(RESPONSE_REVISION).uint64(chunk.revision);
      for (const inst of instances) w.uint32(RESPONSE_INSTANCES).bytes(inst);
      if (chunk.first && i === 0) w.uint32(RESPONSE_RESET_FIRST).bool(true);
      if (chunk.last && i === pieces.length - 1) w.uint32(RESPONSE_RESET_LAST).bool(true);
      w.uint32(RESPONSE_RESET_REASON).string(chunk.reason);
      return Buffer.from(w.finish());
    });
    protoChunks.set(chunk, messages);
  }
  return messages;
}

/** A WatchResponse of kind PROGRESS: a few bytes, made per watch. */
export function protoProgress(watchId: number, revision: number): Buffer {
  const w = protobuf.Writer.create();
  w.uint32(RESPONSE_KIND).uint32(KIND_PROGRESS);
  w.uint32(RESPONSE_REVISION).uint64(revision);
  w.uint32(RESPONSE_WATCH_ID).uint64(watchId);
  return Buffer.from(w.finish());
}

export function protoCreated(watchId: number, revision: number): Buffer {
  const w = protobuf.Writer.create();
  w.uint32(RESPONSE_KIND).uint32(KIND_CREATED);
  w.uint32(RESPONSE_REVISION).uint64(revision);
  w.uint32(RESPONSE_WATCH_ID).uint64(watchId);
  return Buffer.from(w.finish());
}

export function protoCanceled(watchId: number, reason: string): Buffer {
  const w = protobuf.Writer.create();
  w.uint32(RESPONSE_KIND).uint32(KIND_CANCELED);
  w.uint32(RESPONSE_WATCH_ID).uint64(watchId);
  if (reason !== "") w.uint32(RESPONSE_CANCEL_REASON).string(reason);
  return Buffer.from(w.finish());
}

// ---------------------------------------------------------------- server-sent events

const jsonInstances = new WeakMap<Instance, string>();
const jsonEvents = new WeakMap<RegistryEvent, string>();
const sseBatches = new WeakMap<EventBatch, string>();
const sseChunks = new WeakMap<ResetChunk, string>();

function jsonInstance(inst: Instance): string {
  let text = jsonInstances.get(inst);
  if (text === undefined) {
    text = JSON.stringify(present(inst));
    jsonInstances.set(inst, text);
  }
  return text;
}

function jsonEvent(e: RegistryEvent): string {
  let text = jsonEvents.get(e);
  if (text === undefined) {
    const c = e.change;
    text = c.kind === "delete"
      ? `{"type":"delete","revision":${e.revision},"service":${JSON.stringify(c.service)},"id":${JSON.stringify(c.id)}}`
      : `{"type":"${c.kind}","revision":${e.revision},"service":${JSON.stringify(c.instance.service)},"id":${JSON.stringify(c.instance.id)},"instance":${jsonInstance(c.instance)}}`;
    jsonEvents.set(e, text);
  }
  return text;
}

/**
 * `event: events`, with the batch's revision as the event id, which a reconnecting EventSource
 * sends back as Last-Event-ID.
 */
export function sseBatch(batch: EventBatch): string {
  let text = sseBatches.get(batch);
  if (text === undefined) {
    const events = batch.events.map(jsonEvent).join(",");
    text = `event: events\nid: ${batch.revision}\ndata: {"revision":${batch.revision},"coalesced":${batch.coalesced},"events":[${events}]}\n\n`;
    sseBatches.set(batch, text);
  }
  return text;
}

/** `event: reset`. Only the last chunk carries an id: a client cut off in the middle resumes from before the reset. */
export function sseResetChunk(chunk: ResetChunk): string {
  let text = sseChunks.get(chunk);
  if (text === undefined) {
    const instances = chunk.instances.map(jsonInstance).join(",");
    text = `event: reset\n${chunk.last ? `id: ${chunk.revision}\n` : ""}data: {"revision":${chunk.revision},"reason":"${chunk.reason}",` +
      `"first":${chunk.first},"last":${chunk.last},"instances":[${instances}]}\n\n`;
    sseChunks.set(chunk, text);
  }
  return text;
}

/** `event: denied`, the last event of a stream whose token may no longer watch; the client must not resume it with the same token. */
export function sseDenied(reason: string): string {
  return `event: denied\ndata: ${JSON.stringify({ error: reason })}\n\n`;
}

export function sseProgress(revision: number): string {
  return `event: progress\nid: ${revision}\ndata: {"revision":${revision}}\n\n`;
}
