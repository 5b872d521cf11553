/** What one throughput round of any system (product, baseline, BullMQ) reports. */
import type { ChildHandle } from "./proc.ts";

/** One measured round. */
export interface ThroughputRound {
  jobs: number;
  elapsedMs: number;
  jobsPerSecond: number;
  /**
   * CPU microseconds per job by role (`producer`, `dispatcher` / `orchestrator`, `workers`, `broker`,
   * `total`): a role with several processes is their sum.
   */
  cpuUsPerJob: Record<string, number | null>;
}

/** Reads `cpuUs()` of every child, by role; `null` for a child that cannot answer. */
export async function cpuByRole(roles: Record<string, readonly ChildHandle[]>): Promise<Record<string, number | null>> {
  const out: Record<string, number | null> = {};
  for (const [role, handles] of Object.entries(roles)) {
    const values = await Promise.all(handles.map((h) => h.cpuUs().catch(() => null)));
    out[role] = values.some((v) => v === null) ? null : values.reduce<number>((a, b) => a + (b ?? 0), 0);
  }
  return out;
}

/**
 * Builds a round's result: CPU per job by role from the snapshots, the broker's (or Redis's) CPU
 * read from /proc, and their totals.
 */
export function throughputRound(
  jobs: number,
  elapsedMs: number,
  cpu: { before: Record<string, number | null>; after: Record<string, number | null>; brokerUs: number | null },
): ThroughputRound {
  const perJob = cpuPerJob(cpu.before, cpu.after, jobs);
  perJob.broker = cpu.brokerUs === null ? null : cpu.brokerUs / jobs;
  perJob.total_with_broker = perJob.broker === null ? null : perJob.total! + perJob.broker;
  return { jobs, elapsedMs, jobsPerSecond: (jobs * 1000) / elapsedMs, cpuUsPerJob: perJob };
}

/** `(after - before) / jobs` per role, plus `total` over the roles that have a figure. */
export function cpuPerJob(
  before: Record<string, number | null>,
  after: Record<string, number | null>,
  jobs: number,
): Record<string, number | null> {
  const out: Record<string, number | null> = {};
  let total = 0;
  for (const role of Object.keys(after)) {
    const a = after[role];
    const b = before[role];
    out[role] = a == null || b == null ? null : (a - b) / jobs;
    if (out[role] !== null) total += out[role]!;
  }
  out.total = total;
  return out;
}
