// The CA's native HTTP routes: sign a workload's CSR, read or stream the trust bundle (JSON, PEM,
// or the SPIFFE bundle format; blocking with ?index&wait or as server-sent events), and the
// operator's rotate and import.

import { X509Certificate } from "node:crypto";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Caller } from "../../ca/authorizer.js";
import type { CertificateAuthority } from "../../ca/authority.js";
import type { CsrIssuer } from "../../ca/csr_pool.js";
import { CA_KEY_TYPES, type CaKeyType } from "../../ca/keys.js";
import { type CaRoot, intermediatesOf } from "../../ca/state.js";
import { RECENT_ISSUANCES_MAX } from "../../ca/recent_issuances.js";
import type { RaftDriver } from "../../raft/node/driver.js";
import { parseGoDuration } from "../../common/duration.js";
import { WAIT_DEFAULT_MS, WAIT_MAX_MS, startEventStream, waitEndSignal, withJitterMs } from "../blocking.js";
import { sendError } from "../errors.js";
import { presentedToken } from "../../acl/presented.js";

/** A CSR of the largest accepted key (RSA 4096) with a long SAN list fits well within this. */
const SIGN_BODY_BYTES_MAX = 64 * 1024;
/** Import bodies carry a certificate, a key and maybe a root. */
const IMPORT_BODY_BYTES_MAX = 256 * 1024;
/** Open bundle streams on one node, at most; past it a new stream is refused with 429. */
export const BUNDLE_STREAMS_MAX = 10_000;
/** A comment line keeps idle streams open through proxies that close silent connections. */
const SSE_KEEPALIVE_MS = 25_000;

const pemString = { type: "string", minLength: 1, maxLength: 32 * 1024 } as const;

const signBody = {
  type: "object",
  required: ["csr"],
  additionalProperties: false,
  properties: {
    csr: { ...pemString, description: "PKCS#10 CSR, PEM, whose one URI SAN is the SPIFFE ID asked for" },
    ttl: { type: "string", maxLength: 32, description: "Go duration; default 1h; above the maximum (24h unless configured) is refused" },
  },
} as const;

const signAnswer = {
  type: "object",
  properties: {
    certificate: { type: "string" },
    chain: { type: "array", items: { type: "string" } },
    spiffeId: { type: "string" },
    serial: { type: "string" },
    notBefore: { type: "string" },
    notAfter: { type: "string" },
  },
} as const;

const issuedAnswer = {
  type: "object",
  properties: {
    node: { type: "string", description: "the node that signed them" },
    kept: { type: "integer", description: "how many the node keeps; older ones are in its audit log" },
    certificates: {
      type: "array",
      items: {
        type: "object",
        properties: {
          serial: { type: "string" },
          spiffeId: { type: "string" },
          notBefore: { type: "string" },
          notAfter: { type: "string" },
          issuedAt: { type: "string" },
          rootId: { type: "string", description: "the root whose intermediate signed it" },
          origin: { type: "string", description: "where the request came from" },
        },
      },
    },
  },
} as const;

const bundleQuery = {
  type: "object",
  additionalProperties: false,
  properties: {
    index: { type: "string", pattern: "^[0-9]{1,16}$", description: "block until the roots change past this revision" },
    wait: { type: "string", description: "how long to block, a Go duration (default 5m, at most 10m)" },
    format: { type: "string", enum: ["json", "pem", "spiffe"], description: "json (default), pem (the roots concatenated), or spiffe (the SPIFFE bundle, a JWK set)" },
  },
} as const;

const rotateBody = {
  type: ["object", "null"],
  additionalProperties: false,
  properties: { keyType: { type: "string", enum: [...CA_KEY_TYPES], description: "the new root's key type; default the configured one" } },
} as const;

const importBody = {
  type: "object",
  required: ["certificate", "privateKey"],
  additionalProperties: false,
  properties: {
    certificate: { ...pemString, description: "the CA certificate, PEM: a root, or an intermediate (then give root too)" },
    privateKey: { ...pemString, description: "its private key, PEM; sealed with the KEK before it is replicated" },
    root: { ...pemString, description: "the root that issued an imported intermediate, PEM" },
  },
} as const;

