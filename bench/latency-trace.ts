/**
 * Where the dispatch latency at a paced rate goes, segment by segment, on the product path:
 *
 *   node --no-warnings bench/latency-trace.ts [rate=1000] [seconds=10]
 *
 * Starts the bench's product deployment with BENCH_TRACE set (the orchestrator wraps its queue
 * and events to timestamp each delivery; see product/trace.ts), warms it up with 2,000 jobs,
 * submits `stamp` jobs open-loop at `rate`, and prints percentiles of each segment: submit →
 * confirmed (the producer's publisher confirm), submit → delivery at the dispatcher, delivery →
 * started on a worker, started → handler's first line, plus the result events' confirm wait, how
 * often all prefetch units were held, and the orchestrator's GC pauses. Then the slowest 2 %:
 * which segment their time went to, and how long the processes on their path were runnable but
 * held off a CPU meanwhile (run-queue wait from /proc/<pid>/task/<tid>/schedstat, sampled every
 * 25 ms: RabbitMQ's schedulers while they waited for their delivery, the worker and the
 * orchestrator while they waited for the handler).
 */
import { percentile } from "./lib/stats.ts";
import { killAllChildren } from "./lib/proc.ts";
import { withProductSystem } from "./product/system.ts";
import type { TraceSnapshot } from "./product/trace.ts";
import { spawnSync } from "node:child_process";
import { mainThread, RunQueueSampler, threadsOf } from "./lib/run-queue.ts";

const rate = Number(process.argv[2] ?? 1000);
const seconds = Number(process.argv[3] ?? 10);
const WORKERS = 4;
const SLOTS = 16;
process.env.BENCH_TRACE = "1"; // inherited by the children
process.on("exit", killAllChildren);

type Row = [id: string, submit: number, confirmed: number, handler: number, result: number];

const line = (name: string, values: number[]): string => {
  const p = (q: number) => (percentile(values, q) ?? NaN).toFixed(2).padStart(8);
  return `| ${name.padEnd(44)} | ${p(50)} | ${p(90)} | ${p(99)} | ${p(100)} |`;
};

