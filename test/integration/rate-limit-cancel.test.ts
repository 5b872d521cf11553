import { afterAll, describe, expect, it } from "vitest";
import { JobClient } from "../../src/client/job-client.ts";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { PostgresJobStore } from "../../src/store/postgres/postgres-job-store.ts";
import { rejectionOf } from "../../src/testing/rejection-of.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { GrpcTransport } from "../../src/transport/grpc/grpc-transport.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { usePostgres } from "../helpers/postgres.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";
import { startWorkerProcess } from "../helpers/worker-process.ts";

const rabbit = await useRabbitMq();
const postgres = await usePostgres();
const SCHEMA = "t_rate_cancel";

/**
 * One dispatcher whose `sleep` jobs start at most once per 4 s (burst 1) and are never held for
 * their token (`maxHoldMs` 0): a second job goes back to the queue for ~4 s. Its cancel commands
 * are remembered only 1 s, less than that deferral.
 */
async function deployment(withStore: boolean, disposer: AsyncDisposableStack) {
  const queueName = rabbit.queueName("rate-cancel");
  const worker = await startWorkerProcess({ slots: 2 });
  disposer.defer(() => worker.stop());
  const connection = new AmqpConnection({ url: rabbit.url, heartbeatSec: 5 });
  disposer.defer(() => connection.close());
  const queue = disposer.use(new AmqpQueue({ connection, queueName }));
  const events = disposer.use(new AmqpEvents({ connection, queueName, subscriberExpiresMs: 5000 }));
  let store: PostgresJobStore | undefined;
  if (withStore) {
    await postgres.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
    store = new PostgresJobStore({ connectionString: postgres.url, schema: SCHEMA, poolSize: 2 });
    disposer.defer(() => (store as PostgresJobStore).close());
    await store.migrate();
  }
  const pool = new WorkerPool();
  disposer.defer(() => pool.close());
  pool.add({ id: "w1", transport: new GrpcTransport({ address: worker.address }), slots: 2 });
  const dispatcher = new Dispatcher({
    queue, events, pool, store, cancelRetentionMs: 1000,
    rateLimits: { types: { sleep: { max: 1, intervalMs: 4000, burst: 1 } }, maxHoldMs: 0 },
  });
  disposer.defer(() => dispatcher.close({ signal: AbortSignal.timeout(5000) }).catch(() => {}));
  const client = disposer.use(new JobClient({ queue, events, store, defaults: { timeoutMs: 60_000 } }));
  queue.on("error", () => {});
  events.on("error", () => {});
  dispatcher.on("error", () => {});
  client.on("error", () => {});
  await waitFor(() => pool.capacity === 2, { timeoutMs: 15_000, what: "the worker admitted" });
  await dispatcher.start();
  return { queueName, client, dispatcher, store };
}

describe.skipIf(!rabbit.available || !postgres.available)("cancelling a job a rate limit sent back to the queue, on RabbitMQ with a worker process", () => {
  afterAll(async () => {
    await rabbit.cleanup();
    await postgres.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
  });

  for (const withStore of [false, true]) {
    it(`ends it cancelled at once, before it comes back, and it never runs (${withStore ? "with a PostgreSQL store" : "no store"})`, async () => {
      await using disposer = new AsyncDisposableStack();
      const d = await deployment(withStore, disposer);
      const order: string[] = [];
      const started: string[] = [];
      d.dispatcher.on("jobStarted", ({ job }) => started.push(job.id));
      // The first job takes the only token; the second is sent back until the next one is due.
      await (await d.client.submit({ type: "sleep", payload: { ms: 1 } })).result({ timeoutMs: 20_000 });
      const second = await d.client.submit({ type: "sleep", payload: { ms: 1 } });
      d.dispatcher.on("jobDeferred", ({ job, reason }) => job.id === second.id && order.push(`deferred ${reason}`));
      d.dispatcher.on("jobCancelled", ({ job, started: ran }) => job.id === second.id && order.push(`came back, cancelled (started: ${ran})`));
      await waitFor(() => second.state === "unschedulable", { timeoutMs: 20_000, what: "the second job sent back by the rate limit" });

      await second.cancel("requested", { message: "no longer needed" });
      const error = await rejectionOf(second.result({ timeoutMs: 20_000 }));
      order.push(`settled ${error.code}`);
      expect(second.state).toBe("cancelled");
      if (d.store !== undefined) expect((await d.store.get(second.id))?.state).toBe("cancelled");

      // It comes back after the deferral and is settled without running, though the dispatcher
      // remembers cancels for 1 s only: the command was kept until the job was back.
      await waitFor(() => order.some((line) => line.startsWith("came back")), { timeoutMs: 30_000, what: "the second job back at the dispatcher" });
      // (`jobDeferred` is emitted once the copy is acked, which the cancel may overtake.)
      expect(order.filter((line) => !line.startsWith("deferred"))).toEqual(["settled canceled", "came back, cancelled (started: false)"]);
      expect(order).toContain("deferred rate_limited");
      expect(started).not.toContain(second.id);
      await waitFor(async () => (await rabbit.messageCount(d.queueName)) === 0, { timeoutMs: 5000, what: "the job queue empty" });
      if (d.store !== undefined) expect((await d.store.get(second.id))?.state).toBe("cancelled");
    });
  }
});
