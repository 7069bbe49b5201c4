// The fuzz campaign: fast-check draws cases (HTTP requests on every route, mutated CSRs, ACL
// policies, gRPC calls), each is sent to a running node, and its answer is held to the properties:
//
//   - no 5xx, except a 503 the API documents: a write or consistent read that met an election
//     (the term moved during the request) answers 503 with Retry-After once --leader-wait is over;
//   - no hang: every answer (its headers, and its whole body unless it is an event stream)
//     arrives within the bound; a blocking query (?index=) may be held by design and is counted;
//   - no crash: after every batch each node runs and answers HTTP and gRPC health;
//   - no state change from a rejected (4xx) request: the commit index does not move while the
//     state is still (nothing can commit by itself), and otherwise the replicated content the API
//     shows (members, CA roots, instance definitions, ACL policies and tokens) is the same.
//
// gRPC has no 5xx: its equivalents are UNKNOWN (a handler threw), INTERNAL (other than grpc-js's
// own "Error deserializing request", which gRPC implementations answer to bytes that are not the
// request type), DATA_LOSS, and UNAVAILABLE from a node that is up.

import * as grpc from "@grpc/grpc-js";
import fc from "fast-check";
import { policyBodies, randomTokens } from "./acl_rules.js";
import { csrCases, makeSeedCsrs } from "./csr.js";
import { grpcCases, grpcMethods, metadataOf, type GrpcCase } from "./grpc_cases.js";
import { httpCases, type HttpCase } from "./http_cases.js";
import { type FuzzRequest, type FuzzResponse, send } from "./http_client.js";
import { hasRoute, type Route } from "./routes.js";
import { authHeaders, cleanUp, type ClusterView, clusterView, type FuzzTarget, stateView, type StateView, unhealthy } from "./target.js";

export interface CampaignOptions {
  readonly cases: number;
  readonly seed: number;
  /** fast-check's path of a failure to replay, from an earlier report. */
  readonly path?: string;
  /** Every request must answer within this. */
  readonly requestBoundMs: number;
  /** Health and clean-up run after this many cases. */
  readonly batchCases: number;
  /** Progress lines, for long runs; silent when absent. */
  readonly progress?: (line: string) => void;
}

export const campaignDefaults = { requestBoundMs: 5000, batchCases: 50 } as const;

/** A gRPC stream that has said nothing for this long is idle, as a watch with nothing to report is; the fuzzer closes it. */
const STREAM_IDLE_MS = 150;
/**
 * A blocking query (?index=N) not answered within this is held by design, until the state moves
 * past N or its wait ends (up to 10 minutes); the fuzzer counts it and moves on.
 */
const BLOCKING_HOLD_MS = 300;

export class PropertyViolation extends Error {
  constructor(readonly property: "no 5xx" | "no hang" | "no crash" | "no state change on rejection" | "gRPC status", detail: string) {
    super(`${property}: ${detail}`);
    this.name = "PropertyViolation";
  }
}

export type FuzzCase =
  | { readonly kind: "http"; readonly c: HttpCase; readonly node: number }
  | { readonly kind: "csr"; readonly how: string; readonly request: FuzzRequest; readonly node: number }
  | { readonly kind: "acl policy"; readonly how: string; readonly request: FuzzRequest; readonly node: number }
  | { readonly kind: "grpc"; readonly c: GrpcCase; readonly node: number };

export interface CampaignResult {
  readonly cases: number;
  readonly failed: boolean;
  readonly seed: number;
  readonly path: string | undefined;
  readonly counterexample: string | undefined;
  readonly error: string | undefined;
  readonly elapsedMs: number;
  /** How answers were distributed: "http 400", "grpc INVALID_ARGUMENT", "held blocking query", ... */
  readonly tally: ReadonlyMap<string, number>;
  /** Known issues other changes fix, seen and not counted as failures. */
  readonly known: ReadonlyMap<string, number>;
  readonly examples: ReadonlyMap<string, string>;
}

function jsonRequest(method: string, path: string, headers: Record<string, string>, body: unknown): FuzzRequest {
  return { method, path, headers: { ...headers, "content-type": "application/json" }, body: Buffer.from(JSON.stringify(body)) };
}

