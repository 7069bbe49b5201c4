// Intentions on one node: validating writes before they are proposed (the ID is made here, never
// in apply), answering reads in evaluation order, deciding whether a source may call a
// destination, and waking blocking queries on the names a change touched only.
//
// Names are service names (DNS labels) or `*`. A name need not be registered: as in Consul, an
// intention may be written before the service it names exists (so a deny is in place before the
// first instance starts).

import { randomUUID } from "node:crypto";
import { TooManyWatchersError } from "../common/errors.js";
import { STATE_TAG_INTENTIONS, withTag } from "../state/tags.js";
import { type Decision, type IntentionAction, WILDCARD, compareIntentions, decide, nameMatches } from "./precedence.js";
import {
  DESCRIPTION_CHARS_MAX, type Intention, type IntentionChange, type IntentionCommand, type IntentionsState, OP_DELETE, OP_UPSERT,
  encodeIntentionCommand, isIntentionName,
} from "./state.js";

/** What the service needs of the Raft driver. */
export interface IntentionsProposer {
  propose(data: Uint8Array): Promise<number>;
  readBarrier(): Promise<void>;
}

export interface IntentionsSettings {
  /** What a call is decided when no intention covers it: --intentions-default (deny when ACLs are on). */
  readonly defaultAllow: boolean;
}

export interface IntentionsLimits {
  /** Blocking queries parked on intentions per node, at most; past it a new one is refused (429). */
  readonly waitersMax: number;
}

export const intentionsLimitsDefaults: IntentionsLimits = { waitersMax: 10_000 };

/** Bad input, answered 400: `field` names what was wrong. */
export class IntentionsInputError extends Error {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "IntentionsInputError";
  }
}

export interface IntentionInput {
  readonly source: string;
  readonly destination: string;
  readonly action: string;
  readonly description: string;
}

/** Which side `match` matches on: intentions whose destination (or source) covers the name. */
export type MatchBy = "destination" | "source";

/**
 * What the xDS server's RBAC (and any other reader that enforces intentions) sees: a
 * destination's intentions in evaluation order with the default, the revision, and which
 * destinations a change touched.
 */
export interface IntentionsView {
  forDestination(destination: string): { readonly intentions: readonly Intention[]; readonly defaultAllow: boolean };
  readonly revision: number;
  /**
   * `listener` hears, after each applied change, the destinations whose answer from
   * forDestination may differ: named ones, or "all" (an intention for destination `*` changed,
   * or a snapshot or backup replaced the state).
   */
  onChange(listener: (destinations: ReadonlySet<string> | "all", revision: number) => void): void;
}

type WaitKey = `${MatchBy}:${string}` | "all";

export class IntentionsService implements IntentionsView {
  private readonly limits: IntentionsLimits;
  private readonly waiters = new Map<WaitKey, Set<() => void>>();
  private waiting = 0;

  constructor(
    readonly state: IntentionsState,
    private readonly proposer: IntentionsProposer,
    readonly settings: IntentionsSettings,
    limits: Partial<IntentionsLimits> = {},
  ) {
    this.limits = { ...intentionsLimitsDefaults, ...limits };
    if (!Number.isSafeInteger(this.limits.waitersMax) || this.limits.waitersMax < 1) throw new Error(`intentions waitersMax must be a positive integer, not ${this.limits.waitersMax}`);
    state.onChange((_revision, change) => this.wake(change));
  }

  get revision(): number {
    return this.state.revision;
  }

  /** Creates the pair's intention, or replaces its action and description. Resolves with the revision it committed at. */
  upsert(input: IntentionInput): Promise<number> {
    const source = checkName("source", input.source);
    const destination = checkName("destination", input.destination);
    const action = checkAction(input.action);
    if (input.description.length > DESCRIPTION_CHARS_MAX) throw new IntentionsInputError("Description", `is ${input.description.length} characters; at most ${DESCRIPTION_CHARS_MAX} are kept`);
    return this.propose({ op: OP_UPSERT, intention: { id: randomUUID(), source, destination, action, description: input.description } });
  }

  /** Removes the pair's intention; one that does not exist is no error (Consul answers true too). */
  delete(sourceName: string, destinationName: string): Promise<number> {
    return this.propose({ op: OP_DELETE, source: checkName("source", sourceName), destination: checkName("destination", destinationName) });
  }

  /** Makes the next read linearizable, unless the caller accepts a stale answer. */
  async consistentRead(stale: boolean): Promise<void> {
    if (!stale) await this.proposer.readBarrier();
  }

  get(sourceName: string, destinationName: string): Intention | undefined {
    return this.state.get(checkName("source", sourceName), checkName("destination", destinationName));
  }

