/**
 * `npm run bench`: the product against two baselines measured in the same run on the same machine
 * (a hand-written amqplib → grpc-js pipeline, and BullMQ on three private Redis servers: no
 * persistence, AOF fsync every second, AOF fsync always), plus the product's
 * own figures (latency, cancel, failover, pool, health monitor, heap). Prints a table with targets
 * met / not met and writes bench/results/latest.json.
 *
 *   npm run bench                      # full run (several minutes)
 *   npm run bench -- --quick           # short run, a few minutes
 *   npm run bench -- --rounds 7        # throughput rounds (medians of per-round figures)
 *   npm run bench -- --jobs 10000      # measured jobs per round (default 20,000; quick 5,000)
 *   npm run bench -- --only baseline,bullmq   # sections: throughput (= product,baseline,bullmq),
 *                                             # telemetry, store, features (= discovery, …: bench/features.ts),
 *                                             # latency, cancel, failover, pool, health, idle, memory
 *
 * A figure whose product piece is not in the tree yet, or whose run failed, is `null` with a reason
 * (in the table and in `null_reasons` of the JSON); no figure is ever made up.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { measureBaselineLatency, runBaselineRound, type PacedLatency } from "./baseline/run.ts";
import { measureBullmqLatency, runBullmqRound } from "./bullmq/run.ts";
import { FEATURES } from "./features.ts";
import { findPids, nowMs, procCpuUs } from "./lib/cpu.ts";
import { killAllChildren, startChild } from "./lib/proc.ts";
import { brokerVersion } from "./lib/rabbit.ts";
import { REDIS_PERSISTENCES, startRedisServers, type RedisPersistence, type RedisServer } from "./lib/redis-servers.ts";
import { machineInfo, printTable, Report, verdict, writeJson, type Target } from "./lib/report.ts";
import { missingPieces, type Requirement } from "./lib/requirements.ts";
import { summarizeProfile } from "./lib/profile-summary.ts";
import { median, percentile, ratio, round } from "./lib/stats.ts";
import type { ThroughputRound } from "./lib/throughput.ts";

const [major, minor] = process.versions.node.split(".").map(Number) as [number, number];
if (major < 22 || (major === 22 && minor < 18)) {
  console.error(`bench needs node >= 22.18 (type stripping); this is ${process.version}. Run it with \`npm run bench\`.`);
  process.exit(1);
}

const { values: flags } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    rounds: { type: "string" },
    jobs: { type: "string" },
    only: { type: "string" },
    out: { type: "string" },
    profile: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
});
if (flags.help) {
  console.log("usage: npm run bench -- [--quick] [--rounds N] [--jobs N] [--only a,b] [--out file.json] [--profile]");
  console.log("--jobs: measured jobs per throughput round (default 20000, quick 5000)");
  console.log("--profile: CPU-profile the product orchestrator and the hand-written dispatcher (bench/results/profiles/), print where their time goes");
  console.log(`sections: throughput (product, baseline, bullmq), telemetry, store, features (${FEATURES.map((f) => f.id).join(", ")}), latency, cancel, failover, pool, health, idle, memory`);
  process.exit(0);
}

const SECTIONS = ["product", "baseline", "bullmq", "telemetry", "store", "latency", "cancel", "failover", "pool", "health", "idle", "memory"] as const;
type SectionId = (typeof SECTIONS)[number];
const only = new Set<string>();
const FEATURE_IDS = FEATURES.map((f) => f.id);
for (const name of (flags.only ?? "").split(",").map((s) => s.trim()).filter(Boolean)) {
  if (name === "throughput") ["product", "baseline", "bullmq"].forEach((s) => only.add(s));
  else if (name === "features") FEATURE_IDS.forEach((s) => only.add(s));
  else if ((SECTIONS as readonly string[]).includes(name) || FEATURE_IDS.includes(name)) only.add(name);
  else {
    console.error(`unknown section ${JSON.stringify(name)}; known: throughput, ${SECTIONS.join(", ")}, features (= ${FEATURE_IDS.join(", ")})`);
    process.exit(2);
  }
}
/** Whether a section (or a feature of the features section) runs. */
const enabled = (id: SectionId | string): boolean => only.size === 0 || only.has(id);

/** Sizes of a run. Quick keeps the whole bench to a few minutes on 2 cores (five throughput systems a round). */
const config = flags.quick
  ? { rounds: 2, jobs: 5000, warmupJobs: 1000, latencySeconds: 5, latencyRounds: 1, cancels: 50, failovers: 3, poolWindowMs: 500, healthSeconds: 5, idleCounts: [10, 100, 1000], idleSeconds: 5, idleDetectionSamples: 1, memoryJobs: 100_000, hardCapMs: 300_000 }
  : { rounds: 5, jobs: 20_000, warmupJobs: 2000, latencySeconds: 20, latencyRounds: 2, cancels: 200, failovers: 10, poolWindowMs: 2000, healthSeconds: 15, idleCounts: [10, 100, 1000], idleSeconds: 10, idleDetectionSamples: 2, memoryJobs: 100_000, hardCapMs: 30 * 60_000 };
if (flags.rounds !== undefined) {
  const n = Number(flags.rounds);
  if (!Number.isInteger(n) || n < 1 || n > 50) {
    console.error(`Expected --rounds to be an integer from 1 to 50, got ${JSON.stringify(flags.rounds)}`);
    process.exit(2);
  }
  config.rounds = n;
}
if (flags.jobs !== undefined) {
  const n = Number(flags.jobs);
  if (!Number.isInteger(n) || n < 100 || n > 1_000_000) {
    console.error(`Expected --jobs to be an integer from 100 to 1000000, got ${JSON.stringify(flags.jobs)}`);
    process.exit(2);
  }
  config.jobs = n;
}

/** The processes of each system whose CPU is reported (plus `broker` and the totals). */
const ROLES = {
  product: ["orchestrator", "producer", "workers", "total", "broker", "total_with_broker"],
  baseline: ["dispatcher", "producer", "workers", "total", "broker", "total_with_broker"],
  bullmq_none: ["producer", "workers", "total", "broker", "total_with_broker"],
  bullmq_everysec: ["producer", "workers", "total", "broker", "total_with_broker"],
  bullmq_always: ["producer", "workers", "total", "broker", "total_with_broker"],
} as const;

/** The BullMQ baselines, one per persistence of its private Redis server, and how the table names them. */
const BULLMQ = {
  none: { system: "bullmq_none", label: "BullMQ, Redis without persistence" },
  everysec: { system: "bullmq_everysec", label: "BullMQ, Redis AOF fsync every second" },
  always: { system: "bullmq_always", label: "BullMQ, Redis AOF fsync always (equal durability)" },
} as const satisfies Record<RedisPersistence, { system: string; label: string }>;
/** The Redis of the latency reference: the one whose writes are as durable as a quorum queue's confirm. */
const LATENCY_REDIS: RedisPersistence = "always";

/** Total concurrency shared by every system: 4 worker processes × 16 slots. */
const WORKERS = 4;
const SLOTS = 16;
const ROUND_TIMEOUT_MS = flags.quick ? 40_000 : 180_000;

