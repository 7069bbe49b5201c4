// Every write through the HTTP API goes to the audit log once answered, whatever its outcome: a
// refused or failed write is as much the auditor's business as a done one. One hook for every
// route, so a write route added anywhere is audited without being listed; the table below only
// gives the known ones their names.

import type { FastifyInstance } from "fastify";
import { presentedToken } from "../acl/presented.js";
import { type AuditLog, accessorOf } from "../audit/audit.js";

/** The longest path recorded: a record stays one readable line however long the path asked. */
const PATH_CHARS_MAX = 512;

/** Methods that change nothing; every other method is a write. */
const READ_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/** "METHOD route" to the operation the audit names; a route not listed is named by the same words. */
const OPERATIONS: Readonly<Record<string, string>> = {
  "PUT /v1/kv/:key": "kv.put",
  "DELETE /v1/kv/:key": "kv.delete",
  "POST /v1/registry/instances": "service.register",
  "DELETE /v1/registry/instances/:id": "service.deregister",
  "PUT /v1/registry/checks/:checkId": "check.update",
  "PUT /v1/agent/service/register": "service.register",
  "PUT /v1/agent/service/deregister/:id": "service.deregister",
  "PUT /v1/agent/check/pass/:id": "check.update",
  "PUT /v1/agent/check/warn/:id": "check.update",
  "PUT /v1/agent/check/fail/:id": "check.update",
  "PUT /v1/agent/check/update/:id": "check.update",
  "POST /v1/ca/sign": "ca.sign",
  "POST /v1/ca/rotate": "ca.rotate",
  "POST /v1/ca/import": "ca.import",
  "POST /v1/cluster/members": "membership.add",
  "DELETE /v1/cluster/members/:id": "membership.remove",
  "POST /v1/cluster/leader": "leader.transfer",
  "PUT /v1/snapshot": "snapshot.restore",
  "PUT /v1/connect/intentions/exact": "intention.upsert",
  "DELETE /v1/connect/intentions/exact": "intention.delete",
  // A read that Consul makes a POST: audited like any, since a proxy's refusals are the auditor's business too.
  "POST /v1/agent/connect/authorize": "intention.authorize",
};

/** The audit's name for a write on `route`: from the table, else acl.* for ACL routes, else the method and route. */
export function operationOf(method: string, route: string): string {
  const known = OPERATIONS[`${method} ${route}`];
  if (known !== undefined) return known;
  if (route.startsWith("/v1/acl/")) return `acl.${method.toLowerCase()} ${route}`;
  return `${method} ${route}`;
}

/** Audits every write `app` answers on a route it has; 404s and 405s reach no route and change nothing. */
export function auditWrites(app: FastifyInstance, audit: AuditLog): void {
  app.addHook("onResponse", (req, reply, done) => {
    const route = req.routeOptions.url;
    if (READ_METHODS.has(req.method) || route === undefined || req.is404) {
      done();
      return;
    }
    const q = req.url.indexOf("?");
    audit.request({
      operation: operationOf(req.method, route),
      method: req.method,
      route,
      path: (q < 0 ? req.url : req.url.slice(0, q)).slice(0, PATH_CHARS_MAX),
      status: reply.statusCode,
      accessor: accessorOf(presentedToken(req.headers)),
      remote: req.ip,
      durationMs: Math.round(reply.elapsedTime),
    });
    done();
  });
}
