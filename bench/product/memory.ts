/**
 * Heap growth over 100,000 no-op jobs through the whole in-process path: `JobClient` →
 * `MemoryQueue` → `Dispatcher` → `WorkerPool` → `InProcessTransport` handlers, with results back to
 * each job's handle. The heap is measured after forced GCs, once after a warm-up and once after
 * the jobs. Runs in its own process with `--expose-gc` (bench/run.ts `memory`).
 */
import { setImmediate as tick } from "node:timers/promises";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { JobClient } from "../../src/client/job-client.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { nowMs, selfCpuUs } from "../lib/cpu.ts";

async function settledHeap(): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error("run with --expose-gc");
  for (let i = 0; i < 4; i++) {
    gc();
    await tick();
  }
  return process.memoryUsage().heapUsed;
}

/** Submits `count` jobs, at most `window` awaiting their result at once, and waits for every result. */
async function runJobs(client: JobClient, count: number, window: number): Promise<void> {
  let submitted = 0;
  const lane = async (): Promise<void> => {
    while (submitted < count) {
      submitted++;
      const handle = await client.submit({ type: "noop", payload: null });
      await handle.result();
    }
  };
  await Promise.all(Array.from({ length: Math.min(window, count) }, lane));
}

/** Measures heap growth (%) over `jobs` jobs after a warm-up of a tenth of them. */
export async function measureHeap({ jobs, slots }: { jobs: number; slots: number }): Promise<Record<string, number | null>> {
  const queue = new MemoryQueue();
  const pool = new WorkerPool();
  const workers = 4;
  for (let i = 0; i < workers; i++) {
    pool.add({ id: `w${i}`, transport: new InProcessTransport({ handlers: { noop: async () => null }, slots: slots / workers }), slots: slots / workers });
  }
  const dispatcher = new Dispatcher({ queue, events: queue, pool });
  const client = new JobClient({ queue, events: queue });
  await dispatcher.start();
  try {
    await runJobs(client, Math.max(1000, Math.round(jobs / 10)), slots * 4);
    const before = await settledHeap();
    const cpuBefore = selfCpuUs();
    const t0 = nowMs();
    await runJobs(client, jobs, slots * 4);
    const elapsedMs = nowMs() - t0;
    const cpuUs = selfCpuUs() - cpuBefore;
    const after = await settledHeap();
    return {
      "memory.heap_growth_pct": ((after - before) / before) * 100,
      "memory.heap_before_mb": before / 2 ** 20,
      "memory.heap_after_mb": after / 2 ** 20,
      "memory.jobs": jobs,
      "throughput.in_process_jobs_s": (jobs * 1000) / elapsedMs,
      "cpu_us_per_job.in_process_total": cpuUs / jobs,
    };
  } finally {
    await client.close();
    await dispatcher.close({ signal: AbortSignal.timeout(5000) });
    await pool.close();
    await queue.close();
  }
}
