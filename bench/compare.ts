/**
 * Before/after of a change to the product, in the same rounds on the same machine: the product
 * path of two source trees and the hand-written pipeline, order rotated each round, ratios taken
 * within a round (on a shared machine, absolute figures move 2x between minutes; ratios much less).
 *
 *   git archive <rev> | (mkdir -p /tmp/before && tar -x -C /tmp/before) && ln -s "$PWD/node_modules" /tmp/before/
 *   node --no-warnings bench/compare.ts /tmp/before . [rounds=5] [jobs=20000]
 *
 * Each tree's own bench/product/throughput.ts runs its own src/; the hand-written pipeline comes
 * from the second tree. Prints one JSON line per round and the medians.
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { median, ratio, round } from "./lib/stats.ts";
import type { ThroughputRound } from "./lib/throughput.ts";
import type { PipelineRoundOptions } from "./baseline/run.ts";

const [treeA, treeB, roundsArg = "5", jobsArg = "20000"] = process.argv.slice(2);
if (!treeA || !treeB) {
  console.error("usage: node --no-warnings bench/compare.ts <before-tree> <after-tree> [rounds] [jobs]");
  process.exit(2);
}
const rounds = Number(roundsArg);
const jobs = Number(jobsArg);
const load = (tree: string, file: string) => import(pathToFileURL(resolve(tree, file)).href);
const before = await load(treeA, "bench/product/throughput.ts");
const after = await load(treeB, "bench/product/throughput.ts");
const baseline = await load(treeB, "bench/baseline/run.ts");
const { killAllChildren } = await load(treeB, "bench/lib/proc.ts");
process.on("exit", killAllChildren);

const options: PipelineRoundOptions = { jobs, warmupJobs: Math.min(2000, jobs / 5), workers: 4, slotsPerWorker: 16, timeoutMs: 180_000 };
const systems: Record<string, () => Promise<ThroughputRound>> = {
  before: () => before.runProductRound(options),
  after: () => after.runProductRound(options),
  handwritten: () => baseline.runBaselineRound(options),
};
const names = Object.keys(systems);
const rows: Array<Record<string, ThroughputRound | number | null>> = [];
for (let r = 0; r < rounds; r++) {
  const row: Record<string, ThroughputRound | number | null> = {};
  for (const name of names.map((_, i) => names[(i + r) % names.length]!)) row[name] = await systems[name]!();
  const jps = (name: string) => (row[name] as ThroughputRound).jobsPerSecond;
  row.after_vs_before = ratio(jps("after"), jps("before"));
  row.before_vs_handwritten = ratio(jps("before"), jps("handwritten"));
  row.after_vs_handwritten = ratio(jps("after"), jps("handwritten"));
  rows.push(row);
  const brief = (name: string) => {
    const t = row[name] as ThroughputRound;
    return { jobs_s: Math.round(t.jobsPerSecond), broker_us: round(t.cpuUsPerJob.broker, 0), own_us: round(t.cpuUsPerJob.orchestrator ?? t.cpuUsPerJob.dispatcher, 0) };
  };
  console.log(JSON.stringify({ round: r + 1, before: brief("before"), after: brief("after"), handwritten: brief("handwritten"), after_vs_before: round(row.after_vs_before as number | null) }));
}
const med = (f: (row: Record<string, ThroughputRound | number | null>) => number | null | undefined) => round(median(rows.map(f)), 2);
const cpu = (name: string, role: string) => med((row) => (row[name] as ThroughputRound).cpuUsPerJob[role]);
console.log(
  JSON.stringify({
    medians: {
      after_vs_before: med((row) => row.after_vs_before as number | null),
      before_vs_handwritten: med((row) => row.before_vs_handwritten as number | null),
      after_vs_handwritten: med((row) => row.after_vs_handwritten as number | null),
      broker_us_per_job: { before: cpu("before", "broker"), after: cpu("after", "broker"), handwritten: cpu("handwritten", "broker") },
      orchestrator_us_per_job: { before: cpu("before", "orchestrator"), after: cpu("after", "orchestrator") },
    },
  }),
);
process.exit(0);
