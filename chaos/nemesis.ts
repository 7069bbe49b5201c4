// The nemesis: one fault at a time, held for a while, healed, then a quiet gap, for the length of
// the run. Each fault is recorded with when it began and when it was healed, so the checkers can
// say how the cluster behaved during each kind. A membership change is made in the middle of
// another fault, as the issue asks: that is when a reconfiguration bug shows.

import { SeededRandom } from "../src/raft/core/random.js";
import { errorMessage } from "../src/common/errors.js";
import type { ChaosCluster } from "./cluster.js";
import type { FaultRecord } from "./history.js";
import type { ChaosNetwork } from "./net/network.js";

export const NEMESES = {
  crash: "kill -9 the leader or a random node, restart it from disk",
  pause: "SIGSTOP the leader or a random node past an election timeout, then SIGCONT",
  "partition-isolate": "cut one node (often the leader) off from every other",
  "partition-halves": "split the cluster into a majority and a minority",
  "partition-bridge": "two sides that only one bridge node can reach both of",
  "partition-ring": "each node reaches its ring neighbours only: overlapping majorities",
  "partition-oneway": "one node's messages to the others are dropped, theirs still reach it",
  "slow-links": "every peer link delayed, jittered and lossy",
  "clock-jump": "one node's wall clock jumps forward or back, then returns",
  membership: "add a spare node or remove a member, in the middle of another fault",
} as const;

export type NemesisName = keyof typeof NEMESES;

export const PARTITIONS: readonly NemesisName[] = ["partition-isolate", "partition-halves", "partition-bridge", "partition-ring", "partition-oneway"];

/** Parses `--nemesis all | crash,partition,...`; "partition" stands for every partition kind. */
export function parseNemeses(value: string): NemesisName[] {
  const names = new Set<NemesisName>();
  for (const part of value.split(",").map((p) => p.trim()).filter((p) => p !== "")) {
    if (part === "all") for (const n of Object.keys(NEMESES) as NemesisName[]) names.add(n);
    else if (part === "partition") for (const n of PARTITIONS) names.add(n);
    else if (part === "none") continue;
    else if (Object.hasOwn(NEMESES, part)) names.add(part as NemesisName);
    else throw new Error(`--nemesis: unknown nemesis "${part}"; known: all, none, partition, ${Object.keys(NEMESES).join(", ")}`);
  }
  return [...names];
}

export interface NemesisSchedule {
  /** A fault is held for a time drawn from [min, max]. */
  readonly faultMsMin: number;
  readonly faultMsMax: number;
  /** The quiet gap after each heal, in which the cluster recovers and the workload runs clean. */
  readonly gapMsMin: number;
  readonly gapMsMax: number;
  /** The share of faults aimed at the leader (the rest at a random member): where most bugs live. */
  readonly leaderTargetShare: number;
  /**
   * Inject every enabled nemesis exactly once, in a seeded order, and then stop (the run ends
   * with the round, or at its duration if that comes first): a short run, like CI's smoke, meets
   * every kind. Off, the nemesis picks at random for the whole run, as `npm run chaos` does.
   */
  readonly oneRound: boolean;
}

export const nemesisScheduleDefaults: NemesisSchedule = {
  faultMsMin: 3_000, faultMsMax: 9_000, gapMsMin: 2_000, gapMsMax: 5_000, leaderTargetShare: 0.6, oneRound: false,
};

/** A fault in force: how to heal it. */
interface ActiveFault {
  readonly record: { nemesis: string; detail: string; nodes: string[]; startMs: number };
  heal(): Promise<void>;
}

/** Jumps stay inside the CA's leaf backdating (1 minute), so a certificate signed on a jumped node is valid at true time. */
const CLOCK_JUMP_SECONDS_MAX = 50;
const CLOCK_JUMP_SECONDS_MIN = 5;
const SLOW_DELAY_MS_MAX = 150;

export class Nemesis {
  readonly faults: FaultRecord[] = [];
  /** Faults that could not be injected or healed as planned, for the report. */
  readonly problems: string[] = [];
  private readonly random: SeededRandom;
  private stopping = false;
  private loop: Promise<void> | undefined;
  private roundOver: () => void = () => undefined;
  /** Settles once a one-round schedule has injected and healed its last fault; never otherwise. */
  readonly roundDone = new Promise<void>((resolve) => { this.roundOver = resolve; });

