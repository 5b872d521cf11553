/**
 * Before/after of a change to the product, in the same rounds on the same machine: the product
 * path of two source trees and the hand-written pipeline, order rotated each round, ratios taken
 * within a round (on a shared machine, absolute figures move 2x between minutes; ratios much less).
 *
 *   git archive <rev> | (mkdir -p /tmp/before && tar -x -C /tmp/before) && ln -s "$PWD/node_modules" /tmp/before/
 *   node --no-warnings bench/compare.ts /tmp/before . [rounds=5] [jobs=20000] [rate=0]
 *
 * Each tree's own bench/product/throughput.ts runs its own src/; the hand-written pipeline comes
 * from the second tree. Prints one JSON line per round and the medians, with CPU µs per job of
 * each process role (orchestrator `own_us`, producer, the four workers together, the broker, and
 * `all_us`: every process of the path, the broker included).
 *
 * With `rate` > 0 each tree instead runs `jobs` jobs paced at `rate` per second (the producer's
 * `paced` command, as the latency section) and the rounds compare CPU per job at the same rate:
 * closed-loop CPU per job moves with throughput (a busier event-loop turn carries more jobs per
 * syscall and per message), which on a loaded machine hides a change of a few per cent.
 * `own_after_vs_before` and `ours_after_vs_before` (all our processes, not the broker, which
 * other sessions share) are then the figures to read.
 *
 * With `BENCH_STORE=postgres` in the environment both trees run with a `PostgresJobStore`
 * (bench/product/store-mode.ts), each round on a fresh schema `store_cmp_<pid>_<round>_<tree>`
 * (migrated, dropped after), and the second tree's product without a store replaces the
 * hand-written pipeline as the reference: `before_vs_bare` and `after_vs_bare` are the store
 * section's ratio for each tree, `pg_us` the PostgreSQL server's CPU per job of the round (every
 * postgres process, so other sessions' queries count too).
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { ExternalCpu, findPids, procCpuUs } from "./lib/cpu.ts";
import { median, ratio, round } from "./lib/stats.ts";
import { cpuByRole, throughputRound, type ThroughputRound } from "./lib/throughput.ts";
import type { PipelineRoundOptions } from "./baseline/run.ts";
import type { ProductSystem } from "./product/system.ts";

const [treeA, treeB, roundsArg = "5", jobsArg = "20000", rateArg = "0"] = process.argv.slice(2);
if (!treeA || !treeB) {
  console.error("usage: node --no-warnings bench/compare.ts <before-tree> <after-tree> [rounds] [jobs] [rate]");
  process.exit(2);
}
const rounds = Number(roundsArg);
const jobs = Number(jobsArg);
const rate = Number(rateArg);
const load = (tree: string, file: string) => import(pathToFileURL(resolve(tree, file)).href);
const before = await load(treeA, "bench/product/throughput.ts");
const after = await load(treeB, "bench/product/throughput.ts");
const baseline = await load(treeB, "bench/baseline/run.ts");
const { killAllChildren } = await load(treeB, "bench/lib/proc.ts");
process.on("exit", killAllChildren);

const options: PipelineRoundOptions = { jobs, warmupJobs: Math.min(2000, jobs / 5), workers: 4, slotsPerWorker: 16, timeoutMs: 180_000 };

/** One paced round of `tree`'s product: CPU per job by role while `jobs` jobs go through at `rate` per second. */
const pacedRound = async (tree: string): Promise<ThroughputRound> => {
  const { withProductSystem } = await load(tree, "bench/product/system.ts");
  return withProductSystem({ workers: options.workers, slotsPerWorker: options.slotsPerWorker }, async (system: ProductSystem) => {
    await system.producer.request("submitMany", { count: options.warmupJobs }, options.timeoutMs);
    const roles = { orchestrator: [system.orchestrator], producer: [system.producer], workers: system.workers };
    const broker = new ExternalCpu("beam.smp");
    const cpuBefore = await cpuByRole(roles);
    broker.start();
    const seconds = jobs / rate;
    const r = await system.producer.request<{ dispatchMs: number[]; failed: number; achievedRate: number }>("paced", { ratePerSecond: rate, seconds }, seconds * 1000 + options.timeoutMs);
    const brokerUs = broker.stop();
    const cpuAfter = await cpuByRole(roles);
    if (r.failed > 0) throw new Error(`${r.failed} paced jobs did not complete`);
    return throughputRound(r.dispatchMs.length, (r.dispatchMs.length * 1000) / r.achievedRate, { before: cpuBefore, after: cpuAfter, brokerUs });
  });
};
const systems: Record<string, () => Promise<ThroughputRound>> =
  rate > 0
    ? { before: () => pacedRound(treeA), after: () => pacedRound(treeB) }
    : {
        before: () => before.runProductRound(options),
        after: () => after.runProductRound(options),
        handwritten: () => baseline.runBaselineRound(options),
      };
