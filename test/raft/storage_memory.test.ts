// MemoryLogStorage keeps the LogStorage contract, so the simulator's nodes store their logs as
// production ones do. A restart is a crash that keeps every write: a clean process exit loses
// nothing.

import { MemoryLogStorage } from "../../src/raft/storage/memory.js";
import { type StoreUnderContract, logStorageContract } from "./storage_contract.js";

const memory: StoreUnderContract<MemoryLogStorage> = {
  name: "MemoryLogStorage",
  harness: () => Promise.resolve({
    create: () => Promise.resolve(new MemoryLogStorage()),
    reopen: async (store) => {
      await store.close();
      return store.crash(store.unsyncedWrites);
    },
    dispose: () => Promise.resolve(),
  }),
};

logStorageContract(memory);
