// The dashboard: the cluster's members as the leader sees them, the registry live from the watch
// stream, and the CA's roots and this node's recent issuances. Everything comes from the HTTP API
// of the node that served the page, with the token the user gives (see api.ts for where it is
// kept). The cluster and the CA are polled; the registry is pushed by the watch.

import { ApiError, getJson, token } from "./api.js";
import { type ClusterHealth, type NodeView, decodeClusterHealth, decodeIssued, decodeNodeView, decodeRoots, decodeServiceNames } from "./decode.js";
import { notice } from "./dom.js";
import { el, renderCluster, renderIssued, renderRoots, renderServices } from "./render.js";
import { RegistryView } from "./registry_view.js";
import { RegistryWatch } from "./watch.js";

/** The members' status: a killed node shows as down about an election timeout (600 ms by default) plus this. */
const CLUSTER_POLL_MS = 1000;
const CA_POLL_MS = 5000;
/** The watch names at most this many services (the route's bound). */
const WATCH_SERVICES_MAX = 64;
/** A token that may read only some services watches them by name, and looks for new ones this often. */
const SERVICES_RELIST_MS = 10_000;

const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** Runs `task` every `intervalMs` after the previous run ends, until stopped; a task that throws is reported and run again. */
class Poller {
  private timer: number | undefined;
  private generation = 0;

  constructor(private readonly intervalMs: number, private readonly task: () => Promise<void>) {}

  start(): void {
    const generation = ++this.generation;
    const run = async (): Promise<void> => {
      try {
        await this.task();
      } catch (err) {
        console.error("dashboard: a refresh failed", err);
      }
      if (generation === this.generation) this.timer = window.setTimeout(() => void run(), this.intervalMs);
    };
    void run();
  }

  stop(): void {
    this.generation++;
    window.clearTimeout(this.timer);
  }
}

/** Everything that runs while the page has a token the server accepts (or needs none). */
class Session {
  private readonly view = new RegistryView();
  private watch: RegistryWatch | undefined;
  private watchedByName: readonly string[] | undefined;
  private readonly pollers: Poller[];
  private renderQueued = false;
  private stopped = false;

  constructor(private readonly onDenied: (err: ApiError) => boolean) {
    this.pollers = [new Poller(CLUSTER_POLL_MS, () => this.pollCluster()), new Poller(CA_POLL_MS, () => this.pollCa())];
  }

  start(): void {
    for (const p of this.pollers) p.start();
    this.openWatch([]);
    el.search.oninput = () => this.queueRender();
  }

  stop(): void {
    this.stopped = true;
    for (const p of this.pollers) p.stop();
    this.watch?.stop();
  }

  /**
   * Handles a failed call: true when it was about the token (the page now asks for one). A call
   * still in flight when this session ended (the user gave another token) is ignored.
   */
  private denied(err: unknown): boolean {
    if (this.stopped) return true;
    return err instanceof ApiError && this.onDenied(err);
  }

  // ---------------------------------------------------------------- cluster

  private async pollCluster(): Promise<void> {
    let own: NodeView;
    try {
      own = decodeNodeView(await getJson("/v1/cluster"));
    } catch (err) {
      if (!this.denied(err)) notice(el.clusterError, `GET /v1/cluster failed: ${errorText(err)}`);
      return;
    }
    let health: ClusterHealth | undefined;
    let healthProblem: string | undefined;
    try {
      health = decodeClusterHealth(await getJson("/v1/cluster/health"));
    } catch (err) {
      if (this.denied(err)) return;
      healthProblem = errorText(err);
    }
    if (this.stopped) return;
    notice(el.clusterError, undefined);
    renderCluster(own, health, healthProblem);
  }

  // ---------------------------------------------------------------- certificate authority

  private async pollCa(): Promise<void> {
    const problems: string[] = [];
    const roots = await getJson("/v1/ca/roots").then(decodeRoots, (err: unknown) => {
      if (!this.denied(err)) problems.push(`roots: ${errorText(err)}`);
      return undefined;
    });
    const issued = await getJson("/v1/ca/issued").then(decodeIssued, (err: unknown) => {
      if (!this.denied(err)) problems.push(`recent issuances: ${errorText(err)}`);
      return undefined;
    });
    if (this.stopped) return;
    notice(el.caError, problems.length === 0 ? undefined : problems.join("; "));
    if (roots !== undefined) renderRoots(roots);
    if (issued !== undefined) renderIssued(issued);
  }

