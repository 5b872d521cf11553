import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import { describeQueueContract } from "../../src/testing/contracts/queue-contract.ts";

describeQueueContract(
  "MemoryQueue",
  async () => {
    const queue = new MemoryQueue();
    // The contract makes a listener throw on purpose; keep the warning out of the test output.
    queue.on("error", () => {});
    return {
      queue,
      events: queue,
      publishRaw: (bytes) => queue.publishRaw(bytes),
      deadLetters: async () => queue.deadLetters(),
      dispose: () => queue.close(),
    };
  },
  { quietMs: 50 },
);
