// The certificate authority's figures: what it issued and how fast (heard through its onIssued
// listener), and at scrape time, how long each root and intermediate has left and where a rotation
// stands, read from the replicated CA state. The roots are bounded (TRUSTED_ROOTS_MAX, 16), so a
// root id is a label of bounded cardinality.

import { X509Certificate } from "node:crypto";
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { ISSUANCE_SOURCES, type IssuedEvent } from "../ca/authority.js";
import type { CaRoot, CaState } from "../ca/state.js";
import { SIGNING_SECONDS_BUCKETS } from "./buckets.js";

export type CaSource = Pick<CaState, "roots">;

/** A root is active (it signs) or retiring (replaced, trusted until the last leaf it signed expires). */
function rootState(root: CaRoot): "active" | "retiring" {
  return root.active ? "active" : "retiring";
}

export class CaMetrics {
  private readonly issued: Counter<"source">;
  private readonly issuanceSeconds: Histogram<"source">;
  /** Each intermediate's NotAfter, parsed once per root (its PEM never changes). */
  private readonly intermediateNotAfterMs = new Map<string, number>();

  constructor(private readonly registry: Registry) {
    const registers = [registry];
    this.issued = new Counter({
      name: "cairn_ca_certificates_issued_total",
      help: "Certificates this node signed, by how they were asked for: csr (a workload's CSR), generated_key (Consul's leaf route, the Workload API), node_tls (this node's own, --tls auto)",
      labelNames: ["source"],
      registers,
    });
    this.issuanceSeconds = new Histogram({
      name: "cairn_ca_issuance_duration_seconds",
      help: "Time from a request reaching the CA to its signed certificate; for a CSR, its checks (and any wait for a verify worker) included",
      labelNames: ["source"],
      buckets: [...SIGNING_SECONDS_BUCKETS],
      registers,
    });
    for (const source of ISSUANCE_SOURCES) this.issued.inc({ source }, 0);
  }

  /** The CA's onIssued listener. */
  readonly certificateIssued = (event: IssuedEvent): void => {
    this.issued.inc({ source: event.source });
    this.issuanceSeconds.observe({ source: event.source }, event.durationSeconds);
  };

  /** Registers the state read from the CA at every scrape. `nowMs` is the wall clock certificates are dated by. */
  read(ca: CaSource, nowMs: () => number = Date.now): void {
    const registers = [this.registry];
    new Gauge({
      name: "cairn_ca_root_time_to_expiry_seconds",
      help: "Seconds until each trusted root certificate expires (negative once it has); alert well before the active one runs out",
      labelNames: ["root_id", "state"],
      registers,
      collect() {
        this.reset();
        const now = nowMs();
        for (const root of ca.roots) this.set({ root_id: root.id, state: rootState(root) }, (root.notAfterMs - now) / 1000);
      },
    });
    const intermediateNotAfterMs = (root: CaRoot): number => {
      let notAfterMs = this.intermediateNotAfterMs.get(root.id);
      if (notAfterMs === undefined) {
        notAfterMs = Date.parse(new X509Certificate(root.intermediateCertificatePem).validTo);
        this.intermediateNotAfterMs.set(root.id, notAfterMs);
      }
      return notAfterMs;
    };
    const cache = this.intermediateNotAfterMs;
    new Gauge({
      name: "cairn_ca_intermediate_time_to_expiry_seconds",
      help: "Seconds until the intermediate of each trusted root expires (the certificate that signs its leaves)",
      labelNames: ["root_id", "state"],
      registers,
      collect() {
        this.reset();
        const now = nowMs();
        const roots = ca.roots;
        // Retired roots leave the state: forget their intermediates too, so the cache stays within the roots' bound.
        for (const id of cache.keys()) if (!roots.some((r) => r.id === id)) cache.delete(id);
        for (const root of roots) this.set({ root_id: root.id, state: rootState(root) }, (intermediateNotAfterMs(root) - now) / 1000);
      },
    });
    new Gauge({
      name: "cairn_ca_roots",
      help: "Trusted roots by state: active (signs now) and retiring (replaced by a rotation, trusted until the last leaf it signed expires)",
      labelNames: ["state"],
      registers,
      collect() {
        const roots = ca.roots;
        this.set({ state: "active" }, roots.filter((r) => r.active).length);
        this.set({ state: "retiring" }, roots.filter((r) => !r.active).length);
      },
    });
    new Gauge({
      name: "cairn_ca_rotation_in_progress",
      help: "1 while a rotation is under way (a replaced root is still trusted, waiting for its leaves to expire), else 0",
      registers,
      collect() {
        this.set(ca.roots.some((r) => !r.active) ? 1 : 0);
      },
    });
  }
}