/** The idle section's fields (bench/idle/run.ts). */
const IDLE_FIELDS = [
  ...[10, 100, 1000].flatMap((n) => [`idle.orchestrator_cpu_pct_${n}_workers`, `idle.workers_cpu_pct_${n}_workers`]),
  "idle.orchestrator_cpu_pct_per_worker", "idle.workers_cpu_pct_per_worker",
  "idle.silent_worker_detect_ms_p50", "idle.silent_worker_detect_ms_max", "idle.reset_worker_detect_ms_max",
  "idle.spurious_unhealthy_1000_workers",
];
/**
 * How soon a silent worker (connection open, nothing answers) is reported unhealthy by the ping
 * code that the idle work left unchanged (the session's Ping timer): its last Ping leaves up to
 * one period (1 s) before the silence begins and is judged late at the first tick once 2 s
 * (`pingTimeoutMs`) have passed; a tick that reads the time a little short waits one more period. So 1–4 s,
 * mostly 2–3 s. The samples of the run before the change are in BENCHMARKS.md.
 */
const IDLE_DETECT_BOUND_MS = 4000;

const TARGETS: Target[] = [
  { field: "ratios.product_vs_baseline", label: "product vs hand-written", op: ">=", value: 1, unit: "×" },
  { field: "ratios.product_vs_bullmq_always", label: "product vs BullMQ on AOF always", op: ">=", value: 1, unit: "×" },
  { field: "ratios.product_vs_bullmq_everysec", label: "product vs BullMQ on AOF everysec", op: ">=", value: 1, unit: "×" },
  { field: "ratios.product_vs_bullmq_none", label: "product vs BullMQ without persistence", op: ">=", value: 0.8, unit: "×" },
  { field: "cpu_us_per_job.orchestrator", label: "orchestrator CPU per job", op: "<=", value: 100, unit: "µs" },
  { field: "latency_ms.dispatch_p99", label: "dispatch p99 at half load", op: "<=", value: 10, unit: "ms" },
  { field: "latency_ms.dispatch_p99_vs_bullmq", label: "dispatch p99 at half load, product / BullMQ (AOF always) at the same rate", op: "<=", value: 1, unit: "×" },
  { field: "cancel_ms.p99", label: "cancel p99", op: "<=", value: 20, unit: "ms" },
  { field: "failover_ms.sigkill_p50", label: "SIGKILL failover p50", op: "<=", value: 1000, unit: "ms" },
  { field: "failover_ms.never_ran", label: "SIGKILLed jobs that never ran again", op: "<=", value: 0, unit: "" },
  { field: "memory.heap_growth_pct", label: "heap growth", op: "<=", value: 10, unit: "%" },
  { field: "idle.orchestrator_cpu_pct_1000_workers", label: "idle orchestrator CPU, 1,000 connected workers", op: "<=", value: 10, unit: "%" },
  { field: "idle.silent_worker_detect_ms_max", label: "silent worker reported unhealthy, slowest sample", op: "<=", value: IDLE_DETECT_BOUND_MS, unit: "ms" },
  { field: "ratios.telemetry_on_vs_plain", label: "throughput with an OpenTelemetry SDK on", op: ">=", value: 0.9, unit: "×" },
  { field: "ratios.telemetry_absent_vs_plain", label: "throughput with the API absent", op: ">=", value: 0.99, unit: "×" },
  { field: "ratios.store_postgres_vs_none", label: "throughput with PostgresJobStore", op: ">=", value: 0.8, unit: "×" },
  ...FEATURES.filter((f) => f.target !== undefined).map((f) => ({ field: `ratios.${f.id}_vs_bare`, label: `throughput with ${f.label}`, op: ">=" as const, value: f.target!, unit: "×" })),
];

