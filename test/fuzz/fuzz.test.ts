// The fuzzer in CI: a bounded campaign against a real `cairn server`, every HTTP route (from the
// node's own OpenAPI document) and every public gRPC method, with mutated CSRs and ACL policies.
// `npm run fuzz -- --cases 100000` runs the same campaign longer.

import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { after, before, describe, test } from "node:test";
import { grpcMethods, type GrpcMethod } from "./grpc_cases.js";
import { runCampaign } from "./runner.js";
import { type FuzzTarget, startTarget } from "./target.js";

/** Sized to finish in well under a minute on two cores, beside the node it fuzzes. */
const CI_CASES = 2000;
/** Fixed, so a CI failure replays; FUZZ_SEED picks another. */
const CI_SEED = Number(process.env.FUZZ_SEED ?? 20_261_202);
/** grpc-js's answer for a method no service registered. */
const NOT_REGISTERED = /does not implement the method/;

function callEmpty(client: grpc.Client, m: GrpcMethod): Promise<{ code: grpc.status; details: string }> {
  const identity = (b: Buffer): Buffer => b;
  const md = new grpc.Metadata();
  md.set("workload.spiffe.io", "true");
  return new Promise((resolve) => {
    const done = (code: grpc.status, details: string, cancel?: () => void): void => { cancel?.(); resolve({ code, details }); };
    if (!m.requestStream && !m.responseStream) {
      client.makeUnaryRequest(m.path, identity, identity, Buffer.alloc(0), md, { deadline: Date.now() + 5000 }, (err) => done(err?.code ?? grpc.status.OK, err?.details ?? ""));
      return;
    }
    const call = m.requestStream ? client.makeBidiStreamRequest(m.path, identity, identity, md) : client.makeServerStreamRequest(m.path, identity, identity, Buffer.alloc(0), md);
    call.on("data", () => done(grpc.status.OK, "answered", () => call.cancel()));
    call.on("error", (err: grpc.ServiceError) => done(err.code, err.details));
    // A stream that stays open without a word is served (a watch with nothing to say yet).
    setTimeout(() => done(grpc.status.OK, "open", () => call.cancel()), 500);
  });
}

void describe("fuzzing a running node", () => {
  let target: FuzzTarget;

  before(async () => {
    target = await startTarget(1);
  });

  after(async () => {
    await target.cluster.close();
  });

  void test("every public gRPC method the fuzzer calls is served by the node", async () => {
    const methods = await grpcMethods();
    assert.ok(methods.length >= 7, `only ${methods.length} methods: ${methods.map((m) => m.path).join(", ")}`);
    for (const m of methods) {
      const client = new grpc.Client(m.workloadSocket ? `unix://${target.workloadSocket}` : target.grpcAddresses[0], grpc.credentials.createInsecure());
      try {
        const r = await callEmpty(client, m);
        assert.doesNotMatch(r.details, NOT_REGISTERED, `${m.path} is not served: the fuzzer's method list and the server disagree`);
      } finally {
        client.close();
      }
    }
  });

  void test(`${CI_CASES} random and mutated requests: no 5xx, no hang, no crash, no state change from a rejected request`, async () => {
    const result = await runCampaign(target, { cases: CI_CASES, seed: CI_SEED, requestBoundMs: 5000, batchCases: 50 });
    const tally = [...result.tally].map(([k, v]) => `${v} ${k}`).join("; ");
    assert.equal(result.failed, false, `${result.error ?? ""}\ncounterexample:\n  ${result.counterexample ?? ""}\nreplay: npm run fuzz -- --cases ${CI_CASES} --seed ${result.seed} --path ${result.path ?? ""}\nanswers: ${tally}`);
    assert.equal(result.cases, CI_CASES);
    // The cases reached past validation: some were accepted and some streams opened.
    assert.ok((result.tally.get("http 200") ?? 0) > 0, `no request was accepted: ${tally}`);
    assert.ok((result.tally.get("grpc data") ?? 0) > 0, `no gRPC call was answered: ${tally}`);
  });
});
