import { randomBytes } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import { Dispatcher, InProcessTransport, JobClient, WorkerPool } from "../../src/index.ts";
import type { JobHandleStateEvent } from "../../src/client/types.ts";
import type { JobEvent } from "../../src/job/types.ts";
import { AmqpConnection, AmqpEvents, AmqpQueue } from "../../src/queue/amqp/index.ts";
import { PostgresJobStore } from "../../src/store/postgres/index.ts";
import { rejectionOf } from "../../src/testing/rejection-of.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { usePostgres } from "../helpers/postgres.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";

const rabbit = await useRabbitMq();
const postgres = await usePostgres();

/** A deployment on the shared broker under a queue name of its own: queue, events, and a dispatcher whose worker counts what it ran. */
function deployment(queueName: string, options: { cancelRetentionMs?: number; store?: PostgresJobStore } = {}) {
  const connection = new AmqpConnection({ url: rabbit.url, heartbeatSec: 5 });
  const queue = new AmqpQueue({ connection, queueName });
  const events = new AmqpEvents({ connection, queueName, subscriberExpiresMs: 5000, ...(options.cancelRetentionMs === undefined ? {} : { cancelRetentionMs: options.cancelRetentionMs }) });
  const ran: string[] = [];
  const pool = new WorkerPool();
  const handlers = {
    deploy: async (payload: { env: string }, ctx: { jobId: string }) => {
      ran.push(ctx.jobId);
      return { deployed: payload.env };
    },
  };
  pool.add({ id: "w1", transport: new InProcessTransport({ handlers, slots: 4 }), slots: 4, admission: "trust" });
  const store = options.store;
  const dispatcher = new Dispatcher({ queue, events, pool, ...(options.cancelRetentionMs === undefined ? {} : { cancelRetentionMs: options.cancelRetentionMs }), ...(store === undefined ? {} : { store }) });
  dispatcher.on("error", () => {});
  const client = new JobClient({ queue, events, ...(store === undefined ? {} : { store }) });
  return {
    queue, events, dispatcher, client, ran,
    close: async () => {
      await client.close();
      await dispatcher.close({ signal: AbortSignal.timeout(5000) });
      await pool.close();
      await events.close();
      await queue.close();
      await connection.close();
    },
  };
}

describe.skipIf(!rabbit.available || !postgres.available)("delayed jobs on RabbitMQ and PostgreSQL", () => {
  const schema = `t_delayed_${randomBytes(4).toString("hex")}`;
  afterAll(async () => {
    await rabbit.cleanup();
    await postgres.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  });

  it("shows scheduled and the due time on the handle and the record, then moves on; a job cancelled while it waits never runs", async () => {
    const store = new PostgresJobStore({ connectionString: postgres.url, schema });
    await store.migrate();
    const d = deployment(rabbit.queueName("delayed"), { store });
    const results: JobEvent[] = [];
    const subscription = await d.events.subscribe("*", (event) => {
      if (event.kind === "result") results.push(event);
    });
    try {
      await d.dispatcher.start();
      const runAt = new Date(Date.now() + 1500);
      const kept = await d.client.submit({ type: "deploy", payload: { env: "prod" }, runAt });
      const cancelled = await d.client.submit({ type: "deploy", payload: { env: "staging" }, runAt: runAt.toISOString() });
      const states: JobHandleStateEvent["state"][] = [];
      kept.on("state", (event) => states.push(event.state));
      expect(kept).toMatchObject({ state: "scheduled", runAt: runAt.getTime() });
      expect(await store.get(kept.id)).toMatchObject({ state: "scheduled", runAt: runAt.getTime() });

      await cancelled.cancel("requested", { message: "not today" });
      expect(await rejectionOf(cancelled.result())).toMatchObject({ code: "canceled" });
      expect(await store.get(cancelled.id)).toMatchObject({ state: "cancelled", runAt: runAt.getTime() });

      expect(await kept.result({ timeoutMs: 30_000 })).toEqual({ deployed: "prod" });
      expect(states).toEqual(["queued", "running", "completed"]);
      const record = await store.get(kept.id);
      expect(record).toMatchObject({ state: "completed", runAt: runAt.getTime() });
      expect(record?.attempts[0]?.startedAt).toBeGreaterThanOrEqual(runAt.getTime());
      // The cancelled job came due too: the dispatcher that took it found its record final and
      // published that outcome (a second result event), without running it.
      await waitFor(() => results.filter((event) => event.jobId === cancelled.id).length >= 2, { timeoutMs: 30_000, what: "the cancelled job reaching the dispatcher" });
      expect(d.ran).toEqual([kept.id]);
      expect((await store.get(cancelled.id))?.state).toBe("cancelled");
    } finally {
      await subscription.close();
      await d.close();
      await store.close();
    }
  });

  it("never runs a job cancelled while it waits, without a store, on a dispatcher started after the cancel log's retention", async () => {
    // The cancel log keeps commands 1 s here; the job is due 4 s after its cancel, and the only
    // dispatcher starts 3 s after it: the command reaches it because it was announced again,
    // through the delay cascade, shortly before the job came due.
    const queueName = rabbit.queueName("delayed-nostore");
    const producer = deployment(queueName, { cancelRetentionMs: 1000 });
    const d = deployment(queueName, { cancelRetentionMs: 1000 });
    try {
      const cancelled = await producer.client.submit({ type: "deploy", payload: { env: "prod" }, delayMs: 4000 });
      const kept = await producer.client.submit({ type: "deploy", payload: { env: "staging" }, delayMs: 4000 });
      await cancelled.cancel();
      expect(await rejectionOf(cancelled.result())).toMatchObject({ code: "canceled" });
      await new Promise((resolve) => setTimeout(resolve, 3000));
      const dropped: string[] = [];
      d.dispatcher.on("jobCancelled", ({ job, started }) => dropped.push(`${job.id}:${started}`));
      await d.dispatcher.start();
      expect(await kept.result({ timeoutMs: 30_000 })).toEqual({ deployed: "staging" });
      await waitFor(() => dropped.length > 0, { timeoutMs: 30_000, what: "the cancelled job reaching the dispatcher" });
      expect(dropped).toEqual([`${cancelled.id}:false`]);
      expect(d.ran).toEqual([kept.id]);
    } finally {
      await d.close();
      await producer.close();
    }
  });
});