const ROWS = [
  { field: "throughput.product_jobs_s", label: "product throughput", unit: "jobs/s" },
  { field: "throughput.baseline_jobs_s", label: "hand-written pipeline throughput", unit: "jobs/s" },
  ...Object.values(BULLMQ).map((b) => ({ field: `throughput.${b.system}_jobs_s`, label: `${b.label} throughput`, unit: "jobs/s" })),
  { field: "ratios.product_vs_baseline", label: "product / hand-written (median of rounds)", unit: "×" },
  ...Object.values(BULLMQ).map((b) => ({ field: `ratios.product_vs_${b.system}`, label: `product / ${b.label} (median of rounds)`, unit: "×" })),
  { field: "cpu_us_per_job.orchestrator", label: "CPU/job product orchestrator", unit: "µs" },
  { field: "cpu_us_per_job.product_total", label: "CPU/job product, all our processes", unit: "µs" },
  { field: "cpu_us_per_job.baseline_dispatcher", label: "CPU/job hand-written dispatcher", unit: "µs" },
  { field: "cpu_us_per_job.baseline_total", label: "CPU/job hand-written, all processes", unit: "µs" },
  ...Object.values(BULLMQ).map((b) => ({ field: `cpu_us_per_job.${b.system}_total`, label: `CPU/job ${b.label}, all node processes`, unit: "µs" })),
  { field: "cpu_us_per_job.product_broker", label: "CPU/job RabbitMQ (product)", unit: "µs" },
  { field: "cpu_us_per_job.baseline_broker", label: "CPU/job RabbitMQ (hand-written)", unit: "µs" },
  ...Object.values(BULLMQ).map((b) => ({ field: `cpu_us_per_job.${b.system}_broker`, label: `CPU/job Redis (${b.label})`, unit: "µs" })),
  { field: "throughput.telemetry_plain_jobs_s", label: "product, API installed, no SDK (telemetry section)", unit: "jobs/s" },
  { field: "throughput.telemetry_on_jobs_s", label: "product, OpenTelemetry SDK on (batch spans, no-op export)", unit: "jobs/s" },
  { field: "throughput.telemetry_absent_jobs_s", label: "product, @opentelemetry/api absent", unit: "jobs/s" },
  { field: "ratios.telemetry_on_vs_plain", label: "SDK on / no SDK (median of rounds)", unit: "×" },
  { field: "ratios.telemetry_absent_vs_plain", label: "API absent / no SDK (median of rounds)", unit: "×" },
  { field: "throughput.store_none_jobs_s", label: "product, no job store (store section)", unit: "jobs/s" },
  { field: "throughput.store_postgres_jobs_s", label: "product, PostgresJobStore", unit: "jobs/s" },
  { field: "ratios.store_postgres_vs_none", label: "PostgresJobStore / no store (median of rounds)", unit: "×" },
  { field: "cpu_us_per_job.store_postgres_server", label: "CPU/job PostgreSQL server (store rounds)", unit: "µs" },
  { field: "cpu_us_per_job.store_orchestrator_added", label: "CPU/job orchestrator, added by the store", unit: "µs" },
  { field: "cpu_us_per_job.store_producer_added", label: "CPU/job producer, added by the store", unit: "µs" },
  { field: "throughput.feature_bare_jobs_s", label: "product, bare (features section)", unit: "jobs/s" },
  ...FEATURES.flatMap((f) => [
    { field: `throughput.feature_${f.id}_jobs_s`, label: `product, ${f.label}`, unit: "jobs/s" },
    { field: `ratios.${f.id}_vs_bare`, label: `${f.id} / bare (median of rounds)`, unit: "×" },
  ]),
  { field: "latency_ms.dispatch_p50", label: "enqueue → handler start p50", unit: "ms" },
  { field: "latency_ms.dispatch_p99", label: "enqueue → handler start p99", unit: "ms" },
  { field: "latency_ms.result_p99", label: "enqueue → result p99", unit: "ms" },
  { field: "latency_ms.baseline_dispatch_p99", label: "hand-written, same rate: enqueue → handler start p99", unit: "ms" },
  { field: "latency_ms.dispatch_p99_vs_baseline", label: "dispatch p99, product / hand-written", unit: "×" },
  { field: "latency_ms.bullmq_dispatch_p50", label: "BullMQ (AOF always), same rate: add → processor start p50", unit: "ms" },
  { field: "latency_ms.bullmq_dispatch_p99", label: "BullMQ (AOF always), same rate: add → processor start p99", unit: "ms" },
  { field: "latency_ms.dispatch_p99_vs_bullmq", label: "dispatch p99, product / BullMQ (AOF always)", unit: "×" },
  { field: "cancel_ms.p99", label: "cancel() → handler signal p99", unit: "ms" },
  { field: "failover_ms.sigkill_p50", label: "SIGKILL → job running elsewhere p50", unit: "ms" },
  { field: "failover_ms.never_ran", label: "SIGKILLed jobs not run again within 10 s", unit: "" },
  { field: "failover_ms.failed_samples", label: "failover samples with any fault", unit: "" },
  { field: "pool.acquire_release_ops_s", label: "pool acquire+release, 10,000 workers", unit: "ops/s" },
  { field: "health.cpu_pct_1000_workers", label: "health monitor CPU, 1,000 workers at 1 s", unit: "%" },
  { field: "idle.orchestrator_cpu_pct_10_workers", label: "idle orchestrator CPU, 10 gRPC workers (HealthMonitor at 1 s)", unit: "%" },
  { field: "idle.orchestrator_cpu_pct_100_workers", label: "idle orchestrator CPU, 100 workers", unit: "%" },
  { field: "idle.orchestrator_cpu_pct_1000_workers", label: "idle orchestrator CPU, 1,000 workers", unit: "%" },
  { field: "idle.orchestrator_cpu_pct_per_worker", label: "idle orchestrator CPU per worker (slope)", unit: "%" },
  { field: "idle.workers_cpu_pct_10_workers", label: "idle workers' process CPU, 10 workers", unit: "%" },
  { field: "idle.workers_cpu_pct_100_workers", label: "idle workers' process CPU, 100 workers", unit: "%" },
  { field: "idle.workers_cpu_pct_1000_workers", label: "idle workers' process CPU, 1,000 workers", unit: "%" },
  { field: "idle.workers_cpu_pct_per_worker", label: "idle workers' CPU per worker (slope)", unit: "%" },
  { field: "idle.silent_worker_detect_ms_p50", label: "silent worker (connection open, nothing answers) → unhealthy p50", unit: "ms" },
  { field: "idle.silent_worker_detect_ms_max", label: "silent worker → unhealthy, slowest", unit: "ms" },
  { field: "idle.reset_worker_detect_ms_max", label: "reset connection (killed worker) → unhealthy, slowest", unit: "ms" },
  { field: "idle.spurious_unhealthy_1000_workers", label: "of 1,000 idle workers, judged unhealthy while nothing failed", unit: "" },
  { field: "memory.heap_growth_pct", label: "heap growth over 100,000 jobs", unit: "%" },
];

// The modules a section needs, and the symbols it uses from them (module files rather than the
// public entry files, so one half-done piece elsewhere does not hide a section that can run).
const POOL: Requirement = { entry: "src/worker-pool/worker-pool.ts", symbols: ["WorkerPool"] };
const DISPATCHER: Requirement = { entry: "src/dispatcher/dispatcher.ts", symbols: ["Dispatcher"] };
const REAL_PATH: Requirement[] = [
  POOL,
  DISPATCHER,
  { entry: "src/client/job-client.ts", symbols: ["JobClient"] },
  { entry: "src/transport/grpc/index.ts", symbols: ["GrpcTransport"] },
  { entry: "src/worker/index.ts", symbols: ["serveWorker"] },
  { entry: "src/queue/amqp/index.ts", symbols: ["AmqpQueue", "AmqpEvents"] },
];
const REQUIREMENTS: Record<"product" | "telemetry" | "store" | "latency" | "cancel" | "failover" | "pool" | "health" | "idle" | "memory", Requirement[]> = {
  product: REAL_PATH,
  telemetry: [...REAL_PATH, { entry: "src/telemetry/telemetry.ts", symbols: ["resolveTelemetry"] }],
  store: [...REAL_PATH, { entry: "src/store/postgres/postgres-job-store.ts", symbols: ["PostgresJobStore"] }],
  latency: REAL_PATH,
  cancel: REAL_PATH,
  failover: REAL_PATH,
  pool: [POOL],
  health: [POOL, { entry: "src/health/health-monitor.ts", symbols: ["HealthMonitor"] }],
  idle: [POOL, { entry: "src/health/health-monitor.ts", symbols: ["HealthMonitor"] }, { entry: "src/transport/grpc/index.ts", symbols: ["GrpcTransport"] }, { entry: "src/worker/index.ts", symbols: ["serveWorker"] }],
  memory: [
    POOL,
    DISPATCHER,
    { entry: "src/queue/memory-queue.ts", symbols: ["MemoryQueue"] },
    { entry: "src/transport/in-process-transport.ts", symbols: ["InProcessTransport"] },
    { entry: "src/client/job-client.ts", symbols: ["JobClient"] },
  ],
};

const profileDir = fileURLToPath(new URL("./results/profiles/", import.meta.url));
if (flags.profile) {
  rmSync(profileDir, { recursive: true, force: true });
  mkdirSync(profileDir, { recursive: true });
  process.env.BENCH_CPU_PROF_DIR = profileDir;
}

const report = new Report();
// Per-round records of each section, declared before any section runs: an interrupted run
// (SIGINT, the hard cap) writes them whatever section it stopped in.
const throughputRounds: Record<string, unknown>[] = [];
const telemetryRounds: Record<string, unknown>[] = [];
const storeRounds: Record<string, unknown>[] = [];
const featureRounds: Record<string, unknown>[] = [];
const idleRuns: unknown[] = [];
const latencyRuns: Record<string, unknown>[] = [];
const started = new Date();
const t0 = nowMs();
const outPath = flags.out ?? fileURLToPath(new URL("./results/latest.json", import.meta.url));
let finished = false;

