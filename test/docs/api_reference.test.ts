// docs/api.md is generated from the server's own declarations (src/api/reference.ts): this test
// renders it from a real node and fails when the committed page differs. `npm run docs:api`
// (UPDATE_DOCS=1) writes it instead.

import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { OpenApiDocument } from "../../src/api/openapi.js";
import { grpcServicesOf, renderApiReference } from "../../src/api/reference.js";
import { ProcessCluster } from "../support/cluster.js";
import { fileURLToPath } from "node:url";

/** From dist/test/docs/ up to the repository. */
const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));
const PROTOS = [
  { file: "cairn/registry/v1/watch.proto" },
  { file: "cairn/ca/v1/bundle.proto" },
  { file: "spiffe/workloadapi.proto", access: "served on the Workload API socket (--workload-socket), not the public port; no token: the caller is attested by its uid and gid (see workload-attestation.md)" },
];
const PAGE = join(repoRoot, "docs", "api.md");
const GRPC_METHODS_LINE = "public gRPC methods and the ACL rule each needs";

void describe("the API reference", { timeout: 60_000 }, () => {
  let cluster: ProcessCluster;
  before(async () => {
    cluster = await ProcessCluster.start(1, [], { acl: true });
    await cluster.bootstrapAcl();
    await cluster.agreedLeader();
  });
  after(() => cluster.close());

  test("docs/api.md is what the server's schemas, ACL rules and protos render to (npm run docs:api rewrites it)", async () => {
    const node = cluster.nodes[0];
    const doc = (await (await fetch(node.url("/v1/openapi.json"))).json()) as OpenApiDocument;
    const line = node.stdout.split("\n").find((l) => l.includes(GRPC_METHODS_LINE));
    assert.ok(line !== undefined, "the server logs its gRPC methods with their rules");
    const rules = (JSON.parse(line) as { methods: Record<string, string> }).methods;
    const page = renderApiReference(doc, grpcServicesOf(join(repoRoot, "proto"), PROTOS), rules);
    for (const path of ["/v1/registry/instances", "/v1/acl/token/{id}", "/v1/ca/sign"]) assert.ok(page.includes(`${path}\``), `the reference lists ${path}`);
    assert.ok(page.includes("FetchX509SVID"), "the reference lists the Workload API's methods");
    if (process.env.UPDATE_DOCS === "1") {
      writeFileSync(PAGE, page);
      return;
    }
    const committed = readFileSync(PAGE, "utf8");
    assert.ok(committed === page, "docs/api.md is stale: run `npm run docs:api` and commit it");
  });
});
