/**
 * Latency at half load: `stamp` jobs submitted at a fixed rate (half the product's measured
 * throughput) by the producer process; enqueue → handler start (the handler's clock, same machine)
 * and enqueue → result back at the producer, as percentiles over every job.
 */
import { percentile } from "../lib/stats.ts";
import { withProductSystem } from "./system.ts";

/** Runs the paced load for `seconds`; when `ratePerSecond` is 0 it first measures throughput on the same deployment and uses half. */
export async function measureLatency(options: { ratePerSecond: number; seconds: number; workers: number; slotsPerWorker: number }): Promise<Record<string, number | null>> {
  return withProductSystem({ workers: options.workers, slotsPerWorker: options.slotsPerWorker }, async (system) => {
    const probe = await system.producer.request<{ firstSubmitAt: number; lastResultAt: number; failed: number }>("submitMany", { count: 2000 }, 120_000);
    const rate = options.ratePerSecond > 0 ? options.ratePerSecond : Math.max(50, Math.round((2000 * 1000) / (probe.lastResultAt - probe.firstSubmitAt) / 2));
    const r = await system.producer.request<{ dispatchMs: number[]; resultMs: number[]; failed: number; achievedRate: number }>(
      "paced",
      { ratePerSecond: rate, seconds: options.seconds },
      options.seconds * 1000 + 60_000,
    );
    if (r.failed > 0) throw new Error(`${r.failed} paced jobs did not complete`);
    return {
      "latency_ms.dispatch_p50": percentile(r.dispatchMs, 50),
      "latency_ms.dispatch_p99": percentile(r.dispatchMs, 99),
      "latency_ms.result_p50": percentile(r.resultMs, 50),
      "latency_ms.result_p99": percentile(r.resultMs, 99),
      "latency_ms.rate_jobs_s": rate,
      "latency_ms.achieved_rate_jobs_s": r.achievedRate,
      "latency_ms.samples": r.dispatchMs.length,
    };
  });
}