process.on("exit", killAllChildren);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    // An interrupted run still writes what it measured (the rest null with this reason).
    if (!finished) {
      console.error(`bench: ${signal}; writing what was measured`);
      try {
        finish(`interrupted (${signal}) before this figure was measured`);
      } catch (err) {
        console.error(`bench: could not write the results: ${errorText(err)}`);
      }
    }
    killAllChildren();
    process.exit(130);
  });
}
const hardCap = setTimeout(() => {
  if (finished) return;
  console.error(`bench: hard time cap of ${config.hardCapMs / 1000} s reached; writing what was measured`);
  finish("timed out: the run hit its hard time cap before this figure was measured");
  killAllChildren();
  process.exit(1);
}, config.hardCapMs);
hardCap.unref();

function log(message: string): void {
  console.log(`[${((nowMs() - t0) / 1000).toFixed(1).padStart(6)} s] ${message}`);
}

// The measurement of each product section, and the function it exports.
const SECTION_FILES: Record<keyof typeof REQUIREMENTS, [file: string, fn: string]> = {
  product: ["./product/throughput.ts", "runProductRound"],
  telemetry: ["./product/throughput.ts", "runProductRound"],
  store: ["./product/throughput.ts", "runProductRound"],
  latency: ["./product/latency.ts", "pacedLatency"],
  cancel: ["./product/cancel.ts", "measureCancel"],
  failover: ["./product/failover.ts", "measureFailover"],
  pool: ["./product/pool.ts", "measurePool"],
  health: ["./product/health.ts", "measureHealth"],
  idle: ["./idle/run.ts", "measureIdle"],
  memory: ["./product/memory.ts", "measureHeap"],
};

/** Why a section cannot run, or undefined when it can. */
async function unavailable(id: keyof typeof REQUIREMENTS): Promise<string | undefined> {
  if (!enabled(id)) return "section not selected (--only)";
  const missing = await missingPieces(REQUIREMENTS[id]);
  if (missing) return missing;
  const file = SECTION_FILES[id][0];
  if (!existsSync(fileURLToPath(new URL(file, import.meta.url)))) return `its measurement (bench/${file.slice(2)}) is not written yet`;
  return undefined;
}

/** Loads a section's measurement function (its file may land after this runner was written). */
async function sectionFunction<A, R>(id: keyof typeof REQUIREMENTS): Promise<(args: A) => Promise<R>> {
  const [file, fn] = SECTION_FILES[id];
  const mod = (await import(new URL(file, import.meta.url).href)) as Record<string, unknown>;
  if (typeof mod[fn] !== "function") throw new Error(`bench/${file.slice(2)} does not export ${fn}`);
  return mod[fn] as (args: A) => Promise<R>;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message.split("\n")[0]! : String(err);
}

