/**
 * What affinity and shared rate limits cost, measured on their own:
 *
 * - the pool: CPU time per `acquire()` + `release()` among 1,000 free workers, for a job with
 *   required labels only, with preferred labels (a heap ordered by score), and with a sticky
 *   worker (one map lookup more);
 * - the shared token bucket on PostgreSQL: `PostgresJobStore.takeTokens()` on one hot key from 1
 *   and 4 concurrent callers, against the same statement committed with the WAL flush.
 *
 * `node --no-warnings bench/scheduling-costs.ts [--seconds 2]` (PostgreSQL at DATABASE_URL or the
 * local `test` database; schema `bench_scheduling`, dropped at the end).
 */
import pg from "pg";
import { PostgresJobStore } from "../src/store/postgres/postgres-job-store.ts";
import type { JobRequirements } from "../src/worker-pool/types.ts";
import { WorkerPool } from "../src/worker-pool/worker-pool.ts";
import type { WorkerTransport } from "../src/transport/types.ts";

const seconds = Number(process.argv[process.argv.indexOf("--seconds") + 1] ?? 2) || 2;
const url = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const schema = "bench_scheduling";

const idle: WorkerTransport = {
  execute: () => new Promise(() => {}),
  check: async () => "serving",
  describe: async () => ({ slots: 1, labels: {}, jobTypes: [], version: "bench" }),
  close: async () => {},
};

function poolCost(): void {
  const pool = new WorkerPool();
  for (let i = 0; i < 1000; i++) {
    pool.add({ id: `w${i}`, admission: "trust", transport: idle, slots: 1, labels: { arch: "arm64", ...(i % 10 === 0 ? { cache: "warm" } : {}) } });
  }
  const shapes: Record<string, JobRequirements> = {
    required: { type: "build", labels: { arch: "arm64" } },
    preferred: { type: "build", labels: { arch: "arm64" }, preferred: { cache: { value: "warm", weight: 10 } } },
    sticky: { type: "build", labels: { arch: "arm64" }, worker: { id: "w500" } },
  };
  for (const [name, job] of Object.entries(shapes)) {
    for (let i = 0; i < 10_000; i++) pool.acquire(job)?.release();
    const n = 200_000;
    const before = process.cpuUsage();
    for (let i = 0; i < n; i++) pool.acquire(job)?.release();
    const used = process.cpuUsage(before);
    console.log(`pool ${name.padEnd(9)} ${(((used.user + used.system) * 1000) / n).toFixed(0).padStart(6)} ns CPU per acquire+release (1,000 free workers)`);
  }
  void pool.close();
}

async function takes(label: string, concurrency: number, take: () => Promise<unknown>): Promise<void> {
  let n = 0;
  const until = performance.now() + seconds * 1000;
  const startedAt = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < until) {
      await take();
      n++;
    }
  }));
  console.log(`${label.padEnd(44)} x${concurrency}: ${Math.round(n / ((performance.now() - startedAt) / 1000)).toString().padStart(6)} takes/s`);
}

async function bucketCost(): Promise<void> {
  const admin = new pg.Pool({ connectionString: url, max: 4 });
  await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  const store = new PostgresJobStore({ connectionString: url, schema, poolSize: 4 });
  try {
    await store.migrate();
    const limit = { max: 1_000_000_000, intervalMs: 1, burst: 1_000_000_000 };
    // The same statement with synchronous_commit as the server has it (on): the WAL flush per take.
    const flushed = `INSERT INTO ${schema}.rate_limits AS b (key, tokens, updated_at, granted)
      SELECT 'flushed', 1e9, (extract(epoch FROM clock_timestamp()) * 1000)::float8, true
      ON CONFLICT (key) DO UPDATE SET granted = true, tokens = b.tokens - 1, updated_at = GREATEST(b.updated_at, EXCLUDED.updated_at)
      RETURNING granted, tokens`;
    for (const concurrency of [1, 4]) {
      await takes("takeTokens (synchronous_commit off)", concurrency, () => store.takeTokens("hot", limit, 1));
      await takes("same statement with the WAL flush", concurrency, () => admin.query(flushed));
    }
  } finally {
    await store.close();
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.end();
  }
}

poolCost();
await bucketCost();
