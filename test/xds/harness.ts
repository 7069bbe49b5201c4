// The xDS service in this process on a loopback port, over a registry state the test writes to
// directly (commands applied as Raft would apply them), with its log lines captured.

import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { unguarded } from "../../src/api/acl/grpc.js";
import { addXdsService, type XdsService, type XdsServiceOptions } from "../../src/api/xds/service.js";
import type { InstanceDefinition } from "../../src/registry/model.js";
import { type RegistryCommand, RegistryState, encodeRegistryCommand } from "../../src/registry/state.js";

export interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly [key: string]: unknown;
}

export const PINO_WARN = 40;

export interface InstanceSpec {
  readonly address?: string;
  readonly port?: number;
  readonly zone?: string;
  readonly weight?: number;
  readonly tags?: readonly string[];
  /** A TTL check in this status; none when left out (the instance is then passing). */
  readonly status?: "passing" | "warning" | "critical";
}

export class XdsHarness {
  private index = 0;

  private constructor(readonly state: RegistryState, readonly xds: XdsService, private readonly server: grpc.Server, readonly address: string, readonly lines: LogLine[]) {}

  static async start(options: Partial<Pick<XdsServiceOptions, "limits" | "admissionClock">> = {}): Promise<XdsHarness> {
    const state = new RegistryState();
    const lines: LogLine[] = [];
    const logger = pino({ level: "debug" }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
    const server = new grpc.Server();
    const xds = addXdsService(unguarded(server), { state, logger, controlPlaneId: "test-node", ...options });
    const port = await new Promise<number>((resolve, reject) => {
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, bound) => (err === null ? resolve(bound) : reject(err)));
    });
    await xds.warmUp();
    return new XdsHarness(state, xds, server, `127.0.0.1:${port}`, lines);
  }

  apply(cmd: RegistryCommand): void {
    this.state.apply(++this.index, encodeRegistryCommand(cmd));
  }

  register(id: string, service: string, spec: InstanceSpec = {}): void {
    const instance: InstanceDefinition = {
      id, service, address: spec.address ?? "10.0.0.1", port: spec.port ?? 8080, tags: spec.tags ?? [], meta: {},
      weights: { passing: spec.weight ?? 1, warning: 1 }, zone: spec.zone ?? "", node: "n1", nodeAddress: "127.0.0.1",
    };
    const checks = spec.status === undefined ? [] : [{
      checkId: `service:${id}`, name: id, kind: "ttl" as const, notes: "", ttlMs: 60_000, target: "", intervalMs: 0, timeoutMs: 0,
      deregisterCriticalAfterMs: 0, status: spec.status, output: "",
    }];
    this.apply({ op: "register", instance, checks, atMs: this.index });
  }

  deregister(id: string): void {
    this.apply({ op: "deregister", id });
  }

  setStatus(id: string, status: "passing" | "warning" | "critical"): void {
    this.apply({ op: "setCheckStatus", checkId: `service:${id}`, status, output: "", atMs: this.index });
  }

  warnings(): LogLine[] {
    return this.lines.filter((l) => l.level === PINO_WARN);
  }

  async close(): Promise<void> {
    this.xds.close();
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
  }
}
