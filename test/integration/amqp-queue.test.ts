import { afterAll, describe, expect, it } from "vitest";
import type { JobEnvelope } from "../../src/job/envelope.ts";
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import type { Delivery } from "../../src/queue/types.ts";
import { contractJob } from "../../src/testing/contracts/queue-contract.ts";
import { rejectionOf } from "../../src/testing/rejection-of.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { delay } from "../../src/signals.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";
import { TcpProxy } from "../helpers/tcp-proxy.ts";
import { metering, pointValue, readPoints } from "../helpers/metric-reader.ts";
import { METRIC } from "../../src/telemetry/names.ts";

const rabbit = await useRabbitMq();
const brokerPort = Number(new URL(rabbit.url).port || 5672);
const RECOVERY = { reconnect: { baseDelayMs: 50, maxDelayMs: 500 }, connectTimeoutMs: 1000 } as const;

const text = (s: string) => new Uint8Array(Buffer.from(s));

describe.skipIf(!rabbit.available)("AmqpQueue on RabbitMQ", () => {
  afterAll(() => rabbit.cleanup());

  it("dead-letters malformed messages published straight to the queue with readable reasons, while good jobs keep flowing", async () => {
    await using queue = new AmqpQueue({ url: rabbit.url, queueName: rabbit.queueName(), maxEnvelopeBytes: 4096 });
    await queue.ready();
    const bad: Array<[Uint8Array, RegExp]> = [
      [text("{ not json"), /invalid envelope: .*not valid JSON/],
      [text(""), /invalid envelope: .*not valid JSON/],
      [text("[1,2,3]"), /invalid envelope: Expected `envelope` to be an object/],
      [text(JSON.stringify({ ...contractJob(), type: undefined })), /invalid envelope: Expected `type`/],
      [text(JSON.stringify({ ...contractJob(), attempt: 0 })), /invalid envelope: Expected `attempt` to be an integer >= 1, got `0`/],
      [text(JSON.stringify({ ...contractJob(), v: 2 })), /invalid envelope: Expected `v` to be envelope version 1, got `2`/],
      [text(JSON.stringify(contractJob({ payload: "x".repeat(5000) }))), /invalid envelope: Envelope of \d+ bytes exceeds the limit of 4096 bytes/],
      [text(JSON.stringify(contractJob({ type: "no-such-type" }))), /^no handler for job type no-such-type$/],
    ];
    const good = Array.from({ length: 60 }, (_, n) => contractJob({ payload: { n } }));
    for (const [i, job] of good.entries()) {
      await queue.enqueue(job);
      // One bad message after every seventh good job.
      const [body] = (i % 7 === 3 && bad[(i - 3) / 7]) || [];
      if (body) await rabbit.publishRaw(queue.names.jobs, body);
    }
    const delivered: string[] = [];
    await queue.consume(
      (delivery) => {
        delivered.push(delivery.job.id);
        void delivery.ack();
      },
      { prefetch: 4, accept: (job) => (job.type === "contract" ? undefined : `no handler for job type ${job.type}`) },
    );
    await waitFor(() => delivered.length === good.length, { timeoutMs: 10_000, what: "every good job" });
    expect(delivered).toEqual(good.map((job) => job.id));
    const letters = await waitFor(async () => {
      const all = await queue.deadLetters();
      return all.length === bad.length && all;
    }, { timeoutMs: 10_000, what: `${bad.length} dead letters` });
    for (const [body, reason] of bad) {
      const letter = letters.find((l) => Buffer.from(l.body).equals(Buffer.from(body)));
      expect(letter?.reason, `reason for ${Buffer.from(body).toString().slice(0, 40)}`).toMatch(reason);
    }
    // The refused one was a valid envelope: the dead letter keeps the parsed job.
    expect(letters.find((l) => l.job?.type === "no-such-type")).toBeDefined();
    expect(await rabbit.messageCount(queue.names.jobs)).toBe(0);
  });

  it("records figures through its telemetry option: the connection open and its reconnect, events and cancels sent and received, redrives", async () => {
    const { reader, meterProvider } = metering();
    const telemetry = { meterProvider };
    await using proxy = await TcpProxy.start({ port: brokerPort });
    const queueName = rabbit.queueName("telemetry2");
    await using queue = new AmqpQueue({ url: proxy.url(rabbit.url), queueName, telemetry, ...RECOVERY });
    await using events = new AmqpEvents({ connection: queue.connection, queueName, telemetry });
    queue.on("error", () => {});
    events.on("error", () => {});
    await queue.ready();
    const rabbitmq = { "blacktree.connection.kind": "rabbitmq" };
    expect(pointValue((await readPoints(reader)).get(METRIC.connectionsOpen), rabbitmq)).toBe(1);
    const seen: string[] = [];
    const sub = await events.subscribe("t2-job", (event) => seen.push(event.kind));
    const cancels: string[] = [];
    const cancelSub = await events.subscribeCancels((command) => cancels.push(command.jobId));
    await events.publish({ kind: "progress", jobId: "t2-job", attempt: 1, at: Date.now(), progress: 0.5 }, { confirm: true });
    await events.cancel({ jobId: "t2-job", reason: "requested", at: Date.now() });
    await waitFor(() => seen.length === 1 && cancels.includes("t2-job"));
    await queue.enqueue(contractJob());
    const consumer = await queue.consume((delivery: Delivery) => void delivery.deadLetter("t2"), { prefetch: 1 });
    await waitFor(async () => (await queue.deadLetters()).length === 1);
    await consumer.cancel();
    expect((await queue.redrive()).redriven).toHaveLength(1);
    proxy.cut();
    await new Promise<void>((resolve) => queue.connection.once("reconnected", () => resolve()));
    await sub.close();
    await cancelSub.close();

    const points = await readPoints(reader);
    const sent = points.get(METRIC.sentMessages);
    expect(pointValue(sent, { "messaging.destination.name": events.names.events, "messaging.operation.name": "publish" })).toBe(1);
    expect(pointValue(sent, { "messaging.destination.name": events.names.cancels, "messaging.operation.name": "cancel" })).toBe(1);
    expect(pointValue(sent, { "messaging.destination.name": queue.names.jobs, "messaging.operation.name": "redrive" })).toBe(1);
    expect(pointValue(points.get(METRIC.consumedMessages), { "messaging.destination.name": events.names.events })).toBe(1);
    expect(pointValue(points.get(METRIC.consumedMessages), { "messaging.destination.name": events.names.cancels })).toBeGreaterThanOrEqual(1);
    expect(pointValue(points.get(METRIC.reconnects), rabbitmq)).toBe(1);
    expect(pointValue(points.get(METRIC.downtime), rabbitmq)).toBe(1);
    expect(pointValue(points.get(METRIC.connectionsOpen), rabbitmq)).toBe(1);
    await events.close();
    await queue.close();
    expect(pointValue((await readPoints(reader)).get(METRIC.connectionsOpen), rabbitmq)).toBe(0);
    await meterProvider.shutdown();
  });

  it("dead-letters a poison job after the delivery limit when its consumer dies every time it holds it", async () => {
    await using proxy = await TcpProxy.start({ port: brokerPort });
    await using queue = new AmqpQueue({ url: proxy.url(rabbit.url), queueName: rabbit.queueName(), deliveryLimit: 3, heartbeatSec: 2, ...RECOVERY });
    queue.on("error", () => {});
    const poison = contractJob({ payload: { poison: true } });
    const fine = contractJob();
    await queue.enqueue(poison);
    await queue.enqueue(fine);
    const attempts: number[] = [];
    let fineDone = false;
    await queue.consume(
      (delivery: Delivery) => {
        if (delivery.job.id === poison.id) {
          attempts.push(delivery.attempt);
          proxy.cut(); // the orchestrator "crashes" while running it
        } else {
          void delivery.ack().then(() => {
            fineDone = true;
          });
        }
      },
      { prefetch: 1 },
    );
    const [letter] = await waitFor(async () => {
      const all = await queue.deadLetters();
      return all.length > 0 && all;
    }, { timeoutMs: 15_000, what: "the poison job dead-lettered" });
    expect(letter?.job).toEqual(poison);
    expect(letter?.reason).toMatch(/delivery limit exceeded.*x-death reason=delivery_limit/);
    // Delivered 1 + deliveryLimit times, each redelivery saying so in its attempt.
    expect(attempts).toEqual([1, 2, 3, 4]);
    await waitFor(() => fineDone, { timeoutMs: 10_000, what: "the other job completed" });
  });

  it("refuses to declare over a queue that has other arguments with precondition_failed, and the connection keeps working", async () => {
    const queueName = rabbit.queueName();
    await using connection = new AmqpConnection({ url: rabbit.url });
    const first = new AmqpQueue({ connection, queueName, deliveryLimit: 3 });
    await first.ready();
    const conflicting = new AmqpQueue({ connection, queueName, deliveryLimit: 5 });
    const error = await rejectionOf(conflicting.ready());
    expect(error).toMatchObject({ code: "precondition_failed", retryable: false });
    expect(error.message).toContain(`queue "${queueName}" already exists with other arguments`);
    expect(error.message).toContain("x-delivery-limit");
    // Only the declaring channel died: the same connection still carries jobs.
    const job = contractJob();
    await first.enqueue(job);
    const got: JobEnvelope[] = [];
    await first.consume((d) => void d.ack().then(() => got.push(d.job)), { prefetch: 1 });
    await waitFor(() => got.length === 1, { timeoutMs: 5000, what: "the job" });
    expect(connection.state).toBe("connected");
    const events = new AmqpEvents({ connection, queueName, cancelRetentionMs: 60_000 });
    await events.ready();
    const otherRetention = new AmqpEvents({ connection, queueName, cancelRetentionMs: 120_000 });
    expect((await rejectionOf(otherRetention.ready())).code).toBe("precondition_failed");
    await Promise.all([first.close(), conflicting.close(), events.close(), otherRetention.close()]);
  });

  it("rejects an enqueue that no queue can route with not_found, then declares the deleted queue again and consuming resumes", async () => {
    await using queue = new AmqpQueue({ url: rabbit.url, queueName: rabbit.queueName() });
    queue.on("error", () => {});
    const got: string[] = [];
    await queue.consume((d) => void d.ack().then(() => got.push(d.job.id)), { prefetch: 1 });
    await rabbit.withChannel((channel) => channel.deleteQueue(queue.names.jobs));
    const error = await rejectionOf(queue.enqueue(contractJob()));
    expect(error.code).toBe("not_found");
    expect(error.message).toMatch(/unroutable.*NO_ROUTE/);
    const job = contractJob();
    await waitFor(() => queue.enqueue(job).then(() => true), { timeoutMs: 5000, what: "an enqueue after the queue was declared again" });
    await waitFor(() => got.includes(job.id), { timeoutMs: 10_000, what: "the job consumed by the restored consumer" });
  });

  it("holds publishes in a bounded buffer while the broker is unreachable: one too many rejects resource_exhausted, the rest unavailable after the timeout", async () => {
    await using proxy = await TcpProxy.start({ port: brokerPort });
    await using queue = new AmqpQueue({ url: proxy.url(rabbit.url), queueName: rabbit.queueName(), publishBufferSize: 2, publishTimeoutMs: 400, ...RECOVERY });
    queue.on("error", () => {});
    await queue.ready();
    proxy.blackhole(); // new connections hang,
    proxy.cut(); // and the current one is gone
    await waitFor(() => queue.connection.state === "reconnecting", { timeoutMs: 5000, what: "reconnecting" });
    const startedAt = Date.now();
    const first = rejectionOf(queue.enqueue(contractJob()));
    const second = rejectionOf(queue.enqueue(contractJob()));
    expect((await rejectionOf(queue.enqueue(contractJob()))).code).toBe("resource_exhausted");
    expect((await first).code).toBe("unavailable");
    expect((await second).code).toBe("unavailable");
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(350);
    proxy.restore();
    await queue.ready({ timeoutMs: 10_000 });
    expect(await rabbit.messageCount(queue.names.jobs)).toBe(0); // those that failed were never sent
  });

  it("rejects a publish whose confirm was lost with the connection with unknown_outcome", async () => {
    await using proxy = await TcpProxy.start({ port: brokerPort });
    await using queue = new AmqpQueue({ url: proxy.url(rabbit.url), queueName: rabbit.queueName(), heartbeatSec: 5, ...RECOVERY });
    queue.on("error", () => {});
    await queue.ready();
    proxy.blackhole(); // the publish leaves the client, no confirm comes back
    const pending = rejectionOf(queue.enqueue(contractJob()));
    await delay(100);
    proxy.cut();
    expect((await pending).code).toBe("unknown_outcome");
    proxy.restore();
  });

  it("never holds more unacked deliveries than the prefetch in force while it changes under load", async () => {
    await using queue = new AmqpQueue({ url: rabbit.url, queueName: rabbit.queueName() });
    const jobs = Array.from({ length: 300 }, () => contractJob());
    await Promise.all(jobs.map((job) => queue.enqueue(job)));
    let held = 0;
    let inForce = 4;
    let changing = false;
    const violations: string[] = [];
    let done = 0;
    let arrived = 0;
    const consumer = await queue.consume(
      (delivery) => {
        if (!changing && held >= inForce) violations.push(`delivery while holding ${held} at prefetch ${inForce}`);
        arrived++;
        held++;
        setTimeout(() => {
          held--;
          void delivery.ack().then(() => done++);
        }, 2 + Math.random() * 8);
      },
      { prefetch: inForce },
    );
    const sequence = [1, 7, 2, 0, 5, 3, 8, 1, 6];
    for (const prefetch of sequence) {
      await delay(60);
      changing = true;
      await consumer.setPrefetch(prefetch);
      // A delivery already on the wire when the change was made may still land; after that, never.
      await delay(5);
      inForce = prefetch;
      changing = false;
      if (prefetch === 0) {
        await waitFor(() => held === 0, { timeoutMs: 5000, what: "held deliveries settled while paused" });
        const before = arrived;
        await delay(150);
        expect(arrived).toBe(before); // paused: nothing new arrives
      }
    }
    inForce = 16; // raised: from here on more may arrive
    await consumer.setPrefetch(16);
    await waitFor(() => done === jobs.length, { timeoutMs: 20_000, what: "every job" });
    expect(violations.join("; ")).toBe("");
  });

  it("never returns a job to the queue behind its settle calls when the prefetch is lowered while jobs arrive: no delivery shows a higher attempt, none is dead-lettered", async () => {
    // The failover case: 64 slots, few held, capacity drops to 48 while a retried job is being
    // published. RabbitMQ 3.10 hands a delivery that reaches a consumer it is cancelling back
    // to the queue, unseen and counted in x-delivery-count, so cancelling idle consumers
    // chained a job through up to 16 returns (attempt 3..11, or dead-lettered at the limit).
    await using queue = new AmqpQueue({ url: rabbit.url, queueName: rabbit.queueName(), deliveryLimit: 3 });
    const attempts = new Map<string, number[]>();
    let held = 0;
    let most = 0;
    let inForce = 64;
    const consumer = await queue.consume(
      (delivery) => {
        attempts.set(delivery.job.id, [...(attempts.get(delivery.job.id) ?? []), delivery.attempt]);
        most = Math.max(most, ++held - inForce);
        setTimeout(() => {
          held--;
          void delivery.ack();
        }, 5);
      },
      { prefetch: 64 },
    );
    const jobs: JobEnvelope[] = [];
    for (let round = 0; round < 12; round++) {
      // Jobs published while the prefetch drops (to 48, or to 0 as a closing dispatcher does).
      const batch = Array.from({ length: 4 }, () => contractJob());
      jobs.push(...batch);
      const lowered = round % 4 === 3 ? 0 : 48;
      inForce = lowered;
      await Promise.all([consumer.setPrefetch(lowered), ...batch.map(async (job, i) => {
        await delay(i);
        await queue.enqueue(job);
      })]);
      await delay(20);
      inForce = 64;
      await consumer.setPrefetch(64);
      // Bounded but not fatal: a job the broker dead-lettered never arrives, the checks below say so.
      await waitFor(() => batch.every((job) => attempts.has(job.id)), { timeoutMs: 2000 }).catch(() => {});
    }
    await waitFor(() => held === 0, { timeoutMs: 5000, what: "every delivery settled" });
    const wrong = jobs.filter((job) => attempts.get(job.id)?.join() !== "1").map((job) => `${job.id}: ${attempts.get(job.id)?.join() ?? "never delivered"}`);
    expect(wrong, "jobs delivered other than once as attempt 1").toEqual([]);
    expect((await queue.deadLetters()).map((letter) => letter.reason)).toEqual([]);
    expect(most, "deliveries handed to the handler beyond the prefetch in force").toBe(0);
    expect(await rabbit.messageCount(queue.names.jobs)).toBe(0);
  });

  it("dead-letters a delivery held close to the broker's consumer_timeout and aborts its signal, while the channel and its other deliveries carry on", async () => {
    await using queue = new AmqpQueue({ url: rabbit.url, queueName: rabbit.queueName(), consumerTimeoutMs: 1000 });
    queue.on("error", () => {});
    let lost = 0;
    queue.on("deliveryLost", () => lost++);
    const stuck = contractJob({ payload: { stuck: true } });
    await queue.enqueue(stuck);
    const deliveries: Delivery[] = [];
    const acked: string[] = [];
    await queue.consume(
      (d) => {
        deliveries.push(d);
        if (d.job.id !== stuck.id) void d.ack().then(() => acked.push(d.job.id));
      },
      { prefetch: 2 },
    );
    await waitFor(() => deliveries.length === 1, { timeoutMs: 5000, what: "the stuck delivery" });
    const held = deliveries[0] as Delivery;
    const others = Array.from({ length: 5 }, () => contractJob());
    for (const job of others) {
      await queue.enqueue(job);
      await delay(100);
    }
    await waitFor(() => held.signal?.aborted, { timeoutMs: 3000, what: "the held delivery given up" });
    expect(held.signal?.reason).toMatchObject({ code: "deadline_exceeded", details: { reason: "consumer_timeout" } });
    expect(held.settled).toBe(true);
    expect((await rejectionOf(held.ack())).code).toBe("already_settled");
    const [letter] = await waitFor(async () => {
      const all = await queue.deadLetters();
      return all.length > 0 && all;
    }, { timeoutMs: 5000, what: "the dead letter" });
    expect(letter?.job?.id).toBe(stuck.id);
    expect(letter?.reason).toMatch(/^consumer_timeout: job .* was held \d+ ms without an ack/);
    // The channel never closed: the jobs beside it were delivered and acked, one more still is.
    const last = contractJob();
    await queue.enqueue(last);
    await waitFor(() => acked.length === others.length + 1, { timeoutMs: 5000, what: "the other jobs acked" });
    expect(acked).toEqual([...others, last].map((job) => job.id));
    expect(lost).toBe(0);
  });
});