/** The arbitrary of every kind of case the node supports. */
async function caseArbitrary(target: FuzzTarget): Promise<fc.Arbitrary<FuzzCase>> {
  const nodes = target.httpUrls.length;
  const node = fc.nat({ max: nodes - 1 });
  const ctx = { routes: target.routes, managementToken: target.managementToken, bodyBytesMax: 1024 * 1024 };
  const tokenHeaders = fc.oneof(
    ...(target.managementToken === undefined ? [] : [{ weight: 3, arbitrary: fc.constant(authHeaders(target)) }]),
    { weight: 1, arbitrary: randomTokens.map((t) => ({ "x-consul-token": t })) },
    { weight: 1, arbitrary: fc.constant({}) },
  );
  const kinds: fc.WeightedArbitrary<FuzzCase>[] = [
    { weight: 12, arbitrary: fc.tuple(httpCases(ctx), node).map(([c, n]): FuzzCase => ({ kind: "http", c, node: n })) },
    { weight: 3, arbitrary: fc.tuple(csrCases(makeSeedCsrs()), tokenHeaders, node).map(([c, h, n]): FuzzCase => ({ kind: "csr", how: `${c.mutation.seed}: ${c.mutation.how}`, request: jsonRequest("POST", "/v1/ca/sign", h, c.body), node: n })) },
    { weight: 3, arbitrary: fc.tuple(grpcCases((await grpcMethods()).filter((m) => !m.workloadSocket || target.workloadSocket !== undefined), target.managementToken), node).map(([c, n]): FuzzCase => ({ kind: "grpc", c, node: n })) },
  ];
  if (hasRoute(target.routes, "PUT", "/v1/acl/policy")) {
    kinds.push({ weight: 2, arbitrary: fc.tuple(policyBodies, tokenHeaders, node).map(([p, h, n]): FuzzCase => ({ kind: "acl policy", how: p.how, request: jsonRequest("PUT", "/v1/acl/policy", h, p.body), node: n })) });
  }
  return fc.oneof(...kinds);
}

/** Runs one case after another against the target and checks each answer; throws PropertyViolation. */
class Executor {
  readonly tally = new Map<string, number>();
  readonly known = new Map<string, number>();
  /** The first request seen for each tally entry, to show what an answer came from. */
  readonly examples = new Map<string, string>();
  casesRun = 0;
  private view: StateView | undefined;
  private readonly clients = new Map<string, grpc.Client>();
  /**
   * Founding nodes an accepted request removed from the cluster (DELETE /v1/cluster/members/n1
   * is an operator's right). A removed node rightly serves nothing current (its reads find no
   * leader: 503), as a client that follows the membership would know, so cases go to the others.
   */
  private readonly removedNodes = new Set<number>();

  constructor(private readonly target: FuzzTarget, private readonly opts: CampaignOptions) {}

  async start(): Promise<void> {
    this.view = await stateView(this.memberUrl(), this.target);
  }

  /** The case's node, among those still members: cases meant for a removed one go to the others in turn. */
  private memberNode(node: number): number {
    const members = this.target.httpUrls.map((_, i) => i).filter((i) => !this.removedNodes.has(i));
    return members[node % members.length];
  }

  /** A node that is still a member, for the harness's own reads and clean-up. */
  private memberUrl(): URL {
    return this.target.httpUrls[this.memberNode(0)];
  }

  private noteRemovals(view: ClusterView): void {
    const ids = new Set(view.members.map((m) => m.id));
    this.target.cluster.nodes.forEach((n, i) => {
      if (ids.has(n.info.id) || this.removedNodes.has(i)) return;
      this.removedNodes.add(i);
      this.count(this.tally, `founding node ${n.info.id} removed by an accepted request; later cases go to the others`);
    });
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
  }

  private count(map: Map<string, number>, key: string, example?: string): void {
    map.set(key, (map.get(key) ?? 0) + 1);
    if (example !== undefined && !this.examples.has(key)) this.examples.set(key, example);
  }

  async run(c: FuzzCase): Promise<void> {
    this.casesRun++;
    try {
      if (c.kind === "grpc") await this.runGrpc(c.c, c.node);
      else await this.runHttp(c.kind === "http" ? c.c.request : c.request, c.kind === "http" ? c.c.route : undefined, c.node);
    } finally {
      if (this.casesRun % this.opts.batchCases === 0) await this.endBatch();
    }
  }

  private async endBatch(): Promise<void> {
    const sick = await unhealthy(this.target);
    if (sick !== undefined) throw new PropertyViolation("no crash", sick);
    const url = this.memberUrl();
    await cleanUp(this.target, await stateView(url, this.target), url);
    this.view = await stateView(url, this.target);
    this.opts.progress?.(`${this.casesRun} cases`);
  }

