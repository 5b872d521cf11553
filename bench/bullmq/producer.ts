/**
 * BullMQ baseline producer process: adds no-op jobs to a BullMQ queue with `addBulk`, in chunks;
 * or one job per `add` call at a fixed rate (`paced`), each carrying the time of its call.
 * Args: --queue NAME [--port P]
 */
import { setTimeout as sleep } from "node:timers/promises";
import { Queue } from "bullmq";
import { childArgs, serveChild, signalFatal, signalReady } from "../lib/child.ts";
import { nowMs } from "../lib/cpu.ts";
import { createRedis } from "../lib/redis.ts";

// Completed jobs are removed, as a production user of no-op-sized jobs would configure.
const OPTS = { removeOnComplete: true, removeOnFail: true } as const;

try {
  const args = childArgs();
  const queue = new Queue(args.queue!, { connection: createRedis(args.port === undefined ? undefined : Number(args.port)) });
  queue.on("error", () => {});
  await queue.waitUntilReady();
  serveChild(
    {
      add: async ({ count, chunk = 500 }: { count: number; chunk?: number }) => {
        const firstAddAt = nowMs();
        for (let done = 0; done < count; done += chunk) {
          const n = Math.min(chunk, count - done);
          await queue.addBulk(Array.from({ length: n }, () => ({ name: "noop", data: {}, opts: OPTS })));
        }
        return { firstAddAt, lastAddAt: nowMs() };
      },
      /**
       * Adds jobs open-loop at `ratePerSecond` for `seconds`, one `add` call each, without waiting
       * for one to return before the next (as the other producers' paced runs do).
       */
      paced: async ({ ratePerSecond, seconds }: { ratePerSecond: number; seconds: number }) => {
        const total = Math.max(1, Math.round(ratePerSecond * seconds));
        const gapMs = 1000 / ratePerSecond;
        const adds: Promise<unknown>[] = [];
        const start = nowMs();
        for (let i = 0; i < total; i++) {
          const wait = start + i * gapMs - nowMs();
          if (wait > 1) await sleep(wait);
          adds.push(queue.add("stamp", { enqueuedAt: nowMs() }, OPTS));
        }
        await Promise.all(adds);
        return { sent: total, achievedRate: (total * 1000) / (nowMs() - start) };
      },
    },
    { onExit: () => queue.close() },
  );
  signalReady();
} catch (err) {
  signalFatal(err);
}
