// One watcher for the whole run: a stream to one node at a time, which it leaves for another
// (random) node when the stream breaks or stalls, resuming from the last revision it holds
// complete. It records what it applied, and every disconnect and connect.

import { backoffDelayMs } from "../../src/common/backoff.js";
import type { SeededRandom } from "../../src/raft/core/random.js";
import type { WatchMessage, WatchRecord } from "../history.js";
import type { NodeTarget } from "./http.js";
import { WatchAssembler } from "./watch_assembler.js";
import { type OpenStream, PROGRESS_INTERVAL_MS, type WatchTransport } from "./watch_transports.js";

/** Silence this long on a stream that asked for progress every PROGRESS_INTERVAL_MS means it stalled. */
export const STALL_TIMEOUT_MS = 3 * PROGRESS_INTERVAL_MS;
/** Reconnect delays: the first after a break is short, repeated failures back off to the max. */
const RECONNECT_BASE_MS = 100;
const RECONNECT_MAX_MS = 2000;
/** Messages one watcher records, at most; past it the watcher says so and closes, rather than record a partial story. */
export const WATCH_MESSAGES_MAX = 2_000_000;

export class ResumingWatcher {
  private readonly messages: WatchMessage[] = [];
  private readonly assembler: WatchAssembler;
  private stream: OpenStream | undefined;
  private node: NodeTarget | undefined;
  /** Bumped at every connect: callbacks of an older stream are ignored. */
  private generation = 0;
  private failuresInARow = 0;
  private stallTimer: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** xDS: the endpoints of the last assignment recorded. */
  lastEndpoints: readonly string[] | undefined;

  constructor(readonly name: string, private readonly transport: WatchTransport, readonly services: readonly string[],
    private readonly targets: () => readonly NodeTarget[], private readonly random: SeededRandom, private readonly now: () => number) {
    this.assembler = new WatchAssembler(now, (m) => this.add(m));
  }

  get kind(): WatchTransport["kind"] {
    return this.transport.kind;
  }

  /** The revision of the last complete message (gRPC, SSE). */
  get revision(): number {
    return this.assembler.revision;
  }

  get nodeId(): string | undefined {
    return this.node?.id;
  }

  start(): void {
    this.connect();
  }

  /** Leaves the current node for another, e.g. one that left the cluster. */
  moveOff(reason: string): void {
    if (this.stream !== undefined) this.broken(this.generation, reason);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.stallTimer);
    clearTimeout(this.reconnectTimer);
    this.stream?.close();
    this.stream = undefined;
  }

  record(): WatchRecord {
    return { watcher: this.name, transport: this.transport.kind, services: this.services, messages: this.messages };
  }

  private connect(): void {
    if (this.closed) return;
    const node = this.pickNode();
    if (node === undefined) {
      this.scheduleReconnect();
      return;
    }
    const generation = ++this.generation;
    this.node = node;
    const sinceRevision = this.assembler.revision;
    this.add({ atMs: this.now(), kind: "connected", node: node.id, sinceRevision });
    const live = (): boolean => generation === this.generation && !this.closed;
    this.stream = this.transport.open(node, this.services, sinceRevision, {
      piece: (p) => {
        if (!live()) return;
        this.heard();
        const problem = this.assembler.apply(p);
        if (problem !== undefined) this.broken(generation, problem);
      },
      alive: () => {
        if (live()) this.heard();
      },
      assignment: (version, endpoints) => {
        if (!live()) return;
        this.heard();
        this.lastEndpoints = endpoints;
        this.add({ atMs: this.now(), kind: "xds", version, endpoints });
      },
      ended: (error) => this.broken(generation, error),
    });
    this.armStallTimer(generation);
  }

  /** Another node than the current one when there is a choice: the current one is why we left. */
  private pickNode(): NodeTarget | undefined {
    const all = this.targets();
    const others = all.filter((n) => n.id !== this.node?.id);
    const choices = others.length > 0 ? others : all;
    return choices.length === 0 ? undefined : this.random.pick(choices);
  }

  private heard(): void {
    this.failuresInARow = 0;
    this.armStallTimer(this.generation);
  }

  private armStallTimer(generation: number): void {
    clearTimeout(this.stallTimer);
    // xDS streams have no progress messages; their channel's keepalive ends a dead stream instead.
    if (this.transport.kind === "xds") return;
    this.stallTimer = setTimeout(() => this.broken(generation, `no message for ${STALL_TIMEOUT_MS} ms`), STALL_TIMEOUT_MS);
  }

  private broken(generation: number, error: string): void {
    if (generation !== this.generation || this.closed || this.stream === undefined) return;
    clearTimeout(this.stallTimer);
    const stream = this.stream;
    // Cleared first: closing may report the stream's end, which must not count as a second break.
    this.stream = undefined;
    stream.close();
    this.assembler.abandonPartial();
    this.add({ atMs: this.now(), kind: "disconnected", error: `${this.node?.id ?? "?"}: ${error}` });
    this.failuresInARow++;
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.closed) return;
    const delayMs = backoffDelayMs(this.failuresInARow, RECONNECT_BASE_MS, RECONNECT_MAX_MS, () => this.random.nextFloat());
    this.reconnectTimer = setTimeout(() => this.connect(), delayMs);
  }

  private add(m: WatchMessage): void {
    if (this.closed) return;
    if (this.messages.length < WATCH_MESSAGES_MAX) {
      this.messages.push(m);
      return;
    }
    this.messages.push({ atMs: m.atMs, kind: "disconnected", error: `the watcher recorded ${WATCH_MESSAGES_MAX} messages and stopped` });
    this.close();
  }
}
