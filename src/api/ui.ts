// The web dashboard, served by every node at /ui/ (and / redirects there). The page is plain
// HTML, CSS and a few small ES modules (src/ui/, compiled by its own tsconfig); everything it
// shows it reads from the HTTP API with the token the user gives it, so these routes hold no
// state and are open.
//
// The files are read once, when the server starts, and served from memory with an ETag (a hash
// of the bytes): a browser revalidates on each load and gets a 304 while they are unchanged.
// Every answer carries a strict Content-Security-Policy: scripts and styles only from this
// origin, never inline; fetches only to this origin; no forms that submit anywhere, so a token
// typed into the page can never end up in a URL.

import { createHash } from "node:crypto";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { basename, extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";

/** The page's own path; `/` and `/ui` redirect here. The trailing slash makes the modules' relative URLs resolve under it. */
export const UI_PATH = "/ui/";

/**
 * This module compiles to dist/src/api/: the HTML and CSS sit in the package's src/ui/ (three
 * levels up, then down), the compiled modules beside this file's folder in dist/src/ui/.
 */
const UI_SOURCE_DIR = fileURLToPath(new URL("../../../src/ui/", import.meta.url));
const UI_SCRIPT_DIR = fileURLToPath(new URL("../ui/", import.meta.url));

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
};

/**
 * default-src 'none' refuses whatever is not named below. Scripts and styles come from this
 * origin only (no inline code, no eval); fetches go to this origin only (the API); the one image
 * is the inline empty favicon. Trusted Types forbid assigning strings as HTML, so nothing the
 * API returns (an instance's tags, a check's output) can become markup. form-action 'none': the
 * token form is handled by the script and can never be submitted as a GET with the token in
 * its URL. frame-ancestors 'none': no other site may frame the page.
 */
export const UI_CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
  "require-trusted-types-for 'script'",
  "trusted-types 'none'",
].join("; ");

const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "content-security-policy": UI_CONTENT_SECURITY_POLICY,
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
  "x-frame-options": "DENY",
};

interface UiAsset {
  readonly body: Buffer;
  readonly contentType: string;
  readonly etag: string;
}

/** The page (index.html), its stylesheet and its modules, by the name they are asked for under /ui/. */
export interface UiAssets {
  readonly page: UiAsset;
  readonly files: ReadonlyMap<string, UiAsset>;
}

function asset(path: string): UiAsset {
  const body = readFileSync(path);
  const contentType = CONTENT_TYPES[extname(path)];
  if (contentType === undefined) throw new Error(`the dashboard file ${path} has no known content type`);
  return { body, contentType, etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 27)}"` };
}

/** Reads the dashboard's files; a missing one is a broken installation, named with its fix. */
export function loadUiAssets(sourceDir = UI_SOURCE_DIR, scriptDir = UI_SCRIPT_DIR): UiAssets {
  const pagePath = join(sourceDir, "index.html");
  const stylePath = join(sourceDir, "style.css");
  for (const path of [pagePath, stylePath]) {
    if (!existsSync(path)) throw new Error(`the dashboard file ${path} is missing: Cairn's src/ui/ directory must sit in the package root, beside dist/`);
  }
  const scripts = existsSync(scriptDir) ? readdirSync(scriptDir).filter((f) => f.endsWith(".js")) : [];
  if (!scripts.includes("app.js")) throw new Error(`the dashboard's compiled modules are missing from ${scriptDir}: run npm run build`);
  const files = new Map<string, UiAsset>([["style.css", asset(stylePath)]]);
  for (const script of scripts) files.set(basename(script), asset(join(scriptDir, script)));
  return { page: asset(pagePath), files };
}

/** Total bytes of the dashboard as a browser loads it the first time. */
export function uiPageBytes(assets: UiAssets): number {
  let bytes = assets.page.body.byteLength;
  for (const file of assets.files.values()) bytes += file.body.byteLength;
  return bytes;
}

function send(req: FastifyRequest, reply: FastifyReply, file: UiAsset): FastifyReply {
  void reply.headers(SECURITY_HEADERS).header("etag", file.etag).header("cache-control", "no-cache");
  // If-None-Match may list several tags (RFC 9110 §13.1.2); a browser sends back the one it holds.
  const held = req.headers["if-none-match"]?.split(",").map((t) => t.trim()) ?? [];
  if (held.includes(file.etag) || held.includes("*")) return reply.code(304).send();
  return reply.type(file.contentType).send(file.body);
}

/** A response schema for a text body of these media types (fastify serializes none of them; it documents them). */
const textBody = (description: string, ...mediaTypes: string[]): Record<string, unknown> =>
  ({ description, content: Object.fromEntries(mediaTypes.map((t) => [t, { schema: { type: "string" } }])) });
const redirect = { 302: textBody(`to ${UI_PATH}`, "text/plain") } as const;
const OPEN = { open: "the dashboard's own files: they hold no state, and every figure the page shows comes from a route with its own rule, asked with the user's token" } as const;

export function uiRoutes(app: FastifyInstance, assets: UiAssets = loadUiAssets()): void {
  app.get("/", { config: { acl: OPEN }, schema: { summary: `Redirects to the dashboard at ${UI_PATH}`, response: redirect } },
    (_req, reply) => reply.redirect(UI_PATH, 302));
  app.get("/ui", { config: { acl: OPEN }, schema: { summary: `Redirects to ${UI_PATH}`, response: redirect } },
    (_req, reply) => reply.redirect(UI_PATH, 302));
  app.get(UI_PATH, {
    config: { acl: OPEN },
    schema: { summary: "The web dashboard: cluster members, services and instances live, the CA's roots and recent issuances", response: { 200: textBody("the page", "text/html") } },
  }, (req, reply) => send(req, reply, assets.page));
  app.get<{ Params: { file: string } }>(`${UI_PATH}:file`, {
    config: { acl: OPEN },
    schema: {
      summary: "The dashboard's stylesheet and script modules",
      params: { type: "object", properties: { file: { type: "string", maxLength: 64 } } },
      response: { 200: textBody("the file", "text/css", "text/javascript") },
    },
  }, (req, reply) => {
    const file = assets.files.get(req.params.file);
    if (file === undefined) return reply.code(404).send({ error: `the dashboard has no file ${JSON.stringify(req.params.file.slice(0, 64))}; open ${UI_PATH}` });
    return send(req, reply, file);
  });
}
