// A scripted cluster of real RaftDrivers on the simulated ports (virtual time, a simulated disk
// per node, the simulated network), for scenario tests of the driver: a test starts it, cuts and
// heals links, crashes and restarts nodes, and runs virtual time until what it waits for happens,
// within a bound. Each node's network is observed: what it sent and received, and how many
// forwarded requests it is serving now.

import { pino } from "pino";
import type { Chunks } from "../../src/common/codec.js";
import { SeededRandom } from "../../src/raft/core/random.js";
import type { Message, NodeId } from "../../src/raft/core/types.js";
import { RaftDriver } from "../../src/raft/node/driver.js";
import type { PeerHandlers, PeerNetwork } from "../../src/raft/node/ports.js";
import type { RaftDriverOptions } from "../../src/raft/node/settings.js";
import type { StateMachine } from "../../src/raft/state_machine.js";
import { SimDisk } from "../support/sim/disk.js";
import { type LinkMode, SimNetwork } from "../support/sim/network.js";
import { SimProcess, SimWorld } from "../support/sim/world.js";

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();
const silentLogger = pino({ level: "silent" });

/** The settings a scenario may change; the rest are fixed, small and fast. */
export type ScenarioSettings = Partial<Pick<RaftDriverOptions, "tickMs" | "electionTimeoutTicks" | "requestTimeoutMs" | "leaderWaitMs" | "snapshotEntries" | "raft">>;

/** 10 ms ticks, elections after 100-200 ms of silence. */
export const scenarioDefaults = { tickMs: 10, electionTimeoutTicks: 10, requestTimeoutMs: 1_000, leaderWaitMs: 2_000 } as const;

/** How a promise ended, and when in virtual time. */
export interface Outcome<T> {
  settled: boolean;
  value: T | undefined;
  error: unknown;
  atMs: number | undefined;
}

/** Every command applied, in order: "text" at its index. */
class RecordingMachine implements StateMachine {
  applied: { index: number; text: string }[] = [];

  apply(index: number, data: Uint8Array): void {
    this.applied.push({ index, text: textDecoder.decode(data) });
  }

  snapshot(): Chunks {
    return [textEncoder.encode(JSON.stringify(this.applied))];
  }

  restore(data: Uint8Array): void {
    this.applied = data.byteLength === 0 ? [] : (JSON.parse(textDecoder.decode(data)) as { index: number; text: string }[]);
  }
}

export interface Observed {
  readonly atMs: number;
  readonly message: Message;
}

/** A node's PeerNetwork with a record of its traffic, and a count of the forwards it is serving. */
class ObservedNetwork implements PeerNetwork {
  readonly sent: Observed[] = [];
  readonly received: Observed[] = [];
  forwardsServing = 0;

  constructor(private readonly inner: PeerNetwork, private readonly world: SimWorld) {}

  start(handlers: PeerHandlers): Promise<number | undefined> {
    return this.inner.start({
      ...handlers,
      onMessages: (messages) => {
        for (const message of messages) this.received.push({ atMs: this.world.nowMs, message });
        handlers.onMessages(messages);
      },
      onForward: async (request) => {
        this.forwardsServing++;
        try {
          return await handlers.onForward(request);
        } finally {
          this.forwardsServing--;
        }
      },
    });
  }

  send(messages: readonly Message[]): void {
    for (const message of messages) this.sent.push({ atMs: this.world.nowMs, message });
    this.inner.send(messages);
  }

  forward(to: NodeId, request: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    return this.inner.forward(to, request, timeoutMs);
  }

  setPeer(id: NodeId, address: string): void {
    this.inner.setPeer(id, address);
  }

  removePeer(id: NodeId): void {
    this.inner.removePeer(id);
  }

  stop(): Promise<void> {
    return this.inner.stop();
  }
}

class ScenarioNode {
  readonly process: SimProcess;
  readonly disk: SimDisk;
  driver: RaftDriver | undefined;
  machine: RecordingMachine | undefined;
  network: ObservedNetwork | undefined;
  started = false;
  incarnations = 0;

  constructor(readonly id: NodeId, world: SimWorld, rng: SeededRandom) {
    this.process = new SimProcess(world, id);
    this.disk = new SimDisk(rng);
  }
}

export class DriverCluster {
  readonly world = new SimWorld();
  readonly network: SimNetwork;
  readonly fatalErrors: string[] = [];
  private readonly rng: SeededRandom;
  private readonly nodes = new Map<NodeId, ScenarioNode>();

  private constructor(readonly ids: readonly NodeId[], private readonly seed: number, private readonly settings: ScenarioSettings) {
    this.rng = new SeededRandom(seed);
    this.network = new SimNetwork(this.world, this.rng);
    for (const id of ids) this.nodes.set(id, new ScenarioNode(id, this.world, this.rng));
  }

  /** Starts the founding members n1..n<size> and waits until they agree on a leader that has applied its first entry. */
  static async start(seed: number, settings: ScenarioSettings = {}, size = 3): Promise<DriverCluster> {
    const cluster = new DriverCluster(Array.from({ length: size }, (_, i) => `n${i + 1}`), seed, settings);
    for (const id of cluster.ids) cluster.start(id);
    await cluster.runUntil(() => {
      const leader = cluster.leader();
      if (leader === undefined) return false;
      const core = cluster.driver(leader).core;
      const committed = core.log.committed;
      if (committed !== core.log.lastIndex() || core.log.term(committed) !== core.term) return false;
      return cluster.running().every((id) => cluster.driver(id).leader === leader && cluster.driver(id).applied >= committed);
    }, 5_000, "the cluster elects a leader");
    return cluster;
  }

