/**
 * Figures of the RabbitMQ layer alone (docs/rabbitmq.md cites them), on the local broker:
 * `node --no-warnings bench/amqp-queue.ts [--quick]`. Every queue it declares is deleted after.
 *
 * - cancel latency: `AmqpEvents.cancel()` in one connection → `subscribeCancels` listener in
 *   another (the live fanout path), and for comparison a raw stream consumer of the cancel log;
 * - enqueue: `AmqpQueue.enqueue()` with confirms, all at once; jobs/s and CPU per job;
 * - consume as a dispatcher does: delivery → `running` event → confirmed `result` event → ack;
 * - prefetch held as N consumers of prefetch 1 (what AmqpQueue does) against one consumer of
 *   prefetch N (raw amqplib): client CPU and rate (the broker's CPU: bench/broker-cost.ts);
 * - prefetch changed 64 <-> 48 every 50 ms under a steady flow of jobs: how many deliveries the
 *   broker returned to the queue unseen (they arrive again with `x-delivery-count` > 0), with
 *   AmqpQueue against one consumer per "generation" (basic.cancel it, basic.consume a new one
 *   with basic.qos = target - still held).
 */
import { randomUUID } from "node:crypto";
import { connect } from "amqplib";
import type { ConsumeMessage } from "amqplib";
import { AmqpConnection } from "../src/queue/amqp/amqp-connection.ts";
import { AmqpEvents } from "../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../src/queue/amqp/amqp-queue.ts";
import { ENVELOPE_VERSION } from "../src/job/envelope.ts";
import type { JobEnvelope } from "../src/job/envelope.ts";
import { deleteTopology } from "./lib/rabbit.ts";

const url = process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672";
const quick = process.argv.includes("--quick");
const JOBS = quick ? 5000 : 20_000;
const CANCELS = quick ? 50 : 200;
const queueNames: string[] = [];

const job = (): JobEnvelope => ({ v: ENVELOPE_VERSION, id: randomUUID(), type: "noop", payload: {}, attempt: 1, maxAttempts: 3, timeoutMs: 60_000, createdAt: new Date().toISOString() });
const fresh = () => {
  const name = `bench-amqp-${randomUUID()}`;
  queueNames.push(name);
  return name;
};
const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs `fn`, returning its rate per second over `count` and this process's CPU µs per item. */
async function measure(count: number, fn: () => Promise<void>): Promise<{ perSecond: number; cpuUs: number }> {
  const started = performance.now();
  const cpu = process.cpuUsage();
  await fn();
  const used = process.cpuUsage(cpu);
  return { perSecond: count / ((performance.now() - started) / 1000), cpuUs: (used.user + used.system) / count };
}

async function cancelLatency(): Promise<{ live: number[]; log: number[] }> {
  const queueName = fresh();
  // Subscriber queues carry random names: let them expire soon after the run.
  const sender = new AmqpEvents({ url, queueName, subscriberExpiresMs: 5000 });
  const receiver = new AmqpEvents({ url, queueName, subscriberExpiresMs: 5000 });
  const sentAt = new Map<string, number>();
  const live: number[] = [];
  await receiver.subscribeCancels((command) => {
    const at = sentAt.get(command.jobId);
    if (at !== undefined) live.push(performance.now() - at);
  });
  // The log alone, read by a plain stream consumer on its own connection.
  const raw = await connect(url);
  raw.on("error", () => {});
  const channel = await raw.createChannel();
  await channel.prefetch(100);
  const log: number[] = [];
  await channel.consume(sender.names.cancelLog, (message: ConsumeMessage | null) => {
    if (!message) return;
    channel.ack(message);
    const command = JSON.parse(message.content.toString()) as { jobId?: string };
    const at = command.jobId === undefined ? undefined : sentAt.get(command.jobId);
    if (at !== undefined) log.push(performance.now() - at);
  }, { arguments: { "x-stream-offset": "next" } });
  await sleep(200);
  for (let i = 0; i < CANCELS; i++) {
    const jobId = `job-${i}`;
    sentAt.set(jobId, performance.now());
    await sender.cancel({ jobId, reason: "requested", at: Date.now() });
    await sleep(5);
  }
  await sleep(500);
  await raw.close();
  await sender.close();
  await receiver.close();
  return { live: live.sort((a, b) => a - b), log: log.sort((a, b) => a - b) };
}

