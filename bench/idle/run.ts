/**
 * What holding many idle workers costs: one orchestrator process (a `WorkerPool` of `GrpcTransport`s
 * and a `HealthMonitor` at 1 s, no queue, no jobs) connected to N gRPC workers of 2 slots each,
 * all hosted by one other process; the CPU of both processes over a quiet window, at several N,
 * and the slope (% of a core per worker). Then how fast the orchestrator still notices a dead
 * worker among them: one whose connection goes silent (a frozen process or a partition: only
 * pings and health checks can tell) and one whose connection is reset (a killed process).
 *
 *   node --no-warnings bench/idle/run.ts [counts=10,100,1000] [seconds=10]
 */
import { setTimeout as sleep } from "node:timers/promises";
import { nowMs } from "../lib/cpu.ts";
import { profileFlags, startChild, stopAll, type ChildHandle } from "../lib/proc.ts";
import { percentile } from "../lib/stats.ts";

/** Options of {@link measureIdle}. */
export interface IdleOptions {
  /** Worker counts to measure, e.g. [10, 100, 1000]. */
  counts: readonly number[];
  /** CPU window per count, after one settling interval. */
  seconds: number;
  /** Silent and reset workers timed per count. */
  detectionSamples: number;
  /** @default 2 */
  slotsPerWorker?: number;
  /** HealthMonitor interval. @default 1000 */
  intervalMs?: number;
}

/** The figures of one worker count. */
export interface IdleCount {
  workers: number;
  orchestratorCpuPct: number;
  workersCpuPct: number;
  /** Blackhole → the pool reports the worker unhealthy, per sample (ms). */
  silentDetectMs: number[];
  /** Connection reset → unhealthy, per sample (ms). */
  resetDetectMs: number[];
  /** Why each silent worker was judged unhealthy (the first one's reason). */
  silentReason: string | null;
  /** Workers reported unhealthy during the quiet window although nothing failed (an overloaded process answering late). */
  spuriousUnhealthy: number;
  spuriousReason: string | null;
}

/** Least-squares slope of y over x. */
export function slope(points: readonly { x: number; y: number }[]): number | null {
  if (points.length < 2) return null;
  const mx = points.reduce((s, p) => s + p.x, 0) / points.length;
  const my = points.reduce((s, p) => s + p.y, 0) / points.length;
  const sxx = points.reduce((s, p) => s + (p.x - mx) ** 2, 0);
  if (sxx === 0) return null;
  return points.reduce((s, p) => s + (p.x - mx) * (p.y - my), 0) / sxx;
}

