/**
 * One role of the job-records integration tests, as its own process:
 * `node records-role.ts <role> '<json config>'`, each role composing the package as a user would
 * on RabbitMQ (AmqpQueue/AmqpEvents) and PostgreSQL (PostgresJobStore).
 *
 * - `producer`: submits `config.jobs` with a store-backed JobClient, prints `submitted <id>`
 *   for each, and exits without waiting for any result.
 * - `orchestrator`: a Dispatcher with the store and a pool of gRPC workers (`config.workers`);
 *   prints `ready`, `started <id> <attempt>` per attempt. With `config.killAfterRecord` it
 *   SIGKILLs itself right after the store recorded an outcome: before it is published and acked.
 * - `reader`: a JobClient started afresh; `client.get(id)` for each of `config.ids`, then (with
 *   `config.await`) `result()`; prints one JSON line per job.
 * - `redriver`: a JobClient started afresh; prints `dead <id> <reason>` for each dead letter,
 *   then redrives `config.ids` and prints `redriven <id>` for each job moved.
 */
import { JobClient } from "../../src/client/job-client.ts";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { OrchestratorError } from "../../src/errors.ts";
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { PostgresJobStore } from "../../src/store/postgres/postgres-job-store.ts";
import type { JobStore } from "../../src/store/types.ts";
import { GrpcTransport } from "../../src/transport/grpc/grpc-transport.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";

interface RoleConfig {
  amqpUrl: string;
  queueName: string;
  postgresUrl: string;
  schema: string;
  jobs?: Array<{ type: string; payload: unknown; id?: string; idempotencyKey?: string; startTimeoutMs?: number; maxAttempts?: number }>;
  workers?: string[];
  killAfterRecord?: boolean;
  storeTimeoutMs?: number;
  ids?: string[];
  await?: boolean;
}

const role = process.argv[2];
const config = JSON.parse(process.argv[3] ?? "{}") as RoleConfig;
const say = (line: string): void => void process.stdout.write(`${line}\n`);
const report = ({ error }: { error: Error }): void => void process.stderr.write(`error ${error.message}\n`);

const connection = new AmqpConnection({ url: config.amqpUrl, heartbeatSec: 2, reconnect: { baseDelayMs: 100, maxDelayMs: 1000 }, connectionName: `test-records-${role}-${process.pid}` });
connection.on("error", report);
const queue = new AmqpQueue({ connection, queueName: config.queueName });
const events = new AmqpEvents({ connection, queueName: config.queueName, subscriberExpiresMs: 10_000 });
queue.on("error", report);
events.on("error", report);
const store = new PostgresJobStore({ connectionString: config.postgresUrl, schema: config.schema });

async function shutdown(code: number): Promise<never> {
  await Promise.allSettled([queue.close(), events.close()]);
  await connection.close().catch(() => {});
  await store.close();
  process.exit(code);
}

if (role === "producer") {
  const client = new JobClient({ queue, events, store });
  client.on("error", report);
  for (const job of config.jobs ?? []) {
    const handle = await client.submit(job);
    say(`submitted ${handle.id}`);
  }
  await client.close();
  await shutdown(0);
} else if (role === "orchestrator") {
  let recording: JobStore = store;
  if (config.killAfterRecord === true) {
    // The store write done, the process dies before the result is published and the delivery acked.
    recording = Object.create(store) as JobStore;
    recording.record = async (transition, options) => {
      const result = await store.record(transition, options);
      if (transition.kind === "finished" && result.status === "applied") {
        say(`recorded ${transition.jobId}`);
        process.kill(process.pid, "SIGKILL");
      }
      return result;
    };
    for (const method of ["create", "get", "getByIdempotencyKey", "list", "counts", "expireUnstarted", "cleanup", "close"] as const) {
      (recording as unknown as Record<string, unknown>)[method] = (store[method] as (...args: unknown[]) => unknown).bind(store);
    }
  }
  const pool = new WorkerPool();
  (config.workers ?? []).forEach((address, i) => pool.add({ id: `w${i}`, transport: new GrpcTransport({ address }), slots: 4, jobTypes: ["echo", "sleep", "context", "failNonRetryable"] }));
  const dispatcher = new Dispatcher({
    queue, events, pool, store: recording, storeTimeoutMs: config.storeTimeoutMs ?? 10_000, noWorkerDelayMs: 200,
    maintenanceIntervalMs: 200, retry: { baseDelayMs: 100, maxDelayMs: 500 }, dispatcherId: `orchestrator-${process.pid}`,
  });
  dispatcher.on("jobStarted", ({ job, attempt }) => say(`started ${job.id} ${attempt}`));
  dispatcher.on("error", report);
  await dispatcher.start();
  say("ready");
  process.once("SIGTERM", () => {
    void (async () => {
      await dispatcher.close({ signal: AbortSignal.timeout(2000) }).catch(() => {});
      await pool.close();
      await shutdown(0);
    })();
  });
} else if (role === "reader") {
  const client = new JobClient({ queue, events, store, storePollIntervalMs: 200 });
  client.on("error", report);
  for (const id of config.ids ?? []) {
    const handle = await client.get(id);
    if (handle === undefined) {
      say(JSON.stringify({ id, found: false }));
      continue;
    }
    let result: unknown;
    let error: unknown;
    if (config.await === true || handle.outcome !== undefined) {
      try {
        result = await handle.result({ timeoutMs: 30_000 });
      } catch (e) {
        error = e instanceof OrchestratorError ? e.toJSON() : String(e);
      }
    }
    say(JSON.stringify({ id, found: true, state: handle.state, reason: handle.reason, result, error, attempts: handle.attempts }));
  }
  await client.close();
  await shutdown(0);
} else if (role === "redriver") {
  const client = new JobClient({ queue, events, store });
  client.on("error", report);
  for (const record of (await client.deadLetters()).records) say(`dead ${record.id} ${record.deadLetter?.reason ?? ""}`);
  const { redriven } = await client.redrive(config.ids?.[0] ?? { all: true });
  for (const id of redriven) say(`redriven ${id}`);
  await client.close();
  await shutdown(0);
} else {
  process.stderr.write(`unknown role ${role}\n`);
  process.exit(2);
}