async function queuePath(): Promise<{ enqueue: { perSecond: number; cpuUs: number }; consume: { perSecond: number; cpuUs: number } }> {
  const queueName = fresh();
  const producerConnection = new AmqpConnection({ url });
  const producer = new AmqpQueue({ connection: producerConnection, queueName });
  await producer.ready();
  const jobs = Array.from({ length: JOBS }, job);
  const enqueue = await measure(JOBS, async () => {
    await Promise.all(jobs.map((j) => producer.enqueue(j)));
  });
  await producer.close();
  await producerConnection.close();

  const connection = new AmqpConnection({ url });
  const queue = new AmqpQueue({ connection, queueName });
  const events = new AmqpEvents({ connection, queueName, subscriberExpiresMs: 5000 });
  await events.ready();
  await queue.ready();
  const consume = await measure(JOBS, async () => {
    let done = 0;
    await new Promise<void>((resolve) => {
      void queue.consume(
        (delivery) => {
          const { id } = delivery.job;
          void events.publish({ kind: "state", jobId: id, attempt: delivery.attempt, at: Date.now(), state: "running" });
          void events
            .publish({ kind: "result", jobId: id, attempt: delivery.attempt, at: Date.now(), outcome: { status: "completed", result: null } })
            .then(() => delivery.ack())
            .then(() => {
              if (++done === JOBS) resolve();
            });
        },
        { prefetch: 64 },
      );
    });
  });
  await queue.close();
  await events.close();
  await connection.close();
  return { enqueue, consume };
}

async function prefetchForms(): Promise<Record<"one consumer, prefetch 64" | "64 consumers, prefetch 1", { perSecond: number; cpuUs: number }>> {
  const raw = await connect(url);
  raw.on("error", () => {});
  const results = {} as Record<"one consumer, prefetch 64" | "64 consumers, prefetch 1", { perSecond: number; cpuUs: number }>;
  for (const form of ["one consumer, prefetch 64", "64 consumers, prefetch 1"] as const) {
    const queueName = fresh();
    const publisher = await raw.createConfirmChannel();
    await publisher.assertQueue(queueName, { durable: true, arguments: { "x-queue-type": "quorum" } });
    const body = Buffer.from(JSON.stringify(job()));
    for (let i = 0; i < JOBS; i++) publisher.sendToQueue(queueName, body, { persistent: true });
    await publisher.waitForConfirms();
    const channel = await raw.createChannel();
    results[form] = await measure(JOBS, async () => {
      let got = 0;
      await new Promise<void>((resolve) => {
        const onMessage = (message: ConsumeMessage | null) => {
          if (!message) return;
          channel.ack(message);
          JSON.parse(message.content.toString());
          if (++got === JOBS) resolve();
        };
        void (async () => {
          if (form === "one consumer, prefetch 64") {
            await channel.prefetch(64);
            await channel.consume(queueName, onMessage);
          } else {
            await channel.prefetch(1);
            for (let i = 0; i < 64; i++) await channel.consume(queueName, onMessage);
          }
        })();
      });
    });
    await channel.close();
    await publisher.close();
  }
  await raw.close();
  return results;
}

const CHANGES = quick ? 20 : 40;

/**
 * Publishes about 4 jobs per ms until `change` has run CHANGES times (64 <-> 48, 50 ms apart),
 * each acked 5-15 ms after it arrives; counts arrivals that were returned before.
 */
async function underFlow(
  queueName: string,
  consume: (onJob: (returned: boolean, ack: () => void) => void) => Promise<(prefetch: number) => Promise<void>>,
): Promise<{ jobs: number; returned: number; changes: number }> {
  const raw = await connect(url);
  raw.on("error", () => {});
  const publisher = await raw.createConfirmChannel();
  let acked = 0;
  let returned = 0;
  const change = await consume((wasReturned, ack) => {
    if (wasReturned) returned++;
    setTimeout(() => {
      ack();
      acked++;
    }, 5 + Math.random() * 10);
  });
  let published = 0;
  let flowing = true;
  const flow = (async () => {
    while (flowing) {
      publisher.sendToQueue(queueName, Buffer.from(JSON.stringify(job())), { persistent: true });
      if (++published % 4 === 0) await sleep(1);
    }
    await publisher.waitForConfirms();
  })();
  for (let i = 0; i < CHANGES; i++) {
    await sleep(50);
    await change(i % 2 === 0 ? 48 : 64);
  }
  flowing = false;
  await flow;
  await change(64);
  for (let waited = 0; acked < published && waited < 20_000; waited += 50) await sleep(50);
  await raw.close();
  return { jobs: published, returned, changes: CHANGES };
}

