// LevelLogStorage keeps the LogStorage contract on a real LevelDB. A restart closes the store and
// opens its directory again.

import { LevelLogStorage } from "../../src/raft/storage/leveldb.js";
import { makeScratch, removeScratch } from "../support/level_scratch.js";
import { type StoreUnderContract, logStorageContract } from "./storage_contract.js";

const level: StoreUnderContract<LevelLogStorage> = {
  name: "LevelLogStorage",
  harness: async () => {
    const scratch = await makeScratch();
    return {
      create: () => scratch.open(),
      reopen: async (store) => {
        await store.close();
        return scratch.open();
      },
      dispose: () => removeScratch(scratch),
    };
  },
};

logStorageContract(level);
