// The dashboard: the cluster's members as the leader sees them, the registry live from the watch
// stream, and the CA's roots and this node's recent issuances. Everything comes from the HTTP API
// of the node that served the page, with the token the user gives (see api.ts for where it is
// kept). The cluster and the CA are polled; the registry is pushed by the watch.

import { ApiError, getJson, token } from "./api.js";
import {
  type ClusterHealth, type Issued, type MemberHealth, type NodeView, type Roots,
  decodeClusterHealth, decodeIssued, decodeNodeView, decodeRoots, decodeServiceNames,
} from "./decode.js";
import { byId, h, notice } from "./dom.js";
import { duration, msUntil, plural, relative, utc } from "./format.js";
import { RegistryView, type ServiceSummary } from "./registry_view.js";
import { RegistryWatch } from "./watch.js";

/** The members' status: a killed node shows as down about an election timeout (600 ms by default) plus this. */
const CLUSTER_POLL_MS = 1000;
const CA_POLL_MS = 5000;
/** Instance rows drawn at most; past it the page says how many more matched and asks for a narrower search. */
const INSTANCE_ROWS_MAX = 500;
/** A root this close to expiry is marked: rotating takes a leaf TTL or more to complete. */
const ROOT_EXPIRY_WARNING_MS = 30 * 24 * 3600 * 1000;
/** The watch names at most this many services (the route's bound). */
const WATCH_SERVICES_MAX = 64;
/** A token that may read only some services watches them by name, and looks for new ones this often. */
const SERVICES_RELIST_MS = 10_000;

const el = {
  tokenPanel: byId("token-panel", HTMLElement),
  tokenForm: byId("token-form", HTMLFormElement),
  tokenInput: byId("token-input", HTMLInputElement),
  tokenMessage: byId("token-message", HTMLElement),
  forgetToken: byId("forget-token", HTMLButtonElement),
  dashboard: byId("dashboard", HTMLElement),
  nodeLabel: byId("node-label", HTMLElement),
  clusterSummary: byId("cluster-summary", HTMLElement),
  clusterError: byId("cluster-error", HTMLElement),
  members: byId("members-body", HTMLTableSectionElement),
  search: byId("search", HTMLInputElement),
  servicesCount: byId("services-count", HTMLElement),
  watchState: byId("watch-state", HTMLElement),
  serviceList: byId("service-list", HTMLElement),
  caSummary: byId("ca-summary", HTMLElement),
  caError: byId("ca-error", HTMLElement),
  roots: byId("roots-body", HTMLTableSectionElement),
  issuedNode: byId("issued-node", HTMLElement),
  issued: byId("issued-body", HTMLTableSectionElement),
};

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
        this.queueRender();
      },
      reset: (chunk) => {
        this.view.applyReset(chunk);
        if (chunk.last) this.queueRender();
      },
      progress: (revision) => {
        this.view.revision = Math.max(this.view.revision, revision);
        this.showWatchState(`live · revision ${this.view.revision}`);
      },
      connection: (state, detail) => this.showWatchState(state === "live" ? `live · revision ${this.view.revision}` : `reconnecting: ${detail}`),
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

// ---------------------------------------------------------------- drawing

function memberStatus(m: MemberHealth | undefined): "up" | "down" | "unknown" {
  if (m?.reachable === true) return "up";
  if (m?.reachable === false) return "down";
  return "unknown";
}

function renderCluster(own: NodeView, health: ClusterHealth | undefined, healthProblem: string | undefined): void {
  el.nodeLabel.textContent = `node ${own.id} · ${own.role}`;
  document.title = `Cairn · ${own.id}`;
  const parts = [`this page is served by ${own.id}, a ${own.role}`];
  if (health === undefined) {
    parts.push(`which members are up is unknown: ${healthProblem ?? "no answer"}`);
  } else {
    const down = health.members.filter((m) => m.reachable === false).map((m) => m.id);
    parts.push(`leader ${health.leader}`, `term ${health.term}`, `commit index ${health.commitIndex}`);
    parts.push(down.length === 0 ? `all ${plural(health.members.length, "member")} reachable` : `${down.length} of ${health.members.length} down: ${down.join(", ")}`);
    parts.push(health.failureTolerance >= 0 ? `tolerates ${plural(health.failureTolerance, "more failure")}` : "the quorum is lost");
  }
  el.clusterSummary.textContent = parts.join(" · ");
  el.clusterSummary.dataset.leader = health?.leader ?? "";
  const healthById = new Map(health?.members.map((m) => [m.id, m]));
  const ids = health?.members.map((m) => m.id) ?? own.members.map((m) => m.id);
  const rows = ids.map((id) => {
    const m = healthById.get(id);
    const fallback = own.members.find((x) => x.id === id);
    const role = m?.role ?? fallback?.role ?? "follower";
    const status = memberStatus(m);
    return h("tr", { className: status, data: { member: id, status, role } },
      h("td", {}, id, id === own.id ? h("span", { className: "note" }, " (this node)") : null),
      h("td", {}, role),
      h("td", {}, h("span", { className: `badge ${status}` }, status)),
      h("td", {}, m?.lastContactMs === null || m === undefined ? "—" : `${duration(m.lastContactMs)} ago`),
      h("td", { className: "num" }, m?.match === null || m === undefined ? "—" : String(m.match)),
      h("td", { className: "num" }, m?.lagEntries === null || m === undefined ? "—" : String(m.lagEntries)),
      h("td", { className: "mono" }, m?.peerAddress ?? fallback?.peerAddress ?? ""));
  });
  el.members.replaceChildren(...rows);
}

