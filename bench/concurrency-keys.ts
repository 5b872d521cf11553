/**
 * What a concurrency key costs on RabbitMQ (docs/rabbitmq.md, "Concurrency keys" cites it):
 * `node --no-warnings bench/concurrency-keys.ts [--jobs 100]`. Every queue it declares is deleted.
 *
 * One dispatcher (this process) on AmqpQueue with an in-process worker whose handler returns at
 * once, run two ways, each serial by its own means:
 * - `slot`: unkeyed jobs on a worker of 1 slot (the next job starts when the slot frees);
 * - `key`: jobs of one key of limit 1 on a worker of 4 slots (the next starts when the key frees).
 * Reported per way: the gap from one job's handler end to the next job's handler start (p50,
 * p99), the whole run's jobs/s, and this process's CPU time per job (user + system).
 */
import { randomUUID } from "node:crypto";
import { Dispatcher } from "../src/dispatcher/dispatcher.ts";
import { JobClient } from "../src/client/job-client.ts";
import { AmqpConnection } from "../src/queue/amqp/amqp-connection.ts";
import { AmqpEvents } from "../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../src/queue/amqp/amqp-queue.ts";
import { InProcessTransport } from "../src/transport/in-process-transport.ts";
import { WorkerPool } from "../src/worker-pool/worker-pool.ts";
import { deleteTopology } from "./lib/rabbit.ts";

const url = process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672";
const jobsArg = process.argv.indexOf("--jobs");
const JOBS = jobsArg > 0 ? Number(process.argv[jobsArg + 1]) : 100;
const KEY = "bench:key";

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN;
}

async function run(way: "slot" | "key"): Promise<{ gaps: number[]; jobsPerSec: number; cpuUsPerJob: number; queueName: string }> {
  const queueName = `bench-keys-${way}-${randomUUID()}`;
  const connection = new AmqpConnection({ url });
  const queue = new AmqpQueue({ connection, queueName });
  const events = new AmqpEvents({ connection, queueName });
  const marks: Array<[number, number]> = [];
  const slots = way === "slot" ? 1 : 4;
  const transport = new InProcessTransport({
    slots,
    handlers: {
      noop: async () => {
        const start = performance.now();
        marks.push([start, performance.now()]);
        return null;
      },
    },
  });
  const pool = new WorkerPool();
  pool.add({ id: "w", transport, slots });
  const dispatcher = new Dispatcher({ queue, events, pool });
  const client = new JobClient({ queue, events, defaults: { timeoutMs: 60_000 } });
  await dispatcher.start();
  // Warm up: declare the key's queue and start its consumer.
  await (await client.submit({ type: "noop", payload: null, ...(way === "key" ? { concurrency: { key: KEY } } : {}) })).result();
  marks.length = 0;
  const cpu = process.cpuUsage();
  const started = performance.now();
  const handles = [];
  for (let i = 0; i < JOBS; i++) handles.push(await client.submit({ type: "noop", payload: null, ...(way === "key" ? { concurrency: { key: KEY } } : {}) }));
  await Promise.all(handles.map((h) => h.result()));
  const elapsed = performance.now() - started;
  const used = process.cpuUsage(cpu);
  marks.sort((a, b) => a[0] - b[0]);
  const gaps = marks.slice(1).map(([start], i) => start - (marks[i] as [number, number])[1]);
  await dispatcher.close();
  await client.close();
  await pool.close();
  await queue.close();
  await events.close();
  await connection.close();
  return { gaps, jobsPerSec: (JOBS / elapsed) * 1000, cpuUsPerJob: (used.user + used.system) / JOBS, queueName };
}

const results = [];
for (const way of ["slot", "key"] as const) results.push({ way, ...(await run(way)) });
for (const { queueName } of results) await deleteTopology(queueName, { keys: [KEY], url });
console.log(`| way (${JOBS} jobs, serial) | gap end → next start p50 | p99 | jobs/s | CPU per job (this process) |`);
console.log("| --- | --- | --- | --- | --- |");
for (const r of results) {
  console.log(`| ${r.way} | ${percentile(r.gaps, 0.5).toFixed(2)} ms | ${percentile(r.gaps, 0.99).toFixed(2)} ms | ${r.jobsPerSec.toFixed(0)} | ${(r.cpuUsPerJob / 1000).toFixed(2)} ms |`);
}
