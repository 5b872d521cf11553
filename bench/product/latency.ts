/**
 * Latency at half load: `stamp` jobs submitted at a fixed rate (half the product's measured
 * throughput) by the producer process; enqueue → handler start (the handler's clock, same machine)
 * and enqueue → result back at the producer.
 */
import type { PacedLatency } from "../baseline/run.ts";
import { percentile } from "../lib/stats.ts";
import { withProductSystem } from "./system.ts";

/** Options of a paced run; when `ratePerSecond` is 0 it first measures throughput on the same deployment and uses half. */
export interface PacedOptions {
  ratePerSecond: number;
  seconds: number;
  workers: number;
  slotsPerWorker: number;
}

/** The samples of one paced run on a fresh deployment (after 2,000 warm-up jobs). */
export async function pacedLatency(options: PacedOptions): Promise<PacedLatency & { rate: number }> {
  return withProductSystem({ workers: options.workers, slotsPerWorker: options.slotsPerWorker }, async (system) => {
    const probe = await system.producer.request<{ firstSubmitAt: number; lastResultAt: number; failed: number }>("submitMany", { count: 2000 }, 120_000);
    const rate = options.ratePerSecond > 0 ? options.ratePerSecond : Math.max(50, Math.round((2000 * 1000) / (probe.lastResultAt - probe.firstSubmitAt) / 2));
    const r = await system.producer.request<{ dispatchMs: number[]; resultMs: number[]; failed: number; achievedRate: number }>(
      "paced",
      { ratePerSecond: rate, seconds: options.seconds },
      options.seconds * 1000 + 60_000,
    );
    if (r.failed > 0) throw new Error(`${r.failed} paced jobs did not complete`);
    return { dispatchMs: r.dispatchMs, settledMs: r.resultMs, achievedRate: r.achievedRate, rate };
  });
}

/** One paced run, as the report's figures. */
export async function measureLatency(options: PacedOptions): Promise<Record<string, number | null>> {
  const r = await pacedLatency(options);
  return {
    "latency_ms.dispatch_p50": percentile(r.dispatchMs, 50),
    "latency_ms.dispatch_p99": percentile(r.dispatchMs, 99),
    "latency_ms.result_p50": percentile(r.settledMs, 50),
    "latency_ms.result_p99": percentile(r.settledMs, 99),
    "latency_ms.rate_jobs_s": r.rate,
    "latency_ms.achieved_rate_jobs_s": r.achievedRate,
    "latency_ms.samples": r.dispatchMs.length,
  };
}
