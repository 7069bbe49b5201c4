// The last certificates this node signed, for operators (the dashboard, GET /v1/ca/issued): a
// bounded ring, newest first, in memory only. It is per node because signing is: each node signs
// locally, without a Raft round trip, so no node sees another's issuances. The audit log keeps
// the full record; this answers "what did this node sign lately" without reading a file.
//
// It holds what a certificate says publicly (serial, SPIFFE ID, validity, issuing root) and where
// the request came from; never a key (the CA never sees a workload's private key) and never a
// token.

import type { Caller } from "./authorizer.js";

/**
 * How a certificate was asked for: a workload's CSR (POST /v1/ca/sign), a key this node generated
 * for its caller (Consul's leaf route, the Workload API), or this node's own public TLS (--tls auto).
 */
export type IssuanceSource = "csr" | "generated_key" | "node_tls";
export const ISSUANCE_SOURCES: readonly IssuanceSource[] = ["csr", "generated_key", "node_tls"];

/** What onIssued listeners hear of each certificate: never its key, which only the caller holds. */
export interface IssuedEvent {
  readonly source: IssuanceSource;
  /** From the request reaching the CA to the signed certificate: for a CSR, its checks (and any wait for a verify worker) included. */
  readonly durationSeconds: number;
  readonly spiffeId: string;
  readonly serialHex: string;
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
  /** When this node signed it. */
  readonly issuedAtMs: number;
  readonly rootId: string;
  /** Who asked; undefined when the node itself holds the identity (the Workload API's cache). */
  readonly caller: Caller | undefined;
}

/** Where an issued certificate's request came from, for records of it (the audit log, recent issuances). */
export function issuedOrigin(event: IssuedEvent): string {
  // The Workload API's cache signs for the identities the socket hands out, before any caller asks.
  return event.caller?.origin ?? "workload api";
}

/** Issuances kept per node: enough to see a burst, small enough (about 30 KB) to ignore. */
export const RECENT_ISSUANCES_MAX = 100;

export interface RecentIssuance {
  readonly serialHex: string;
  readonly spiffeId: string;
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
  readonly issuedAtMs: number;
  readonly rootId: string;
  /** Where the request came from: "http 127.0.0.1", the Workload API, or this node itself. */
  readonly origin: string;
}

export class RecentIssuances {
  /** A ring: `slots[next]` is overwritten next; `count` of them are filled. */
  private readonly slots: (RecentIssuance | undefined)[];
  private next = 0;
  private count = 0;

  constructor(readonly capacity: number = RECENT_ISSUANCES_MAX) {
    if (!Number.isSafeInteger(capacity) || capacity < 1) throw new RangeError(`capacity must be a positive integer, not ${capacity}`);
    this.slots = new Array<RecentIssuance | undefined>(capacity).fill(undefined);
  }

  /** Records a certificate signed; the oldest goes once the ring is full. */
  record(event: IssuedEvent): void {
    this.slots[this.next] = {
      serialHex: event.serialHex,
      spiffeId: event.spiffeId,
      notBeforeMs: event.notBeforeMs,
      notAfterMs: event.notAfterMs,
      issuedAtMs: event.issuedAtMs,
      rootId: event.rootId,
      origin: issuedOrigin(event),
    };
    this.next = (this.next + 1) % this.capacity;
    this.count = Math.min(this.count + 1, this.capacity);
  }

  /** Newest first. */
  list(): RecentIssuance[] {
    const out: RecentIssuance[] = [];
    for (let i = 1; i <= this.count; i++) {
      const slot = this.slots[(this.next - i + this.capacity) % this.capacity];
      if (slot === undefined) throw new Error("recent issuances: a filled slot is empty");
      out.push(slot);
    }
    return out;
  }
}