  // ---------------------------------------------------------------- registry

  /** Watches `services` (none: every service). */
  private openWatch(services: readonly string[]): void {
    this.watch?.stop();
    this.watchedByName = services.length === 0 ? undefined : services;
    this.watch = new RegistryWatch({
      events: (batch) => {
        this.view.applyBatch(batch);
        this.showLive();
        this.queueRender();
      },
      reset: (chunk) => {
        this.view.applyReset(chunk);
        if (!chunk.last) return;
        this.showLive();
        this.queueRender();
      },
      progress: (revision) => {
        this.view.revision = Math.max(this.view.revision, revision);
        this.showLive();
      },
      connection: (state, detail) => (state === "live" ? this.showLive() : this.showWatchState(`reconnecting: ${detail}`)),
      interrupted: () => this.view.abandonReset(),
      refused: (err) => void this.watchRefused(err),
    }, services);
    this.watch.start();
  }

  /**
   * A watch of every service needs read on all of them. A token that may read only some watches
   * those by name instead (as many as one watch takes), and looks for new ones now and then.
   */
  private async watchRefused(err: ApiError): Promise<void> {
    if (this.denied(err) || this.stopped) return;
    if (!err.denied || this.watchedByName !== undefined) {
      this.showWatchState(`the watch was refused: ${err.message}`);
      return;
    }
    const relist = async (): Promise<void> => {
      let names: string[];
      try {
        names = decodeServiceNames(await getJson("/v1/registry/services")).slice(0, WATCH_SERVICES_MAX);
      } catch (listErr) {
        if (!this.denied(listErr)) this.showWatchState(`cannot list the services: ${errorText(listErr)}`);
        return;
      }
      if (this.stopped || sameList(names, this.watchedByName ?? [])) return;
      if (names.length === 0) {
        this.showWatchState("this token may read no service");
        return;
      }
      this.openWatch(names);
    };
    await relist();
    if (this.stopped) return;
    const poller = new Poller(SERVICES_RELIST_MS, relist);
    this.pollers.push(poller);
    poller.start();
  }

  private showLive(): void {
    this.showWatchState(`live · revision ${this.view.revision}`);
  }

  private showWatchState(text: string): void {
    el.watchState.textContent = `Watch: ${text}`;
  }

  /** Draws the services once per frame, however many events arrive in it. */
  private queueRender(): void {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      if (!this.stopped) renderServices(this.view, el.search.value);
    });
  }
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// ---------------------------------------------------------------- the token

let session: Session | undefined;

/**
 * A 403 is about the token when there is none (ACLs are on and anonymous may not read this) or
 * when the server does not know it; then the page stops and asks for one. Any other 403 (a token
 * without operator:read, say) is the panel's to show.
 */
function onDenied(err: ApiError): boolean {
  const given = token.get();
  if (given !== undefined && !err.badToken) return false;
  if (!err.denied) return false;
  session?.stop();
  session = undefined;
  if (given !== undefined) token.forget();
  askForToken(given === undefined
    ? `ACLs are on: enter a token to see the cluster (the server said: ${err.message}).`
    : "The token was not accepted (ACL not found): check it and enter it again.");
  return true;
}

function askForToken(message: string): void {
  el.dashboard.hidden = true;
  el.tokenPanel.hidden = false;
  el.forgetToken.hidden = true;
  el.tokenMessage.textContent = message;
  el.tokenInput.focus();
}

function begin(): void {
  session?.stop();
  el.tokenPanel.hidden = true;
  el.dashboard.hidden = false;
  el.forgetToken.hidden = token.get() === undefined;
  session = new Session(onDenied);
  session.start();
}

el.tokenForm.addEventListener("submit", (event) => {
  // The form never submits (the CSP's form-action 'none' would refuse it): the token goes to sessionStorage, not into a request.
  event.preventDefault();
  const secret = el.tokenInput.value.trim();
  el.tokenInput.value = "";
  if (secret === "") return;
  token.set(secret);
  begin();
});

el.forgetToken.addEventListener("click", () => {
  token.forget();
  begin();
});

begin();
