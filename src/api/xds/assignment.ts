// A ClusterLoadAssignment assembled by hand from pieces, so that a service of 100,000 instances
// is encoded in slices and re-encodes only what changed: each instance's LbEndpoint is encoded
// once (instances are immutable: a change is a new object) and kept in a WeakMap keyed by the
// instance, and a rebuild after one change encodes one endpoint and copies the rest.
//
// Protobuf lets a message be the concatenation of its fields, and protobufjs writes fields in
// field-number order, so the pieces are laid out as protobufjs itself would write them:
//   ClusterLoadAssignment  = cluster_name(1) · { endpoints(2) as key, varint length, group }*
//   LocalityLbEndpoints    = locality(1) · lb_endpoints(2)* · load_balancing_weight(3)
// Each piece is encoded by protobufjs; only the framing of a whole group is written here. A test
// holds the result to encodeLoadAssignment's bytes for random inputs.

import { createHash } from "node:crypto";
import protobuf from "protobufjs";
import type { SliceClock } from "../../common/slices.js";
import type { Instance } from "../../registry/model.js";
import type { XdsProtos } from "./protos.js";
import { endpointWeight, type CandidateLocality, type EndpointCandidate } from "./resources.js";

/** Bytes of the assignment hashed between two looks at the clock. */
const HASH_CHUNK_BYTES = 256 * 1024;

/** An assignment's bytes and the SHA-256 of them, in hex. */
export interface AssembledAssignment {
  readonly bytes: Uint8Array;
  readonly sha256Hex: string;
}

/** Encodes endpoints once per instance object; one per ResourceCache (the protos are its own). */
export class EndpointEncoder {
  /** Each instance's LbEndpoint, framed as one element of LocalityLbEndpoints.lb_endpoints. */
  private readonly framed = new WeakMap<Instance, Uint8Array>();

  constructor(private readonly protos: XdsProtos) {}

  /** The candidate's framed LbEndpoint. Its address is derived from the instance alone, so the instance is the key. */
  endpointField(candidate: EndpointCandidate): Uint8Array {
    let bytes = this.framed.get(candidate.inst);
    if (bytes === undefined) {
      bytes = this.protos.LocalityLbEndpoints.encode({
        lb_endpoints: [{
          endpoint: { address: { socket_address: { address: candidate.address, port_value: candidate.inst.port } } },
          health_status: this.protos.healthStatusHealthy,
          load_balancing_weight: { value: endpointWeight(candidate.inst) },
        }],
      }).finish();
      this.framed.set(candidate.inst, bytes);
    }
    return bytes;
  }

  /** The assignment in one call: for services small enough to encode well inside one slice. */
  assemble(service: string, localities: readonly CandidateLocality[]): AssembledAssignment {
    const layout = this.layout(service, localities);
    for (const locality of localities) for (const member of locality.members) layout.add(this.endpointField(member));
    const bytes = layout.finish();
    return { bytes, sha256Hex: createHash("sha256").update(bytes).digest("hex") };
  }

  /** The same bytes and digest as assemble(), in slices of `clock`'s budget. */
  async assembleInSlices(service: string, localities: readonly CandidateLocality[], clock: SliceClock): Promise<AssembledAssignment> {
    const layout = this.layout(service, localities);
    for (const locality of localities) {
      for (let i = 0; i < locality.members.length; i++) {
        layout.add(this.endpointField(locality.members[i]));
        if (clock.tick()) await clock.pause();
      }
    }
    const bytes = await layout.finishInSlices(clock);
    const hash = createHash("sha256");
    for (let offset = 0; offset < bytes.length; offset += HASH_CHUNK_BYTES) {
      hash.update(bytes.subarray(offset, offset + HASH_CHUNK_BYTES));
      // A chunk is worth a clock read on its own.
      if (clock.tick(Number.MAX_SAFE_INTEGER)) await clock.pause();
    }
    return { bytes, sha256Hex: hash.digest("hex") };
  }

  private layout(service: string, localities: readonly CandidateLocality[]): AssignmentLayout {
    return new AssignmentLayout(this.protos, service, localities);
  }
}

/**
 * The pieces of one assignment, gathered group by group (endpoints are added in the localities'
 * order), then copied into one buffer once every group's length is known.
 */
class AssignmentLayout {
  private readonly head: Uint8Array;
  private readonly groups: { readonly open: Uint8Array; readonly close: Uint8Array; readonly count: number; readonly fields: Uint8Array[]; bodyBytes: number }[];
  private group = 0;

  constructor(private readonly protos: XdsProtos, service: string, localities: readonly CandidateLocality[]) {
    this.head = protos.ClusterLoadAssignment.encode({ cluster_name: service }).finish();
    this.groups = localities.map((l) => {
      // Set on every group, also when the zone is empty: gRPC refuses a group without a locality.
      const open = protos.LocalityLbEndpoints.encode({ locality: { zone: l.zone } }).finish();
      const close = protos.LocalityLbEndpoints.encode({ load_balancing_weight: { value: l.weight } }).finish();
      return { open, close, count: l.members.length, fields: [], bodyBytes: open.length + close.length };
    });
    this.skipFullGroups();
  }

  add(field: Uint8Array): void {
    const g = this.groups[this.group];
    if (g === undefined) throw new Error("assignment layout: more endpoints than its localities hold");
    g.fields.push(field);
    g.bodyBytes += field.length;
    this.skipFullGroups();
  }

  private skipFullGroups(): void {
    while (this.group < this.groups.length && this.groups[this.group].fields.length === this.groups[this.group].count) this.group++;
  }

  finish(): Uint8Array {
    const { out, frames } = this.allocate();
    let at = this.write(out, 0, this.head);
    this.groups.forEach((g, i) => {
      at = this.write(out, at, frames[i]);
      at = this.write(out, at, g.open);
      for (const f of g.fields) at = this.write(out, at, f);
      at = this.write(out, at, g.close);
    });
    return this.check(out, at);
  }

  async finishInSlices(clock: SliceClock): Promise<Uint8Array> {
    const { out, frames } = this.allocate();
    let at = this.write(out, 0, this.head);
    for (let i = 0; i < this.groups.length; i++) {
      const g = this.groups[i];
      at = this.write(out, at, frames[i]);
      at = this.write(out, at, g.open);
      for (let j = 0; j < g.fields.length; j++) {
        at = this.write(out, at, g.fields[j]);
        if (clock.tick()) await clock.pause();
      }
      at = this.write(out, at, g.close);
    }
    return this.check(out, at);
  }

  private allocate(): { out: Uint8Array; frames: Uint8Array[] } {
    if (this.group !== this.groups.length) throw new Error(`assignment layout: ${this.groups.length - this.group} localities still lack endpoints`);
    const frames = this.groups.map((g) => protobuf.Writer.create().uint32(this.protos.assignmentEndpointsKey).uint32(g.bodyBytes).finish());
    const total = this.groups.reduce((sum, g, i) => sum + frames[i].length + g.bodyBytes, this.head.length);
    return { out: new Uint8Array(total), frames };
  }

  private write(out: Uint8Array, at: number, piece: Uint8Array): number {
    out.set(piece, at);
    return at + piece.length;
  }

  private check(out: Uint8Array, at: number): Uint8Array {
    if (at !== out.length) throw new Error(`assignment layout: wrote ${at} bytes of ${out.length}`);
    return out;
  }
}
