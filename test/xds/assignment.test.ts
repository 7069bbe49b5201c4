// The hand-assembled assignment is byte for byte what protobufjs encodes, in one call or in slices.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { SliceClock } from "../../src/common/slices.js";
import { EndpointEncoder } from "../../src/api/xds/assignment.js";
import { loadXdsProtos } from "../../src/api/xds/protos.js";
import { encodeLoadAssignment, localityEndpoints, passingCandidates, passingCandidatesInSlices } from "../../src/api/xds/resources.js";
import type { Check, Instance } from "../../src/registry/model.js";
import { SeededRandom } from "../../src/raft/core/random.js";

/** Seeded, so a failing sequence replays: numbers in [0, 1). */
function seeded(seed: number): () => number {
  const random = new SeededRandom(seed);
  return () => random.nextUint32() / 2 ** 32;
}

const critical: Check = { checkId: "c", name: "c", kind: "ttl", notes: "", ttlMs: 1000, target: "", intervalMs: 0, timeoutMs: 0, deregisterCriticalAfterMs: 0, status: "critical", output: "", statusSinceMs: 0 };

export function randomInstances(n: number, random: () => number): Instance[] {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)];
  return Array.from({ length: n }, (_, i) => ({
    id: `i-${Math.floor(random() * n * 4)}-${i}`, service: "web",
    // Few distinct addresses: duplicates, node addresses, IPv6 and names all occur.
    address: pick(["", "10.0.0.1", `10.1.${Math.floor(random() * 4)}.${Math.floor(random() * 250)}`, "fd00::7", "web.internal", `10.2.${i >> 8 & 255}.${i & 255}`]),
    port: pick([80, 8080, 0, 443 + Math.floor(random() * 3)]), tags: [], meta: {},
    weights: { passing: pick([0, 1, 3, 100_000]), warning: 1 }, zone: pick(["", "a", "b", "eu-west-1"]),
    node: "n1", nodeAddress: pick(["192.168.0.1", "127.0.0.1", "node.local"]),
    checks: random() < 0.1 ? [critical] : [], createIndex: 1, modifyIndex: 1,
  }));
}

void describe("xDS assignment assembly", () => {
  void test("the assembled assignment equals encodeLoadAssignment's bytes for random inputs, in one call and in slices", async () => {
    const protos = await loadXdsProtos();
    const random = seeded(7);
    for (const n of [0, 1, 2, 5, 40, 300, 3000]) {
      for (let round = 0; round < 3; round++) {
        const instances = randomInstances(n, random);
        const encoder = new EndpointEncoder(protos);
        const { localities } = passingCandidates(instances);
        const expected = encodeLoadAssignment(protos, `svc-${n}`, localities.map(localityEndpoints));
        const whole = encoder.assemble(`svc-${n}`, localities);
        assert.deepEqual(Buffer.from(whole.bytes), Buffer.from(expected), `${n} instances, in one call`);
        // A tiny budget makes the sliced path yield as often as it can.
        const sliced = await passingCandidatesInSlices(instances, new SliceClock(0));
        assert.deepEqual(sliced.localities, localities, `${n} instances: the same candidates in slices`);
        const inSlices = await encoder.assembleInSlices(`svc-${n}`, sliced.localities, new SliceClock(0));
        assert.deepEqual(Buffer.from(inSlices.bytes), Buffer.from(expected), `${n} instances, in slices`);
        assert.equal(inSlices.sha256Hex, whole.sha256Hex);
      }
    }
  });
});
