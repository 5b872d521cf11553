/**
 * CPU of a `HealthMonitor` checking 1,000 workers every second: a `WorkerPool` of instant fake
 * transports as its target, so the figure is the monitor's (and the pool's health port's) own
 * cost. Runs in its own process (bench/run.ts `health`).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { HealthMonitor } from "../../src/health/health-monitor.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { nowMs, selfCpuUs } from "../lib/cpu.ts";
import { InstantTransport } from "./fake-transport.ts";

/** Measures this process's CPU % over `seconds` while the monitor runs (after one warm-up interval). */
export async function measureHealth({ workers, intervalMs, seconds }: { workers: number; intervalMs: number; seconds: number }): Promise<Record<string, number | null>> {
  const pool = new WorkerPool();
  const transports: InstantTransport[] = [];
  for (let i = 0; i < workers; i++) {
    const transport = new InstantTransport();
    transports.push(transport);
    pool.add({ id: `w${i}`, transport, slots: 16 });
  }
  const monitor = new HealthMonitor({ target: pool, intervalMs });
  monitor.start();
  try {
    await sleep(intervalMs * 1.5);
    const checksBefore = transports.reduce((n, t) => n + t.checks, 0);
    const cpuBefore = selfCpuUs();
    const wallBefore = nowMs();
    await sleep(seconds * 1000);
    const cpuUs = selfCpuUs() - cpuBefore;
    const wallMs = nowMs() - wallBefore;
    const checks = transports.reduce((n, t) => n + t.checks, 0) - checksBefore;
    const expected = (workers * wallMs) / intervalMs;
    if (checks < expected * 0.8) throw new Error(`the monitor made ${checks} checks in ${Math.round(wallMs)} ms, expected about ${Math.round(expected)}`);
    return {
      "health.cpu_pct_1000_workers": (cpuUs / 1000 / wallMs) * 100,
      "health.checks_per_s": (checks * 1000) / wallMs,
      "health.cpu_us_per_check": cpuUs / checks,
    };
  } finally {
    await monitor.close();
    await pool.close();
  }
}
