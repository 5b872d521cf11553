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

/** A running hand-written pipeline: its processes, consuming `queue`. */
interface BaselineSystem {
  queue: string;
  producer: ChildHandle;
  dispatcher: ChildHandle;
  workers: ChildHandle[];
}

/** Runs `fn` on fresh processes and a fresh queue (dispatcher consuming), removing both whatever happens. */
async function withBaselineSystem<T>(options: { workers: number; slotsPerWorker: number }, fn: (system: BaselineSystem) => Promise<T>): Promise<T> {
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
    return await fn({ queue, producer: producer!, dispatcher: dispatcher!, workers });
  } finally {
    await stopAll(children);
    await deleteQueues([queue]);
  }
}

/** Publishes `count` no-op jobs and resolves once the dispatcher acked them all. */
async function runJobs(system: BaselineSystem, count: number, timeoutMs: number, publishWindow = 256): Promise<{ firstPublishAt: number; lastAckAt: number }> {
  const done = system.dispatcher.request<{ lastAckAt: number }>("expect", { count }, timeoutMs);
  const published = await system.producer.request<{ firstPublishAt: number }>("publish", { queue: system.queue, count, window: publishWindow }, timeoutMs);
  const { lastAckAt } = await done;
  return { firstPublishAt: published.firstPublishAt, lastAckAt };
}

/** Runs one round of the hand-written pipeline. */
export async function runBaselineRound(options: PipelineRoundOptions): Promise<ThroughputRound> {
  return withBaselineSystem(options, async (system) => {
    const { producer, dispatcher, workers } = system;
    if (options.warmupJobs > 0) await runJobs(system, options.warmupJobs, options.timeoutMs);
    const roles = { producer: [producer], dispatcher: [dispatcher], workers };
    const broker = new ExternalCpu("beam.smp");
    const before = await cpuByRole(roles);
    broker.start();
    const { firstPublishAt, lastAckAt } = await runJobs(system, options.jobs, options.timeoutMs, options.publishWindow);
    const brokerUs = broker.stop();
    const after = await cpuByRole(roles);
    const stats = await dispatcher.request<{ acked: number; failed: number }>("stats");
    if (stats.failed > 0 || stats.acked !== options.jobs + options.warmupJobs) {
      throw new Error(`baseline dispatcher acked ${stats.acked} of ${options.jobs + options.warmupJobs} jobs, ${stats.failed} calls failed`);
    }
    return throughputRound(options.jobs, lastAckAt - firstPublishAt, { before, after, brokerUs });
  });
}

/** Latency samples of a paced run, in ms. */
export interface PacedLatency {
  /** Publish (or submit) call → the handler's first line. */
  dispatchMs: number[];
  /** Publish call → the job settled: the ack here, the result back at the producer for the product. */
  settledMs: number[];
  achievedRate: number;
}

/**
 * The hand-written pipeline's latency at a fixed rate, as a same-run reference for the product's:
 * 2,000 warm-up jobs, then `stamp` jobs published open-loop at `ratePerSecond` for `seconds`.
 */
export async function measureBaselineLatency(options: { ratePerSecond: number; seconds: number; workers: number; slotsPerWorker: number }): Promise<PacedLatency> {
  return withBaselineSystem(options, async (system) => {
    await runJobs(system, 2000, 120_000);
    const { sent, achievedRate } = await system.producer.request<{ sent: number; achievedRate: number }>(
      "paced",
      { queue: system.queue, ratePerSecond: options.ratePerSecond, seconds: options.seconds },
      options.seconds * 1000 + 60_000,
    );
    const dispatchMs: number[] = [];
    const settledMs: number[] = [];
    const deadline = Date.now() + 60_000;
    while (dispatchMs.length < sent) {
      if (Date.now() > deadline) throw new Error(`the hand-written dispatcher acked ${dispatchMs.length} of ${sent} paced jobs within 60 s`);
      const got = await system.dispatcher.request<{ dispatchMs: number[]; ackMs: number[] }>("latencies");
      dispatchMs.push(...got.dispatchMs);
      settledMs.push(...got.ackMs);
      if (dispatchMs.length < sent) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return { dispatchMs, settledMs, achievedRate };
  });
}

// Lets `node bench/baseline/run.ts` measure the baseline alone.
if (import.meta.main) {
  const started = nowMs();
  const round = await runBaselineRound({ jobs: Number(process.argv[2] ?? 10_000), warmupJobs: 1000, workers: 4, slotsPerWorker: 16, timeoutMs: 120_000, publishWindow: Number(process.argv[3] ?? 256) });
  console.log(JSON.stringify({ ...round, wallMs: Math.round(nowMs() - started) }, null, 2));
}