  /** The intentions whose `by` side covers `name` (exactly or by `*`), in evaluation order. */
  match(by: MatchBy, name: string): Intention[] {
    const checked = checkName("name", name);
    const exact = by === "destination" ? [...this.state.withDestination(checked)] : this.state.withSource(checked);
    const wild = checked === WILDCARD ? [] : by === "destination" ? [...this.state.withDestination(WILDCARD)] : this.state.withSource(WILDCARD);
    return [...exact, ...wild].sort(compareIntentions);
  }

  /** The index a `match` answer is at: the last change to an intention it could hold. */
  matchIndex(by: MatchBy, name: string): number {
    const of = (n: string): number => (by === "destination" ? this.state.destinationIndex(n) : this.state.sourceIndex(n));
    return Math.max(1, of(name), of(WILDCARD));
  }

  /** Whether `source` may call `destination`, and the intention that decided, if one did. */
  check(sourceName: string, destinationName: string): Decision<Intention> {
    const source = checkName("source", sourceName);
    const destination = checkName("destination", destinationName);
    const candidates = this.match("destination", destination).filter((i) => nameMatches(i.source, source));
    return decide(candidates, source, destination, this.settings.defaultAllow);
  }

  forDestination(destination: string): { readonly intentions: readonly Intention[]; readonly defaultAllow: boolean } {
    return { intentions: this.match("destination", destination), defaultAllow: this.settings.defaultAllow };
  }

  onChange(listener: (destinations: ReadonlySet<string> | "all", revision: number) => void): void {
    this.state.onChange((revision, change) => {
      listener(change.kind === "restored" || change.destinations.has(WILDCARD) ? "all" : change.destinations, revision);
    });
  }

  /**
   * Resolves once an intention `match(by, name)` (or, with no key, `list`) could answer changes
   * past `sinceIndex`, or after `timeoutMs`, or when `signal` aborts. Throws TooManyWatchersError
   * when waitersMax are already waiting.
   */
  wait(key: { readonly by: MatchBy; readonly name: string } | undefined, sinceIndex: number, timeoutMs: number, signal: AbortSignal): Promise<void> {
    const now = key === undefined ? this.state.revision : this.matchIndex(key.by, key.name);
    if (now > sinceIndex || signal.aborted) return Promise.resolve();
    if (this.waiting >= this.limits.waitersMax) throw new TooManyWatchersError(this.limits.waitersMax);
    const waitKey: WaitKey = key === undefined ? "all" : `${key.by}:${key.name}`;
    return new Promise((resolve) => {
      let set = this.waiters.get(waitKey);
      if (set === undefined) this.waiters.set(waitKey, (set = new Set()));
      const end = (): void => {
        clearTimeout(timer);
        signal.removeEventListener("abort", end);
        if (set.delete(end)) this.waiting--;
        if (set.size === 0 && this.waiters.get(waitKey) === set) this.waiters.delete(waitKey);
        resolve();
      };
      const timer = setTimeout(end, timeoutMs);
      signal.addEventListener("abort", end, { once: true });
      set.add(end);
      this.waiting++;
    });
  }

  /** Ends every wait at once (the server is closing). */
  wakeAll(): void {
    for (const set of [...this.waiters.values()]) for (const end of [...set]) end();
  }

  get waitingCount(): number {
    return this.waiting;
  }

  private wake(change: IntentionChange): void {
    if (change.kind === "restored") {
      this.wakeAll();
      return;
    }
    const keys: WaitKey[] = ["all"];
    for (const [by, names] of [["destination", change.destinations], ["source", change.sources]] as const) {
      // Every match on this side holds its `*` intentions, so a change to one wakes them all.
      if (names.has(WILDCARD)) {
        for (const k of this.waiters.keys()) if (k.startsWith(`${by}:`)) keys.push(k);
      } else {
        for (const n of names) keys.push(`${by}:${n}`);
      }
    }
    for (const k of keys) for (const end of [...(this.waiters.get(k) ?? [])]) end();
  }

  private propose(cmd: IntentionCommand): Promise<number> {
    return this.proposer.propose(withTag(STATE_TAG_INTENTIONS, encodeIntentionCommand(cmd)));
  }
}

function checkName(field: string, name: string): string {
  if (name === "") throw new IntentionsInputError(field, "is required: give a service name or *");
  if (!isIntentionName(name)) {
    throw new IntentionsInputError(field, `${JSON.stringify(name.slice(0, 80))} is not a service name (a DNS label: 1-63 letters, digits or '-', not starting or ending with '-') or *`);
  }
  return name;
}

function checkAction(action: string): IntentionAction {
  if (action === "allow" || action === "deny") return action;
  throw new IntentionsInputError("Action", `must be "allow" or "deny", not ${JSON.stringify(action.slice(0, 40))}`);
}
