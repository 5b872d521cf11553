import { afterAll, describe, expect, it } from "vitest";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import type { JobContext } from "../../src/worker/types.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import type { DeadLetterInfo, Delivery } from "../../src/queue/types.ts";
import { contractJob } from "../../src/testing/contracts/queue-contract.ts";
import { rejectionOf } from "../../src/testing/rejection-of.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";

const rabbit = await useRabbitMq();
const text = (s: string) => new Uint8Array(Buffer.from(s));

/** A queue consuming every valid job (acked), counting its `deadLettered` events. */
async function consuming(queue: AmqpQueue, onDelivery: (delivery: Delivery) => void = (d) => void d.ack()) {
  const deadLettered: DeadLetterInfo[] = [];
  const delivered: string[] = [];
  queue.on("deadLettered", ({ info }) => deadLettered.push(info));
  await queue.consume(
    (delivery) => {
      delivered.push(delivery.job.id);
      onDelivery(delivery);
    },
    { prefetch: 4 },
  );
  return { deadLettered, delivered };
}

describe.skipIf(!rabbit.available)("AmqpQueue against hostile broker input (issue 8 regressions)", () => {
  afterAll(() => rabbit.cleanup());

  it("fails one publish amqplib cannot encode alone: the publisher and its channel stay usable", async () => {
    await using queue = new AmqpQueue({ url: rabbit.url, queueName: rabbit.queueName("hostile") });
    await queue.ready();
    const publish = (headers: Record<string, unknown>) =>
      queue.connection.publish({ exchange: "", routingKey: queue.names.deadLetters, body: Buffer.from("x"), properties: { headers }, confirm: true });
    const error = await rejectionOf(publish({ big: "x".repeat(70_000) }));
    expect(error.code).toBe("invalid_argument");
    expect(error.message).toMatch(/cannot be encoded .*65536 byte/);
    // The next publishes on the same connection are confirmed.
    await publish({ small: "y" });
    await queue.enqueue(contractJob());
    expect(queue.connection.state).toBe("connected");
  });

  it("dead-letters a message whose header table is near amqplib's 64 KiB limit once, trimmed and saying so, and every later job still completes", async () => {
    await using queue = new AmqpQueue({ url: rabbit.url, queueName: rabbit.queueName("hostile") });
    queue.on("error", () => {});
    await queue.ready();
    // Fits when published (about 64,000 bytes of table), but not with the dead-letter headers added.
    await rabbit.publishRaw(queue.names.jobs, text("not json"), { filler: "h".repeat(64_000) });
    const { deadLettered, delivered } = await consuming(queue);
    await waitFor(() => deadLettered.length === 1, { timeoutMs: 10_000, what: "the dead letter" });
    const jobs = Array.from({ length: 20 }, (_, n) => contractJob({ payload: { n } }));
    for (const job of jobs) await queue.enqueue(job);
    await waitFor(() => delivered.length === jobs.length, { timeoutMs: 10_000, what: "every later job" });
    const [letter] = await queue.deadLetters();
    expect(letter?.reason).toMatch(/invalid envelope: .*not valid JSON/);
    expect(deadLettered).toHaveLength(1);
    const raw = await rabbit.withChannel(async (channel) => {
      const message = await channel.get(queue.names.deadLetters, { noAck: true });
      return message === false ? undefined : message.properties.headers;
    });
    expect(raw?.["x-blacktree-trimmed"]).toMatch(/original headers \(JSON\) cut from \d+ to 16384 bytes/);
    expect(raw?.filler).toBeUndefined();
  });

  it("never routes a dead-letter copy back to the job queue through CC or BCC headers", async () => {
    await using queue = new AmqpQueue({ url: rabbit.url, queueName: rabbit.queueName("hostile") });
    queue.on("error", () => {});
    await queue.ready();
    const route = [queue.names.jobs];
    await rabbit.publishRaw(queue.names.jobs, text("{ not json"), { CC: route, BCC: route });
    // A valid job with routing headers, dead-lettered by its handler.
    const poisoned = contractJob({ payload: { deadLetterMe: true } });
    await rabbit.publishRaw(queue.names.jobs, Buffer.from(JSON.stringify(poisoned)), { CC: route });
    const { deadLettered, delivered } = await consuming(queue, (delivery) => {
      void (delivery.job.id === poisoned.id ? delivery.deadLetter("handler gave up") : delivery.ack());
    });
    await waitFor(() => deadLettered.length >= 2, { timeoutMs: 10_000, what: "both dead letters" });
    // A sentinel enqueued after both were moved comes out after any copy routed back would have.
    const sentinel = contractJob();
    await queue.enqueue(sentinel);
    await waitFor(() => delivered.includes(sentinel.id), { timeoutMs: 10_000, what: "the sentinel" });
    expect(delivered.filter((id) => id === poisoned.id)).toHaveLength(1);
    expect(deadLettered).toHaveLength(2);
    expect(await rabbit.messageCount(queue.names.deadLetters)).toBe(2);
    expect(await rabbit.messageCount(queue.names.jobs)).toBe(0);
  });

  it("judges a first delivery by its envelope, not by a forged x-delivery-count header", async () => {
    await using queue = new AmqpQueue({ url: rabbit.url, queueName: rabbit.queueName("hostile") });
    await queue.ready();
    const job = contractJob({ maxAttempts: 3 });
    await rabbit.publishRaw(queue.names.jobs, Buffer.from(JSON.stringify(job)), { "x-delivery-count": 5 });
    const attempts: number[] = [];
    await queue.consume((delivery) => {
      attempts.push(delivery.attempt);
      void delivery.ack();
    }, { prefetch: 1 });
    await waitFor(() => attempts.length === 1, { timeoutMs: 10_000, what: "the delivery" });
    expect(attempts).toEqual([1]);
  });

  it("reads dead letters without changing them, and redrives one that used every attempt to run again from attempt 1 with its history", async () => {
    const queueName = rabbit.queueName("hostile");
    await using connection = new AmqpConnection({ url: rabbit.url });
    await using queue = new AmqpQueue({ connection, queueName });
    await using events = new AmqpEvents({ connection, queueName });
    let failing = true;
    const seen: Array<{ attempt: number }> = [];
    const handler = (_payload: unknown, ctx: JobContext) => {
      seen.push({ attempt: ctx.attempt });
      if (failing) throw new Error(`broken on attempt ${ctx.attempt}`);
      return "fixed";
    };
    await using pool = new WorkerPool();
    pool.add({ id: "w1", transport: new InProcessTransport({ handlers: { contract: handler } }) });
    const dispatcher = new Dispatcher({ queue, events, pool, retry: { baseDelayMs: 10, maxDelayMs: 20 } });
    await using _closing = { [Symbol.asyncDispose]: () => dispatcher.close({ signal: AbortSignal.timeout(5000) }) };
    const completed: number[] = [];
    dispatcher.on("jobCompleted", ({ attempt }) => completed.push(attempt));
    await dispatcher.start();
    const job = contractJob({ maxAttempts: 3 });
    await queue.enqueue(job);
    const [letter] = await waitFor(async () => {
      const all = await queue.deadLetters();
      return all.length === 1 && all;
    }, { timeoutMs: 15_000, what: "the dead letter" });
    expect(letter?.attempt).toBe(3);
    // Browsing again and again changes nothing: no x-delivery-count, same reason.
    for (let i = 0; i < 3; i++) expect(await queue.deadLetters()).toEqual([letter]);
    const headers = await rabbit.withChannel(async (channel) => {
      const message = await channel.get(queue.names.deadLetters, { noAck: false });
      return message === false ? undefined : message.properties.headers;
    });
    expect(headers?.["x-delivery-count"]).toBeUndefined();
    expect(headers?.["x-blacktree-attempt"]).toBe(3);

    failing = false;
    const { redriven } = await queue.redrive();
    expect(redriven).toEqual([
      {
        ...job,
        attempt: 1,
        priorAttempts: 3,
        redrives: [{ attempts: 3, reason: letter?.reason, deadLetteredAt: letter?.at, redrivenAt: expect.any(String) }],
      },
    ]);
    await waitFor(() => completed.length === 1, { timeoutMs: 10_000, what: "the redriven job completed" });
    expect(seen.map((s) => s.attempt)).toEqual([1, 2, 3, 1]);
    expect(completed).toEqual([1]);
    expect(await queue.deadLetters()).toEqual([]);
  });
});
