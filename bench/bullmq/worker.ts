/**
 * Baseline (b) worker process: a BullMQ Worker with a no-op processor.
 * Args: --queue NAME --concurrency N
 */
import { Worker } from "bullmq";
import { childArgs, serveChild, signalFatal, signalReady } from "../lib/child.ts";
import { nowMs } from "../lib/cpu.ts";
import { createRedis } from "../lib/redis.ts";

const args = childArgs();
let completed = 0;
let failed = 0;
let lastCompletedAt = 0;

try {
  const worker = new Worker(args.queue!, async () => null, {
    connection: createRedis(),
    concurrency: Number(args.concurrency ?? 16),
    autorun: false,
  });
  worker.on("completed", () => {
    completed++;
    lastCompletedAt = nowMs();
  });
  worker.on("failed", () => failed++);
  worker.on("error", () => {});
  await worker.waitUntilReady();
  serveChild(
    {
      start: () => {
        void worker.run().catch(() => {});
        return null;
      },
      stats: () => ({ completed, failed, lastCompletedAt }),
    },
    { onExit: () => worker.close(true) },
  );
  signalReady();
} catch (err) {
  signalFatal(err);
}
