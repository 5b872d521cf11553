import { createRequire } from "node:module";
import { connect } from "amqplib";
import { afterAll, describe, expect, it } from "vitest";
import { encodeEnvelope, type JobEnvelope } from "../../src/job/envelope.ts";
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { jobQueueArguments, keyQueueName, resolveTopologyNames } from "../../src/queue/amqp/topology.ts";
import type { Delivery } from "../../src/queue/types.ts";
import { contractJob } from "../../src/testing/contracts/queue-contract.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";

const rabbit = await useRabbitMq();

/** amqplib's promise-API channel, whose `cancel` a test holds back to open a race with the broker. */
const require = createRequire(import.meta.url);
const amqplibDir = require.resolve("amqplib").replace(/[^/\\]+$/, "");
const { Channel } = require(`${amqplibDir}lib/channel_model.js`) as { Channel: { prototype: { cancel(tag: string): Promise<unknown> } } };

/** Short idle and expiry times, so a key queue goes away within seconds. */
const KEY_OPTIONS = { keyIdleMs: 300, keyQueueExpiresMs: 1000 } as const;

/** Whether the queue exists on the broker (a passive declare on a throwaway channel). */
async function exists(queue: string): Promise<boolean> {
  return rabbit.withChannel((channel) => channel.checkQueue(queue)).then(() => true, () => false);
}

/** Follows the key log from its start: the times (`at`) each key was announced, in log order. */
async function followKeyLog(keyLog: string) {
  const connection = await connect(rabbit.url);
  connection.on("error", () => {});
  const channel = await connection.createChannel();
  channel.on("error", () => {});
  const announced = new Map<string, number[]>();
  await channel.prefetch(100);
  await channel.consume(keyLog, (message) => {
    if (message === null) return;
    channel.ack(message);
    const { key, at } = JSON.parse(message.content.toString("utf8")) as { key: string; at: number };
    announced.set(key, [...(announced.get(key) ?? []), at]);
  }, { noAck: false, arguments: { "x-stream-offset": "first" } });
  return {
    /** How long `key` has been announced for: from its first entry to its last (ms). */
    spanMs: (key: string) => {
      const ats = announced.get(key) ?? [];
      return ats.length < 2 ? 0 : (ats.at(-1) as number) - (ats[0] as number);
    },
    async [Symbol.asyncDispose]() {
      await connection.close().catch(() => {});
    },
  };
}

/** One process's queue, on a connection of its own, consuming with `prefetch` into `deliveries`. */
async function consumer(queueName: string, ack: boolean, errors: string[] = [], keyOptions: { keyIdleMs?: number; keyQueueExpiresMs?: number } = KEY_OPTIONS) {
  const connection = new AmqpConnection({ url: rabbit.url, heartbeatSec: 5 });
  const queue = new AmqpQueue({ connection, queueName, keyHandoverDelayMs: 0, ...keyOptions });
  queue.on("error", ({ error, source }) => errors.push(`${source} ${error.code}`));
  const deliveries: Delivery[] = [];
  const consumption = await queue.consume((delivery) => {
    deliveries.push(delivery);
    if (ack) void delivery.ack();
  }, { prefetch: 4 });
  return {
    connection,
    queue,
    deliveries,
    consumption,
    async [Symbol.asyncDispose]() {
      await queue.close();
      await connection.close();
    },
  };
}

