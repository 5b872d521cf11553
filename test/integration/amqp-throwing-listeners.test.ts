import { afterAll, describe, expect, it, vi } from "vitest";
import { JobClient } from "../../src/client/job-client.ts";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { HealthMonitor } from "../../src/health/health-monitor.ts";
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { contractJob } from "../../src/testing/contracts/queue-contract.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import type { JobContext } from "../../src/worker/types.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";
import { TcpProxy } from "../helpers/tcp-proxy.ts";

const rabbit = await useRabbitMq();

/** Registers, on every event in `events`, a listener that counts the call and throws. */
function throwEverywhere(emitter: { on(event: string, fn: (...args: unknown[]) => void): unknown }, label: string, events: readonly string[], calls: Map<string, number>) {
  for (const event of events) {
    emitter.on(event, () => {
      calls.set(`${label}.${event}`, (calls.get(`${label}.${event}`) ?? 0) + 1);
      throw new Error(`${label} ${event} listener exploded`);
    });
  }
}

describe.skipIf(!rabbit.available)("every listener of every class throws", () => {
  afterAll(() => rabbit.cleanup());

  it("the AmqpConnection stays one connection, jobs still complete and fail as they should, and one TCP connection to the broker", async () => {
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    try {
      const queueName = rabbit.queueName("hostile");
      // Through a TCP proxy, which counts the TCP connections opened to the broker.
      await using proxy = await TcpProxy.start({ port: Number(new URL(rabbit.url).port || 5672) });
      await using connection = new AmqpConnection({ url: proxy.url(rabbit.url) });
      await using queue = new AmqpQueue({ connection, queueName });
      await using events = new AmqpEvents({ connection, queueName });
      await using pool = new WorkerPool();
      const handler = (payload: { fail?: boolean }, ctx: JobContext) => {
        ctx.progress(0.5, "half");
        ctx.log("a line");
        if (payload.fail) throw new Error("failing on purpose");
        return { ok: true };
      };
      pool.add({ id: "w1", transport: new InProcessTransport({ handlers: { work: handler }, slots: 2 }) });
      const monitor = new HealthMonitor({ target: pool, intervalMs: 50 });
      const dispatcher = new Dispatcher({ queue, events, pool, retry: { baseDelayMs: 10, maxDelayMs: 20 } });
      const client = new JobClient({ queue, events });
      const calls = new Map<string, number>();
      throwEverywhere(connection, "connection", ["connected", "disconnected", "reconnected", "error", "blocked", "unblocked"], calls);
      throwEverywhere(queue, "queue", ["disconnected", "reconnected", "deliveryLost", "deadLettered", "error"], calls);
      throwEverywhere(events, "events", ["disconnected", "reconnected", "error"], calls);
      throwEverywhere(pool, "pool", ["workerAdded", "workerRemoved", "workerStateChanged", "capacityChanged", "error"], calls);
      throwEverywhere(monitor, "monitor", ["checkFailed", "workerUnhealthy", "workerRecovered", "error"], calls);
      const dispatcherEvents = ["jobStarted", "jobCompleted", "jobFailed", "jobRetrying", "jobCancelled", "jobDeadLettered", "jobDeferred", "jobAbandoned", "workerStateChanged", "error"];
      throwEverywhere(dispatcher, "dispatcher", dispatcherEvents, calls);
      throwEverywhere(client, "client", ["error"], calls);
      monitor.start();
      await dispatcher.start();
      await using _closing = {
        [Symbol.asyncDispose]: async () => {
          await dispatcher.close({ signal: AbortSignal.timeout(5000) });
          await monitor.close();
        },
      };

      const good = await Promise.all(Array.from({ length: 5 }, () => client.submit({ type: "work", payload: {} })));
      const bad = await client.submit({ type: "work", payload: { fail: true }, maxAttempts: 2 });
      for (const handle of [...good, bad]) throwEverywhere(handle, "handle", ["state", "progress", "log", "error"], calls);
      for (const handle of good) expect(await handle.result({ timeoutMs: 15_000 })).toEqual({ ok: true });
      await expect(bad.result({ timeoutMs: 15_000 })).rejects.toMatchObject({ code: "handler_failed" });
      await waitFor(async () => (await queue.deadLetters()).length === 1, { timeoutMs: 10_000, what: "the failed job dead-lettered" });

      // The listeners did run (and throw) for the events that happened...
      for (const event of ["connection.connected", "dispatcher.jobStarted", "dispatcher.jobCompleted", "dispatcher.jobRetrying", "dispatcher.jobFailed", "queue.deadLettered", "handle.state", "handle.progress", "handle.log"]) {
        expect(calls.get(event), event).toBeGreaterThan(0);
      }
      // ...and each class reported the throws to its (throwing) error listeners instead of breaking.
      for (const event of ["connection.error", "dispatcher.error", "queue.error"]) expect(calls.get(event), event).toBeGreaterThan(0);
      // One connection the whole time: a throwing listener never made the connection start over.
      expect(calls.get("connection.connected")).toBe(1);
      expect(calls.get("connection.disconnected")).toBeUndefined();
      expect(connection.state).toBe("connected");
      expect(proxy.accepted).toBe(1);
      expect(proxy.connections).toBe(1);
    } finally {
      warn.mockRestore();
    }
  });

  it("reconnects once after a cut although every connected/disconnected/reconnected listener (direct and forwarded) throws", async () => {
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    try {
      const queueName = rabbit.queueName("hostile");
      await using proxy = await TcpProxy.start({ port: Number(new URL(rabbit.url).port || 5672) });
      await using connection = new AmqpConnection({ url: proxy.url(rabbit.url), reconnect: { baseDelayMs: 50, maxDelayMs: 200 } });
      await using queue = new AmqpQueue({ connection, queueName });
      await using events = new AmqpEvents({ connection, queueName });
      const calls = new Map<string, number>();
      throwEverywhere(connection, "connection", ["connected", "disconnected", "reconnected", "error"], calls);
      throwEverywhere(queue, "queue", ["disconnected", "reconnected", "error"], calls);
      throwEverywhere(events, "events", ["disconnected", "reconnected", "error"], calls);
      await queue.ready();
      await events.ready();
      expect(proxy.accepted).toBe(1);
      proxy.cut();
      await waitFor(() => calls.get("connection.reconnected") === 1, { timeoutMs: 15_000, what: "the reconnect" });
      for (const event of ["connection.disconnected", "queue.disconnected", "events.disconnected", "queue.reconnected", "events.reconnected"]) {
        expect(calls.get(event), event).toBe(1);
      }
      // Work goes on over the new connection, and it stays the only one.
      const delivered: string[] = [];
      await queue.consume((delivery) => {
        delivered.push(delivery.job.id);
        void delivery.ack();
      }, { prefetch: 1 });
      const job = contractJob();
      await queue.enqueue(job);
      await waitFor(() => delivered.length === 1, { timeoutMs: 10_000, what: "a job after the reconnect" });
      expect(calls.get("connection.connected")).toBe(2);
      expect(calls.get("connection.reconnected")).toBe(1);
      expect(proxy.accepted).toBe(2);
      expect(proxy.connections).toBe(1);
    } finally {
      warn.mockRestore();
    }
  });
});
