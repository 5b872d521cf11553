import { afterAll, describe, expect, it } from "vitest";
import { OrchestratorError } from "../../src/errors.ts";
import type { JobEnvelope } from "../../src/job/envelope.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import type { AmqpQueueOptions } from "../../src/queue/amqp/amqp-queue.ts";
import type { Delivery } from "../../src/queue/types.ts";
import { contractJob } from "../../src/testing/contracts/queue-contract.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";
import { TcpProxy } from "../helpers/tcp-proxy.ts";

const rabbit = await useRabbitMq();

/** Fast recovery for tests: the production defaults (250 ms → 30 s) only make them slow. */
const RECOVERY: Partial<AmqpQueueOptions> = { reconnect: { baseDelayMs: 50, maxDelayMs: 1000 }, connectTimeoutMs: 2000 };

/** What happened to a queue during a run. */
function watch(queue: AmqpQueue) {
  const seen = { disconnected: 0, reconnected: 0, deliveryLost: 0 };
  queue.on("disconnected", () => seen.disconnected++);
  queue.on("reconnected", () => seen.reconnected++);
  queue.on("deliveryLost", () => seen.deliveryLost++);
  queue.on("error", () => {});
  return seen;
}

/**
 * A stand-in for the dispatcher: "runs" each job for `workMs`, then acks it. A delivery that is
 * lost meanwhile is not acked (its job comes back); an ack that fails is not counted. A delivery
 * for which `hold` says so is never acked (a job still running when the fault hits).
 */
async function work(queue: AmqpQueue, prefetch: number, workMs: number, hold: (delivery: Delivery) => boolean = () => false) {
  const completed = new Map<string, number>();
  const attempts = new Map<string, number[]>();
  const held: Delivery[] = [];
  const state = { running: 0 };
  await queue.consume(
    (delivery: Delivery) => {
      attempts.set(delivery.job.id, [...(attempts.get(delivery.job.id) ?? []), delivery.attempt]);
      if (hold(delivery)) {
        held.push(delivery);
        return;
      }
      state.running++;
      setTimeout(() => {
        state.running--;
        if (delivery.signal?.aborted) return;
        delivery.ack().then(
          () => completed.set(delivery.job.id, (completed.get(delivery.job.id) ?? 0) + 1),
          () => {},
        );
      }, workMs);
    },
    { prefetch },
  );
  return { completed, attempts, held, state };
}

/**
 * An at-least-once producer publishing on `lanes` lanes at once: a publish whose outcome is
 * unknown, or that found no broker, is sent again.
 */
async function produce(queue: AmqpQueue, jobs: readonly JobEnvelope[], lanes = 1): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < jobs.length) {
      const job = jobs[next++] as JobEnvelope;
      for (;;) {
        try {
          await queue.enqueue(job);
          break;
        } catch (error) {
          if (!(error instanceof OrchestratorError) || !["unknown_outcome", "unavailable"].includes(error.code)) throw error;
        }
      }
    }
  };
  await Promise.all(Array.from({ length: lanes }, lane));
}

/** Every job completed, nothing left in the queue or its dead letters. */
async function expectAllDone(queue: AmqpQueue, jobs: readonly JobEnvelope[], completed: Map<string, number>): Promise<void> {
  await waitFor(() => completed.size === jobs.length, { timeoutMs: 30_000, what: `${jobs.length} jobs completed` });
  expect(new Set(completed.keys())).toEqual(new Set(jobs.map((job) => job.id)));
  expect(await rabbit.messageCount(queue.names.jobs)).toBe(0);
  expect(await rabbit.messageCount(queue.names.deadLetters)).toBe(0);
}

