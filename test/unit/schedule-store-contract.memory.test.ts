import { MemoryScheduleStore } from "../../src/schedule/memory-schedule-store.ts";
import { describeScheduleStoreContract } from "../../src/testing/contracts/schedule-store-contract.ts";

describeScheduleStoreContract("MemoryScheduleStore", async () => {
  const store = new MemoryScheduleStore();
  return { store, connectPeer: async () => store, dispose: () => store.close() };
});
