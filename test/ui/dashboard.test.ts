// The web dashboard against a real three-node cluster with ACLs on: the files every node serves
// and their headers, the two routes the page needs beyond the existing API (the leader's view of
// the members, and a node's recent issuances), and the page itself in headless Chromium (Debian's
// chromium, driven by playwright-core): it asks for a token, shows the members and the leader,
// shows a registration without a reload, filters by search, and shows a killed node as down. It
// saves a screenshot to test/artifacts/dashboard.png on every run.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import { type Browser, chromium } from "playwright-core";
import { UI_CONTENT_SECURITY_POLICY, loadUiAssets, uiPageBytes } from "../../src/api/ui.js";
import { ELECTION_TIMEOUT_MS, ProcessCluster, type ProcessNode } from "../support/cluster.js";

const CHROMIUM_PATH = "/usr/bin/chromium";
const chromiumMissing = !existsSync(CHROMIUM_PATH);
/** This file runs from dist/test/ui/; the artifact goes to the repository's test/artifacts/. */
const SCREENSHOT_PATH = fileURLToPath(new URL("../../../test/artifacts/dashboard.png", import.meta.url));
/** "Small": the page, its stylesheet and modules together, uncompressed. */
const PAGE_BYTES_MAX = 100 * 1024;
/** How long the page may take to show what the API already says: a poll (1 s) and a render, with room for a loaded machine. */
const PAGE_SHOWS_MS = 10_000;

interface Answer {
  readonly status: number;
  readonly text: string;
  readonly headers: Headers;
  readonly json: unknown;
}

async function call(node: ProcessNode, method: string, path: string, opts: { token?: string; body?: unknown; headers?: Record<string, string> } = {}): Promise<Answer> {
  const headers: Record<string, string> = { ...opts.headers, ...(opts.token === undefined ? {} : { "x-consul-token": opts.token }) };
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(node.url(path), { method, headers, redirect: "manual", ...(opts.body === undefined ? {} : { body: JSON.stringify(opts.body) }) });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, text, headers: res.headers, json };
}

/** A CSR for `service`'s SPIFFE ID, made by openssl, signed by `node`; returns the serial. */
async function sign(node: ProcessNode, token: string, service: string, scratch: string): Promise<string> {
  const keyPath = join(scratch, `key-${randomBytes(4).toString("hex")}.pem`);
  const r = spawnSync("openssl", ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", keyPath, "-subj", "/",
    "-addext", `subjectAltName=URI:spiffe://cairn.local/ns/default/svc/${service}`], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  const signed = await call(node, "POST", "/v1/ca/sign", { token, body: { csr: r.stdout } });
  assert.equal(signed.status, 200, signed.text);
  return (signed.json as { serial: string }).serial;
}

interface Member { id: string; role: string; reachable: boolean | null; lastContactMs: number | null; match: number | null; lagEntries?: number | null }