  driver(id: NodeId): RaftDriver {
    const driver = this.node(id).driver;
    if (driver === undefined) throw new Error(`${id} is not running`);
    return driver;
  }

  /** Commands applied on `id`, in order. */
  applied(id: NodeId): readonly { index: number; text: string }[] {
    return this.node(id).machine?.applied ?? [];
  }

  /** The node's simulated disk, which outlives its incarnations (to slow its fsyncs, say). */
  diskOf(id: NodeId): SimDisk {
    return this.node(id).disk;
  }

  observed(id: NodeId): ObservedNetwork {
    const network = this.node(id).network;
    if (network === undefined) throw new Error(`${id} is not running`);
    return network;
  }

  running(): NodeId[] {
    return this.ids.filter((id) => this.node(id).started && this.node(id).process.running);
  }

  /** The running node that leads the highest term, if any. */
  leader(): NodeId | undefined {
    let best: NodeId | undefined;
    for (const id of this.running()) {
      const core = this.driver(id).core;
      if (core.role === "leader" && (best === undefined || core.term > this.driver(best).core.term)) best = id;
    }
    return best;
  }

  followers(): NodeId[] {
    const leader = this.leader();
    return this.running().filter((id) => id !== leader);
  }

  /** kill -9: what was not fsynced may be lost (a random prefix of it survives), and nothing the process scheduled runs. */
  crash(id: NodeId): void {
    const node = this.node(id);
    node.process.kill();
    this.network.senderDied(id);
    node.disk.crash();
    node.driver = undefined;
    node.machine = undefined;
    node.network = undefined;
    node.started = false;
  }

  /** Starts a new incarnation from the node's disk, and waits until its driver has started. */
  async restart(id: NodeId): Promise<void> {
    this.start(id);
    await this.runUntil(() => this.node(id).started, 1_000, `${id} restarts`);
  }

  /** Sets both directions between `id` and every other node. */
  isolate(id: NodeId, mode: LinkMode): void {
    for (const other of this.ids) {
      if (other === id) continue;
      this.network.setMode(id, other, mode);
      this.network.setMode(other, id, mode);
    }
  }

  /** Runs virtual time until `done()` holds, failing after `withinMs`. */
  async runUntil(done: () => boolean, withinMs: number, what: string): Promise<void> {
    const startedAtMs = this.world.nowMs;
    await this.world.runUntil(startedAtMs + withinMs, done);
    if (!done()) throw new Error(`within ${withinMs} ms of virtual time: ${what} did not happen${this.fatalErrors.map((e) => `; fatal: ${e}`).join("")}`);
  }

  async runFor(ms: number): Promise<void> {
    await this.world.runUntil(this.world.nowMs + ms);
  }

  /** Follows a promise: whether and when (virtual time) it settled, and how. */
  track<T>(promise: Promise<T>): Outcome<T> {
    const outcome: Outcome<T> = { settled: false, value: undefined, error: undefined, atMs: undefined };
    promise.then(
      (value) => Object.assign(outcome, { settled: true, value, atMs: this.world.nowMs }),
      (error: unknown) => Object.assign(outcome, { settled: true, error, atMs: this.world.nowMs }),
    );
    return outcome;
  }

  /** Proposes `text` on `id`, followed. */
  propose(id: NodeId, text: string): Outcome<number> {
    return this.track(this.driver(id).propose(textEncoder.encode(text)));
  }

  private node(id: NodeId): ScenarioNode {
    const node = this.nodes.get(id);
    if (node === undefined) throw new Error(`no node ${id}`);
    return node;
  }

  /** Starts a new incarnation of `id` (from its disk, if it ran before); its driver starts as time runs. */
  start(id: NodeId): void {
    const node = this.node(id);
    node.process.start();
    node.incarnations++;
    node.started = false;
    const machine = new RecordingMachine();
    const network = new ObservedNetwork(this.network.endpoint(id, node.process), this.world);
    const driver = new RaftDriver({
      id,
      // A founder's disk already holds the cluster after its first start; this is read only then.
      initialCluster: new Map(this.ids.map((i) => [i, i])),
      storage: node.disk.open(node.process),
      stateMachine: machine,
      network,
      logger: silentLogger,
      clock: node.process.clock(),
      // Each incarnation draws its own numbers, as a restarted process does from node:crypto.
      random: new SeededRandom((this.seed * 7919 + Number(id.slice(1)) * 104_729 + node.incarnations) >>> 0),
      heartbeatIntervalTicks: 1,
      snapshotEntries: 100_000,
      ...scenarioDefaults,
      ...this.settings,
    });
    node.driver = driver;
    node.machine = machine;
    node.network = network;
    driver.onFatal((err) => this.fatalErrors.push(`${id}: ${err.message}`));
    driver.start().then(
      () => { if (node.driver === driver) node.started = true; },
      (err: unknown) => this.fatalErrors.push(`${id} did not start: ${String(err)}`),
    );
  }
}
