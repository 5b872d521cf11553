/**
 * Cancel latency: a `hold` job runs on a worker; the producer process calls `handle.cancel()`; the
 * sample is the time from that call to the handler's `ctx.signal` firing on the worker process.
 * One job at a time, so each sample is the whole cross-process path (producer → RabbitMQ cancel
 * exchange → dispatcher → gRPC → handler).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { percentile } from "../lib/stats.ts";
import { withProductSystem } from "./system.ts";

/** Takes `samples` cancels. */
export async function measureCancel(options: { samples: number; workers: number; slotsPerWorker: number }): Promise<Record<string, number | null>> {
  return withProductSystem({ workers: options.workers, slotsPerWorker: options.slotsPerWorker }, async (system) => {
    const samples: number[] = [];
    for (let i = 0; i < options.samples; i++) {
      const { jobId } = await system.producer.request<{ jobId: string }>("submitHold", { holdAttempts: 1000 });
      await system.events.waitFor((e) => e.name === "started" && e.jobId === jobId, 10_000, `the start of ${jobId}`);
      await sleep(5);
      const { at } = await system.producer.request<{ at: number }>("cancel", { jobId });
      const aborted = await system.events.waitFor((e) => e.name === "aborted" && e.jobId === jobId, 10_000, `the abort of ${jobId}`);
      samples.push(aborted.at - at);
      const { state } = await system.producer.request<{ state: string }>("outcome", { jobId }, 30_000);
      if (state !== "cancelled") throw new Error(`cancelled job ${jobId} ended ${state}`);
    }
    return {
      "cancel_ms.p50": percentile(samples, 50),
      "cancel_ms.p99": percentile(samples, 99),
      "cancel_ms.max": percentile(samples, 100),
      "cancel_ms.samples": samples.length,
    };
  });
}