  constructor(
    private readonly cluster: ChaosCluster,
    private readonly network: ChaosNetwork,
    private readonly enabled: readonly NemesisName[],
    private readonly now: () => number,
    /** The cluster's founding size: membership grows past it by one, then shrinks back. */
    private readonly foundingSize: number,
    seed: number,
    private readonly schedule: NemesisSchedule = nemesisScheduleDefaults,
  ) {
    this.random = new SeededRandom(seed);
  }

  start(): void {
    if (this.enabled.length === 0) return;
    this.loop = this.run();
  }

  /** Stops after the fault in force is healed. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.loop;
  }

  private async run(): Promise<void> {
    // Drawn before the first gap, and only for one round, so a random schedule's seed replays as it always did.
    const round = this.schedule.oneRound ? this.shuffle(this.enabled) : undefined;
    await this.idle(this.between(this.schedule.gapMsMin, this.schedule.gapMsMax));
    while (!this.stopping) {
      const name = round === undefined ? this.pick(this.enabled) : round.shift();
      if (name === undefined) {
        this.roundOver();
        return;
      }
      try {
        if (name === "membership") await this.membershipDuringFault();
        else {
          const fault = await this.inject(name);
          await this.idle(this.between(this.schedule.faultMsMin, this.schedule.faultMsMax));
          await this.heal(fault);
        }
      } catch (err) {
        this.problems.push(`${name}: ${errorMessage(err)}`);
        await this.healEverything();
      }
      // The round's last fault needs no quiet gap after it: the run's recovery follows.
      if (round?.length === 0) continue;
      await this.idle(this.between(this.schedule.gapMsMin, this.schedule.gapMsMax));
    }
  }

  /** Heals whatever may be left: every cut, every paused or stopped member, every clock. */
  async healEverything(): Promise<void> {
    await this.network.heal();
    for (const id of this.cluster.members()) {
      this.cluster.resume(id);
      this.cluster.restart(id);
      if (this.enabled.includes("clock-jump")) this.cluster.setClockOffset(id, 0);
    }
  }

  private async inject(name: Exclude<NemesisName, "membership">): Promise<ActiveFault> {
    const members = [...this.cluster.members()];
    const leader = await this.cluster.currentLeader();
    const target = leader !== undefined && members.includes(leader) && this.random.nextFloat() < this.schedule.leaderTargetShare ? leader : this.pick(members);
    const role = (id: string): string => (id === leader ? `${id} (leader)` : id);
    const start = (detail: string, nodes: string[], heal: () => Promise<void>): ActiveFault =>
      ({ record: { nemesis: name, detail, nodes, startMs: this.now() }, heal });
    switch (name) {
      case "crash": {
        await this.cluster.kill9(target);
        return start(`kill -9 ${role(target)}`, [target], () => { this.cluster.restart(target); return Promise.resolve(); });
      }
      case "pause": {
        this.cluster.pause(target);
        return start(`SIGSTOP ${role(target)}`, [target], () => { this.cluster.resume(target); return Promise.resolve(); });
      }
      case "partition-isolate": {
        const others = members.filter((m) => m !== target);
        await this.cutBetween([target], others);
        return start(`isolated ${role(target)}`, [target], () => this.network.heal());
      }
      case "partition-halves": {
        const shuffled = this.shuffle(members);
        const minority = shuffled.slice(0, Math.floor(members.length / 2));
        const majority = shuffled.slice(minority.length);
        await this.cutBetween(minority, majority);
        return start(`${majority.map(role).join(",")} | ${minority.map(role).join(",")}`, minority, () => this.network.heal());
      }
      case "partition-bridge": {
        const shuffled = this.shuffle(members.filter((m) => m !== target));
        const half = Math.ceil(shuffled.length / 2);
        const left = shuffled.slice(0, half);
        const right = shuffled.slice(half);
        await this.cutBetween(left, right);
        return start(`${left.map(role).join(",")} | ${right.map(role).join(",")}, bridged by ${role(target)}`, [target], () => this.network.heal());
      }
      case "partition-ring": {
        const ring = this.shuffle(members);
        const n = ring.length;
        const detail: string[] = [];
        for (let i = 0; i < n; i++) {
          for (let j = 0; j < n; j++) {
            if (i === j) continue;
            const forward = (j - i + n) % n;
            // Five or more: each node keeps its two neighbours (itself and them: a majority).
            // Three: a symmetric ring is no partition at all, so each node may send only to its successor.
            const keep = n >= 5 ? forward === 1 || forward === n - 1 : forward === 1;
            if (!keep) await this.network.cut(ring[i], ring[j]);
          }
          detail.push(ring[i]);
        }
        return start(`ring ${detail.map(role).join(" - ")}${n < 5 ? " (one-way: each sends to the next only)" : ""}`, ring, () => this.network.heal());
      }
      case "partition-oneway": {
        for (const other of members.filter((m) => m !== target)) await this.network.cut(target, other);
        return start(`${role(target)} -> others dropped; others -> ${target} delivered`, [target], () => this.network.heal());
      }
      case "slow-links": {
        const delayMs = 20 + this.random.nextInt(SLOW_DELAY_MS_MAX);
        const fault = { delayMs, jitterMs: Math.round(delayMs / 2), lossPercent: 2 + this.random.nextInt(15) };
        for (const a of members) for (const b of members) if (a !== b) await this.network.degrade(a, b, fault);
        return start(`every link ${fault.delayMs}±${fault.jitterMs} ms, ${fault.lossPercent}% loss`, members, () => this.network.heal());
      }
      case "clock-jump": {
        const magnitude = CLOCK_JUMP_SECONDS_MIN + this.random.nextInt(CLOCK_JUMP_SECONDS_MAX - CLOCK_JUMP_SECONDS_MIN + 1);
        const offset = this.random.nextFloat() < 0.5 ? -magnitude : magnitude;
        this.cluster.setClockOffset(target, offset);
        return start(`${role(target)} clock ${offset > 0 ? "+" : ""}${offset}s`, [target], () => { this.cluster.setClockOffset(target, 0); return Promise.resolve(); });
      }
    }
  }

