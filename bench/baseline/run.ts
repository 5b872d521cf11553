/**
 * Baseline (a), the hand-written pipeline: producer → durable quorum queue → hand-written amqplib
 * dispatcher → one grpc-js unary call per job to worker processes → ack on reply. One round starts
 * fresh processes and a fresh queue, and removes both whatever happens.
 */
import { ExternalCpu, nowMs } from "../lib/cpu.ts";
import { profileFlags, startChildren, stopAll, type ChildHandle } from "../lib/proc.ts";
import { declareQuorumQueue, deleteQueues, freshQueueName } from "../lib/rabbit.ts";
import { cpuByRole, throughputRound, type ThroughputRound } from "../lib/throughput.ts";

/** Shape of one round. */
export interface PipelineRoundOptions {
  jobs: number;
  /** Jobs run first and not measured (JIT, connections, queue warm). */
  warmupJobs: number;
  workers: number;
  slotsPerWorker: number;
  /** Bound of the whole round. */
  timeoutMs: number;
  /** Publishes the producer keeps awaiting their confirm. @default 256 */
  publishWindow?: number;
}

/** Runs one round of the hand-written pipeline. */
export async function runBaselineRound(options: PipelineRoundOptions): Promise<ThroughputRound> {
  const queue = freshQueueName("baseline");
  const children: ChildHandle[] = [];
  try {
    await declareQuorumQueue(queue);
    const workers = await startChildren(
      Array.from({ length: options.workers }, (_, i) => ({
        script: new URL("./worker.ts", import.meta.url),
        options: { name: `baseline-worker-${i}`, args: ["--slots", String(options.slotsPerWorker)] },
      })),
    );
    children.push(...workers);
    const ports = workers.map((w) => w.ready.port).join(",");
    const [dispatcher, producer] = await startChildren([
      { script: new URL("./dispatcher.ts", import.meta.url), options: { name: "baseline-dispatcher", args: ["--ports", ports, "--slots", String(options.slotsPerWorker)], execArgv: profileFlags("baseline-dispatcher") } },
      { script: new URL("./producer.ts", import.meta.url), options: { name: "baseline-producer" } },
    ]);
    children.push(dispatcher!, producer!);
    await dispatcher!.request("consume", { queue });

    const timeoutMs = options.timeoutMs;
    if (options.warmupJobs > 0) {
      const warm = dispatcher!.request("expect", { count: options.warmupJobs }, timeoutMs);
      await producer!.request("publish", { queue, count: options.warmupJobs }, timeoutMs);
      await warm;
    }

    const roles = { producer: [producer!], dispatcher: [dispatcher!], workers };
    const broker = new ExternalCpu("beam.smp");
    const before = await cpuByRole(roles);
    broker.start();
    const done = dispatcher!.request<{ lastAckAt: number }>("expect", { count: options.jobs }, timeoutMs);
    const published = await producer!.request<{ firstPublishAt: number }>("publish", { queue, count: options.jobs, window: options.publishWindow ?? 256 }, timeoutMs);
    const { lastAckAt } = await done;
    const brokerUs = broker.stop();
    const after = await cpuByRole(roles);
    const elapsedMs = lastAckAt - published.firstPublishAt;
    const stats = await dispatcher!.request<{ acked: number; failed: number }>("stats");
    if (stats.failed > 0 || stats.acked !== options.jobs + options.warmupJobs) {
      throw new Error(`baseline dispatcher acked ${stats.acked} of ${options.jobs + options.warmupJobs} jobs, ${stats.failed} calls failed`);
    }
    return throughputRound(options.jobs, elapsedMs, { before, after, brokerUs: brokerUs });
  } finally {
    await stopAll(children);
    await deleteQueues([queue]);
  }
}

// Lets `node bench/baseline/run.ts` measure the baseline alone.
if (import.meta.main) {
  const started = nowMs();
  const round = await runBaselineRound({ jobs: Number(process.argv[2] ?? 10_000), warmupJobs: 1000, workers: 4, slotsPerWorker: 16, timeoutMs: 120_000, publishWindow: Number(process.argv[3] ?? 256) });
  console.log(JSON.stringify({ ...round, wallMs: Math.round(nowMs() - started) }, null, 2));
}