describe.skipIf(!rabbit.available)("AmqpQueue under faults: every job completes, none is lost", () => {
  afterAll(() => rabbit.cleanup());

  it("recovers from a connection cut mid-run: lost deliveries come back, buffered and unconfirmed publishes are resolved", async () => {
    await using proxy = await TcpProxy.start({ port: Number(new URL(rabbit.url).port || 5672) });
    await using queue = new AmqpQueue({ url: proxy.url(rabbit.url), queueName: rabbit.queueName(), heartbeatSec: 2, ...RECOVERY });
    const seen = watch(queue);
    const jobs = Array.from({ length: 300 }, (_, n) => contractJob({ payload: { n } }));
    const { completed, state } = await work(queue, 8, 30);
    const producing = produce(queue, jobs, 8);
    await waitFor(() => completed.size >= 100 && state.running >= 4, { timeoutMs: 20_000, what: "100 jobs completed, 4 running" });
    proxy.cut();
    await producing;
    await expectAllDone(queue, jobs, completed);
    expect(seen.disconnected).toBeGreaterThanOrEqual(1);
    expect(seen.reconnected).toBeGreaterThanOrEqual(1);
    expect(seen.deliveryLost).toBeGreaterThanOrEqual(1);
  });

  it("detects a black-holed link within about one heartbeat timeout, aborts the deliveries it held, and recovers once the route is back", async () => {
    await using proxy = await TcpProxy.start({ port: Number(new URL(rabbit.url).port || 5672) });
    await using queue = new AmqpQueue({ url: proxy.url(rabbit.url), queueName: rabbit.queueName(), heartbeatSec: 1, ...RECOVERY });
    const seen = watch(queue);
    // The first job is still "running" (never acked) when the link goes dark.
    const running = contractJob({ payload: { running: true } });
    const jobs = [running, ...Array.from({ length: 150 }, (_, n) => contractJob({ payload: { n } }))];
    await produce(queue, jobs);
    const { completed, attempts, held } = await work(queue, 8, 20, (d) => d.job.id === running.id && d.attempt === 1);
    await waitFor(() => completed.size >= 40 && held.length === 1, { timeoutMs: 20_000, what: "40 jobs completed" });
    proxy.blackhole();
    const holedAt = Date.now();
    await waitFor(() => seen.disconnected > 0, { timeoutMs: 10_000, what: "the black hole detected" });
    const detectedMs = Date.now() - holedAt;
    // Nothing heard for one 1 s heartbeat timeout (checked every 250 ms), as the broker judges it.
    expect(detectedMs).toBeGreaterThanOrEqual(900);
    expect(detectedMs).toBeLessThan(2500);
    // The dispatcher learns at once that the job it runs went back to the queue.
    const signal = held[0]?.signal as AbortSignal;
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toMatchObject({ code: "queue_closed", details: { reason: "delivery_lost" } });
    expect(seen.deliveryLost).toBeGreaterThanOrEqual(1);
    proxy.restore();
    await expectAllDone(queue, jobs, completed);
    expect(seen.reconnected).toBeGreaterThanOrEqual(1);
    // Delivered again after the fault, with the attempt saying so (x-delivery-count).
    expect(attempts.get(running.id)).toEqual([1, 2]);
  });

  it("survives a broker restart (rabbitmqctl stop_app / start_app) with jobs queued, running and being published", async () => {
    await using queue = new AmqpQueue({ url: rabbit.url, queueName: rabbit.queueName(), heartbeatSec: 2, ...RECOVERY });
    const seen = watch(queue);
    const jobs = Array.from({ length: 300 }, (_, n) => contractJob({ payload: { n } }));
    // Slow enough (about 80 jobs/s) that the restart lands mid-run.
    const { completed } = await work(queue, 4, 50);
    const producing = produce(queue, jobs);
    await waitFor(() => completed.size >= 60, { timeoutMs: 20_000, what: "60 jobs completed" });
    try {
      await rabbit.ctl("stop_app");
    } finally {
      // Whatever happened, the broker must come back for everyone else.
      await rabbit.ctl("start_app");
    }
    await producing;
    await expectAllDone(queue, jobs, completed);
    expect(seen.disconnected).toBeGreaterThanOrEqual(1);
    expect(seen.reconnected).toBeGreaterThanOrEqual(1);
  });
});
