/**
 * BullMQ baseline worker process: a BullMQ Worker with a no-op processor. A job whose data carries
 * `enqueuedAt` (a paced latency run) records add call → processor's first line and add call →
 * `completed`, as the product's `stamp` handler does.
 * Args: --queue NAME --concurrency N [--port P]
 */
import { Worker, type Job } from "bullmq";
import { childArgs, serveChild, signalFatal, signalReady } from "../lib/child.ts";
import { nowMs } from "../lib/cpu.ts";
import { createRedis } from "../lib/redis.ts";

const args = childArgs();
let completed = 0;
let failed = 0;
let lastCompletedAt = 0;
let dispatchMs: number[] = [];
let settledMs: number[] = [];

try {
  const processor = async (job: Job<{ enqueuedAt?: number }>): Promise<null> => {
    const enqueuedAt = job.data.enqueuedAt;
    if (enqueuedAt !== undefined) dispatchMs.push(nowMs() - enqueuedAt);
    return null;
  };
  const worker = new Worker(args.queue!, processor, {
    connection: createRedis(args.port === undefined ? undefined : Number(args.port)),
    concurrency: Number(args.concurrency ?? 16),
    autorun: false,
  });
  worker.on("completed", (job: Job<{ enqueuedAt?: number }>) => {
    completed++;
    lastCompletedAt = nowMs();
    const enqueuedAt = job.data.enqueuedAt;
    if (enqueuedAt !== undefined) settledMs.push(lastCompletedAt - enqueuedAt);
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
      /** The paced samples recorded since the last call (then forgotten). */
      latencies: () => {
        const out = { dispatchMs, settledMs };
        dispatchMs = [];
        settledMs = [];
        return out;
      },
    },
    { onExit: () => worker.close(true) },
  );
  signalReady();
} catch (err) {
  signalFatal(err);
}
