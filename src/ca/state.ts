// The CA as a replicated state machine: the trust domain, every root still trusted, which one
// signs, and each root's intermediate. Private keys arrive sealed (see seal.ts) and stay sealed
// here; signing happens outside, on any node, with no Raft round trip.
//
// Rotation is compare-and-set: a command names the root it replaces, and is ignored when another
// rotation (or bootstrap) got there first, so racing leaders or operators cannot fork the CA.
// Time-based decisions (when a replaced root may leave the bundle) are the leader's, stamped in
// the command, so apply() stays deterministic.

import type { Chunks } from "../common/codec.js";
import type { StateMachine } from "../raft/state_machine.js";

/** One trusted root, with the intermediate that signs leaves while the root is active. */
export interface CaRoot {
  /** The root's subject key identifier as colon-separated hex, as Consul names roots. */
  readonly id: string;
  readonly name: string;
  readonly keyType: string;
  readonly rootCertificatePem: string;
  /** Null when the operator imported an intermediate under a root whose key Cairn never held. */
  readonly rootKeySealed: string | null;
  readonly intermediateCertificatePem: string;
  readonly intermediateKeySealed: string;
  /** This root's key certified by the root it replaced, so holders of the old root trust the new. */
  readonly crossSignedCertificatePem: string | null;
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
  readonly createIndex: number;
  readonly modifyIndex: number;
  readonly active: boolean;
  /**
   * Set when the root is replaced: the moment the last leaf it could have signed expires. Then
   * the leader commits its retirement and it leaves the bundle.
   */
  readonly retireAfterMs: number | null;
}

/** The CA certificates a root brings besides itself: its intermediate, then its cross-signed copy if any. */
export function intermediatesOf(root: CaRoot): string[] {
  return root.crossSignedCertificatePem === null ? [root.intermediateCertificatePem] : [root.intermediateCertificatePem, root.crossSignedCertificatePem];
}

export type NewCaRoot = Omit<CaRoot, "createIndex" | "modifyIndex" | "active" | "retireAfterMs">;

export type CaCommand =
  | {
      readonly op: "activateRoot";
      /** The active root this replaces; null to bootstrap an empty CA. */
      readonly replaces: string | null;
      readonly trustDomain: string;
      readonly root: NewCaRoot;
      /** When the leader decided, and the longest leaf the old root's intermediate could still sign. */
      readonly atMs: number;
      readonly oldLeavesValidForMs: number;
    }
  | { readonly op: "retireRoot"; readonly id: string };

export interface CaSnapshotShape {
  readonly version: 1;
  readonly revision: number;
  readonly trustDomain: string | null;
  readonly roots: CaRoot[];
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

export function encodeCaCommand(cmd: CaCommand): Uint8Array {
  return textEncoder.encode(JSON.stringify(cmd));
}

export class CaState implements StateMachine {
  private rootsValue: CaRoot[] = [];
  private trustDomainValue: string | null = null;
  private revisionValue = 0;
  private readonly listeners: ((revision: number) => void)[] = [];

  /** Called after every apply or restore that changed the roots. */
  onChange(listener: (revision: number) => void): void {
    this.listeners.push(listener);
  }

  /** The index of the last change to the roots; 0 before bootstrap. */
  get revision(): number {
    return this.revisionValue;
  }

  get trustDomain(): string | null {
    return this.trustDomainValue;
  }

  /** Every trusted root, oldest first. */
  get roots(): readonly CaRoot[] {
    return this.rootsValue;
  }

  get activeRoot(): CaRoot | undefined {
    return this.rootsValue.find((r) => r.active);
  }

  apply(index: number, data: Uint8Array): void {
    const cmd = JSON.parse(textDecoder.decode(data)) as CaCommand;
    if (cmd.op === "activateRoot") {
      const active = this.activeRoot;
      // Lost a race with another rotation or bootstrap: the first committed one stands.
      if ((active?.id ?? null) !== cmd.replaces) return;
      if (this.trustDomainValue !== null && cmd.trustDomain !== this.trustDomainValue) return;
      if (this.rootsValue.some((r) => r.id === cmd.root.id)) return;
      this.trustDomainValue = cmd.trustDomain;
      this.rootsValue = this.rootsValue.map((r) =>
        r.active ? { ...r, active: false, modifyIndex: index, retireAfterMs: cmd.atMs + cmd.oldLeavesValidForMs } : r,
      );
      this.rootsValue.push({ ...cmd.root, createIndex: index, modifyIndex: index, active: true, retireAfterMs: null });
    } else {
      const victim = this.rootsValue.find((r) => r.id === cmd.id);
      // The active root never leaves; a retired one may be retired twice by racing leaders.
      if (victim === undefined || victim.active) return;
      this.rootsValue = this.rootsValue.filter((r) => r.id !== cmd.id);
    }
    this.changed(index);
  }

  snapshot(): Chunks {
    const shape: CaSnapshotShape = { version: 1, revision: this.revisionValue, trustDomain: this.trustDomainValue, roots: this.rootsValue };
    return [textEncoder.encode(JSON.stringify(shape))];
  }

  restore(data: Uint8Array): void {
    if (data.byteLength === 0) {
      this.rootsValue = [];
      this.trustDomainValue = null;
      this.changed(0);
      return;
    }
    const shape = JSON.parse(textDecoder.decode(data)) as CaSnapshotShape;
    if (shape.version !== 1) throw new Error(`CA snapshot version ${String(shape.version)} is newer than this build understands`);
    this.rootsValue = shape.roots;
    this.trustDomainValue = shape.trustDomain;
    this.changed(shape.revision);
  }

  private changed(revision: number): void {
    this.revisionValue = revision;
    for (const l of this.listeners) l(revision);
  }
}