describe.skipIf(!rabbit.available)("idle concurrency-key queues expire on RabbitMQ, losing no job", () => {
  afterAll(() => rabbit.cleanup());

  it("deletes an idle key's queue, and a job of the key routed after that is delivered", async () => {
    const key = `expiry-${Math.random().toString(36).slice(2)}`;
    const queueName = rabbit.queueName("key-expiry", { keys: [key] });
    const keyQueue = keyQueueName(resolveTopologyNames(queueName, undefined), key);
    await using c = await consumer(queueName, true);
    const spec = { key, limit: 1, strategy: "wait" as const };
    const first = contractJob({ concurrency: spec });
    await c.queue.enqueue(first);
    await waitFor(() => c.deliveries.some((d) => d.job.id === first.id), { timeoutMs: 10_000, what: "the first keyed job" });
    expect(await exists(keyQueue)).toBe(true);
    // Idle: no dispatcher consumes it any more, and the broker deletes it.
    await waitFor(async () => !(await exists(keyQueue)), { timeoutMs: 20_000, intervalMs: 100, what: "the idle key queue deleted" });
    const second = contractJob({ concurrency: spec });
    await c.queue.enqueue(second);
    await waitFor(() => c.deliveries.some((d) => d.job.id === second.id), { timeoutMs: 10_000, what: "the job routed after the queue expired" });
    expect(c.deliveries.map((d) => d.job.id)).toEqual([first.id, second.id]);
  });

  it("delivers every job routed around the moment its key's queue expires", async () => {
    const key = `expiry-race-${Math.random().toString(36).slice(2)}`;
    const queueName = rabbit.queueName("key-expiry-race", { keys: [key] });
    await using c = await consumer(queueName, true);
    const spec = { key, limit: 1, strategy: "wait" as const };
    const jobs: JobEnvelope[] = [];
    // Each job after a longer idle gap, stepping across "lane dropped" (300 ms) and "queue
    // expired" (about 1.3 s and after): some are routed as the queue goes away.
    for (let gap = 200; gap <= 2200; gap += 250) {
      await new Promise((resolve) => setTimeout(resolve, gap));
      const job = contractJob({ concurrency: spec });
      jobs.push(job);
      await c.queue.enqueue(job);
      await waitFor(() => c.deliveries.some((d) => d.job.id === job.id), { timeoutMs: 10_000, what: `the job routed after ${gap} ms idle` });
    }
    expect(new Set(c.deliveries.map((d) => d.job.id))).toEqual(new Set(jobs.map((j) => j.id)));
  });

  it("keeps a key's queue while its holder runs past the expiry, and another dispatcher takes over its jobs when it stops", async () => {
    const key = `expiry-hold-${Math.random().toString(36).slice(2)}`;
    const queueName = rabbit.queueName("key-expiry-hold", { keys: [key] });
    const keyQueue = keyQueueName(resolveTopologyNames(queueName, undefined), key);
    await using a = await consumer(queueName, false);
    const spec = { key, limit: 1, strategy: "wait" as const };
    const [held, waiting] = [contractJob({ concurrency: spec }), contractJob({ concurrency: spec })];
    await a.queue.enqueue(held);
    await waitFor(() => a.deliveries.some((d) => d.job.id === held.id), { timeoutMs: 10_000, what: "the holder's delivery" });
    await using b = await consumer(queueName, false);
    await a.queue.enqueue(waiting);
    // The holder still runs, one job waits in the key's queue: the holder's dispatcher announces
    // the key again and again (so the other one keeps consuming it), watched until those
    // announcements span idle + expiry twice over.
    await using log = await followKeyLog(resolveTopologyNames(queueName, undefined).keyLog);
    const past = 2 * (KEY_OPTIONS.keyIdleMs + KEY_OPTIONS.keyQueueExpiresMs);
    await waitFor(() => log.spanMs(key) >= past, { timeoutMs: 20_000, what: `announcements of the held key over ${past} ms` });
    expect(await exists(keyQueue)).toBe(true);
    expect(b.deliveries).toHaveLength(0);
    // The holder's dispatcher stops without settling: the other one, still consuming the key
    // (the holder announced it), gets the held job back first, then the waiting one.
    await a.consumption.cancel();
    const back = await waitFor(() => b.deliveries[0], { timeoutMs: 10_000, what: "the held job on the other dispatcher" });
    expect(back.job.id).toBe(held.id);
    await back.ack();
    const next = await waitFor(() => b.deliveries[1], { timeoutMs: 10_000, what: "the waiting job on the other dispatcher" });
    expect(next.job.id).toBe(waiting.id);
    await next.ack();
  });

  it("consumes a key again when a job reaches its dropped consumer before the broker saw the cancel", async () => {
    const key = `expiry-revive-${Math.random().toString(36).slice(2)}`;
    const queueName = rabbit.queueName("key-expiry-revive", { keys: [key] });
    const keyQueue = keyQueueName(resolveTopologyNames(queueName, undefined), key);
    // The idle lane's basic.cancel is held back (in amqplib, before it is sent) until released:
    // the broker still delivers to that consumer meanwhile, as it would in the time a cancel is
    // in flight, and the test needs no luck to land a job in that window.
    const cancel = Channel.prototype.cancel;
    const gate = { cancels: 0, sent: 0, release: () => {} };
    const released = new Promise<void>((resolve) => (gate.release = resolve));
    Channel.prototype.cancel = async function (this: unknown, tag: string) {
      gate.cancels++;
      await released;
      try {
        return await cancel.call(this, tag);
      } finally {
        gate.sent++;
      }
    };
    try {
      await using c = await consumer(queueName, false);
      const spec = { key, limit: 2, strategy: "wait" as const };
      const first = contractJob({ concurrency: spec });
      await c.queue.enqueue(first);
      await (await waitFor(() => c.deliveries.find((d) => d.job.id === first.id), { timeoutMs: 10_000, what: "the first keyed job" })).ack();
      await waitFor(() => gate.cancels > 0, { timeoutMs: 10_000, what: "the idle lane's cancel" });
      // Another dispatcher routes a job of the key: it reaches the consumer being cancelled.
      const stray = contractJob({ concurrency: spec });
      await rabbit.withChannel(async (channel) => {
        channel.sendToQueue(keyQueue, encodeEnvelope(stray), { persistent: true });
        await channel.checkQueue(keyQueue); // after the publish on this channel: the broker has it
      });
      // Not acked: the key holds it, so the revived lane is not idle again before the next job.
      await waitFor(() => c.deliveries.some((d) => d.job.id === stray.id), { timeoutMs: 10_000, what: "the stray job on the dropped consumer" });
      gate.release();
      await waitFor(() => gate.sent >= gate.cancels, { timeoutMs: 10_000, what: "the held cancel sent" });
      // The key is in use here again: a job this dispatcher routes itself is consumed.
      const next = contractJob({ concurrency: spec });
      await c.queue.enqueue(next);
      await waitFor(() => c.deliveries.some((d) => d.job.id === next.id), { timeoutMs: 10_000, what: "the job routed after the lane was revived" });
      expect(c.deliveries.map((d) => d.job.id)).toEqual([first.id, stray.id, next.id]);
      for (const delivery of c.deliveries.slice(1)) await delivery.ack();
    } finally {
      gate.release();
      Channel.prototype.cancel = cancel;
    }
  });

  it("does not declare again, when a dispatcher starts, the queue of a key idle since its last announcement", async () => {
    const tag = Math.random().toString(36).slice(2);
    const [idle, busy] = [`expiry-restart-${tag}`, `expiry-restart-busy-${tag}`];
    const queueName = rabbit.queueName("key-expiry-restart", { keys: [idle, busy] });
    const names = resolveTopologyNames(queueName, undefined);
    await using a = await consumer(queueName, false);
    const first = contractJob({ concurrency: { key: idle, limit: 1, strategy: "wait" } });
    await a.queue.enqueue(first);
    await (await waitFor(() => a.deliveries.find((d) => d.job.id === first.id), { timeoutMs: 10_000, what: "the idle key's job" })).ack();
    await waitFor(async () => !(await exists(keyQueueName(names, idle))), { timeoutMs: 20_000, intervalMs: 100, what: "the idle key queue deleted" });
    // A key in use, announced after the idle one and again while its job is held: once a
    // dispatcher started now consumes it, it has read the idle key's entry before.
    const held = contractJob({ concurrency: { key: busy, limit: 1, strategy: "wait" } });
    await a.queue.enqueue(held);
    await waitFor(() => a.deliveries.some((d) => d.job.id === held.id), { timeoutMs: 10_000, what: "the busy key's job" });
    await using b = await consumer(queueName, true);
    // Not settled: the broker hands the job to the key's other consumer, the new dispatcher.
    await a.consumption.cancel();
    const back = await waitFor(() => b.deliveries[0], { timeoutMs: 10_000, what: "the busy key's job on the dispatcher started later" });
    expect(back.job.id).toBe(held.id);
    expect(await exists(keyQueueName(names, idle))).toBe(false);
  });

  it("consumes, when a dispatcher starts, the queue of a key last announced long ago that still holds a job", async () => {
    const key = `expiry-outage-${Math.random().toString(36).slice(2)}`;
    const queueName = rabbit.queueName("key-expiry-outage", { keys: [key] });
    // The queue outlives the outage: every dispatcher down longer than keyIdleMs.
    const options = { keyIdleMs: 300, keyQueueExpiresMs: 60_000 };
    const job = contractJob({ concurrency: { key, limit: 1, strategy: "wait" } });
    {
      await using a = await consumer(queueName, false, [], options);
      await a.queue.enqueue(job);
      await waitFor(() => a.deliveries.some((d) => d.job.id === job.id), { timeoutMs: 10_000, what: "the job on the first dispatcher" });
    } // stopped without settling: the job is back in the key's queue, which no one consumes
    // The precondition, not an assertion: the key's last announcement is older than keyIdleMs.
    await new Promise((resolve) => setTimeout(resolve, 2 * options.keyIdleMs));
    await using b = await consumer(queueName, true, [], options);
    const back = await waitFor(() => b.deliveries[0], { timeoutMs: 10_000, what: "the job on the dispatcher started after the outage" });
    expect(back.job.id).toBe(job.id);
  });

  it("uses a key queue declared before key queues expired as it is, and says so once", async () => {
    const key = `expiry-legacy-${Math.random().toString(36).slice(2)}`;
    const queueName = rabbit.queueName("key-expiry-legacy", { keys: [key] });
    const names = resolveTopologyNames(queueName, undefined);
    // As the previous release declared it: no x-expires.
    await rabbit.withChannel((channel) =>
      channel.assertQueue(keyQueueName(names, key), { durable: true, arguments: { ...jobQueueArguments(names, 10), "x-single-active-consumer": true } }),
    );
    const errors: string[] = [];
    // Default idle time: the key stays followed (and its declaration registered) throughout.
    await using c = await consumer(queueName, true, errors, {});
    const spec = { key, limit: 1, strategy: "wait" as const };
    const jobs = [contractJob({ concurrency: spec }), contractJob({ concurrency: spec })];
    for (const job of jobs) await c.queue.enqueue(job);
    await waitFor(() => c.deliveries.length === 2, { timeoutMs: 10_000, what: "both keyed jobs through the old key queue" });
    expect(c.deliveries.map((d) => d.job.id)).toEqual(jobs.map((j) => j.id));
    expect(errors).toEqual(["config precondition_failed"]);
    // Deleted when empty, as the report advises: the next connection declares it anew (with
    // expiry) instead of failing every reconnect on the missing queue.
    await rabbit.withChannel((channel) => channel.deleteQueue(keyQueueName(names, key)));
    let reconnected = 0;
    c.connection.on("reconnected", () => reconnected++);
    c.connection.recycle("test: a connection blip");
    await waitFor(() => reconnected > 0, { timeoutMs: 15_000, what: "the connection back" });
    const after = contractJob({ concurrency: spec });
    await c.queue.enqueue(after);
    await waitFor(() => c.deliveries.some((d) => d.job.id === after.id), { timeoutMs: 10_000, what: "a job of the key after the reconnect" });
    expect(await exists(keyQueueName(names, key))).toBe(true);
  });
});

