// Consul Connect's CA endpoints over Cairn's CA: the roots in Consul's IndexedCARoots shape, and
// agent leaf certificates that the node keys and caches per service, both as blocking queries.

import { X509Certificate } from "node:crypto";
import type { FastifyInstance, FastifyReply } from "fastify";
import { type CertificateAuthority, chainPemOf } from "../../ca/authority.js";
import type { LeafCache } from "../../ca/leaves.js";
import { type CaRoot, intermediatesOf } from "../../ca/state.js";
import { colonHex } from "../../ca/certificates.js";
import { trustDomainSpiffeId } from "../../ca/spiffe.js";
import { callerOf } from "../ca/routes.js";
import { waitEndSignal, withJitterMs } from "../blocking.js";

export interface ConnectDeps {
  readonly ca: CertificateAuthority;
  readonly leaves: LeafCache;
  readonly random: () => number;
  /** Consul's query parsing and read headers, shared with the rest of the Consul API. */
  readonly parseIndex: (text: string | undefined) => number;
  readonly parseWait: (text: string | undefined) => number;
  readonly readHeaders: (reply: FastifyReply, index: number) => void;
}

const blockingQuery = {
  type: "object",
  properties: {
    index: { type: "string", description: "block until the index passes this one" },
    wait: { type: "string", description: "how long to block, a Go duration (default 5m, at most 10m)" },
  },
} as const;

export function connectRoutes(app: FastifyInstance, deps: ConnectDeps): void {
  const { ca, leaves } = deps;
  const roots = async (query: { index?: string; wait?: string }, reply: FastifyReply): Promise<unknown> => {
    const since = deps.parseIndex(query.index);
    if (since > 0) await ca.waitForChange(since, withJitterMs(deps.parseWait(query.wait), deps.random()), waitEndSignal(reply));
    deps.readHeaders(reply, ca.state.revision);
    const active = ca.state.activeRoot;
    return {
      ActiveRootID: active?.id ?? "",
      TrustDomain: ca.trustDomain,
      Roots: ca.state.roots.map((r) => consulRoot(r, ca.trustDomain)),
    };
  };
  const rootsSchema = { summary: "Consul's IndexedCARoots: the trusted roots and which one signs", querystring: blockingQuery };
  const rootsAcl = { acl: { open: "Consul's CA roots need no ACL: the trust bundle is public" } };
  app.get<{ Querystring: { index?: string; wait?: string } }>("/v1/connect/ca/roots", { config: rootsAcl, schema: rootsSchema }, (req, reply) => roots(req.query, reply));
  app.get<{ Querystring: { index?: string; wait?: string } }>("/v1/agent/connect/ca/roots", { config: rootsAcl, schema: rootsSchema }, (req, reply) => roots(req.query, reply));

  app.get<{ Params: { service: string }; Querystring: { index?: string; wait?: string } }>("/v1/agent/connect/ca/leaf/:service", {
    // It may sign (a new key and leaf per service, or a renewal): charged as signing. As Consul:
    // service:write on the service; the CA authorizer then checks the SPIFFE ID too.
    config: { rateClass: "sign", acl: { need: "service", access: "write", name: (req) => (req.params as { service: string }).service } },
    schema: {
      summary: "A leaf certificate and key for a service, kept by this node; blocks until it nears expiry or the roots rotate",
      params: { type: "object", required: ["service"], properties: { service: { type: "string", minLength: 1 } } },
      querystring: blockingQuery,
    },
  }, async (req, reply) => {
    const caller = callerOf(req);
    const since = deps.parseIndex(req.query.index);
    const leaf = since > 0
      ? await leaves.wait(req.params.service, caller, since, withJitterMs(deps.parseWait(req.query.wait), deps.random()), waitEndSignal(reply))
      : leaves.get(req.params.service, caller);
    deps.readHeaders(reply, leaf.index);
    const issued = leaf.issued;
    return {
      SerialNumber: colonHex(issued.serialHex),
      // Consul's CertPEM carries the intermediates after the leaf, so a proxy can present the chain as is.
      CertPEM: chainPemOf(issued),
      PrivateKeyPEM: leaf.privateKeyPem,
      Service: leaf.service,
      ServiceURI: leaf.serviceUri,
      ValidAfter: new Date(issued.notBeforeMs).toISOString(),
      ValidBefore: new Date(issued.notAfterMs).toISOString(),
      CreateIndex: leaf.index,
      ModifyIndex: leaf.index,
    };
  });
}

function consulRoot(r: CaRoot, trustDomain: string): Record<string, unknown> {
  const facts = rootFactsOf(r);
  return {
    ID: r.id,
    Name: r.name,
    SerialNumber: facts.serialNumber,
    SigningKeyID: r.id,
    ExternalTrustDomain: trustDomain,
    NotBefore: new Date(r.notBeforeMs).toISOString(),
    NotAfter: new Date(r.notAfterMs).toISOString(),
    RootCert: r.rootCertificatePem,
    IntermediateCerts: intermediatesOf(r),
    Active: r.active,
    PrivateKeyType: facts.privateKeyType,
    PrivateKeyBits: facts.privateKeyBits,
    TrustDomainURI: trustDomainSpiffeId(trustDomain),
    CreateIndex: r.createIndex,
    ModifyIndex: r.modifyIndex,
  };
}

interface RootFacts {
  /** Consul's root serial is a uint64; Cairn's are 128-bit random, so the low 48 bits stand in (exact in JSON). */
  readonly serialNumber: number;
  /** The signing (intermediate) key as Consul names it: "ec", "rsa" or "ed25519", and its size. */
  readonly privateKeyType: string;
  readonly privateKeyBits: number;
}

/** Roots are few; the bound only guards against a pathological import history. */
const ROOT_FACTS_MAX = 64;
const rootFacts = new Map<string, RootFacts>();

function rootFactsOf(r: CaRoot): RootFacts {
  const key = `${r.id} ${r.intermediateCertificatePem}`;
  let facts = rootFacts.get(key);
  if (facts === undefined) {
    const signingKey = new X509Certificate(r.intermediateCertificatePem).publicKey;
    const details = signingKey.asymmetricKeyDetails;
    const curveBits: Readonly<Record<string, number>> = { prime256v1: 256, secp384r1: 384, secp521r1: 521 };
    facts = {
      serialNumber: Number(BigInt(`0x${new X509Certificate(r.rootCertificatePem).serialNumber}`) & 0xffff_ffff_ffffn),
      privateKeyType: signingKey.asymmetricKeyType ?? "unknown",
      privateKeyBits: details?.modulusLength ?? curveBits[details?.namedCurve ?? ""] ?? (signingKey.asymmetricKeyType === "ed25519" ? 256 : 0),
    };
    if (rootFacts.size >= ROOT_FACTS_MAX) rootFacts.clear();
    rootFacts.set(key, facts);
  }
  return facts;
}