  private async runHttp(request: FuzzRequest, route: Route | undefined, node: number): Promise<void> {
    const url = this.target.httpUrls[this.memberNode(node)];
    // The state is read where it is decided: a follower learns of commits a moment after the
    // leader, so its commit index could move during a case because of an earlier write.
    const ref = await this.leaderUrl();
    const single = this.target.httpUrls.length === 1;
    const before = single && this.view !== undefined && this.view.still ? this.view : await stateView(ref, this.target);
    const blocking = route?.blocking === true && /[?&]index=/.test(request.path);
    const res = await send(url, request, blocking ? BLOCKING_HOLD_MS : this.opts.requestBoundMs);
    const what = `${request.method} ${request.path.slice(0, 200)}`;
    if (res.outcome === "unsendable") {
      this.count(this.tally, "unsendable (not on the wire)");
      return;
    }
    if (res.outcome === "timeout" || res.outcome === "bodyTimeout") {
      if (blocking) {
        this.count(this.tally, "held blocking query");
        return;
      }
      throw new PropertyViolation("no hang", `${what} had ${res.outcome === "timeout" ? "no answer" : `a ${res.status} whose body did not end`} within ${this.opts.requestBoundMs} ms`);
    }
    if (res.outcome === "connectionError") {
      const sick = await unhealthy(this.target);
      if (sick !== undefined) throw new PropertyViolation("no crash", `${what} ended with ${res.error}, and then ${sick}`);
      this.count(this.tally, `connection closed without an answer (${res.error})`, `${what} ${JSON.stringify(request.headers).slice(0, 300)} body ${request.body?.length ?? 0} bytes`);
      return;
    }
    this.count(this.tally, `http ${res.status}${res.outcome === "stream" ? " stream" : ""}`, `${what}: ${res.bodyStart.slice(0, 200)}`);
    const after = await clusterView(ref, this.target);
    this.noteRemovals(after);
    if (res.status >= 500) this.check5xx(res, what, before, after.term);
    if (res.status >= 400 && res.status < 500) await this.checkUnchanged(res, what, before, ref);
    this.view = single && after.commitIndex === before.commitIndex ? before : undefined;
  }

  /** The leader's HTTP address (the only node with a single-node target). */
  private async leaderUrl(): Promise<URL> {
    if (this.target.httpUrls.length === 1) return this.target.httpUrls[0];
    const { leader } = await clusterView(this.memberUrl(), this.target);
    const at = this.target.cluster.nodes.findIndex((n) => n.info.id === leader);
    return at < 0 ? this.memberUrl() : this.target.httpUrls[at];
  }

  private check5xx(res: FuzzResponse, what: string, before: StateView, termAfter: number): void {
    if (res.status === 503 && termAfter !== before.term) {
      this.count(this.tally, "503 during an election");
      return;
    }
    throw new PropertyViolation("no 5xx", `${what} answered ${res.status}: ${res.bodyStart.slice(0, 500)}`);
  }

  private async checkUnchanged(res: FuzzResponse, what: string, before: StateView, url: URL): Promise<void> {
    const after = await stateView(url, this.target);
    if (after.commitIndex === before.commitIndex) return;
    if (before.still && after.term === before.term) {
      throw new PropertyViolation("no state change on rejection", `${what} answered ${res.status} (${res.bodyStart.slice(0, 300)}) yet the commit index moved from ${before.commitIndex} to ${after.commitIndex} while nothing else could commit`);
    }
    if (after.content !== before.content) {
      throw new PropertyViolation("no state change on rejection", `${what} answered ${res.status} (${res.bodyStart.slice(0, 300)}) yet the state changed:\n  before ${before.content.slice(0, 2000)}\n  after  ${after.content.slice(0, 2000)}`);
    }
  }

  private client(address: string): grpc.Client {
    let c = this.clients.get(address);
    if (c === undefined) {
      c = new grpc.Client(address, grpc.credentials.createInsecure());
      this.clients.set(address, c);
    }
    return c;
  }

  private async runGrpc(c: GrpcCase, node: number): Promise<void> {
    const address = c.method.workloadSocket ? `unix://${this.target.workloadSocket}` : this.target.grpcAddresses[this.memberNode(node)];
    const end = await callOnce(this.client(address), c, this.opts.requestBoundMs);
    const what = `${c.method.path} with ${c.messages.map((m) => m.how).join(", ") || "no message"}`;
    if (end.kind === "timeout") throw new PropertyViolation("no hang", `${what} had no answer within ${this.opts.requestBoundMs} ms`);
    if (end.kind === "data" || end.kind === "idle") {
      this.count(this.tally, `grpc ${end.kind}`);
      return;
    }
    const name = grpc.status[end.code] ?? String(end.code);
    this.count(this.tally, `grpc ${name}`, `${what}: ${end.details}`);
    const deserializing = end.code === grpc.status.INTERNAL && end.details === "Error deserializing request";
    if (end.code === grpc.status.UNKNOWN || end.code === grpc.status.DATA_LOSS || (end.code === grpc.status.INTERNAL && !deserializing)) {
      throw new PropertyViolation("gRPC status", `${what} ended with ${name}: ${end.details}`);
    }
    if (end.code === grpc.status.UNAVAILABLE) {
      const sick = await unhealthy(this.target);
      throw new PropertyViolation(sick === undefined ? "gRPC status" : "no crash", `${what} ended with UNAVAILABLE: ${end.details}${sick === undefined ? " from a node that is up" : `; ${sick}`}`);
    }
  }
}