export interface CaRouteDeps {
  readonly ca: CertificateAuthority;
  readonly driver: RaftDriver;
  readonly random?: () => number;
  /** Checks CSR signatures and signs their leaves: a worker pool, bounded in flight. */
  readonly issuer: CsrIssuer;
}

export function caRoutes(app: FastifyInstance, deps: CaRouteDeps): void {
  const { ca, driver } = deps;
  const random = deps.random ?? Math.random;
  const fail = (reply: FastifyReply, err: unknown): FastifyReply => sendError(reply, err, (id) => driver.peerAddressOf(id));
  let streams = 0;

  app.post<{ Body: { csr: string; ttl?: string } }>("/v1/ca/sign", {
    bodyLimit: SIGN_BODY_BYTES_MAX,
    config: { rateClass: "sign", acl: { checkedBy: "the CA authorizer, which allows only SPIFFE IDs of services the token has service:write on" } },
    schema: { summary: "Sign a workload's CSR: an X.509-SVID for the SPIFFE ID in it, signed locally", body: signBody, response: { 200: signAnswer } },
  }, async (req, reply) => {
    try {
      const issued = await ca.signWith(deps.issuer, req.body, callerOf(req));
      return reply.send({
        certificate: issued.certificatePem,
        chain: issued.chainPems,
        spiffeId: issued.spiffeId,
        serial: issued.serialHex,
        notBefore: new Date(issued.notBeforeMs).toISOString(),
        notAfter: new Date(issued.notAfterMs).toISOString(),
      });
    } catch (err) {
      return fail(reply, err);
    }
  });

  app.get<{ Querystring: { index?: string; wait?: string; format?: "json" | "pem" | "spiffe" } }>("/v1/ca/bundle", {
    config: { acl: { open: "the trust bundle is public: whoever verifies a certificate needs it, as Consul's CA roots" } },
    schema: { summary: "The trust bundle: every trusted root; blocks with ?index=N&wait=30s until the roots change", querystring: bundleQuery },
  }, async (req, reply) => {
    const waitMs = waitOf(req.query.wait);
    if (waitMs === undefined) return reply.code(400).send({ error: `wait "${req.query.wait}" is not a duration like "30s"`, field: "wait" });
    if (req.query.index !== undefined) await ca.waitForChange(Number(req.query.index), withJitterMs(waitMs, random()), waitEndSignal(reply));
    void reply.header("x-cairn-index", String(Math.max(1, ca.state.revision)));
    const format = req.query.format ?? "json";
    if (format === "pem") return reply.type("application/x-pem-file").send(ca.state.bundlePem);
    if (format === "spiffe") return reply.type("application/json").send(spiffeBundle(ca));
    return reply.send(bundleJson(ca));
  });

  app.get("/v1/ca/bundle/stream", {
    config: { acl: { open: "the trust bundle is public" } },
    schema: { summary: "The trust bundle as server-sent events: one `bundle` event at once, then one on every change" },
  }, (_req, reply) => {
    if (streams >= BUNDLE_STREAMS_MAX) return reply.code(429).header("retry-after", "1").send({ error: `${BUNDLE_STREAMS_MAX} bundle streams are open on this node; retry shortly` });
    const res = startEventStream(reply, { "content-type": "text/event-stream", "cache-control": "no-store", connection: "keep-alive" });
    if (res === undefined) return reply;
    streams++;
    const push = (): void => {
      res.write(`id: ${ca.state.revision}\nevent: bundle\ndata: ${JSON.stringify(bundleJson(ca))}\n\n`);
    };
    push();
    const unsubscribe = ca.subscribe(push);
    const keepalive = setInterval(() => res.write(": keepalive\n\n"), SSE_KEEPALIVE_MS);
    // The stream ends when the client goes or the server closes; EventSource clients reconnect.
    waitEndSignal(reply).addEventListener("abort", () => {
      streams--;
      clearInterval(keepalive);
      unsubscribe();
      res.end();
    }, { once: true });
    return reply;
  });

  app.get("/v1/ca/roots", { config: { acl: { open: "roots are public; their keys are never shown" } }, schema: { summary: "The roots with their intermediates and cross-signed certificates" } }, (_req, reply) => {
    void reply.header("x-cairn-index", String(Math.max(1, ca.state.revision)));
    return reply.send({ trustDomain: ca.trustDomain, index: ca.state.revision, roots: ca.state.roots.map(publicRoot) });
  });

  app.get("/v1/ca/issued", {
    // Not open like the roots: the record names every identity signed (so every service, past a
    // token's service:read) and the addresses that asked. It is what the node did, operational
    // state like GET /v1/cluster's, so it needs the same operator:read.
    config: { acl: { need: "operator", access: "read" } },
    schema: { summary: `The last ${RECENT_ISSUANCES_MAX} certificates this node signed, newest first (each node signs locally, so each keeps its own)`, response: { 200: issuedAnswer } },
  }, () => ({
    node: driver.id,
    kept: ca.recentIssuances.capacity,
    certificates: ca.recentIssuances.list().map((c) => ({
      serial: c.serialHex,
      spiffeId: c.spiffeId,
      notBefore: new Date(c.notBeforeMs).toISOString(),
      notAfter: new Date(c.notAfterMs).toISOString(),
      issuedAt: new Date(c.issuedAtMs).toISOString(),
      rootId: c.rootId,
      origin: c.origin,
    })),
  }));

  app.post<{ Body: { keyType?: CaKeyType } | null }>("/v1/ca/rotate", {
    config: { acl: { need: "ca", access: "write" } },
    schema: { summary: "Rotate the root: a new root, cross-signed by the current one, signs from now on; the old one stays trusted until its leaves expire", body: rotateBody },
  }, async (req, reply) => {
    try {
      const root = await ca.rotate(req.body?.keyType ?? ca.settings.keyType);
      return reply.send({ index: root.createIndex, root: publicRoot(root) });
    } catch (err) {
      return fail(reply, err);
    }
  });

  app.post<{ Body: { certificate: string; privateKey: string; root?: string } }>("/v1/ca/import", {
    bodyLimit: IMPORT_BODY_BYTES_MAX,
    config: { acl: { need: "ca", access: "write" } },
    schema: { summary: "Replace the CA with the operator's own root, or intermediate and root; rotates like /v1/ca/rotate", body: importBody },
  }, async (req, reply) => {
    try {
      const root = await ca.importCa(req.body);
      return reply.send({ index: root.createIndex, root: publicRoot(root) });
    } catch (err) {
      return fail(reply, err);
    }
  });
}