function renderServices(view: RegistryView, query: string): void {
  const services = view.services(query);
  const matched = services.reduce((n, s) => n + s.matched.length, 0);
  el.servicesCount.textContent = query.trim() === ""
    ? `${plural(view.size, "instance")} in ${plural(services.length, "service")}`
    : `${plural(matched, "instance")} in ${plural(services.length, "service")} match`;
  if (services.length === 0) {
    el.serviceList.replaceChildren(h("p", { className: "note" }, view.size === 0 ? "No instance is registered." : "Nothing matches the search."));
    return;
  }
  const table = h("table", { className: "instances" },
    h("thead", {}, h("tr", {}, ...["Instance", "Status", "Address", "Node", "Zone", "Tags", "Checks"].map((t) => h("th", {}, t)))));
  let drawn = 0;
  for (const s of services) {
    if (drawn >= INSTANCE_ROWS_MAX) break;
    const body = h("tbody", { data: { service: s.name } }, serviceHeader(s));
    for (const inst of s.matched.slice(0, INSTANCE_ROWS_MAX - drawn)) {
      body.append(h("tr", { data: { instance: inst.id, status: inst.status } },
        h("td", { className: "mono" }, inst.id),
        h("td", {}, h("span", { className: `badge ${inst.status}` }, inst.status)),
        h("td", { className: "mono" }, `${inst.address}:${inst.port}`),
        h("td", {}, inst.node),
        h("td", {}, inst.zone),
        h("td", {}, ...inst.tags.map((t) => h("span", { className: "tag" }, t))),
        h("td", {}, ...inst.checks.map((c) => h("span", { className: `badge ${c.status}`, title: c.output === "" ? c.id : `${c.id}: ${c.output}` }, c.name)))));
      drawn++;
    }
    table.append(body);
  }
  const hidden = matched - drawn;
  el.serviceList.replaceChildren(table);
  if (hidden > 0) el.serviceList.append(h("p", { className: "note" }, `${plural(hidden, "more instance")} matched; narrow the search to see them.`));
}

function serviceHeader(s: ServiceSummary): HTMLTableRowElement {
  const counts = (["passing", "warning", "critical"] as const).filter((k) => s.counts[k] > 0).map((k) => h("span", { className: `badge ${k}` }, `${s.counts[k]} ${k}`));
  return h("tr", { className: "service" }, h("th", { colSpan: 7 }, s.name, " ", ...counts));
}

function renderRoots(r: Roots): void {
  const nowMs = Date.now();
  const retiring = r.roots.filter((x) => x.retireAfter !== null);
  const rotation = retiring.length === 0
    ? "no rotation in progress"
    : `rotation in progress: ${retiring.map((x) => `${x.name} stays trusted until ${utc(x.retireAfter ?? "")} (${relative(x.retireAfter ?? "", nowMs)})`).join("; ")}`;
  el.caSummary.textContent = `trust domain ${r.trustDomain} · ${plural(r.roots.length, "root")} trusted · ${rotation}`;
  el.roots.replaceChildren(...r.roots.map((root) => {
    const state = root.active ? "active" : root.retireAfter !== null ? "retiring" : "trusted";
    const expiring = msUntil(root.notAfter, nowMs) < ROOT_EXPIRY_WARNING_MS;
    return h("tr", { data: { root: root.id, state } },
      h("td", { title: root.id }, root.name),
      h("td", {}, root.keyType),
      h("td", {}, h("span", { className: `badge ${root.active ? "passing" : "warning"}` }, state)),
      h("td", {}, utc(root.notBefore)),
      h("td", { className: expiring ? "expiring" : "" }, `${utc(root.notAfter)} (${relative(root.notAfter, nowMs)})`));
  }));
}

function renderIssued(issued: Issued): void {
  const nowMs = Date.now();
  el.issuedNode.textContent = `on ${issued.node}, newest first, up to ${issued.kept} (each node signs locally and lists its own)`;
  if (issued.certificates.length === 0) {
    el.issued.replaceChildren(h("tr", {}, h("td", { colSpan: 5, className: "note" }, "None since this node started.")));
    return;
  }
  el.issued.replaceChildren(...issued.certificates.map((c) => h("tr", { data: { serial: c.serial } },
    h("td", { title: utc(c.issuedAt) }, relative(c.issuedAt, nowMs)),
    h("td", { className: "mono" }, c.spiffeId),
    h("td", { className: "mono", title: c.serial }, c.serial.length > 16 ? `${c.serial.slice(0, 16)}…` : c.serial),
    h("td", { title: utc(c.notAfter) }, relative(c.notAfter, nowMs)),
    h("td", {}, c.origin))));
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