await withProductSystem({ workers: WORKERS, slotsPerWorker: SLOTS }, async (system) => {
  await system.producer.request("submitMany", { count: 2000 }, 120_000);
  await system.orchestrator.request("trace");
  // The broker that listens on the AMQP port (other RabbitMQ nodes may run on the machine).
  const ss = spawnSync("ss", ["-ltnpH", "sport = :5672"], { encoding: "utf8" }).stdout ?? "";
  const brokerPid = Number(process.env.BENCH_BROKER_PID ?? /beam\.smp",pid=(\d+)/.exec(ss)?.[1] ?? NaN);
  const sampler = new RunQueueSampler([
    ...(Number.isInteger(brokerPid) ? [threadsOf("broker", brokerPid, (comm) => /^\d+_scheduler$/.test(comm))] : []),
    mainThread("orchestrator", system.orchestrator.process.pid!),
    mainThread("producer", system.producer.process.pid!),
    { name: "workers", files: system.workers.flatMap((w) => mainThread("", w.process.pid!).files) },
  ]);
  const paced = await system.producer.request<{ trace: Row[]; failed: number; achievedRate: number }>("paced", { ratePerSecond: rate, seconds }, seconds * 1000 + 60_000);
  sampler.stop();
  const t = await system.orchestrator.request<TraceSnapshot>("trace");
  const rows = paced.trace.filter((r) => t.received[r[0]] !== undefined && t.started[r[0]] !== undefined);
  const seg = (f: (r: Row) => number) => rows.map(f);
  console.log(`\nproduct path at ${rate} jobs/s for ${seconds} s (achieved ${Math.round(paced.achievedRate)}), ${rows.length} jobs traced, ${paced.failed} failed\n`);
  console.log(`| segment (ms) | p50 | p90 | p99 | max |\n| --- | --- | --- | --- | --- |`);
  console.log(line("submit → confirmed to the producer", seg((r) => r[2] - r[1])));
  console.log(line("submit → delivery at the dispatcher", seg((r) => t.received[r[0]]! - r[1])));
  console.log(line("delivery → started on a worker (slot wait)", seg((r) => t.started[r[0]]! - t.received[r[0]]!)));
  console.log(line("started → handler's first line (gRPC, worker)", seg((r) => r[3] - t.started[r[0]]!)));
  console.log(line("submit → handler's first line (dispatch)", seg((r) => r[3] - r[1])));
  console.log(line("handler → result back at the producer", seg((r) => r[4] - r[3])));
  console.log(line("result event: publish → confirm (dispatcher)", t.resultConfirms.map((c) => c[1])));
  const held = t.held.map((h) => h[1]);
  const capacity = WORKERS * SLOTS;
  console.log(`\ndeliveries held (unacked) every 5 ms: p50 ${percentile(held, 50)}, p99 ${percentile(held, 99)}, all ${capacity} prefetch units held ${((held.filter((h) => h >= capacity).length / Math.max(1, held.length)) * 100).toFixed(1)} % of the time`);
  const gcs = t.gcs.map((g) => g[1]);
  console.log(`orchestrator GC: ${gcs.length} pauses, ${gcs.reduce((a, b) => a + b, 0).toFixed(0)} ms in all, longest ${Math.max(0, ...gcs).toFixed(1)} ms, ${gcs.filter((d) => d > 5).length} over 5 ms; major (mark-compact) ${t.gcs.filter((g) => g[2] === 2).length}, ${t.gcs.filter((g) => g[2] === 2).reduce((a, g) => a + g[1], 0).toFixed(0)} ms`);
  const dispatch = seg((r) => r[3] - r[1]);
  const p98 = percentile(dispatch, 98) ?? Infinity;
  const tail = rows.filter((r) => r[3] - r[1] >= p98);
  const mean = (f: (r: Row) => number) => (tail.reduce((a, r) => a + f(r), 0) / Math.max(1, tail.length)).toFixed(2);
  const inGc = tail.filter((r) => t.gcs.some(([at, d]) => at < r[3] && at + d > r[1])).length;
  console.log(
    `slowest 2 % (${tail.length} jobs, dispatch >= ${p98.toFixed(1)} ms), mean ms: submit → confirmed ${mean((r) => r[2] - r[1])}, → delivery ${mean((r) => t.received[r[0]]! - r[1])}, ` +
      `delivery → started ${mean((r) => t.started[r[0]]! - t.received[r[0]]!)}, started → handler ${mean((r) => r[3] - t.started[r[0]]!)}; ${inGc} overlap an orchestrator GC pause`,
  );
  // Was the prefetch window full while the slowest waited between their confirm and their delivery?
  const full = tail.map((r) => {
    const during = t.held.filter(([at]) => at >= r[2] && at <= t.received[r[0]]!);
    return during.length === 0 ? NaN : during.filter((h) => h[1] >= capacity).length / during.length;
  }).filter(Number.isFinite);
  console.log(`  slowest 2 %, confirmed → delivery: all ${capacity} prefetch units held ${((full.reduce((a, b) => a + b, 0) / Math.max(1, full.length)) * 100).toFixed(0)} % of that time (mean over ${full.length} jobs)`);
  // Run-queue wait: the whole paced run, then the slowest 2 % over the segments each process is on.
  const first = paced.trace[0]?.[1] ?? 0;
  const last = Math.max(...rows.map((r) => r[3]));
  const pct = (x: number) => `${(x * 100).toFixed(0)} %`;
  const share = (group: string, f: (r: Row) => [number, number]) => pct(tail.reduce((a, r) => a + sampler.share(group, ...f(r)), 0) / Math.max(1, tail.length));
  console.log(
    `runnable but waiting for a CPU, whole run: ${sampler.groups.map((g) => `${g.name} ${pct(sampler.share(g.name, first, last))} (on a CPU ${pct(sampler.share(g.name, first, last, "run"))})`).join(", ")} (per thread; broker = its ${sampler.groups.find((g) => g.name === "broker")?.files.length ?? 0} schedulers)`,
  );
  console.log(
    `  slowest 2 %: broker ${share("broker", (r) => [r[1], t.received[r[0]]!])} of submit → delivery; workers ${share("workers", (r) => [t.started[r[0]]!, r[3]])}, orchestrator ${share("orchestrator", (r) => [t.started[r[0]]!, r[3]])} of started → handler`,
  );
});
process.exit(0);