const storeMode = process.env.BENCH_STORE === "postgres" && rate === 0;
if (storeMode) {
  const { BENCH_DATABASE_URL } = await load(treeB, "bench/product/store-mode.ts");
  const { default: pg } = await import("pg");
  let schemas = 0;
  /** One round of `tree`'s product on a fresh schema, with the PostgreSQL server's CPU per job. */
  const withSchema = (tree: string, run: () => Promise<ThroughputRound>) => async (): Promise<ThroughputRound> => {
    const { PostgresJobStore } = await load(tree, "src/store/postgres/postgres-job-store.ts");
    const schema = `store_cmp_${process.pid}_${schemas++}`;
    const admin = new PostgresJobStore({ connectionString: BENCH_DATABASE_URL, schema });
    await admin.migrate();
    await admin.close();
    process.env.BENCH_STORE_SCHEMA = schema;
    // Backends exit with the round's processes: sampled every 100 ms, each one's last sample kept.
    const last = new Map<number, number>();
    const sample = () => findPids("postgres").forEach((pid) => last.set(pid, procCpuUs(pid) ?? last.get(pid) ?? 0));
    sample();
    const first = new Map(last);
    const sampler = setInterval(sample, 100);
    try {
      const result = await run();
      sample();
      let used = 0;
      for (const [pid, us] of last) used += us - (first.get(pid) ?? 0);
      result.cpuUsPerJob.postgres = used / (jobs + options.warmupJobs);
      return result;
    } finally {
      clearInterval(sampler);
      const client = new pg.Client({ connectionString: BENCH_DATABASE_URL });
      await client.connect().then(() => client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)).catch(() => {});
      await client.end().catch(() => {});
    }
  };
  delete systems.handwritten;
  systems.before = withSchema(treeA, () => before.runProductRound(options));
  systems.after = withSchema(treeB, () => after.runProductRound(options));
  systems.bare = async () => {
    delete process.env.BENCH_STORE;
    try {
      return await after.runProductRound(options);
    } finally {
      process.env.BENCH_STORE = "postgres";
    }
  };
}
const names = Object.keys(systems);
const rows: Array<Record<string, ThroughputRound | number | null>> = [];
for (let r = 0; r < rounds; r++) {
  const row: Record<string, ThroughputRound | number | null> = {};
  for (const name of names.map((_, i) => names[(i + r) % names.length]!)) row[name] = await systems[name]!();
  const jps = (name: string) => (row[name] as ThroughputRound | undefined)?.jobsPerSecond;
  const us = (name: string, role: string) => (row[name] as ThroughputRound).cpuUsPerJob[role];
  row.after_vs_before = ratio(jps("after"), jps("before"));
  row.before_vs_handwritten = ratio(jps("before"), jps("handwritten"));
  row.after_vs_handwritten = ratio(jps("after"), jps("handwritten"));
  row.before_vs_bare = ratio(jps("before"), jps("bare"));
  row.after_vs_bare = ratio(jps("after"), jps("bare"));
  row.own_after_vs_before = ratio(us("after", "orchestrator"), us("before", "orchestrator"));
  row.ours_after_vs_before = ratio(us("after", "total"), us("before", "total"));
  rows.push(row);
  const brief = (name: string) => {
    const t = row[name] as ThroughputRound | undefined;
    if (t === undefined) return undefined;
    const us = (role: string) => round(t.cpuUsPerJob[role], 0);
    return { jobs_s: Math.round(t.jobsPerSecond), ...(storeMode && name !== "bare" ? { pg_us: us("postgres") } : {}), broker_us: us("broker"), own_us: round(t.cpuUsPerJob.orchestrator ?? t.cpuUsPerJob.dispatcher, 0), producer_us: us("producer"), workers_us: us("workers"), all_us: us("total_with_broker") };
  };
  console.log(JSON.stringify({ round: r + 1, before: brief("before"), after: brief("after"), ...(storeMode ? { bare: brief("bare"), before_vs_bare: round(row.before_vs_bare as number | null), after_vs_bare: round(row.after_vs_bare as number | null) } : { handwritten: brief("handwritten") }), after_vs_before: round(row.after_vs_before as number | null), own_after_vs_before: round(row.own_after_vs_before as number | null), ours_after_vs_before: round(row.ours_after_vs_before as number | null) }));
}
const med = (f: (row: Record<string, ThroughputRound | number | null>) => number | null | undefined) => round(median(rows.map(f)), 2);
const cpu = (name: string, role: string) => med((row) => (row[name] as ThroughputRound | undefined)?.cpuUsPerJob[role]);
console.log(
  JSON.stringify({
    medians: {
      after_vs_before: med((row) => row.after_vs_before as number | null),
      before_vs_handwritten: med((row) => row.before_vs_handwritten as number | null),
      after_vs_handwritten: med((row) => row.after_vs_handwritten as number | null),
      ...(storeMode
        ? { before_vs_bare: med((row) => row.before_vs_bare as number | null), after_vs_bare: med((row) => row.after_vs_bare as number | null), postgres_us_per_job: { before: cpu("before", "postgres"), after: cpu("after", "postgres") } }
        : {}),
      own_after_vs_before: med((row) => row.own_after_vs_before as number | null),
      ours_after_vs_before: med((row) => row.ours_after_vs_before as number | null),
      broker_us_per_job: { before: cpu("before", "broker"), after: cpu("after", "broker"), handwritten: cpu("handwritten", "broker") },
      orchestrator_us_per_job: { before: cpu("before", "orchestrator"), after: cpu("after", "orchestrator") },
      producer_us_per_job: { before: cpu("before", "producer"), after: cpu("after", "producer") },
      workers_us_per_job: { before: cpu("before", "workers"), after: cpu("after", "workers") },
      // Every process of the path, the broker included.
      all_us_per_job: { before: cpu("before", "total_with_broker"), after: cpu("after", "total_with_broker"), handwritten: cpu("handwritten", "total_with_broker") },
    },
  }),
);
process.exit(0);