type CallEnd = { kind: "status"; code: grpc.status; details: string } | { kind: "data" } | { kind: "idle" } | { kind: "timeout" };

const identity = (b: Buffer): Buffer => b;

/** One gRPC call: its messages sent, then its first answer (a message or its status), an idle stream, or nothing within the bound. */
function callOnce(client: grpc.Client, c: GrpcCase, boundMs: number): Promise<CallEnd> {
  const metadata = metadataOf(c.metadata);
  const deadline = Date.now() + boundMs;
  const m = c.method;
  return new Promise<CallEnd>((resolve) => {
    let done = false;
    const idle: { timer?: NodeJS.Timeout } = {};
    const finish = (e: CallEnd, cancel?: () => void): void => {
      if (done) return;
      done = true;
      clearTimeout(idle.timer);
      cancel?.();
      resolve(e);
    };
    const onStatus = (err: grpc.ServiceError | null): void => {
      if (err === null) finish({ kind: "status", code: grpc.status.OK, details: "" });
      else if (err.code === grpc.status.DEADLINE_EXCEEDED) finish({ kind: "timeout" });
      else finish({ kind: "status", code: err.code, details: err.details });
    };
    if (!m.requestStream && !m.responseStream) {
      client.makeUnaryRequest(m.path, identity, identity, c.messages[0]?.bytes ?? Buffer.alloc(0), metadata, { deadline }, (err) => onStatus(err));
      return;
    }
    let call: grpc.ClientReadableStream<Buffer>;
    if (m.requestStream) {
      const duplex = client.makeBidiStreamRequest(m.path, identity, identity, metadata, { deadline });
      for (const msg of c.messages) duplex.write(msg.bytes);
      if (c.halfClose) duplex.end();
      call = duplex;
    } else {
      call = client.makeServerStreamRequest(m.path, identity, identity, c.messages[0]?.bytes ?? Buffer.alloc(0), metadata, { deadline });
    }
    const cancel = (): void => call.cancel();
    call.on("data", () => finish({ kind: "data" }, cancel));
    call.on("error", (err: grpc.ServiceError) => onStatus(err));
    call.on("status", (s: grpc.StatusObject) => { if (s.code === grpc.status.OK) onStatus(null); });
    idle.timer = setTimeout(() => finish({ kind: "idle" }, cancel), STREAM_IDLE_MS);
  });
}

/** Describes a case for a report; bodies are cut, binary shown as base64. */
export function describeCase(c: FuzzCase): string {
  const body = (b: Buffer | undefined): string => (b === undefined ? "(none)" : b.length > 600 ? `${b.subarray(0, 600).toString("utf8")}... (${b.length} bytes)` : b.toString("utf8"));
  switch (c.kind) {
    case "http": return `HTTP ${c.c.request.method} ${c.c.request.path.slice(0, 400)} to node ${c.node}\n  headers ${JSON.stringify(c.c.request.headers).slice(0, 600)}\n  body (${c.c.bodyKind}) ${body(c.c.request.body)}`;
    case "csr": case "acl policy": return `${c.kind} (${c.how}) ${c.request.method} ${c.request.path} to node ${c.node}\n  headers ${JSON.stringify(c.request.headers)}\n  body ${body(c.request.body)}`;
    case "grpc": return `gRPC ${c.c.method.path} to node ${c.node}, half-close ${c.c.halfClose}\n  metadata ${JSON.stringify(c.c.metadata.map(([k, v]) => [k, typeof v === "string" ? v : `${v.toString("base64")} (binary)`]))}\n  messages ${c.c.messages.map((m) => `${m.how}: ${m.bytes.toString("base64")}`).join("; ") || "(none)"}`;
  }
}

export async function runCampaign(target: FuzzTarget, opts: CampaignOptions): Promise<CampaignResult> {
  const started = performance.now();
  const executor = new Executor(target, opts);
  await executor.start();
  const arb = await caseArbitrary(target);
  try {
    const details = await fc.check(fc.asyncProperty(arb, (c) => executor.run(c)), {
      numRuns: opts.cases,
      seed: opts.seed,
      ...(opts.path === undefined ? {} : { path: opts.path }),
    });
    const counterexample = details.counterexample?.[0];
    return {
      cases: executor.casesRun,
      failed: details.failed,
      seed: details.seed,
      path: details.counterexamplePath ?? undefined,
      counterexample: counterexample === undefined ? undefined : describeCase(counterexample),
      error: details.errorInstance instanceof Error ? details.errorInstance.message : details.failed ? String(details.errorInstance) : undefined,
      elapsedMs: performance.now() - started,
      tally: executor.tally,
      known: executor.known,
      examples: executor.examples,
    };
  } finally {
    executor.close();
  }
}
