/**
 * SIGKILL failover: a `hold` job runs its first attempt on a worker process; that process gets
 * SIGKILL; the sample is the time from the kill to the job's next attempt starting in another
 * worker's handler. A fresh worker replaces the killed one before the next sample. A job that
 * does not run again within 10 s, ends other than completed, or skips an attempt number is counted
 * in `failed_samples` (and as an infinite time in the percentiles).
 */
import { nowMs } from "../lib/cpu.ts";
import { percentile } from "../lib/stats.ts";
import { withProductSystem } from "./system.ts";

/** Takes `samples` kills. */
export async function measureFailover(options: { samples: number; workers: number; slotsPerWorker: number }): Promise<Record<string, number | null>> {
  return withProductSystem({ workers: Math.max(2, options.workers), slotsPerWorker: options.slotsPerWorker }, async (system) => {
    const samples: number[] = [];
    const failures: string[] = [];
    let neverRan = 0;
    for (let i = 0; i < options.samples; i++) {
      const { jobId } = await system.producer.request<{ jobId: string }>("submitHold", { holdAttempts: 1 });
      const first = await system.events.waitFor((e) => e.name === "started" && e.jobId === jobId, 10_000, `the start of ${jobId}`);
      const victim = system.workers.find((w) => w.pid === first.pid);
      if (!victim) throw new Error(`job ${jobId} started in an unknown process ${first.pid}`);
      const killedAt = nowMs();
      victim.kill("SIGKILL");
      try {
        const again = await system.events.waitFor((e) => e.name === "started" && e.jobId === jobId && e.attempt > first.attempt, 10_000, `a new attempt of ${jobId}`);
        samples.push(again.at - killedAt);
        const { state, attempt } = await system.producer.request<{ state: string; attempt: number }>("outcome", { jobId }, 30_000);
        if (state !== "completed") failures.push(`job ${jobId} ended ${state} (attempt ${attempt}) after its worker was killed`);
        else if (again.attempt !== first.attempt + 1) failures.push(`job ${jobId} ran attempt ${again.attempt} after attempt ${first.attempt}`);
      } catch (err) {
        // A job that never ran again counts as an infinitely slow failover, not as a skipped sample.
        samples.push(Infinity);
        neverRan++;
        failures.push((err as Error).message);
      }
      await system.addWorker(`r${i}`);
    }
    for (const failure of failures) console.error(`failover: ${failure}`);
    const p50 = percentile(samples, 50);
    if (p50 === null || !Number.isFinite(p50)) throw new Error(`${failures.length} of ${samples.length} failovers failed: ${failures[0]}`);
    return {
      "failover_ms.sigkill_p50": p50,
      "failover_ms.sigkill_max_finite": percentile(samples.filter(Number.isFinite), 100),
      "failover_ms.samples": samples.length,
      // Killed jobs that did not run again within 10 s (counted as infinite above).
      "failover_ms.never_ran": neverRan,
      // Every sample with a fault: never ran, ended other than completed, or skipped attempt numbers.
      "failover_ms.failed_samples": failures.length,
    };
  });
}
