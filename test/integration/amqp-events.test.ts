import { randomUUID } from "node:crypto";
import { connect } from "amqplib";
import { afterAll, describe, expect, it } from "vitest";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import type { CancelCommand, JobEvent } from "../../src/job/types.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { delay } from "../../src/signals.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";
import { TcpProxy } from "../helpers/tcp-proxy.ts";

const rabbit = await useRabbitMq();
const brokerPort = Number(new URL(rabbit.url).port || 5672);
const RECOVERY = { reconnect: { baseDelayMs: 50, maxDelayMs: 500 }, connectTimeoutMs: 1000, heartbeatSec: 2, subscriberExpiresMs: 10_000 } as const;

describe.skipIf(!rabbit.available)("AmqpEvents on RabbitMQ", () => {
  afterAll(() => rabbit.cleanup());

  it("hands every retained cancel to a late subscriber before subscribeCancels resolves", async () => {
    const queueName = rabbit.queueName();
    await using sender = new AmqpEvents({ url: rabbit.url, queueName });
    const sent: CancelCommand[] = Array.from({ length: 5 }, (_, n) => ({ jobId: `job-${n}`, reason: "requested", at: Date.now() }));
    for (const command of sent) await sender.cancel(command);
    await using late = new AmqpEvents({ url: rabbit.url, queueName });
    const received: CancelCommand[] = [];
    await late.subscribeCancels((command) => received.push(command));
    // Already there: a dispatcher that starts consuming now knows them all.
    expect(received).toEqual(sent);
  });

  it("delivers a cancel sent while a subscriber is cut off once it reconnects, exactly once", async () => {
    const queueName = rabbit.queueName();
    await using proxy = await TcpProxy.start({ port: brokerPort });
    await using subscriber = new AmqpEvents({ url: proxy.url(rabbit.url), queueName, ...RECOVERY });
    subscriber.on("error", () => {});
    await using sender = new AmqpEvents({ url: rabbit.url, queueName });
    const received: CancelCommand[] = [];
    await subscriber.subscribeCancels((command) => received.push(command));
    const before: CancelCommand = { jobId: randomUUID(), reason: "requested", at: Date.now() };
    await sender.cancel(before);
    await waitFor(() => received.length === 1, { what: "the first cancel" });
    proxy.blackhole();
    proxy.cut();
    const during: CancelCommand = { jobId: randomUUID(), reason: "shutdown", message: "sent while cut off", at: Date.now() };
    await sender.cancel(during);
    await delay(300);
    expect(received).toHaveLength(1);
    proxy.restore();
    await waitFor(() => received.length === 2, { timeoutMs: 10_000, what: "the cancel sent while cut off" });
    await delay(300); // the live copy and the log copy must not both arrive
    expect(received).toEqual([before, during]);
  });

  it("routes events of several jobs sent as one message to per-job, all-job and by-kind bindings, each once and in order", async () => {
    const queueName = rabbit.queueName();
    await using publisher = new AmqpEvents({ url: rabbit.url, queueName });
    await using perJob = new AmqpEvents({ url: rabbit.url, queueName, eventRouting: "per-job" });
    await using all = new AmqpEvents({ url: rabbit.url, queueName });
    const ofB: JobEvent[] = [];
    const everything: JobEvent[] = [];
    await perJob.subscribe("job-b", (event) => ofB.push(event));
    await all.subscribe("*", (event) => everything.push(event));
    // A queue of someone else's, bound by kind only.
    const byKind = `${queueName}.results-only`;
    const raw = await connect(rabbit.url);
    try {
      const channel = await raw.createChannel();
      await channel.assertQueue(byKind, { autoDelete: true });
      await channel.bindQueue(byKind, publisher.names.events, "result.#");
      const resultMessages: string[] = [];
      await channel.consume(byKind, (message) => message && resultMessages.push(message.content.toString()), { noAck: true });
      const published: JobEvent[] = ["a", "b", "c"].flatMap((id): JobEvent[] => [
        { kind: "state", state: "running", jobId: `job-${id}`, attempt: 1, at: Date.now(), workerId: "w1" },
        { kind: "result", jobId: `job-${id}`, attempt: 1, at: Date.now(), outcome: { status: "completed", result: id } },
      ]);
      // One turn: one message carrying all six events.
      await Promise.all(published.map((event) => publisher.publish(event)));
      await waitFor(() => everything.length === published.length && ofB.length === 2 && resultMessages.length > 0, { what: "the batched events" });
      await delay(200); // no second copy arrives
      expect(everything).toEqual(published);
      expect(ofB).toEqual(published.filter((e) => e.jobId === "job-b"));
      expect(resultMessages).toHaveLength(1);
      expect(JSON.parse(resultMessages[0]!)).toEqual({ v: 2, events: published });
    } finally {
      await raw.close();
    }
  });

  it("delivers job events published while a subscriber is cut off once it reconnects, in order", async () => {
    const queueName = rabbit.queueName();
    await using proxy = await TcpProxy.start({ port: brokerPort });
    await using subscriber = new AmqpEvents({ url: proxy.url(rabbit.url), queueName, ...RECOVERY });
    subscriber.on("error", () => {});
    await using publisher = new AmqpEvents({ url: rabbit.url, queueName });
    const received: JobEvent[] = [];
    await subscriber.subscribe("job-1", (event) => received.push(event));
    proxy.blackhole();
    proxy.cut();
    const published: JobEvent[] = [
      { kind: "state", jobId: "job-1", attempt: 1, at: Date.now(), state: "running", workerId: "w1" },
      { kind: "progress", jobId: "job-1", attempt: 1, at: Date.now(), progress: 0.5 },
      { kind: "log", jobId: "job-1", attempt: 1, at: Date.now(), line: "building", stream: "stdout" },
      { kind: "result", jobId: "job-1", attempt: 1, at: Date.now(), outcome: { status: "completed", result: { image: "sha256:1" } } },
    ];
    for (const event of published) await publisher.publish(event, { confirm: true });
    proxy.restore();
    await waitFor(() => received.length === published.length, { timeoutMs: 10_000, what: "the events published meanwhile" });
    expect(received).toEqual(published);
  });
});
