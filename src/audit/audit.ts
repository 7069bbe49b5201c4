// The audit log: one JSON line (pino) per write to the cluster and per certificate this node
// signs, appended to its own file, apart from the operational log. Each line names the time, this
// node, the operation, its outcome and who asked (the token's accessor, never its secret). No
// secret, token or key ever goes in: records are built here from named fields only, never from a
// request's headers or body.

import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { pino, type Logger } from "pino";

/** Who asked, when the token presented maps to no accessor (no token, or ACLs off). */
export const ANONYMOUS_ACCESSOR = "anonymous";

/**
 * Maps the secret a request presented (or undefined for none) to its token's AccessorID. The
 * ACL module sets it; until then every caller is anonymous. It must not throw, and must answer
 * undefined for a secret it does not know: the secret itself is never logged.
 */
export type AccessorResolver = (presentedSecret: string | undefined) => string | undefined;

let resolveAccessor: AccessorResolver = () => undefined;

/** Sets how audit records name who asked; see AccessorResolver. */
export function setAccessorResolver(resolver: AccessorResolver): void {
  resolveAccessor = resolver;
}

/** The accessor to record for a presented secret: the resolver's answer, or "anonymous". */
export function accessorOf(presentedSecret: string | undefined): string {
  return resolveAccessor(presentedSecret) ?? ANONYMOUS_ACCESSOR;
}

/** A write through the HTTP API, once it is answered. */
export interface RequestRecord {
  /** What was done, in the audit's words: "kv.put", "service.register", "ca.rotate". */
  readonly operation: string;
  readonly method: string;
  /** The route's pattern, e.g. /v1/kv/:key. */
  readonly route: string;
  /** The path asked, without its query string (which may carry ?token=). */
  readonly path: string;
  readonly status: number;
  readonly accessor: string;
  readonly remote: string;
  readonly durationMs: number;
}

/** A certificate this node signed, as it is handed out. */
export interface CertificateRecord {
  readonly spiffeId: string;
  readonly serial: string;
  readonly notAfter: string;
  readonly rootId: string;
  readonly accessor: string;
  /** Where the request came from: "http 10.0.0.7", "workload api". */
  readonly origin: string;
}

export type AuditOutcome = "ok" | "refused" | "failed";

/** 2xx is done, 4xx the caller's request was refused, 5xx the node failed it. */
export function outcomeOf(status: number): AuditOutcome {
  return status < 400 ? "ok" : status < 500 ? "refused" : "failed";
}

export class AuditLog {
  private readonly log: Logger;
  private readonly destination: ReturnType<typeof pino.destination>;

  /**
   * Appends to `file`, creating it and its directory. Writes are synchronous: an audit line is in
   * the kernel's hands before the certificate it records is handed out, and a kill -9 loses none.
   */
  constructor(readonly file: string, node: string) {
    mkdirSync(dirname(file), { recursive: true });
    this.destination = pino.destination({ dest: file, sync: true, append: true });
    this.log = pino({ base: { node }, timestamp: pino.stdTimeFunctions.isoTime, messageKey: "event" }, this.destination);
  }

  request(record: RequestRecord): void {
    this.log.info({ kind: "request", ...record, outcome: outcomeOf(record.status) }, "write");
  }

  certificate(record: CertificateRecord): void {
    this.log.info({ kind: "certificate", ...record, outcome: "ok" }, "certificate issued");
  }

  close(): void {
    this.destination.flushSync();
    this.destination.end();
  }
}
