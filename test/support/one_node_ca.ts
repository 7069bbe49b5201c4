// A one-node Raft cluster in this process, with a CaState for a CertificateAuthority to run on:
// what the CA's own tests and the SDS module's tests start before each file.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Logger } from "pino";
import { CaState } from "../../src/ca/state.js";
import { KvStateMachine } from "../../src/kv/kv.js";
import { RaftDriver } from "../../src/raft/node/driver.js";
import { LevelLogStorage } from "../../src/raft/storage/leveldb.js";
import { PeerTransport } from "../../src/raft/transport/transport.js";
import { RegistryState } from "../../src/registry/state.js";
import { ClusterStateMachine } from "../../src/state/cluster.js";
import { freePort } from "./cluster.js";

export interface OneNodeCa {
  readonly driver: RaftDriver;
  readonly state: CaState;
  /** Stops the node and removes its data directory. */
  close(): Promise<void>;
}

/** Starts node n1 alone, its log in a fresh directory named after `prefix`, and its CA state empty. */
export async function startOneNodeCa(prefix: string, logger: Logger): Promise<OneNodeCa> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const peer = `127.0.0.1:${await freePort()}`;
  const state = new CaState();
  const driver = new RaftDriver({
    id: "n1",
    network: new PeerTransport({ selfId: "n1", clusterId: "test", listen: peer, logger }),
    initialCluster: new Map([["n1", peer]]),
    storage: await LevelLogStorage.open(join(dir, "raft")),
    stateMachine: new ClusterStateMachine({ kv: new KvStateMachine(), registry: new RegistryState(), ca: state }),
    logger,
  });
  await driver.start();
  return {
    driver,
    state,
    close: async () => {
      await driver.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