/** Measures one worker count on fresh processes. */
async function measureCount(workers: number, options: Required<IdleOptions>): Promise<IdleCount> {
  const children: ChildHandle[] = [];
  try {
    const [host, orchestrator] = await Promise.all([
      startChild(new URL("./workers.ts", import.meta.url), { name: `idle-workers-${workers}`, execArgv: profileFlags(`idle-workers-${workers}`) }),
      startChild(new URL("./orchestrator.ts", import.meta.url), { name: `idle-orchestrator-${workers}`, args: ["--interval", String(options.intervalMs)], execArgv: profileFlags(`idle-orchestrator-${workers}`) }),
    ]);
    children.push(host, orchestrator);
    const proxied = Math.min(workers, options.detectionSamples * 2);
    const t = nowMs();
    const { addresses } = await host.request<{ addresses: string[] }>("start", { count: workers, slots: options.slotsPerWorker, proxied }, 300_000);
    const served = nowMs();
    await orchestrator.request("add", { addresses, slots: options.slotsPerWorker, timeoutMs: 300_000 }, 320_000);
    if (process.env.BENCH_IDLE_VERBOSE) console.error(`idle ${workers}: servers up in ${Math.round(served - t)} ms, admitted in ${Math.round(nowMs() - served)} ms`);
    const unhealthyAt = new Map<string, { at: number; reason: string }>();
    orchestrator.onEvent(({ name, data }) => {
      const d = data as { workerId: string; at: number; reason: string };
      if (name === "unhealthy" && !unhealthyAt.has(d.workerId)) unhealthyAt.set(d.workerId, { at: d.at, reason: d.reason });
    });
    // One settling interval (admission's burst over), then the quiet window.
    await sleep(options.intervalMs * 2);
    const [o0, w0] = await Promise.all([orchestrator.cpuUs(), host.cpuUs()]);
    const t0 = nowMs();
    await sleep(options.seconds * 1000);
    const [o1, w1] = await Promise.all([orchestrator.cpuUs(), host.cpuUs()]);
    const wallUs = (nowMs() - t0) * 1000;
    // Workers judged unhealthy while nothing failed: late pongs or checks of an overloaded process.
    const spurious = unhealthyAt.size;
    const spuriousReason = [...unhealthyAt.values()][0]?.reason ?? null;
    unhealthyAt.clear();

    const detect = async (index: number, how: "blackhole" | "cut"): Promise<{ ms: number; reason: string }> => {
      const id = `idle-${index}`;
      // Timed from a healthy state only (a spurious loss above may still be recovering).
      const ready = Date.now() + 30_000;
      while ((await orchestrator.request<string | null>("state", { workerId: id })) === "unhealthy") {
        if (Date.now() > ready) throw new Error(`worker ${id} did not recover from a spurious loss within 30 s`);
        await sleep(100);
      }
      unhealthyAt.delete(id);
      // A random phase against the pings and the health ticks, as a real failure has.
      await sleep(Math.random() * options.intervalMs);
      const { at } = await host.request<{ at: number }>(how, { index });
      const deadline = Date.now() + 30_000;
      while (!unhealthyAt.has(id)) {
        if (Date.now() > deadline) throw new Error(`worker ${id} (${how}) not reported unhealthy within 30 s`);
        await sleep(10);
      }
      const seen = unhealthyAt.get(id)!;
      return { ms: seen.at - at, reason: seen.reason };
    };
    const silent: { ms: number; reason: string }[] = [];
    const reset: number[] = [];
    for (let i = 0; i < Math.floor(proxied / 2); i++) {
      silent.push(await detect(2 * i, "blackhole"));
      reset.push((await detect(2 * i + 1, "cut")).ms);
    }
    return {
      workers,
      orchestratorCpuPct: ((o1 - o0) / wallUs) * 100,
      workersCpuPct: ((w1 - w0) / wallUs) * 100,
      silentDetectMs: silent.map((s) => s.ms),
      resetDetectMs: reset,
      silentReason: silent[0]?.reason ?? null,
      spuriousUnhealthy: spurious,
      spuriousReason,
    };
  } finally {
    await stopAll(children, 5000);
  }
}

/** Runs every count in turn; returns the per-count figures and the report's fields. */
export async function measureIdle(options: IdleOptions): Promise<{ counts: IdleCount[]; figures: Record<string, number | null> }> {
  const resolved: Required<IdleOptions> = { slotsPerWorker: 2, intervalMs: 1000, ...options };
  const counts: IdleCount[] = [];
  for (const n of resolved.counts) counts.push(await measureCount(n, resolved));
  const figures: Record<string, number | null> = {};
  for (const c of counts) {
    figures[`idle.orchestrator_cpu_pct_${c.workers}_workers`] = c.orchestratorCpuPct;
    figures[`idle.workers_cpu_pct_${c.workers}_workers`] = c.workersCpuPct;
    figures[`idle.spurious_unhealthy_${c.workers}_workers`] = c.spuriousUnhealthy;
  }
  figures["idle.orchestrator_cpu_pct_per_worker"] = slope(counts.map((c) => ({ x: c.workers, y: c.orchestratorCpuPct })));
  figures["idle.workers_cpu_pct_per_worker"] = slope(counts.map((c) => ({ x: c.workers, y: c.workersCpuPct })));
  const silent = counts.flatMap((c) => c.silentDetectMs);
  const reset = counts.flatMap((c) => c.resetDetectMs);
  figures["idle.silent_worker_detect_ms_p50"] = percentile(silent, 50);
  figures["idle.silent_worker_detect_ms_max"] = percentile(silent, 100);
  figures["idle.reset_worker_detect_ms_max"] = percentile(reset, 100);
  return { counts, figures };
}

// Lets `node bench/idle/run.ts` measure this section alone.
if (import.meta.main) {
  const { killAllChildren } = await import("../lib/proc.ts");
  process.on("exit", killAllChildren);
  const counts = (process.argv[2] ?? "10,100,1000").split(",").map(Number);
  const result = await measureIdle({ counts, seconds: Number(process.argv[3] ?? 10), detectionSamples: 2 });
  console.log(JSON.stringify(result, null, 2));
  process.exit(0);
}
