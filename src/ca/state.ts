// The CA as a replicated state machine: the trust domain, every root still trusted, which one
// signs, and each root's intermediate. Private keys arrive sealed (see seal.ts) and stay sealed
// here; signing happens outside, on any node, with no Raft round trip.
//
// Rotation is compare-and-set: a command names the root it replaces, and is ignored when another
// rotation (or bootstrap) got there first, so racing leaders or operators cannot fork the CA.
// Time-based decisions (when a replaced root may leave the bundle) are the leader's, stamped in
// the command, so apply() stays deterministic.

import { type Chunks, CodecError } from "../common/codec.js";
import { type FieldKinds, jsonArray, jsonRecord, parseJson } from "../common/json_shape.js";
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

const ROOT_FIELDS: FieldKinds<CaRoot> = {
  id: "string", name: "string", keyType: "string", rootCertificatePem: "string", rootKeySealed: "string|null",
  intermediateCertificatePem: "string", intermediateKeySealed: "string", crossSignedCertificatePem: "string|null",
  notBeforeMs: "whole", notAfterMs: "whole", createIndex: "whole", modifyIndex: "whole", active: "boolean", retireAfterMs: "whole|null",
};
const SNAPSHOT_FIELDS: FieldKinds<CaSnapshotShape> = { version: "whole", revision: "whole", trustDomain: "string|null", roots: "array" };

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();
const strictTextDecoder = new TextDecoder("utf-8", { fatal: true });

/**
 * A CA snapshot, decoded strictly: every field of every root has its type and no other field is
 * there, and the roots hold exactly one active root (none only in a CA not created yet), each id once.
 */
export function decodeCaSnapshot(data: Uint8Array): CaSnapshotShape {
  let text: string;
  try {
    text = strictTextDecoder.decode(data);
  } catch {
    throw new CodecError("the CA snapshot is not UTF-8 text");
  }
  const head = jsonRecord<CaSnapshotShape>(parseJson(text, "the CA snapshot"), SNAPSHOT_FIELDS, "ca");
  const version: number = head.version;
  if (version !== 1) throw new CodecError(`CA snapshot version ${version} is not one this build understands (1)`);
  const roots = jsonArray(head.roots, "ca.roots").map((r, i) => jsonRecord<CaRoot>(r, ROOT_FIELDS, `ca.roots[${i}]`));
  if (new Set(roots.map((r) => r.id)).size !== roots.length) throw new CodecError("ca.roots: a root id appears twice");
  const active = roots.filter((r) => r.active).length;
  if (active !== (roots.length === 0 ? 0 : 1)) throw new CodecError(`ca.roots: ${active} roots are active; a CA has exactly one`);
  if ((head.trustDomain === null) !== (roots.length === 0)) throw new CodecError("ca.trustDomain: set exactly when the CA has roots");
  return { version: 1, revision: head.revision, trustDomain: head.trustDomain, roots };
}

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

  /**
   * The trust bundle as PEM: every trusted root, old and new alike during a rotation. Roots are
   * stored normalized (one PEM block ending in a newline), so they concatenate as they are.
   */
  get bundlePem(): string {
    return this.rootsValue.map((r) => r.rootCertificatePem).join("");
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

  /**
   * Replaces the state with a backup's (snapshot() bytes, from this cluster or another), as if
   * every root in it were written at `revision`, which also becomes the CA's revision: so the
   * signer, the bundle's blocking queries and streams all see a change, even where the backup's
   * own revision happens to equal this cluster's. Strict (decodeCaSnapshot): a backup that does
   * not decode throws CodecError and changes nothing.
   */
  restoreBackup(data: Uint8Array, revision: number): void {
    const shape = decodeCaSnapshot(data);
    this.rootsValue = shape.roots.map((r) => ({ ...r, createIndex: revision, modifyIndex: revision }));
    this.trustDomainValue = shape.trustDomain;
    this.changed(revision);
  }

  private changed(revision: number): void {
    this.revisionValue = revision;
    for (const l of this.listeners) l(revision);
  }
}