/** Runs a section's measurement in a fresh child process (see lib/section-child.ts) and returns its answer. */
async function inChild<T>(id: keyof typeof REQUIREMENTS, args: unknown, execArgv: string[] = [], timeoutMs = 120_000): Promise<T> {
  const [file, fn] = SECTION_FILES[id];
  const child = await startChild(new URL("./lib/section-child.ts", import.meta.url), {
    name: `${id}-bench`,
    args: ["--module", new URL(file, import.meta.url).href, "--fn", fn],
    execArgv,
  });
  try {
    return await child.request<T>("run", args, timeoutMs);
  } finally {
    await child.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// Sections


/** The private Redis servers of the BullMQ baselines, started on first need and stopped by finish() or on exit. */
let redisServers: Map<RedisPersistence, RedisServer> | undefined;
let redisFailure: string | undefined;

/** The servers, started once for the whole run; `undefined` with `redisFailure` set when they cannot start. */
async function privateRedis(): Promise<Map<RedisPersistence, RedisServer> | undefined> {
  if (redisServers || redisFailure) return redisServers;
  try {
    redisServers = await startRedisServers();
    log(`private Redis servers: ${[...redisServers.values()].map((s) => `${s.persistence} on ${s.port}`).join(", ")}`);
  } catch (err) {
    redisFailure = `the private Redis servers could not start: ${errorText(err)}`;
  }
  return redisServers;
}

async function stopRedis(): Promise<void> {
  const servers = redisServers;
  redisServers = undefined;
  if (servers) await Promise.all([...servers.values()].map((s) => s.stop()));
}

type ThroughputSystem = "product" | "baseline" | (typeof BULLMQ)[RedisPersistence]["system"];

async function throughputSection(): Promise<void> {
  const systems: ThroughputSystem[] = [];
  if (enabled("baseline")) systems.push("baseline");
  if (enabled("bullmq")) systems.push(...REDIS_PERSISTENCES.map((p) => BULLMQ[p].system));
  if (enabled("product")) systems.push("product");
  if (systems.length === 0) return;
  const reasons: Partial<Record<ThroughputSystem, string>> = {};
  if (enabled("baseline") && !services.rabbitmq) reasons.baseline = "RabbitMQ does not answer at 127.0.0.1:5672";
  if (enabled("bullmq")) {
    const servers = await privateRedis();
    for (const p of REDIS_PERSISTENCES) if (!servers?.get(p)) reasons[BULLMQ[p].system] = redisFailure ?? "its Redis server did not start";
  }
  if (enabled("product")) reasons.product = (await unavailable("product")) ?? (services.rabbitmq ? undefined : "RabbitMQ does not answer at 127.0.0.1:5672");
  type RoundOptions = { jobs: number; warmupJobs: number; workers: number; slotsPerWorker: number; timeoutMs: number };
  let runProductRound: ((o: RoundOptions) => Promise<ThroughputRound>) | undefined;
  if (enabled("product") && !reasons.product) {
    try {
      runProductRound = await sectionFunction<RoundOptions, ThroughputRound>("product");
    } catch (err) {
      reasons.product = `its measurement fails to load: ${errorText(err)}`;
    }
  }

  const bullmq = (p: RedisPersistence) => () => {
    const server = redisServers!.get(p)!;
    return runBullmqRound({ jobs: config.jobs, warmupJobs: config.warmupJobs, workers: WORKERS, concurrencyPerWorker: SLOTS, timeoutMs: ROUND_TIMEOUT_MS, port: server.port, redisPid: server.pid });
  };
  const runners: Record<ThroughputSystem, () => Promise<ThroughputRound>> = {
    baseline: () => runBaselineRound({ jobs: config.jobs, warmupJobs: config.warmupJobs, workers: WORKERS, slotsPerWorker: SLOTS, timeoutMs: ROUND_TIMEOUT_MS }),
    bullmq_none: bullmq("none"),
    bullmq_everysec: bullmq("everysec"),
    bullmq_always: bullmq("always"),
    product: () => runProductRound!({ jobs: config.jobs, warmupJobs: config.warmupJobs, workers: WORKERS, slotsPerWorker: SLOTS, timeoutMs: ROUND_TIMEOUT_MS }),
  };
  const references = systems.filter((s) => s !== "product");

  for (let r = 0; r < config.rounds; r++) {
    // Rotate the order so no system always runs first (or last) on a warm or tired machine.
    const order = systems.map((_, i) => systems[(i + r) % systems.length]!);
    const results: Record<string, ThroughputRound | null> = {};
    const errors: Record<string, string> = {};
    for (const system of order) {
      if (reasons[system]) {
        results[system] = null;
        continue;
      }
      try {
        const result = await runners[system]();
        results[system] = result;
        log(`round ${r + 1}/${config.rounds} ${system}: ${Math.round(result.jobsPerSecond)} jobs/s, ${Math.round(result.cpuUsPerJob.total ?? NaN)} µs CPU/job (our processes)`);
      } catch (err) {
        results[system] = null;
        errors[system] = errorText(err);
        log(`round ${r + 1}/${config.rounds} ${system}: FAILED: ${errors[system]}`);
      }
    }
    // Ratios per round (same machine state), then the median of them.
    const ratios = Object.fromEntries(references.map((ref) => [`product_vs_${ref}`, ratio(results.product?.jobsPerSecond, results[ref]?.jobsPerSecond)]));
    throughputRounds.push({ round: r + 1, order, ...results, errors, ...ratios });
    log(`round ${r + 1}/${config.rounds} ratios: ${Object.entries(ratios).map(([k, v]) => `${k} ${round(v, 2) ?? "n/a"}`).join(", ")}`);
  }

  const perSystem = (system: string): (ThroughputRound | null)[] => throughputRounds.map((r) => (r[system] as ThroughputRound | null) ?? null);
  const sectionOf = (system: ThroughputSystem): SectionId => (system.startsWith("bullmq") ? "bullmq" : (system as SectionId));
  const reasonFor = (system: ThroughputSystem): string => {
    if (!enabled(sectionOf(system))) return "section not selected (--only)";
    if (reasons[system]) return reasons[system]!;
    const errs = throughputRounds.map((r) => (r.errors as Record<string, string>)[system]).filter(Boolean);
    return errs.length > 0 ? `every round failed: ${errs[0]}` : "not measured";
  };
  const all = Object.keys(ROLES) as ThroughputSystem[];
  for (const system of all) {
    const rounds = perSystem(system).filter((r): r is ThroughputRound => r !== null);
    report.set(`throughput.${system}_jobs_s`, round(median(rounds.map((r) => r.jobsPerSecond)), 0), reasonFor(system));
    const roles = new Set(rounds.flatMap((r) => Object.keys(r.cpuUsPerJob)));
    if (rounds.length === 0) report.setNull(ROLES[system].map((role) => `cpu_us_per_job.${system}_${role}`), reasonFor(system));
    for (const role of roles) {
      report.set(`cpu_us_per_job.${system}_${role}`, round(median(rounds.map((r) => r.cpuUsPerJob[role])), 1), "no round measured it");
    }
  }
  report.set("cpu_us_per_job.orchestrator", report.get("cpu_us_per_job.product_orchestrator") ?? null, reasonFor("product"));
  for (const ref of all.filter((s) => s !== "product")) {
    const field = `product_vs_${ref}`;
    const value = round(median(throughputRounds.map((r) => r[field] as number | null | undefined)), 3);
    const lacking = (["product", ref] as const).filter((s) => report.get(`throughput.${s}_jobs_s`) === null).map((s) => `${s}: ${reasonFor(s)}`);
    report.set(`ratios.${field}`, value, `needs product and ${ref} measured in the same round; ${lacking.join("; ") || "no round had both"}`);
  }
}


/**
 * The product's throughput three ways in the same rounds, order rotated (bench/product/
 * telemetry-mode.ts): `plain` (the API installed, no SDK: the reference), `on` (a real SDK with a
 * batch span processor and a no-op exporter in every process) and `absent` (the API cannot be
 * resolved). Ratios per round, then their median.
 */
async function telemetrySection(): Promise<void> {
  const fields = ["throughput.telemetry_plain_jobs_s", "throughput.telemetry_on_jobs_s", "throughput.telemetry_absent_jobs_s", "ratios.telemetry_on_vs_plain", "ratios.telemetry_absent_vs_plain"];
  const reason = (await unavailable("telemetry")) ?? (services.rabbitmq ? undefined : "RabbitMQ does not answer at 127.0.0.1:5672");
  if (reason) {
    report.setNull(fields, reason);
    return;
  }
  type RoundOptions = { jobs: number; warmupJobs: number; workers: number; slotsPerWorker: number; timeoutMs: number };
  const runRound = await sectionFunction<RoundOptions, ThroughputRound>("telemetry");
  const modes = ["plain", "on", "absent"] as const;
  const previous = process.env.BENCH_TELEMETRY;
  try {
    for (let r = 0; r < config.rounds; r++) {
      const results: Record<string, number | null> = {};
      for (const mode of modes.map((_, i) => modes[(i + r) % modes.length]!)) {
        // Every process of the round (worker, orchestrator, producer) inherits the mode.
        process.env.BENCH_TELEMETRY = mode;
        try {
          const result = await runRound({ jobs: config.jobs, warmupJobs: config.warmupJobs, workers: WORKERS, slotsPerWorker: SLOTS, timeoutMs: ROUND_TIMEOUT_MS });
          results[mode] = result.jobsPerSecond;
          log(`telemetry round ${r + 1}/${config.rounds} ${mode}: ${Math.round(result.jobsPerSecond)} jobs/s`);
        } catch (err) {
          results[mode] = null;
          log(`telemetry round ${r + 1}/${config.rounds} ${mode}: FAILED: ${errorText(err)}`);
        }
      }
      telemetryRounds.push({ round: r + 1, ...results, on_vs_plain: ratio(results.on, results.plain), absent_vs_plain: ratio(results.absent, results.plain) });
    }
  } finally {
    if (previous === undefined) delete process.env.BENCH_TELEMETRY;
    else process.env.BENCH_TELEMETRY = previous;
  }
  for (const mode of modes) {
    report.set(`throughput.telemetry_${mode}_jobs_s`, round(median(telemetryRounds.map((r) => r[mode] as number | null)), 0), "every round failed");
  }
  report.set("ratios.telemetry_on_vs_plain", round(median(telemetryRounds.map((r) => r.on_vs_plain as number | null)), 3), "no round measured both");
  report.set("ratios.telemetry_absent_vs_plain", round(median(telemetryRounds.map((r) => r.absent_vs_plain as number | null)), 3), "no round measured both");
}


/** CPU microseconds every `postgres` process has used so far (backends opened later start at 0). */
function postgresCpuUs(): Map<number, number> {
  const out = new Map<number, number>();
  for (const pid of findPids("postgres")) {
    const us = procCpuUs(pid);
    if (us !== null) out.set(pid, us);
  }
  return out;
}

/**
 * The product's throughput without a job store and with a `PostgresJobStore` (producer and
 * orchestrator both recording, schema created and migrated per round, dropped after), in the
 * same rounds, order rotated (bench/product/store-mode.ts). Ratio per round, then the median.
 * The store's CPU: the PostgreSQL server's processes over the whole store round (sampled every
 * 100 ms, as its backends exit with the round; warm-up included, per job of the round; other
 * sessions on the machine count too), and what the store
 * adds to the orchestrator's and the producer's CPU per job.
 */
async function storeSection(): Promise<void> {
  const fields = ["throughput.store_none_jobs_s", "throughput.store_postgres_jobs_s", "ratios.store_postgres_vs_none", "cpu_us_per_job.store_postgres_server", "cpu_us_per_job.store_orchestrator_added", "cpu_us_per_job.store_producer_added"];
  const { BENCH_DATABASE_URL } = await import("./product/store-mode.ts");
  const postgresUp = await import("pg").then(async ({ default: pg }) => {
    const client = new pg.Client({ connectionString: BENCH_DATABASE_URL, connectionTimeoutMillis: 3000 });
    client.on("error", () => {});
    try {
      await client.connect();
      return true;
    } catch {
      return false;
    } finally {
      await client.end().catch(() => {});
    }
  }, () => false);
  const reason = (await unavailable("store")) ?? (services.rabbitmq ? undefined : "RabbitMQ does not answer at 127.0.0.1:5672") ?? (postgresUp ? undefined : `PostgreSQL does not answer at ${BENCH_DATABASE_URL}`);
  if (reason) {
    report.setNull(fields, reason);
    return;
  }
  type RoundOptions = { jobs: number; warmupJobs: number; workers: number; slotsPerWorker: number; timeoutMs: number };
  const runRound = await sectionFunction<RoundOptions, ThroughputRound>("store");
  const { PostgresJobStore } = await import("../src/store/postgres/postgres-job-store.ts");
  const modes = ["none", "postgres"] as const;
  const saved = { store: process.env.BENCH_STORE, schema: process.env.BENCH_STORE_SCHEMA };
  try {
    for (let r = 0; r < config.rounds; r++) {
      const results: Record<string, number | null> = {};
      const cpu: Record<string, Record<string, number | null>> = {};
      let serverUsPerJob: number | null = null;
      for (const mode of modes.map((_, i) => modes[(i + r) % modes.length]!)) {
        const schema = `bench_store_${process.pid}_${r}`;
        const admin = mode === "postgres" ? new PostgresJobStore({ connectionString: BENCH_DATABASE_URL, schema }) : undefined;
        try {
          if (admin) {
            await admin.migrate();
            process.env.BENCH_STORE = "postgres";
            process.env.BENCH_STORE_SCHEMA = schema;
          } else {
            delete process.env.BENCH_STORE;
          }
          // The round's backends exit with its processes: sampled every 100 ms, the last sample kept.
          const before = admin ? postgresCpuUs() : undefined;
          const last = new Map<number, number>();
          const sample = (): void => {
            for (const [pid, us] of postgresCpuUs()) last.set(pid, us);
          };
          const sampler = admin ? setInterval(sample, 100) : undefined;
          let result: ThroughputRound;
          try {
            result = await runRound({ jobs: config.jobs, warmupJobs: config.warmupJobs, workers: WORKERS, slotsPerWorker: SLOTS, timeoutMs: ROUND_TIMEOUT_MS });
          } finally {
            clearInterval(sampler);
          }
          if (before) {
            sample();
            let used = 0;
            for (const [pid, after] of last) used += after - (before.get(pid) ?? 0);
            serverUsPerJob = used / (config.jobs + config.warmupJobs);
          }
          results[mode] = result.jobsPerSecond;
          cpu[mode] = result.cpuUsPerJob;
          log(`store round ${r + 1}/${config.rounds} ${mode}: ${Math.round(result.jobsPerSecond)} jobs/s, orchestrator ${round(result.cpuUsPerJob.orchestrator, 0)} µs/job`);
        } catch (err) {
          results[mode] = null;
          log(`store round ${r + 1}/${config.rounds} ${mode}: FAILED: ${errorText(err)}`);
        } finally {
          if (admin) {
            const { default: pg } = await import("pg");
            const client = new pg.Client({ connectionString: BENCH_DATABASE_URL });
            await client.connect().then(() => client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)).catch(() => {});
            await client.end().catch(() => {});
            await admin.close();
          }
        }
      }
      const added = (role: string): number | null => {
        const a = cpu.postgres?.[role];
        const b = cpu.none?.[role];
        return typeof a === "number" && typeof b === "number" ? a - b : null;
      };
      storeRounds.push({
        round: r + 1, ...results, postgres_vs_none: ratio(results.postgres, results.none),
        postgres_server_us_per_job: serverUsPerJob, orchestrator_added_us: added("orchestrator"), producer_added_us: added("producer"),
      });
    }
  } finally {
    if (saved.store === undefined) delete process.env.BENCH_STORE;
    else process.env.BENCH_STORE = saved.store;
    if (saved.schema === undefined) delete process.env.BENCH_STORE_SCHEMA;
    else process.env.BENCH_STORE_SCHEMA = saved.schema;
  }
  const med = (key: string, digits = 0) => round(median(storeRounds.map((r) => r[key] as number | null)), digits);
  report.set("throughput.store_none_jobs_s", med("none"), "every round failed");
  report.set("throughput.store_postgres_jobs_s", med("postgres"), "every round failed");
  report.set("ratios.store_postgres_vs_none", med("postgres_vs_none", 3), "no round measured both");
  report.set("cpu_us_per_job.store_postgres_server", med("postgres_server_us_per_job"), "no store round completed");
  report.set("cpu_us_per_job.store_orchestrator_added", med("orchestrator_added_us"), "no round measured both");
  report.set("cpu_us_per_job.store_producer_added", med("producer_added_us"), "no round measured both");
}


/**
 * The cost of each selected feature of bench/features.ts: per round the bare product and the
 * product with each feature on, order rotated, fresh processes each; ratio to the bare product
 * within the round, then the median.
 */
async function featuresSection(): Promise<void> {
  const selected = FEATURES.filter((f) => enabled(f.id));
  const fieldsOf = (id: string) => [`throughput.feature_${id}_jobs_s`, `ratios.${id}_vs_bare`];
  for (const f of FEATURES.filter((f) => !enabled(f.id))) report.setNull(fieldsOf(f.id), "section not selected (--only)");
  if (selected.length === 0) {
    report.setNull(["throughput.feature_bare_jobs_s"], "section not selected (--only)");
    return;
  }
  // The product's own pieces (whether or not the throughput section runs), and the broker.
  const common = (await missingPieces(REQUIREMENTS.product)) ?? (services.rabbitmq ? undefined : "RabbitMQ does not answer at 127.0.0.1:5672");
  const runnable: typeof selected = [];
  for (const f of selected) {
    const reason = common ?? (await missingPieces(f.requirements));
    if (reason) report.setNull(fieldsOf(f.id), reason);
    else runnable.push(f);
  }
  if (runnable.length === 0) {
    report.setNull(["throughput.feature_bare_jobs_s"], common ?? "no selected feature can run");
    return;
  }
  type RoundOptions = { jobs: number; warmupJobs: number; workers: number; slotsPerWorker: number; timeoutMs: number };
  const runRound = await sectionFunction<RoundOptions, ThroughputRound>("product");
  const modes = ["bare", ...runnable.map((f) => f.id)];
  for (let r = 0; r < config.rounds; r++) {
    const results: Record<string, number | null> = {};
    for (const mode of modes.map((_, i) => modes[(i + r) % modes.length]!)) {
      const feature = runnable.find((f) => f.id === mode);
      let prepared: Awaited<ReturnType<NonNullable<typeof feature>["prepare"]>> | undefined;
      const saved = new Map<string, string | undefined>();
      try {
        prepared = await feature?.prepare();
        for (const [key, value] of Object.entries(prepared?.env ?? {})) {
          saved.set(key, process.env[key]);
          process.env[key] = value;
        }
        const result = await runRound({ jobs: config.jobs, warmupJobs: config.warmupJobs, workers: WORKERS, slotsPerWorker: SLOTS, timeoutMs: ROUND_TIMEOUT_MS });
        results[mode] = result.jobsPerSecond;
        log(`features round ${r + 1}/${config.rounds} ${mode}: ${Math.round(result.jobsPerSecond)} jobs/s, orchestrator ${round(result.cpuUsPerJob.orchestrator, 0)} µs/job`);
      } catch (err) {
        results[mode] = null;
        log(`features round ${r + 1}/${config.rounds} ${mode}: FAILED: ${errorText(err)}`);
      } finally {
        for (const [key, value] of saved) {
          if (value === undefined) delete process.env[key];
          else process.env[key] = value;
        }
        await prepared?.cleanup?.().catch(() => {});
      }
    }
    featureRounds.push({ round: r + 1, ...results, ...Object.fromEntries(runnable.map((f) => [`${f.id}_vs_bare`, ratio(results[f.id], results.bare)])) });
  }
  const med = (key: string, digits = 0) => round(median(featureRounds.map((r) => r[key] as number | null)), digits);
  report.set("throughput.feature_bare_jobs_s", med("bare"), "every round failed");
  for (const f of runnable) {
    report.set(`throughput.feature_${f.id}_jobs_s`, med(f.id), "every round failed");
    report.set(`ratios.${f.id}_vs_bare`, med(`${f.id}_vs_bare`, 3), "no round measured both");
  }
}

/** Sections of the product alone, each in its own process, each `null` with a reason when its pieces are missing. */
async function productSection(
  id: "latency" | "cancel" | "failover" | "pool" | "health" | "idle" | "memory",
  fields: readonly string[],
  run: () => Promise<Record<string, number | null>>,
): Promise<void> {
  const reason = await unavailable(id);
  if (reason) {
    report.setNull(fields, reason);
    return;
  }
  log(`${id}: running`);
  try {
    const values = await run();
    for (const field of fields) {
      // A field the run left out on purpose has its reason set already.
      if (values[field] === undefined && report.nullReasons[field]) continue;
      report.set(field, values[field] ?? null, "the run returned no value for it");
    }
    for (const [field, value] of Object.entries(values)) if (!fields.includes(field)) report.set(field, value);
    log(`${id}: ${fields.map((f) => `${f}=${values[f] === null || values[f] === undefined ? "null" : round(values[f], 2)}`).join(", ")}`);
  } catch (err) {
    report.setNull(fields, `run failed: ${errorText(err)}`);
    log(`${id}: FAILED: ${errorText(err)}`);
  }
}

function finish(pendingReason: string): void {
  finished = true;
  // Any required field not set by now was not reached.
  for (const field of [...ROWS.map((r) => r.field), "cpu_us_per_job.orchestrator"]) {
    if (report.get(field) === undefined) report.set(field, null, pendingReason);
  }
  const targets = TARGETS.map((t) => ({ ...t, measured: report.get(t.field) ?? null, verdict: verdict(report, t) }));
  writeJson(outPath, {
    schema: 1,
    date: started.toISOString(),
    duration_s: round((nowMs() - t0) / 1000, 1),
    command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`,
    machine: { ...machineInfo(), rabbitmq: services.rabbitmq ?? null, redis: services.redis ?? null },
    setup: {
      quick: flags.quick,
      rounds: config.rounds,
      jobs_per_round: config.jobs,
      warmup_jobs: config.warmupJobs,
      workers: WORKERS,
      slots_per_worker: SLOTS,
      queue: "RabbitMQ durable quorum queue, persistent messages, publisher confirms (window 256)",
      bullmq: "addBulk in chunks of 500, removeOnComplete, 4 processes × concurrency 16, on private redis-servers started by the bench: none (--save \"\" --appendonly no), everysec (--appendonly yes --appendfsync everysec), always (--appendonly yes --appendfsync always); latency reference on always",
      cpu: "process.cpuUsage() of each child over IPC; broker/Redis from /proc/<pid>/stat; microseconds per job",
    },
    ...report.data,
    targets,
    null_reasons: report.nullReasons,
    throughput_rounds: throughputRounds,
    telemetry_rounds: telemetryRounds,
    store_rounds: storeRounds,
    feature_rounds: featureRounds,
    latency_runs: latencyRuns,
    idle_runs: idleRuns,
  });
  console.log("");
  printTable(report, ROWS, TARGETS);
  console.log(`\nwrote ${outPath}`);
  if (flags.profile) printProfiles();
}

/** With --profile: where each profiled process spent its CPU (self time by file or package). */
function printProfiles(): void {
  for (const file of readdirSync(profileDir).filter((f) => f.endsWith(".cpuprofile")).sort()) {
    const summary = summarizeProfile(JSON.parse(readFileSync(`${profileDir}${file}`, "utf8")));
    console.log(`\n${file}: busy ${Math.round(summary.busyMs)} ms (whole process life, warm-up included)`);
    for (const r of summary.byFile.slice(0, 12)) console.log(`  ${r.pct.toFixed(1).padStart(5)} %  ${r.name}`);
  }
  console.log(`\nprofiles in ${profileDir}; per function: node bench/lib/profile-summary.ts <file>`);
}

/** The redis-server binary's version (the bench starts its own servers from it). */
function redisServerVersion(): string | undefined {
  try {
    return /v=([\d.]+)/.exec(execFileSync("redis-server", ["--version"], { encoding: "utf8" }))?.[1];
  } catch {
    return undefined;
  }
}
const services = { rabbitmq: await brokerVersion(), redis: redisServerVersion() };
log(`bench ${flags.quick ? "--quick " : ""}on ${machineInfo().cpus} cpus, node ${process.version}, ${config.rounds} throughput rounds; RabbitMQ ${services.rabbitmq ?? "absent"}, Redis ${services.redis ?? "absent"}`);

await productSection("pool", ["pool.acquire_release_ops_s"], () =>
  inChild("pool", { workers: 10_000, windowMs: config.poolWindowMs, windows: config.rounds }),
);
await productSection("health", ["health.cpu_pct_1000_workers"], () =>
  inChild("health", { workers: 1000, intervalMs: 1000, seconds: config.healthSeconds }),
);
await productSection("idle", IDLE_FIELDS, async () => {
  const measure = await sectionFunction<object, { counts: unknown[]; figures: Figures }>("idle");
  const { counts, figures } = await measure({ counts: config.idleCounts, seconds: config.idleSeconds, detectionSamples: config.idleDetectionSamples });
  idleRuns.push(...counts);
  return figures;
});
await productSection("memory", ["memory.heap_growth_pct"], () =>
  inChild("memory", { jobs: config.memoryJobs, slots: WORKERS * SLOTS }, ["--expose-gc"], 300_000),
);
await throughputSection();
await telemetrySection();
if (enabled("store")) await storeSection();
else report.setNull(["throughput.store_none_jobs_s", "throughput.store_postgres_jobs_s", "ratios.store_postgres_vs_none", "cpu_us_per_job.store_postgres_server", "cpu_us_per_job.store_orchestrator_added", "cpu_us_per_job.store_producer_added"], "section not selected (--only)");
await featuresSection();
const halfLoad = (): number => {
  const product = report.get("throughput.product_jobs_s");
  return typeof product === "number" ? Math.max(50, Math.round(product / 2)) : 0;
};
type Figures = Record<string, number | null>;

const LATENCY_FIELDS = [
  "latency_ms.dispatch_p50", "latency_ms.dispatch_p99", "latency_ms.result_p99",
  "latency_ms.baseline_dispatch_p99", "latency_ms.dispatch_p99_vs_baseline",
  "latency_ms.bullmq_dispatch_p50", "latency_ms.bullmq_dispatch_p99", "latency_ms.dispatch_p99_vs_bullmq",
];

/**
 * Latency at half load, with two references paced at the same rate in the same run: the
 * hand-written pipeline and BullMQ on the Redis of equal durability (AOF `always`). On a shared
 * machine their tails show how much of the product's is the machine's. Rounds rotate which system
 * goes first; each system's samples are pooled over the rounds.
 */
async function latencyRounds(): Promise<Figures> {
  const paced = await sectionFunction<object, PacedLatency & { rate: number }>("latency");
  const seconds = config.latencySeconds / config.latencyRounds;
  let rate = halfLoad();
  const systems = ["product", "baseline", "bullmq"] as const;
  type LatencySystem = (typeof systems)[number];
  const pooled = Object.fromEntries(systems.map((s) => [s, { dispatch: [] as number[], settled: [] as number[] }])) as Record<LatencySystem, { dispatch: number[]; settled: number[] }>;
  const skipped: Partial<Record<LatencySystem, string>> = {};
  const redis = (await privateRedis())?.get(LATENCY_REDIS);
  if (!redis) skipped.bullmq = redisFailure ?? "its Redis server did not start";
  for (let r = 0; r < config.latencyRounds; r++) {
    // The product goes first in round 1: its run sets the rate when throughput was not measured (--only latency).
    const order = systems.map((_, i) => systems[(i + r) % systems.length]!);
    for (const system of order) {
      if (skipped[system]) continue;
      const options = { ratePerSecond: rate, seconds, workers: WORKERS, slotsPerWorker: SLOTS };
      let run: PacedLatency;
      try {
        if (system === "product") {
          const product = await paced(options);
          rate = product.rate;
          run = product;
        } else if (system === "baseline") {
          run = await measureBaselineLatency(options);
        } else {
          run = await measureBullmqLatency({ ...options, port: redis!.port, redisPid: redis!.pid });
        }
      } catch (err) {
        // A reference that fails leaves its figures null; the product's own failure fails the section.
        if (system === "product") throw err;
        skipped[system] = `run failed: ${errorText(err)}`;
        log(`latency round ${r + 1}/${config.latencyRounds} ${system}: FAILED: ${errorText(err)}`);
        continue;
      }
      pooled[system].dispatch.push(...run.dispatchMs);
      pooled[system].settled.push(...run.settledMs);
      const p99 = percentile(run.dispatchMs, 99);
      latencyRuns.push({ round: r + 1, system, rate, seconds, achieved_rate: round(run.achievedRate, 0), samples: run.dispatchMs.length, dispatch_p50: round(percentile(run.dispatchMs, 50)), dispatch_p99: round(p99), settled_p99: round(percentile(run.settledMs, 99)) });
      log(`latency round ${r + 1}/${config.latencyRounds} ${system} at ${rate} jobs/s: dispatch p50 ${round(percentile(run.dispatchMs, 50))} ms, p99 ${round(p99)} ms`);
    }
  }
  const productP99 = percentile(pooled.product.dispatch, 99);
  const baselineP99 = percentile(pooled.baseline.dispatch, 99);
  const bullmqP99 = percentile(pooled.bullmq.dispatch, 99);
  for (const [system, fields] of [["baseline", ["latency_ms.baseline_dispatch_p50", "latency_ms.baseline_dispatch_p99", "latency_ms.baseline_ack_p99", "latency_ms.dispatch_p99_vs_baseline"]], ["bullmq", ["latency_ms.bullmq_dispatch_p50", "latency_ms.bullmq_dispatch_p99", "latency_ms.bullmq_completed_p99", "latency_ms.dispatch_p99_vs_bullmq"]]] as const) {
    if (pooled[system].dispatch.length === 0) report.setNull(fields, skipped[system] ?? "not measured");
  }
  const figures: Figures = {
    "latency_ms.dispatch_p50": percentile(pooled.product.dispatch, 50),
    "latency_ms.dispatch_p99": productP99,
    "latency_ms.result_p50": percentile(pooled.product.settled, 50),
    "latency_ms.result_p99": percentile(pooled.product.settled, 99),
    "latency_ms.baseline_dispatch_p50": percentile(pooled.baseline.dispatch, 50),
    "latency_ms.baseline_dispatch_p99": baselineP99,
    "latency_ms.baseline_ack_p99": percentile(pooled.baseline.settled, 99),
    "latency_ms.dispatch_p99_vs_baseline": ratio(productP99, baselineP99),
    "latency_ms.bullmq_dispatch_p50": percentile(pooled.bullmq.dispatch, 50),
    "latency_ms.bullmq_dispatch_p99": bullmqP99,
    "latency_ms.bullmq_completed_p99": percentile(pooled.bullmq.settled, 99),
    "latency_ms.dispatch_p99_vs_bullmq": ratio(productP99, bullmqP99),
    "latency_ms.rate_jobs_s": rate,
    "latency_ms.samples": pooled.product.dispatch.length,
  };
  // A reference that measured nothing keeps its reason rather than a bare null.
  for (const [field, value] of Object.entries(figures)) if (value === null && report.nullReasons[field]) delete figures[field];
  return figures;
}
await productSection("latency", LATENCY_FIELDS, latencyRounds);
await productSection("cancel", ["cancel_ms.p99"], async () =>
  (await sectionFunction<object, Figures>("cancel"))({ samples: config.cancels, workers: WORKERS, slotsPerWorker: SLOTS }),
);
await productSection("failover", ["failover_ms.sigkill_p50", "failover_ms.never_ran", "failover_ms.failed_samples"], async () =>
  (await sectionFunction<object, Figures>("failover"))({ samples: config.failovers, workers: WORKERS, slotsPerWorker: SLOTS }),
);

await stopRedis();
finish(only.size > 0 ? "section not selected (--only)" : "not reached");
clearTimeout(hardCap);
process.exit(0);
