// Drawing the dashboard's panels from what the API said. Every value becomes a text node (dom.ts);
// rows carry data-* attributes naming what they show (a member's status, an instance's id), for
// the stylesheet and for tests.

import type { ClusterHealth, Issued, MemberHealth, NodeView, Roots } from "./decode.js";
import { byId, h } from "./dom.js";
import { duration, msUntil, plural, relative, utc } from "./format.js";
import type { RegistryView, ServiceSummary } from "./registry_view.js";

/** Instance rows drawn at most; past it the page says how many more matched and asks for a narrower search. */
const INSTANCE_ROWS_MAX = 500;
/** A root this close to expiry is marked: rotating takes a leaf TTL or more to complete. */
const ROOT_EXPIRY_WARNING_MS = 30 * 24 * 3600 * 1000;

/** The page's elements, looked up once: a missing one is a broken page, said at load. */
export const el = {
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

function memberStatus(m: MemberHealth | undefined): "up" | "down" | "unknown" {
  if (m?.reachable === true) return "up";
  if (m?.reachable === false) return "down";
  return "unknown";
}

export function renderCluster(own: NodeView, health: ClusterHealth | undefined, healthProblem: string | undefined): void {
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

export function renderServices(view: RegistryView, query: string): void {
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

export function renderRoots(r: Roots): void {
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

export function renderIssued(issued: Issued): void {
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
