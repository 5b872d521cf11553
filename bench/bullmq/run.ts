/**
 * Baseline (b), BullMQ on the local Redis: a producer process adding jobs with `addBulk`, worker
 * processes with a no-op processor at the same total concurrency as the product. Each round uses
 * a fresh queue name and obliterates it after, whatever happens.
 */
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { Queue } from "bullmq";
import { ExternalCpu, nowMs } from "../lib/cpu.ts";
import { startChildren, stopAll, type ChildHandle } from "../lib/proc.ts";
import { createRedis } from "../lib/redis.ts";
import { cpuByRole, throughputRound, type ThroughputRound } from "../lib/throughput.ts";

/** Shape of one round. */
export interface BullmqRoundOptions {
  jobs: number;
  warmupJobs: number;
  workers: number;
  concurrencyPerWorker: number;
  timeoutMs: number;
}

interface WorkerStats {
  completed: number;
  failed: number;
  lastCompletedAt: number;
}

async function waitCompleted(workers: readonly ChildHandle[], total: number, deadline: number): Promise<WorkerStats> {
  for (;;) {
    const stats = await Promise.all(workers.map((w) => w.request<WorkerStats>("stats")));
    const sum = stats.reduce((acc, s) => ({ completed: acc.completed + s.completed, failed: acc.failed + s.failed, lastCompletedAt: Math.max(acc.lastCompletedAt, s.lastCompletedAt) }), { completed: 0, failed: 0, lastCompletedAt: 0 });
    if (sum.failed > 0) throw new Error(`BullMQ baseline: ${sum.failed} no-op jobs failed`);
    if (sum.completed >= total) return sum;
    if (Date.now() > deadline) throw new Error(`BullMQ baseline: ${sum.completed} of ${total} jobs completed in time`);
    await sleep(20);
  }
}

/** Runs one round of the BullMQ baseline. */
export async function runBullmqRound(options: BullmqRoundOptions): Promise<ThroughputRound> {
  const name = `bench-bullmq-${randomUUID()}`;
  const children: ChildHandle[] = [];
  const deadline = Date.now() + options.timeoutMs;
  try {
    const started = await startChildren([
      { script: new URL("./producer.ts", import.meta.url), options: { name: "bullmq-producer", args: ["--queue", name] } },
      ...Array.from({ length: options.workers }, (_, i) => ({
        script: new URL("./worker.ts", import.meta.url),
        options: { name: `bullmq-worker-${i}`, args: ["--queue", name, "--concurrency", String(options.concurrencyPerWorker)] },
      })),
    ]);
    children.push(...started);
    const [producer, ...workers] = started;
    await Promise.all(workers.map((w) => w.request("start")));

    if (options.warmupJobs > 0) {
      await producer!.request("add", { count: options.warmupJobs }, options.timeoutMs);
      await waitCompleted(workers, options.warmupJobs, deadline);
    }

    const roles = { producer: [producer!], workers };
    const redis = new ExternalCpu("redis-server");
    const before = await cpuByRole(roles);
    redis.start();
    const added = await producer!.request<{ firstAddAt: number }>("add", { count: options.jobs }, options.timeoutMs);
    const done = await waitCompleted(workers, options.warmupJobs + options.jobs, deadline);
    const redisUs = redis.stop();
    const after = await cpuByRole(roles);
    const elapsedMs = done.lastCompletedAt - added.firstAddAt;
    return throughputRound(options.jobs, elapsedMs, { before, after, brokerUs: redisUs });
  } finally {
    await stopAll(children);
    const connection = createRedis();
    const queue = new Queue(name, { connection });
    queue.on("error", () => {});
    await queue.obliterate({ force: true }).catch(() => {});
    await queue.close().catch(() => {});
    connection.disconnect();
  }
}

// Lets `node bench/bullmq/run.ts` measure this baseline alone.
if (import.meta.main) {
  const t0 = nowMs();
  const round = await runBullmqRound({ jobs: Number(process.argv[2] ?? 20_000), warmupJobs: 2000, workers: 4, concurrencyPerWorker: 16, timeoutMs: 120_000 });
  console.log(JSON.stringify({ ...round, wallMs: Math.round(nowMs() - t0) }, null, 2));
}