async function prefetchChanges(): Promise<Record<"AmqpQueue (N consumers of prefetch 1)" | "one consumer per generation", { jobs: number; returned: number; changes: number }>> {
  const units = fresh();
  const queue = new AmqpQueue({ url, queueName: units, deliveryLimit: 1000 });
  await queue.ready();
  const withUnits = await underFlow(units, async (onJob) => {
    const consumer = await queue.consume((delivery) => onJob(delivery.attempt > delivery.job.attempt, () => void delivery.ack().catch(() => {})), { prefetch: 64 });
    return (prefetch) => consumer.setPrefetch(prefetch);
  });
  await queue.close();

  const generations = fresh();
  const raw = await connect(url);
  raw.on("error", () => {});
  const channel = await raw.createChannel();
  await channel.assertQueue(generations, { durable: true, arguments: { "x-queue-type": "quorum", "x-delivery-limit": 1000 } });
  let held = 0;
  const withGenerations = await underFlow(generations, async (onJob) => {
    const onMessage = (message: ConsumeMessage | null) => {
      if (!message) return;
      held++;
      onJob(Number(message.properties.headers?.["x-delivery-count"] ?? 0) > 0, () => {
        held--;
        channel.ack(message);
      });
    };
    await channel.prefetch(64);
    let tag = (await channel.consume(generations, onMessage)).consumerTag;
    return async (prefetch) => {
      await channel.cancel(tag);
      await channel.prefetch(Math.max(1, prefetch - held));
      tag = (await channel.consume(generations, onMessage)).consumerTag;
    };
  });
  await raw.close();
  return { "AmqpQueue (N consumers of prefetch 1)": withUnits, "one consumer per generation": withGenerations };
}

async function cleanup(): Promise<void> {
  for (const name of queueNames) await deleteTopology(name, { url });
}

try {
  const cancels = await cancelLatency();
  const { enqueue, consume } = await queuePath();
  const forms = await prefetchForms();
  const changes = await prefetchChanges();
  const ms = (v: number) => v.toFixed(2);
  const row = (name: string, r: { perSecond: number; cpuUs: number }) => `| ${name} | ${Math.round(r.perSecond).toLocaleString("en-US")} | ${r.cpuUs.toFixed(1)} |`;
  console.log(`\nRabbitMQ layer, ${JOBS.toLocaleString("en-US")} jobs, ${CANCELS} cancels (${quick ? "quick" : "full"} run)\n`);
  console.log("| cancel path (another connection) | p50 ms | p99 ms | max ms |\n| --- | --- | --- | --- |");
  console.log(`| AmqpEvents live fanout (what subscribeCancels delivers first) | ${ms(percentile(cancels.live, 0.5))} | ${ms(percentile(cancels.live, 0.99))} | ${ms(cancels.live.at(-1) ?? NaN)} |`);
  console.log(`| the cancel log stream alone | ${ms(percentile(cancels.log, 0.5))} | ${ms(percentile(cancels.log, 0.99))} | ${ms(cancels.log.at(-1) ?? NaN)} |`);
  console.log("\n| path | jobs/s | CPU µs/job (this process) |\n| --- | --- | --- |");
  console.log(row("AmqpQueue.enqueue, confirmed, all at once", enqueue));
  console.log(row("consume → running event → confirmed result event → ack (prefetch 64)", consume));
  for (const [form, r] of Object.entries(forms)) console.log(row(`raw amqplib consume + ack: ${form}`, r));
  console.log("\n| prefetch 64 <-> 48 every 50 ms under a flow of jobs | jobs | changes | deliveries the broker had returned unseen |\n| --- | --- | --- | --- |");
  for (const [form, r] of Object.entries(changes)) console.log(`| ${form} | ${r.jobs.toLocaleString("en-US")} | ${r.changes} | ${r.returned} |`);
} finally {
  await cleanup();
}
