import { MemoryJobStore } from "../../src/store/memory-job-store.ts";
import { describeJobStoreContract } from "../../src/testing/contracts/job-store-contract.ts";

describeJobStoreContract("MemoryJobStore", async (options) => {
  const store = new MemoryJobStore(options);
  return { store, connectPeer: async () => store, dispose: () => store.close() };
});
