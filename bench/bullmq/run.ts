/**
 * The BullMQ baseline: a producer process adding jobs with `addBulk`, worker processes with a
 * no-op processor at the same total concurrency as the product, on the Redis at `port` (the
 * bench's private servers, one per persistence setting; see lib/redis-servers.ts). Each round
 * uses a fresh queue name and obliterates it after, whatever happens.
 */
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { Queue } from "bullmq";
import type { PacedLatency } from "../baseline/run.ts";
import { ExternalCpu, nowMs } from "../lib/cpu.ts";
import { startChildren, stopAll, type ChildHandle } from "../lib/proc.ts";
import { createRedis, REDIS_PORT } from "../lib/redis.ts";
import { cpuByRole, throughputRound, type ThroughputRound } from "../lib/throughput.ts";

/** Where the baseline runs: the Redis port, and that server's pid for its CPU (by name when absent). */
export interface BullmqTarget {
  /** @default REDIS_PORT (the machine's Redis) */
  port?: number;
  /** Pid of the redis-server at `port`; without it every `redis-server` process on the machine is counted. */
  redisPid?: number;
}

/** Shape of one round. */
export interface BullmqRoundOptions extends BullmqTarget {
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

/** A running BullMQ deployment on a fresh queue. */
interface BullmqSystem {
  producer: ChildHandle;
  workers: ChildHandle[];
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

/** Runs `fn` on fresh processes and a fresh queue (workers running), obliterating the queue after whatever happens. */
async function withBullmqSystem<T>(options: BullmqTarget & { workers: number; concurrencyPerWorker: number }, fn: (system: BullmqSystem) => Promise<T>): Promise<T> {
  const name = `bench-bullmq-${randomUUID()}`;
  const port = options.port ?? REDIS_PORT;
  const children: ChildHandle[] = [];
  try {
    const started = await startChildren([
      { script: new URL("./producer.ts", import.meta.url), options: { name: "bullmq-producer", args: ["--queue", name, "--port", String(port)] } },
      ...Array.from({ length: options.workers }, (_, i) => ({
        script: new URL("./worker.ts", import.meta.url),
        options: { name: `bullmq-worker-${i}`, args: ["--queue", name, "--concurrency", String(options.concurrencyPerWorker), "--port", String(port)] },
      })),
    ]);
    children.push(...started);
    const [producer, ...workers] = started;
    await Promise.all(workers.map((w) => w.request("start")));
    return await fn({ producer: producer!, workers });
  } finally {
    await stopAll(children);
    const connection = createRedis(port);
    const queue = new Queue(name, { connection });
    queue.on("error", () => {});
    await queue.obliterate({ force: true }).catch(() => {});
    await queue.close().catch(() => {});
    connection.disconnect();
  }
}

/** Runs one round of the BullMQ baseline. */
export async function runBullmqRound(options: BullmqRoundOptions): Promise<ThroughputRound> {
  const deadline = Date.now() + options.timeoutMs;
  return withBullmqSystem(options, async ({ producer, workers }) => {
    if (options.warmupJobs > 0) {
      await producer.request("add", { count: options.warmupJobs }, options.timeoutMs);
      await waitCompleted(workers, options.warmupJobs, deadline);
    }
    const roles = { producer: [producer], workers };
    const redis = new ExternalCpu(options.redisPid === undefined ? "redis-server" : [options.redisPid]);
    const before = await cpuByRole(roles);
    redis.start();
    const added = await producer.request<{ firstAddAt: number }>("add", { count: options.jobs }, options.timeoutMs);
    const done = await waitCompleted(workers, options.warmupJobs + options.jobs, deadline);
    const redisUs = redis.stop();
    const after = await cpuByRole(roles);
    const elapsedMs = done.lastCompletedAt - added.firstAddAt;
    return throughputRound(options.jobs, elapsedMs, { before, after, brokerUs: redisUs });
  });
}

/**
 * BullMQ's latency at a fixed rate, as a same-run reference for the product's: 2,000 warm-up
 * jobs, then jobs added open-loop at `ratePerSecond` for `seconds`. *Dispatch* is the `add` call →
 * the processor's first line; *settled* is the `add` call → the worker's `completed` event.
 */
export async function measureBullmqLatency(options: BullmqTarget & { ratePerSecond: number; seconds: number; workers: number; slotsPerWorker: number }): Promise<PacedLatency> {
  return withBullmqSystem({ ...options, concurrencyPerWorker: options.slotsPerWorker }, async ({ producer, workers }) => {
    await producer.request("add", { count: 2000 }, 120_000);
    await waitCompleted(workers, 2000, Date.now() + 120_000);
    const { sent, achievedRate } = await producer.request<{ sent: number; achievedRate: number }>(
      "paced",
      { ratePerSecond: options.ratePerSecond, seconds: options.seconds },
      options.seconds * 1000 + 60_000,
    );
    const dispatchMs: number[] = [];
    const settledMs: number[] = [];
    const deadline = Date.now() + 60_000;
    while (settledMs.length < sent) {
      if (Date.now() > deadline) throw new Error(`BullMQ completed ${settledMs.length} of ${sent} paced jobs within 60 s`);
      for (const got of await Promise.all(workers.map((w) => w.request<{ dispatchMs: number[]; settledMs: number[] }>("latencies")))) {
        dispatchMs.push(...got.dispatchMs);
        settledMs.push(...got.settledMs);
      }
      if (settledMs.length < sent) await sleep(50);
    }
    return { dispatchMs, settledMs, achievedRate };
  });
}

// Lets `node bench/bullmq/run.ts [jobs] [persistence]` measure this baseline alone, on a private server.
if (import.meta.main) {
  const { startRedisServers } = await import("../lib/redis-servers.ts");
  const { killAllChildren } = await import("../lib/proc.ts");
  process.on("exit", killAllChildren);
  const persistence = (process.argv[3] ?? "none") as "none" | "everysec" | "always";
  const server = (await startRedisServers([persistence])).get(persistence)!;
  try {
    const t0 = nowMs();
    const round = await runBullmqRound({ jobs: Number(process.argv[2] ?? 20_000), warmupJobs: 2000, workers: 4, concurrencyPerWorker: 16, timeoutMs: 120_000, port: server.port, redisPid: server.pid });
    console.log(JSON.stringify({ persistence, ...round, wallMs: Math.round(nowMs() - t0) }, null, 2));
  } finally {
    await server.stop();
  }
}
