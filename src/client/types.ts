// What the native API answers about instances: the registry's model as the routes present it
// (the address already defaulted to the node's, the aggregate status computed).

import type { CheckKind, HealthStatus, Weights } from "../registry/model.js";

export type { CheckKind, HealthStatus, Weights };

export interface InstanceCheck {
  readonly id: string;
  readonly name: string;
  readonly kind: CheckKind;
  readonly status: HealthStatus;
  readonly output: string;
  readonly notes: string;
  /** TTL checks only. */
  readonly ttlMs?: number;
  /** Probe checks only: URL or host:port, and their schedule. */
  readonly target?: string;
  readonly intervalMs?: number;
  readonly timeoutMs?: number;
  readonly deregisterCriticalAfterMs: number;
}

export interface Instance {
  readonly id: string;
  readonly service: string;
  /** Where to reach the instance: its own address, or the registering node's when it gave none. */
  readonly address: string;
  readonly port: number;
  readonly tags: readonly string[];
  readonly meta: Readonly<Record<string, string>>;
  readonly weights: Weights;
  readonly zone: string;
  readonly node: string;
  /** The worst status among its checks; passing without checks. */
  readonly status: HealthStatus;
  readonly checks: readonly InstanceCheck[];
  readonly createIndex: number;
  readonly modifyIndex: number;
}
