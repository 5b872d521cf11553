import { afterAll, describe, expect, it } from "vitest";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import type { DispatcherEvents } from "../../src/dispatcher/types.ts";
import { HealthMonitor } from "../../src/health/health-monitor.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import type { JobResultEvent } from "../../src/job/types.ts";
import { contractJob } from "../../src/testing/contracts/queue-contract.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import type { JobContext } from "../../src/worker/types.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";
import { TcpProxy } from "../helpers/tcp-proxy.ts";

const rabbit = await useRabbitMq();

describe.skipIf(!rabbit.available)("Dispatcher on AmqpQueue when its connection to the broker is cut mid-job", () => {
  afterAll(() => rabbit.cleanup());

  it("aborts the running attempt on its worker, publishes nothing for it, and completes the redelivery once, never two attempts at once", async () => {
    await using proxy = await TcpProxy.start({ port: Number(new URL(rabbit.url).port || 5672) });
    const queueName = rabbit.queueName();
    // Only the queue's link goes through the proxy: the events stay up while its deliveries are lost.
    await using queue = new AmqpQueue({ url: proxy.url(rabbit.url), queueName, heartbeatSec: 2, reconnect: { baseDelayMs: 50, maxDelayMs: 500 } });
    await using events = new AmqpEvents({ url: rabbit.url, queueName, subscriberExpiresMs: 5000 });
    queue.on("error", () => {});
    events.on("error", () => {});
    let running = 0;
    let maxRunning = 0;
    const abortReasons: unknown[] = [];
    const handler = async (_payload: unknown, ctx: JobContext) => {
      maxRunning = Math.max(maxRunning, ++running);
      try {
        if (ctx.attempt > 1) return `attempt ${ctx.attempt}`;
        return await new Promise<never>((_resolve, reject) =>
          ctx.signal.addEventListener("abort", () => (abortReasons.push(ctx.signal.reason), reject(ctx.signal.reason)), { once: true }),
        );
      } finally {
        running--;
      }
    };
    await using pool = new WorkerPool();
    // Two workers: the redelivery finds a free one while the first still holds the lost attempt's slot.
    for (const id of ["w1", "w2"]) pool.add({ id, transport: new InProcessTransport({ handlers: { contract: handler } }) });
    const dispatcher = new Dispatcher({ queue, events, pool });
    // Bounded: should an attempt be left running, closing aborts it rather than waiting forever.
    await using _closing = { [Symbol.asyncDispose]: () => dispatcher.close({ signal: AbortSignal.timeout(5000) }) };
    const seen: Array<{ event: keyof DispatcherEvents; attempt: number }> = [];
    for (const event of ["jobStarted", "jobAbandoned", "jobCompleted", "jobRetrying", "jobFailed", "jobCancelled"] as const) {
      dispatcher.on(event, ({ attempt }) => seen.push({ event, attempt }));
    }
    const results: JobResultEvent[] = [];
    const job = contractJob();
    await events.subscribe(job.id, (event) => {
      if (event.kind === "result") results.push(event);
    });
    await dispatcher.start();
    await queue.enqueue(job);
    await waitFor(() => running === 1, { timeoutMs: 10_000, what: "attempt 1 running" });

    proxy.cut();
    await waitFor(() => results.length === 1, { timeoutMs: 20_000, what: "the job's result" });
    await dispatcher.onIdle({ timeoutMs: 5000 });

    expect(abortReasons).toEqual([expect.objectContaining({ code: "queue_closed", details: expect.objectContaining({ reason: "delivery_lost" }) })]);
    expect(seen).toEqual([
      { event: "jobStarted", attempt: 1 },
      { event: "jobAbandoned", attempt: 1 },
      { event: "jobStarted", attempt: 2 },
      { event: "jobCompleted", attempt: 2 },
    ]);
    expect(maxRunning).toBe(1);
    expect(results).toEqual([expect.objectContaining({ attempt: 2, outcome: { status: "completed", result: "attempt 2" } })]);
    expect(await rabbit.messageCount(queue.names.jobs)).toBe(0);
    expect(await rabbit.messageCount(queue.names.deadLetters)).toBe(0);
  });
});

