// The registry's operations, as the API layer calls them: validate, default, then replicate.
// Validation here is semantic (names, limits, durations, conflicts); shapes are the routes' schemas.

import { SERVICE_NAME_PATTERN } from "../common/service_name.js";
import type { Logger } from "pino";
import { type RaftDriver } from "../raft/node/driver.js";
import { NotAvailableError } from "../raft/node/errors.js";
import { parseGoDuration } from "../common/duration.js";
import { HealthManager, UnknownCheckError } from "./health.js";
import { type CheckDefinition, type CheckKind, HEALTH_STATUSES, type HealthStatus, type InstanceDefinition, registryLimits } from "./model.js";
import { type RegistryCommand, type RegistryState, encodeRegistryCommand } from "./state.js";
import { ChangeWaiters } from "./watch.js";
import { ServiceViews } from "./service_views.js";
import { WatchHub, type WatchHubOptions } from "./watch_hub.js";
import { STATE_TAG_REGISTRY, withTag } from "../state/tags.js";

/** A bad request: names the field and says what is wrong with it. */
export class RegistryInputError extends Error {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "RegistryInputError";
  }
}

export class RegistryNotFoundError extends Error {
  constructor(what: string) {
    super(`${what} is not registered`);
    this.name = "RegistryNotFoundError";
  }
}

export interface CheckInput {
  readonly id?: string;
  readonly name?: string;
  readonly ttl?: string;
  readonly http?: string;
  readonly tcp?: string;
  readonly grpc?: string;
  readonly interval?: string;
  readonly timeout?: string;
  readonly deregisterCriticalAfter?: string;
  readonly status?: string;
  readonly notes?: string;
}

export interface RegisterInput {
  readonly id?: string;
  readonly name: string;
  readonly address?: string;
  readonly port?: number;
  readonly tags?: readonly string[];
  readonly meta?: Readonly<Record<string, string>>;
  readonly weights?: { readonly passing: number; readonly warning: number };
  readonly zone?: string;
  readonly checks?: readonly CheckInput[];
}

export interface RegistryOptions {
  readonly driver: RaftDriver;
  /** The replicated state the driver applies commands to. */
  readonly state: RegistryState;
  readonly nodeName: string;
  readonly nodeAddress: string;
  readonly logger: Logger;
  /** Consul's floor for DeregisterCriticalServiceAfter is one minute; tests may lower it. */
  readonly deregisterCriticalMinMs?: number;
  readonly healthScanIntervalMs?: number;
  readonly watch?: WatchHubOptions;
}

/** DNS label rules for service names: what Consul's DNS interface can serve. */
const SERVICE_NAME = SERVICE_NAME_PATTERN;
const PRINTABLE_ID = /^[\x21-\x7e]+$/;
const DEFAULT_PROBE_INTERVAL_MS = 10_000;
const DEFAULT_PROBE_TIMEOUT_MS = 10_000;

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

type HeartbeatReply = { ok: true } | { ok: false; unknownCheck: string };

export class Registry {
  readonly state: RegistryState;
  readonly waiters: ChangeWaiters;
  /** Each service's instances in answer order, shared by every read of it. */
  readonly views: ServiceViews;
  /** Watch streams (gRPC, server-sent events) over this node's applied state. */
  readonly watches: WatchHub;
  readonly health: HealthManager;
  private readonly driver: RaftDriver;

  constructor(private readonly opts: RegistryOptions) {
    this.driver = opts.driver;
    this.state = opts.state;
    this.waiters = new ChangeWaiters(this.state);
    this.views = new ServiceViews(this.state);
    this.watches = new WatchHub(this.state, { ...opts.watch, views: this.views });
    this.health = new HealthManager({
      state: this.state,
      isLeader: () => this.driver.role === "leader",
      propose: (cmd) => this.propose(cmd),
      logger: opts.logger.child({ component: "health" }),
      ...(opts.healthScanIntervalMs === undefined ? {} : { scanIntervalMs: opts.healthScanIntervalMs }),
    });
  }

  /** Wires heartbeats arriving at followers to this node's health manager when it leads. */
  start(): void {
    this.driver.handleLeaderRequests(async (request) => {
      const { checkId, status, output } = JSON.parse(textDecoder.decode(request)) as { checkId: string; status: HealthStatus; output: string };
      let reply: HeartbeatReply = { ok: true };
      try {
        await this.health.heartbeat(checkId, status, output);
      } catch (err) {
        if (!(err instanceof UnknownCheckError)) throw err;
        reply = { ok: false, unknownCheck: checkId };
      }
      return textEncoder.encode(JSON.stringify(reply));
    });
    this.health.start();
  }