/** Who is asking: the token the request carries (Consul's header or a bearer token) and where from. */
export function callerOf(req: FastifyRequest): Caller {
  return { token: presentedToken(req.headers), origin: `http ${req.ip}` };
}

function waitOf(text: string | undefined): number | undefined {
  if (text === undefined || text === "") return WAIT_DEFAULT_MS;
  const ms = parseGoDuration(text);
  return ms === undefined ? undefined : Math.min(ms === 0 ? WAIT_DEFAULT_MS : ms, WAIT_MAX_MS);
}

/** A root as the bundle shows it. */
function rootSummary(r: CaRoot): Record<string, unknown> {
  return {
    id: r.id,
    name: r.name,
    certificate: r.rootCertificatePem,
    active: r.active,
    notBefore: new Date(r.notBeforeMs).toISOString(),
    notAfter: new Date(r.notAfterMs).toISOString(),
  };
}

/** What anyone may see of a root: never its keys, sealed or not. */
function publicRoot(r: CaRoot): Record<string, unknown> {
  return {
    ...rootSummary(r),
    keyType: r.keyType,
    intermediates: intermediatesOf(r),
    retireAfter: r.retireAfterMs === null ? null : new Date(r.retireAfterMs).toISOString(),
    createIndex: r.createIndex,
    modifyIndex: r.modifyIndex,
  };
}

function bundleJson(ca: CertificateAuthority): Record<string, unknown> {
  return { trustDomain: ca.trustDomain, index: ca.state.revision, roots: ca.state.roots.map(rootSummary) };
}

/** The SPIFFE bundle format: a JWK set whose keys are the roots, each with its certificate in x5c. */
function spiffeBundle(ca: CertificateAuthority): Record<string, unknown> {
  return {
    spiffe_sequence: ca.state.revision,
    keys: ca.state.roots.map((r) => {
      const cert = new X509Certificate(r.rootCertificatePem);
      return { use: "x509-svid", ...cert.publicKey.export({ format: "jwk" }), x5c: [cert.raw.toString("base64")] };
    }),
  };
}