describe.skipIf(!rabbit.available)("Dispatcher on AmqpQueue when a worker crashes and the pool's capacity drops", () => {
  afterAll(() => rabbit.cleanup());

  it("runs each crashed worker's job again exactly once, as attempt 2, while the prefetch falls from 64 to 48 and back", async () => {
    const queueName = rabbit.queueName();
    await using queue = new AmqpQueue({ url: rabbit.url, queueName });
    await using events = new AmqpEvents({ url: rabbit.url, queueName, subscriberExpiresMs: 5000 });
    await using pool = new WorkerPool();
    const transports = new Map<string, InProcessTransport>();
    const runningOn = new Map<string, string>();
    const addWorker = (id: string): void => {
      const hold = async (_payload: unknown, ctx: JobContext) => {
        if (ctx.attempt > 1) return `attempt ${ctx.attempt}`;
        runningOn.set(ctx.jobId, id);
        return await new Promise<never>((_resolve, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true }));
      };
      const transport = new InProcessTransport({ handlers: { contract: hold }, slots: 16 });
      transports.set(id, transport);
      pool.add({ id, transport, slots: 16 });
    };
    for (const id of ["w0", "w1", "w2", "w3"]) addWorker(id);
    // Each worker joins once it has answered its first check.
    await waitFor(() => pool.capacity === 64, { timeoutMs: 5000, what: "the four workers admitted" });
    const capacities: number[] = [];
    pool.on("capacityChanged", ({ capacity }) => capacities.push(capacity));
    // A crashed worker's transport reports "lost": the monitor marks it unhealthy at once, so the
    // capacity, and with it the prefetch, drops by its 16 slots while the job's retry is published.
    const monitor = new HealthMonitor({ target: pool });
    monitor.start();
    await using _monitor = { [Symbol.asyncDispose]: () => monitor.close() };
    const dispatcher = new Dispatcher({ queue, events, pool });
    await using _closing = { [Symbol.asyncDispose]: () => dispatcher.close({ signal: AbortSignal.timeout(5000) }) };
    const seen = new Map<string, string[]>();
    for (const event of ["jobStarted", "jobRetrying", "jobCompleted", "jobFailed", "jobAbandoned", "jobDeferred"] as const) {
      dispatcher.on(event, ({ job, attempt }) => seen.set(job.id, [...(seen.get(job.id) ?? []), `${event} ${attempt}`]));
    }
    await dispatcher.start();
    const jobs = Array.from({ length: 8 }, () => contractJob());
    for (const [i, job] of jobs.entries()) {
      await queue.enqueue(job);
      const workerId = await waitFor(() => runningOn.get(job.id), { timeoutMs: 5000, what: `job ${i} running` });
      await transports.get(workerId)?.crash();
      await waitFor(() => seen.get(job.id)?.includes("jobCompleted 2") || (seen.get(job.id)?.length ?? 0) > 4, { timeoutMs: 3000 }).catch(() => {});
      // A fresh worker in its place: the capacity, and the prefetch, go back to 64.
      await pool.remove(workerId);
      addWorker(`w${4 + i}`);
    }
    for (const job of jobs) expect(seen.get(job.id), `events of job ${job.id}`).toEqual(["jobStarted 1", "jobRetrying 1", "jobStarted 2", "jobCompleted 2"]);
    expect((await queue.deadLetters()).map((letter) => letter.reason)).toEqual([]);
    // The drop really happened each time (capacityChanged also fires when only free slots change).
    const changes = capacities.filter((capacity, i) => capacity !== (capacities[i - 1] ?? 64));
    expect(changes).toEqual(jobs.flatMap(() => [48, 64]));
  });
});
