/**
 * Baseline (b) producer process: adds no-op jobs to a BullMQ queue with `addBulk`, in chunks.
 * Args: --queue NAME
 */
import { Queue } from "bullmq";
import { childArgs, serveChild, signalFatal, signalReady } from "../lib/child.ts";
import { nowMs } from "../lib/cpu.ts";
import { createRedis } from "../lib/redis.ts";

try {
  const queue = new Queue(childArgs().queue!, { connection: createRedis() });
  queue.on("error", () => {});
  await queue.waitUntilReady();
  serveChild(
    {
      add: async ({ count, chunk = 500 }: { count: number; chunk?: number }) => {
        const firstAddAt = nowMs();
        for (let done = 0; done < count; done += chunk) {
          const n = Math.min(chunk, count - done);
          // Completed jobs are removed, as a production user of no-op-sized jobs would configure.
          await queue.addBulk(Array.from({ length: n }, () => ({ name: "noop", data: {}, opts: { removeOnComplete: true, removeOnFail: true } })));
        }
        return { firstAddAt, lastAddAt: nowMs() };
      },
    },
    { onExit: () => queue.close() },
  );
  signalReady();
} catch (err) {
  signalFatal(err);
}