  stop(): void {
    this.health.stop();
    this.watches.stop();
  }

  /** Registers (or replaces) an instance; resolves with the revision once applied here. */
  register(input: RegisterInput): Promise<number> {
    const instance = this.instanceDefinition(input);
    const checks = (input.checks ?? []).map((c, i, all) => this.checkDefinition(instance.id, instance.service, c, i, all.length));
    const ids = new Set<string>();
    for (const c of checks) {
      if (ids.has(c.checkId)) throw new RegistryInputError("Checks", `check id ${c.checkId} appears twice`);
      ids.add(c.checkId);
      const owner = this.state.checkById(c.checkId);
      if (owner !== undefined && owner.instance.id !== instance.id) {
        throw new RegistryInputError("CheckID", `check id ${c.checkId} already belongs to instance ${owner.instance.id}`);
      }
    }
    return this.propose({ op: "register", instance, checks, atMs: Date.now() });
  }

  async deregister(id: string): Promise<number> {
    // This node may not have applied a registration another node acknowledged: "not registered"
    // must be true of the cluster, not of this node's lag, so a miss is checked again after a read barrier.
    if (this.state.instance(id) === undefined) {
      await this.driver.readBarrier();
      if (this.state.instance(id) === undefined) throw new RegistryNotFoundError(`instance ${id}`);
    }
    return this.propose({ op: "deregister", id });
  }

  /** A TTL heartbeat (pass, warn, fail or update). Not a Raft write unless the status changes. */
  async updateCheck(checkId: string, status: HealthStatus, output: string): Promise<void> {
    // As with deregister: an unknown check is looked for again once this node has caught up.
    if (this.state.checkById(checkId) === undefined) await this.driver.readBarrier();
    const known = this.state.checkById(checkId);
    if (known === undefined) throw new RegistryNotFoundError(`check ${checkId}`);
    if (known.check.kind !== "ttl") throw new RegistryInputError("CheckID", `check ${checkId} is a ${known.check.kind} check; only TTL checks take updates`);
    if (output.length > registryLimits.outputBytesMax) throw new RegistryInputError("Output", `is longer than ${registryLimits.outputBytesMax} bytes`);
    const reply = JSON.parse(textDecoder.decode(
      await this.driver.askLeader(textEncoder.encode(JSON.stringify({ checkId, status, output }))),
    )) as HeartbeatReply;
    if (!reply.ok) throw new RegistryNotFoundError(`check ${reply.unknownCheck}`);
  }

  /** Makes the next read linearizable, unless the caller accepts a stale answer. */
  async consistentRead(stale: boolean): Promise<void> {
    if (!stale) await this.driver.readBarrier();
  }

  private async propose(cmd: RegistryCommand): Promise<number> {
    return this.driver.propose(withTag(STATE_TAG_REGISTRY, encodeRegistryCommand(cmd)));
  }

  private instanceDefinition(input: RegisterInput): InstanceDefinition {
    const name = input.name;
    if (typeof name !== "string" || name === "") throw new RegistryInputError("Name", "is required");
    if (!SERVICE_NAME.test(name)) {
      throw new RegistryInputError("Name", `"${name}" must be a DNS label: 1-63 letters, digits or '-', not starting or ending with '-'`);
    }
    const id = input.id === undefined || input.id === "" ? name : input.id;
    if (id.length > registryLimits.idBytesMax || !PRINTABLE_ID.test(id)) {
      throw new RegistryInputError("ID", `"${id}" must be 1-${registryLimits.idBytesMax} printable characters without spaces`);
    }
    const port = input.port ?? 0;
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RegistryInputError("Port", `${port} is not a port number (0-65535)`);
    const address = input.address ?? "";
    if (address.length > registryLimits.addressBytesMax) throw new RegistryInputError("Address", `is longer than ${registryLimits.addressBytesMax} bytes`);
    const tags = [...(input.tags ?? [])];
    if (tags.length > registryLimits.tagsMax) throw new RegistryInputError("Tags", `has ${tags.length} tags; at most ${registryLimits.tagsMax} are allowed`);
    for (const t of tags) {
      if (t.length > registryLimits.tagBytesMax) throw new RegistryInputError("Tags", `tag "${t.slice(0, 32)}..." is longer than ${registryLimits.tagBytesMax} bytes`);
    }
    const meta = { ...(input.meta ?? {}) };
    const metaKeys = Object.keys(meta);
    if (metaKeys.length > registryLimits.metaKeysMax) throw new RegistryInputError("Meta", `has ${metaKeys.length} keys; at most ${registryLimits.metaKeysMax} are allowed`);
    for (const k of metaKeys) {
      if (!/^[a-zA-Z0-9_-]+$/.test(k) || k.length > registryLimits.metaKeyBytesMax) {
        throw new RegistryInputError("Meta", `key "${k}" must be 1-${registryLimits.metaKeyBytesMax} letters, digits, '_' or '-'`);
      }
      if ((meta[k]).length > registryLimits.metaValueBytesMax) {
        throw new RegistryInputError("Meta", `value of "${k}" is longer than ${registryLimits.metaValueBytesMax} bytes`);
      }
    }
    const weights = input.weights ?? { passing: 1, warning: 1 };
    if (!Number.isInteger(weights.passing) || weights.passing < 1 || !Number.isInteger(weights.warning) || weights.warning < 0) {
      throw new RegistryInputError("Weights", "Passing must be a whole number >= 1 and Warning a whole number >= 0");
    }
    if ((input.checks ?? []).length > registryLimits.checksMax) {
      throw new RegistryInputError("Checks", `at most ${registryLimits.checksMax} checks per instance`);
    }
    return {
      id, service: name, address, port, tags, meta, weights,
      zone: input.zone ?? "", node: this.opts.nodeName, nodeAddress: this.opts.nodeAddress,
    };
  }