  /**
   * Adds a spare (when the cluster is at its founding size) or removes a member other than the
   * leader (when it is larger), while a minority fault is in force elsewhere.
   */
  private async membershipDuringFault(): Promise<void> {
    const minorityFaults: Exclude<NemesisName, "membership">[] = ["crash", "pause", "partition-isolate", "slow-links", "clock-jump"];
    const usable = minorityFaults.filter((n) => n !== "clock-jump" || this.enabled.includes("clock-jump"));
    const background = await this.inject(this.pick(usable));
    const started = this.now();
    const members = this.cluster.members();
    const leader = await this.cluster.currentLeader();
    const spares = this.cluster.spares();
    const grow = members.length <= this.foundingSize && spares.length > 0;
    const faulty = new Set(background.record.nodes);
    let detail: string;
    let nodes: string[];
    try {
      if (grow) {
        const id = spares[0];
        detail = `add ${id} (learner, then voter) during: ${background.record.detail}`;
        nodes = [id];
        await this.cluster.addMember(id);
      } else {
        const candidates = members.filter((m) => m !== leader && !faulty.has(m));
        const id = this.pick(candidates.length > 0 ? candidates : members.filter((m) => m !== leader));
        detail = `remove ${id} during: ${background.record.detail}`;
        nodes = [id];
        await this.cluster.removeMember(id);
      }
    } finally {
      await this.heal(background);
    }
    this.faults.push({ nemesis: "membership", detail, nodes, startMs: started, endMs: this.now() });
  }

  private async heal(fault: ActiveFault): Promise<void> {
    try {
      await fault.heal();
    } finally {
      this.faults.push({ ...fault.record, endMs: this.now() });
    }
  }

  private async cutBetween(a: readonly string[], b: readonly string[]): Promise<void> {
    for (const x of a) {
      for (const y of b) {
        await this.network.cut(x, y);
        await this.network.cut(y, x);
      }
    }
  }

  private pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error("nothing to pick from");
    return items[this.random.nextInt(items.length)];
  }

  private shuffle<T>(items: readonly T[]): T[] {
    const out = [...items];
    for (let i = out.length - 1; i > 0; i--) {
      const j = this.random.nextInt(i + 1);
      [out[i], out[j]] = [out[j], out[i]];
    }
    return out;
  }

  private between(min: number, max: number): number {
    return min + this.random.nextInt(max - min + 1);
  }

  /** Waits, but wakes early when the run is stopping. */
  private async idle(ms: number): Promise<void> {
    const end = performance.now() + ms;
    while (!this.stopping && performance.now() < end) await new Promise((r) => setTimeout(r, Math.min(200, end - performance.now())));
  }
}