describe.skipIf(!rabbit.available)("raising a concurrency key's limit on RabbitMQ", () => {
  afterAll(() => rabbit.cleanup());

  it("applies a raised limit to a consumer that followed the key before, once it holds none of the key's jobs", async () => {
    const key = `raise-${Math.random().toString(36).slice(2)}`;
    const queueName = rabbit.queueName("key-raise", { keys: [key] });
    // Default idle time: the key stays followed throughout, by the same consumer.
    await using c = await consumer(queueName, false, [], {});
    const job = (limit: number) => contractJob({ concurrency: { key, limit, strategy: "wait" } });
    const delivered = (n: number, what: string) => waitFor(() => (c.deliveries.length >= n ? c.deliveries[n - 1] : undefined), { timeoutMs: 10_000, what });
    const first = job(1);
    await c.queue.enqueue(first);
    await delivered(1, "the first job (limit 1)");
    // Raised to 2 while the consumer holds the key: it holds on with its old window (cancelling
    // its consumer now could hand the key to another process while this job runs).
    await c.queue.enqueue(job(2));
    await c.queue.enqueue(job(2));
    for (let n = 1; n <= 3; n++) {
      await (await delivered(n, `job ${n}`)).ack();
    }
    // It held nothing after the third: from now on the raised limit applies.
    const [a, b, d] = [job(2), job(2), job(2)];
    for (const next of [a, b, d]) await c.queue.enqueue(next);
    await delivered(5, "two jobs of the raised key at once");
    expect(c.deliveries.slice(3).map((x) => x.job.id)).toEqual([a.id, b.id]);
    expect(c.deliveries.slice(3).every((x) => !x.settled)).toBe(true);
    await c.deliveries[3]?.ack();
    await (await delivered(6, "the third, once a place freed")).ack();
    await c.deliveries[4]?.ack();
  });
});