void describe("the web dashboard", () => {
  let cluster: ProcessCluster;
  let management: string;
  let leader: ProcessNode;
  let followers: ProcessNode[];
  let scratch: string;

  before(async () => {
    scratch = mkdtempSync(join(tmpdir(), "cairn-ui-"));
    cluster = await ProcessCluster.start(3, [], { acl: true });
    management = await cluster.bootstrapAcl();
    leader = await cluster.agreedLeader();
    followers = cluster.nodes.filter((n) => n !== leader);
  });

  after(async () => {
    await cluster.close();
    rmSync(scratch, { recursive: true, force: true });
  });

  void test("every node serves it: / and /ui redirect to /ui/, each file with its type, an ETag that answers 304, and a CSP that allows no inline script", async (t) => {
    for (const node of cluster.nodes) {
      for (const path of ["/", "/ui"]) {
        const r = await call(node, "GET", path);
        assert.equal(r.status, 302, `${node.info.id} GET ${path}`);
        assert.equal(r.headers.get("location"), "/ui/");
      }
    }
    const node = followers[0];
    const page = await call(node, "GET", "/ui/");
    assert.equal(page.status, 200);
    assert.equal(page.headers.get("content-type"), "text/html; charset=utf-8");
    const csp = page.headers.get("content-security-policy") ?? "";
    assert.equal(csp, UI_CONTENT_SECURITY_POLICY);
    for (const directive of ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "form-action 'none'", "frame-ancestors 'none'"]) assert.ok(csp.includes(directive), `CSP has ${directive}`);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.doesNotMatch(page.text, /<script(?![^>]*\bsrc=)[^>]*>/, "no inline script in the page");
    assert.doesNotMatch(page.text, /<style|\sstyle=|\son[a-z]+=/i, "no inline style or event handler attribute");
    assert.equal(page.headers.get("x-content-type-options"), "nosniff");
    assert.equal(page.headers.get("cache-control"), "no-cache");
    const etag = page.headers.get("etag") ?? "";
    assert.match(etag, /^"[A-Za-z0-9_-]{27}"$/);
    const again = await call(node, "GET", "/ui/", { headers: { "if-none-match": etag } });
    assert.equal(again.status, 304);
    assert.equal(again.text, "");
    for (const [file, type] of [["app.js", "text/javascript; charset=utf-8"], ["watch.js", "text/javascript; charset=utf-8"], ["style.css", "text/css; charset=utf-8"]]) {
      const r = await call(node, "GET", `/ui/${file}`);
      assert.equal(r.status, 200, file);
      assert.equal(r.headers.get("content-type"), type, file);
      assert.equal(r.headers.get("content-security-policy"), UI_CONTENT_SECURITY_POLICY, file);
    }
    const missing = await call(node, "GET", "/ui/..%2Fui.js");
    assert.equal(missing.status, 404);
    assert.match((missing.json as { error: string }).error, /no file/);
    const bytes = uiPageBytes(loadUiAssets());
    t.diagnostic(`dashboard page weight: ${bytes} bytes (html, css and modules, uncompressed)`);
    assert.ok(bytes < PAGE_BYTES_MAX, `the page weighs ${bytes} bytes, over ${PAGE_BYTES_MAX}`);
  });

  void test("GET /v1/cluster/health answers the leader's view from a follower: every member reachable, lag and contact; /v1/cluster keeps its fields and adds contact on the leader", async () => {
    const r = await call(followers[0], "GET", "/v1/cluster/health", { token: management });
    assert.equal(r.status, 200, r.text);
    const health = r.json as { leader: string; term: number; healthy: boolean; failureTolerance: number; members: Member[] };
    assert.equal(health.leader, leader.info.id);
    assert.equal(health.healthy, true);
    assert.equal(health.failureTolerance, 1);
    assert.deepEqual(health.members.map((m) => m.id).sort(), ["n1", "n2", "n3"]);
    for (const m of health.members) {
      assert.equal(m.reachable, true, `${m.id} reachable`);
      assert.ok(typeof m.lastContactMs === "number" && m.lastContactMs <= ELECTION_TIMEOUT_MS, `${m.id} last contact ${m.lastContactMs}`);
      assert.ok(typeof m.lagEntries === "number" && m.lagEntries >= 0, `${m.id} lag ${m.lagEntries}`);
    }
    assert.equal((await call(followers[0], "GET", "/v1/cluster/health")).status, 403, "needs operator:read");

    const own = (await call(leader, "GET", "/v1/cluster", { token: management })).json as { role: string; members: Member[] };
    assert.equal(own.role, "leader");
    for (const m of own.members) {
      assert.equal(typeof m.match, "number");
      assert.equal(m.reachable, true);
    }
    const followerView = (await call(followers[0], "GET", "/v1/cluster", { token: management })).json as { members: Member[] };
    assert.ok(followerView.members.every((m) => m.reachable === null && m.lastContactMs === null), "a follower does not know the members' contact");
  });

  void test("GET /v1/ca/issued lists what this node signed, newest first, never a key; other nodes list their own; it needs operator:read", async () => {
    const [signer, other] = followers;
    const first = await sign(signer, management, "web", scratch);
    const second = await sign(signer, management, "db", scratch);
    const r = await call(signer, "GET", "/v1/ca/issued", { token: management });
    assert.equal(r.status, 200, r.text);
    const issued = r.json as { node: string; kept: number; certificates: { serial: string; spiffeId: string; issuedAt: string; notAfter: string; origin: string }[] };
    assert.equal(issued.node, signer.info.id);
    assert.equal(issued.kept, 100);
    assert.deepEqual(issued.certificates.slice(0, 2).map((c) => c.serial), [second, first]);
    assert.equal(issued.certificates[0].spiffeId, "spiffe://cairn.local/ns/default/svc/db");
    assert.match(issued.certificates[0].origin, /^http /);
    assert.ok(Date.parse(issued.certificates[0].notAfter) > Date.parse(issued.certificates[0].issuedAt));
    assert.doesNotMatch(r.text, /BEGIN|PRIVATE|SecretID/i);
    assert.ok(!r.text.includes(management), "never the caller's token");
    const elsewhere = (await call(other, "GET", "/v1/ca/issued", { token: management })).json as { certificates: { serial: string }[] };
    assert.ok(!elsewhere.certificates.some((c) => c.serial === first || c.serial === second), "each node lists only what it signed");
    assert.equal((await call(signer, "GET", "/v1/ca/issued")).status, 403);
  });

  void test("in Chromium: asks for a token, shows the members and the leader, a registration without a reload, search, and a killed node as down", { skip: chromiumMissing ? `${CHROMIUM_PATH} is absent (Debian: apt-get install chromium)` : false }, async (t) => {
    // The page is served by one follower; the other is killed, so its down status reaches the page through the leader.
    const [pageNode, victim] = followers;
    const serial = await sign(pageNode, management, "web", scratch);
    const startedAtMs = Date.now();
    let browser: Browser | undefined;
    try {
      browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
      const context = await browser.newContext({ viewport: { width: 1360, height: 1000 } });
      const page = await context.newPage();
      const problems: string[] = [];
      page.on("console", (m) => {
        // A refused request (the bad token's 403) is logged by Chromium as an error; anything else is the page's fault.
        if (m.type() === "error" && !/status of 403/.test(m.text())) problems.push(m.text());
      });
      page.on("pageerror", (err) => problems.push(err.message));
      const urls: string[] = [];
      page.on("request", (req) => urls.push(req.url()));

      await page.goto(pageNode.url("/"));
      assert.equal(page.url(), pageNode.url("/ui/"), "/ redirects to the dashboard");
      await page.locator("#token-panel").waitFor({ state: "visible", timeout: PAGE_SHOWS_MS });
      assert.match(await page.locator("#token-message").innerText(), /ACLs are on/);

      await page.fill("#token-input", "00000000-1111-2222-3333-444444444444");
      await page.click("#token-form button[type=submit]");
      await page.locator("#token-message", { hasText: "not accepted" }).waitFor({ timeout: PAGE_SHOWS_MS });

      await page.fill("#token-input", management);
      await page.click("#token-form button[type=submit]");
      await page.locator("#dashboard").waitFor({ state: "visible", timeout: PAGE_SHOWS_MS });
      await page.locator(`#members-body tr[data-member="${leader.info.id}"][data-role="leader"][data-status="up"]`).waitFor({ timeout: PAGE_SHOWS_MS });
      await page.locator('#members-body tr[data-status="up"]').nth(2).waitFor({ timeout: PAGE_SHOWS_MS });
      assert.equal(await page.locator("#members-body tr").count(), 3);
      await page.locator('#roots-body tr[data-state="active"]').waitFor({ timeout: PAGE_SHOWS_MS });
      await page.locator(`#issued-body tr[data-serial="${serial}"]`).waitFor({ timeout: PAGE_SHOWS_MS });

      // A marker in the page's global scope: still there later means the page never reloaded.
      await page.evaluate("window.cairnTestMarker = 'loaded once'");
      for (const [name, id, port] of [["web", "web-1", 8080], ["db", "db-1", 5432]] as const) {
        const r = await call(leader, "POST", "/v1/registry/instances", { token: management, body: { name, id, address: "10.0.0.7", port, tags: [`${name}-tag`], checks: [{ ttl: "30s" }] } });
        assert.equal(r.status, 200, r.text);
      }
      await page.locator('#service-list tr[data-instance="web-1"]').waitFor({ timeout: PAGE_SHOWS_MS });
      await page.locator('#service-list tr[data-instance="db-1"][data-status="critical"]').waitFor({ timeout: PAGE_SHOWS_MS });
      assert.equal(await page.evaluate("window.cairnTestMarker"), "loaded once", "the registrations appeared without a reload");
      assert.match(await page.locator("#watch-state").innerText(), /live · revision [1-9]/, "the watch says it is live, at the revision it reached");

      await page.fill("#search", "db");
      await page.locator('#service-list tr[data-instance="web-1"]').waitFor({ state: "detached", timeout: PAGE_SHOWS_MS });
      assert.equal(await page.locator('#service-list tr[data-instance="db-1"]').count(), 1, "the search keeps what matches");
      await page.fill("#search", "web-tag");
      await page.locator('#service-list tr[data-instance="db-1"]').waitFor({ state: "detached", timeout: PAGE_SHOWS_MS });
      await page.locator('#service-list tr[data-instance="web-1"]').waitFor({ timeout: PAGE_SHOWS_MS });
      await page.fill("#search", "");
      await page.locator('#service-list tr[data-instance="db-1"]').waitFor({ timeout: PAGE_SHOWS_MS });

      await victim.kill9();
      const killedAtMs = Date.now();
      await page.locator(`#members-body tr[data-member="${victim.info.id}"][data-status="down"]`).waitFor({ timeout: PAGE_SHOWS_MS });
      t.diagnostic(`${victim.info.id} shown as down ${Date.now() - killedAtMs} ms after kill -9`);
      assert.match(await page.locator("#cluster-summary").innerText(), new RegExp(`1 of 3 down: ${victim.info.id}`));

      mkdirSync(dirname(SCREENSHOT_PATH), { recursive: true });
      await page.screenshot({ path: SCREENSHOT_PATH, fullPage: true });
      assert.ok(statSync(SCREENSHOT_PATH).size > 0);
      t.diagnostic(`screenshot: ${SCREENSHOT_PATH}`);

      // Where the token went: this tab's sessionStorage and request headers, nowhere else.
      assert.equal(await page.evaluate("sessionStorage.getItem('cairn.token')"), management);
      assert.equal(await page.evaluate("localStorage.length"), 0);
      assert.deepEqual(await context.cookies(), []);
      assert.ok(urls.every((u) => !u.includes(management)), "the token is in no URL");
      assert.deepEqual(problems, [], "no script error and no CSP violation");
      t.diagnostic(`browser part took ${Date.now() - startedAtMs} ms`);
    } finally {
      await browser?.close();
    }
  });
});
