// Backup and restore over HTTP, on Consul's paths: GET /v1/snapshot saves (the answer is the
// snapshot file, its index in X-Consul-Index) and PUT /v1/snapshot restores (the body is the
// file). The file is Cairn's own format (src/state/snapshot_file.ts), not Consul's.

import { Readable } from "node:stream";
import type { FastifyError, FastifyInstance, FastifyReply } from "fastify";
import type { RaftDriver } from "../raft/node/driver.js";
import { SNAPSHOT_RESTORE_BYTES_MAX } from "../state/restore.js";
import { SnapshotFileError, snapshotHeaderJson } from "../state/snapshot_file.js";
import { SnapshotConflictError, type SnapshotService, SnapshotTooLargeError } from "../state/snapshots.js";
import { ConsulBadRequest } from "./consul/decode.js";
import { goBool } from "./consul/routes.js";
import { sendError } from "./errors.js";
import { type RouteAcl, accessorOf } from "./acl/enforce.js";

/** A restore's request body, at most: the largest body a restore takes, and room for the file's header. */
export const SNAPSHOT_FILE_BYTES_MAX = SNAPSHOT_RESTORE_BYTES_MAX + 64 * 1024;

const SNAPSHOT_TAGS = ["snapshot"];

/**
 * The file holds the CA's keys (sealed only when the cluster has a KEK) and every token's hash,
 * and a restore replaces the whole state: both are the operator's, as Consul keeps them to a
 * management token.
 */
const operatorWrite: RouteAcl = { need: "operator", access: "write" };

const headerJson = {
  type: "object",
  description: "the snapshot's header: where and when it was taken",
  properties: {
    formatVersion: { type: "integer" },
    clusterId: { type: "string" },
    nodeId: { type: "string", description: "the node that served it" },
    index: { type: "integer", description: "the Raft index its state was captured at" },
    term: { type: "integer", description: "the term of that index's entry" },
    takenAt: { type: "string", description: "when, by the serving node's clock (RFC 3339)" },
    bodyBytes: { type: "integer" },
    sha256: { type: "string", description: "SHA-256 of the body, hex" },
  },
} as const;

const restoreAnswer = {
  type: "object",
  properties: {
    index: { type: "integer", description: "the index the restore committed at: from there on every node holds the snapshot's state" },
    snapshot: headerJson,
    sections: {
      type: "array",
      items: {
        type: "object",
        properties: { name: { type: "string" }, summary: { type: "object", additionalProperties: { type: ["integer", "string"] } } },
      },
    },
    chunks: { type: "integer", description: "Raft entries the body was sent in" },
    forced: { type: "boolean", description: "true when ?force let in a snapshot of another cluster" },
  },
} as const;

export interface SnapshotRouteDeps {
  readonly snapshots: SnapshotService;
  readonly driver: RaftDriver;
}

export function snapshotRoutes(app: FastifyInstance, deps: SnapshotRouteDeps): void {
  void app.register((scope, _opts, done) => {
    routes(scope, deps);
    done();
  });
}

function routes(app: FastifyInstance, { snapshots, driver }: SnapshotRouteDeps): void {
  const fail = (reply: FastifyReply, err: unknown): FastifyReply => {
    if (err instanceof SnapshotFileError) return reply.code(400).send({ error: err.message, problem: err.problem });
    if (err instanceof SnapshotConflictError) return reply.code(409).send({ error: err.message, conflict: err.conflict });
    if (err instanceof SnapshotTooLargeError) return reply.code(413).send({ error: err.message });
    if (err instanceof ConsulBadRequest) return reply.code(400).send({ error: err.message });
    return sendError(reply, err, (id) => driver.peerAddressOf(id));
  };
  // The body is the file's bytes, whatever Content-Type the client sent (curl --data-binary sends a form type).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", { parseAs: "buffer", bodyLimit: SNAPSHOT_FILE_BYTES_MAX }, (_req, body, done) => done(null, body));
  app.setErrorHandler((err: FastifyError, _req, reply) => {
    if (err.statusCode === 413) {
      return reply.code(413).send({ error: `the body is larger than ${SNAPSHOT_FILE_BYTES_MAX} bytes: a restore takes a snapshot of at most ${SNAPSHOT_RESTORE_BYTES_MAX} bytes (SNAPSHOT_RESTORE_BYTES_MAX)` });
    }
    const status = err.statusCode ?? 500;
    if (status < 500) return reply.code(status).send({ error: err.message });
    return fail(reply, err);
  });

  app.get("/v1/snapshot", {
    config: { acl: operatorWrite },
    schema: {
      summary: "Save a snapshot of the whole state (registry, CA, ACLs, key/value), consistent at one index after a linearizable read; any node serves it",
      description: "The answer is the snapshot file (application/octet-stream); X-Consul-Index and X-Cairn-Index name the index it was taken at",
      tags: SNAPSHOT_TAGS,
      response: { 200: { type: "string", format: "binary", description: "the snapshot file: see docs/operations.md" } },
    },
  }, async (req, reply) => {
    try {
      const saved = await snapshots.save();
      const { header } = saved;
      // A snapshot carries the CA's keys: who took one is worth a line, by accessor (never the secret).
      req.log.info({ index: header.index, accessor: accessorOf(req), remote: req.ip }, "snapshot served");
      return await reply
        .type("application/octet-stream")
        .header("content-length", String(saved.fileBytes))
        .header("content-disposition", `attachment; filename="cairn-${header.clusterId}-${header.index}.snap"`)
        .header("x-consul-index", String(header.index))
        .header("x-cairn-index", String(header.index))
        .send(Readable.from(saved.chunks, { objectMode: false }));
    } catch (err) {
      return fail(reply, err);
    }
  });

  app.put<{ Querystring: { force?: string } }>("/v1/snapshot", {
    bodyLimit: SNAPSHOT_FILE_BYTES_MAX,
    config: { acl: operatorWrite },
    schema: {
      summary: "Restore a snapshot through Raft: every node replaces its whole state with it; membership is unchanged",
      description: "The body is a snapshot file. It is checked whole (format, checksums, every section) before anything changes; a snapshot of another cluster is refused (409) unless ?force",
      tags: SNAPSHOT_TAGS,
      querystring: { type: "object", properties: { force: { type: "string", description: "restore a snapshot taken from another cluster" } } },
      response: { 200: restoreAnswer },
    },
  }, async (req, reply) => {
    try {
      const force = goBool("force", req.query.force);
      const body = req.body;
      if (!(body instanceof Buffer) || body.byteLength === 0) {
        return reply.code(400).send({ error: "the body is empty: send the snapshot file as the body (cairn snapshot restore FILE, or curl -X PUT --data-binary @FILE)" });
      }
      const restored = await snapshots.restore(body, { force });
      return reply.header("x-cairn-index", String(restored.index)).send({ ...restored, snapshot: snapshotHeaderJson(restored.snapshot) });
    } catch (err) {
      return fail(reply, err);
    }
  });
}