  private checkDefinition(instanceId: string, serviceName: string, c: CheckInput, i: number, count: number): CheckDefinition & { status: HealthStatus; output: string } {
    const field = count > 1 ? `Checks[${i}]` : "Check";
    const targets: [CheckKind, string | undefined][] = [["ttl", c.ttl], ["http", c.http], ["tcp", c.tcp], ["grpc", c.grpc]];
    const given = targets.filter(([, v]) => v !== undefined && v !== "");
    if (given.length !== 1) throw new RegistryInputError(field, "needs exactly one of TTL, HTTP, TCP or GRPC");
    const [kind, target] = given[0] as [CheckKind, string];
    const duration = (name: string, text: string | undefined, fallbackMs: number): number => {
      if (text === undefined || text === "") return fallbackMs;
      const ms = parseGoDuration(text);
      if (ms === undefined || ms < 0) throw new RegistryInputError(`${field}.${name}`, `"${text}" is not a duration like "10s" or "1m30s"`);
      return ms;
    };
    const ttlMs = kind === "ttl" ? duration("TTL", target, 0) : 0;
    if (kind === "ttl" && ttlMs <= 0) throw new RegistryInputError(`${field}.TTL`, "must be positive");
    if (kind === "http" && !/^https?:\/\//.test(target)) throw new RegistryInputError(`${field}.HTTP`, `"${target}" must be an http:// or https:// URL`);
    if ((kind === "tcp" || kind === "grpc") && !/^[^\s/]+:\d{1,5}(\/.*)?$/.test(target)) {
      throw new RegistryInputError(`${field}.${kind.toUpperCase()}`, `"${target}" must be HOST:PORT`);
    }
    let deregisterMs = duration("DeregisterCriticalServiceAfter", c.deregisterCriticalAfter, 0);
    if (deregisterMs > 0) deregisterMs = Math.max(deregisterMs, this.opts.deregisterCriticalMinMs ?? 60_000);
    const status = c.status === undefined || c.status === "" ? "critical" : c.status;
    if (!HEALTH_STATUSES.includes(status as HealthStatus)) {
      throw new RegistryInputError(`${field}.Status`, `"${status}" must be passing, warning or critical`);
    }
    const checkId = c.id !== undefined && c.id !== "" ? c.id : count > 1 ? `service:${instanceId}:${i + 1}` : `service:${instanceId}`;
    return {
      checkId,
      name: c.name !== undefined && c.name !== "" ? c.name : `Service '${serviceName}' check`,
      kind,
      notes: c.notes ?? "",
      ttlMs,
      target: kind === "ttl" ? "" : target,
      intervalMs: kind === "ttl" ? 0 : duration("Interval", c.interval, DEFAULT_PROBE_INTERVAL_MS),
      timeoutMs: kind === "ttl" ? 0 : duration("Timeout", c.timeout, DEFAULT_PROBE_TIMEOUT_MS),
      deregisterCriticalAfterMs: deregisterMs,
      status: status as HealthStatus,
      output: "",
    };
  }
}

export { NotAvailableError };
