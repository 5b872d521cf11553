/**
 * Product throughput: producer `JobClient.submit()` → RabbitMQ quorum queue → `Dispatcher` →
 * `GrpcTransport` → worker processes → result event → the producer's `handle.result()`. Timed
 * from the first submit to the last result received by the producer (the baselines stop at their
 * last ack or completion, which is earlier in the path: the product pays for the trip back).
 */
import { ExternalCpu } from "../lib/cpu.ts";
import { cpuByRole, throughputRound, type ThroughputRound } from "../lib/throughput.ts";
import type { PipelineRoundOptions } from "../baseline/run.ts";
import { withProductSystem } from "./system.ts";

/** Runs one product round on fresh processes and a fresh topology. */
export async function runProductRound(options: PipelineRoundOptions): Promise<ThroughputRound> {
  return withProductSystem({ workers: options.workers, slotsPerWorker: options.slotsPerWorker }, async (system) => {
    const { producer, orchestrator, workers } = system;
    const submit = async (count: number): Promise<{ firstSubmitAt: number; lastResultAt: number }> => {
      const r = await producer.request<{ firstSubmitAt: number; lastResultAt: number; failed: number }>("submitMany", { count, window: options.publishWindow ?? 256 }, options.timeoutMs);
      if (r.failed > 0) throw new Error(`${r.failed} of ${count} no-op jobs did not complete`);
      return r;
    };
    if (options.warmupJobs > 0) await submit(options.warmupJobs);
    const roles = { orchestrator: [orchestrator], producer: [producer], workers };
    const broker = new ExternalCpu("beam.smp");
    const before = await cpuByRole(roles);
    broker.start();
    const { firstSubmitAt, lastResultAt } = await submit(options.jobs);
    const brokerUs = broker.stop();
    const after = await cpuByRole(roles);
    return throughputRound(options.jobs, lastResultAt - firstSubmitAt, { before, after, brokerUs });
  });
}
