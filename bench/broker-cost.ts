/**
 * What RabbitMQ itself spends (its CPU, read from /proc/<beam.smp>/stat) per job or per event for
 * each shape of broker work the product uses, on raw amqplib so the client does not matter:
 * `node --no-warnings bench/broker-cost.ts [messages] [rounds]` (default 20,000 × 3; shapes
 * interleaved within each round, medians printed). Every queue and exchange it declares is deleted.
 *
 * - job queue: a confirmed persistent publish to a quorum queue with the product's arguments,
 *   consumed and acked one by one, by one consumer of prefetch 64 (the hand-written pipeline) or
 *   64 consumers of prefetch 1 (how `AmqpQueue` holds a prefetch that changes at run time);
 * - job events through a topic exchange to a durable classic subscriber queue, consumed with one
 *   multiple-ack per turn (as `AmqpEvents` does): one message per event, persistent and confirmed
 *   or transient, against 20 events per message routed with 20 distinct keys (BCC header).
 *
 * The broker is shared with whatever else runs on the machine: its CPU counts everything it did
 * in the window. Compare shapes within a round.
 */
import { randomUUID } from "node:crypto";
import { connect } from "amqplib";
import type { Channel, ConfirmChannel } from "amqplib";
import { ExternalCpu } from "./lib/cpu.ts";
import { AMQP_URL } from "./lib/rabbit.ts";
import { median } from "./lib/stats.ts";

const MESSAGES = Number(process.argv[2] ?? 20_000);
const ROUNDS = Number(process.argv[3] ?? 3);
const BATCH = 20;

const connection = await connect(AMQP_URL, { noDelay: true });
connection.on("error", () => {});
const publisher: ConfirmChannel = await connection.createConfirmChannel();
const admin: Channel = await connection.createChannel();
const job = Buffer.from(JSON.stringify({ v: 1, id: randomUUID(), type: "noop", payload: null, attempt: 1, maxAttempts: 3, timeoutMs: 60_000, createdAt: new Date().toISOString() }));
const event = (i: number) => JSON.stringify({ kind: "result", jobId: `job-${i}`, attempt: 1, at: Date.now(), outcome: { status: "completed", result: null } });

/** Publishes `count` messages keeping at most 256 awaiting their confirm (or all at once, unconfirmed). */
async function publish(exchange: string, count: number, message: (i: number) => { key: string; body: Buffer; bcc?: string[] }, persistent: boolean): Promise<void> {
  if (!persistent) {
    for (let i = 0; i < count; i++) {
      const m = message(i);
      if (!publisher.publish(exchange, m.key, m.body, { persistent: false })) await new Promise((resolve) => publisher.once("drain", resolve));
    }
    return;
  }
  let sent = 0;
  let confirmed = 0;
  await new Promise<void>((resolve, reject) => {
    const pump = (): void => {
      while (sent < count && sent - confirmed < 256) {
        const m = message(sent++);
        publisher.publish(exchange, m.key, m.body, { persistent: true, ...(m.bcc ? { BCC: m.bcc } : {}) }, (error: unknown) => {
          if (error) return reject(error);
          if (++confirmed === count) resolve();
          else pump();
        });
      }
    };
    pump();
  });
}

/** Consumes `count` messages from `queue`: acks one by one (`multiple` false) or one multiple-ack per turn. */
async function consume(queue: string, count: number, consumers: number, prefetch: number, multiple: boolean): Promise<void> {
  const channel = await connection.createChannel();
  await channel.prefetch(prefetch);
  let received = 0;
  let acked = 0;
  await new Promise<void>((resolve) => {
    let last: import("amqplib").ConsumeMessage | undefined;
    const onMessage = (message: import("amqplib").ConsumeMessage | null): void => {
      if (!message) return;
      received++;
      if (multiple) {
        const flush = last === undefined;
        last = message;
        if (flush) {
          setImmediate(() => {
            channel.ack(last!, true);
            last = undefined;
            if (received === count) resolve();
          });
        }
      } else {
        // A no-op job answers on a later turn.
        setImmediate(() => {
          channel.ack(message);
          if (++acked === count) resolve();
        });
      }
    };
    void (async () => {
      for (let c = 0; c < consumers; c++) await channel.consume(queue, onMessage);
    })();
  });
  await channel.close();
}

/** The broker's CPU µs per item while `run` handles `items`. */
async function brokerUs(items: number, run: () => Promise<void>): Promise<number> {
  const cpu = new ExternalCpu("beam.smp");
  if (!cpu.found) throw new Error("no beam.smp process on this machine: the broker must run locally");
  cpu.start();
  await run();
  return (cpu.stop() ?? NaN) / items;
}

const shapes: Record<string, () => Promise<number>> = {
  "job: quorum queue, 1 consumer × prefetch 64": () => jobShape(1, 64),
  "job: quorum queue, 64 consumers × prefetch 1": () => jobShape(64, 1),
  "event: own message, persistent, confirmed": () => eventShape("persistent"),
  "event: own message, transient, unconfirmed": () => eventShape("transient"),
  [`event: ${BATCH} per message (BCC keys), persistent, confirmed`]: () => eventShape("batched"),
};

async function jobShape(consumers: number, prefetch: number): Promise<number> {
  const queue = `bench-cost-${randomUUID()}`;
  const dead = `${queue}.dead`;
  await admin.assertQueue(dead, { durable: true, arguments: { "x-queue-type": "quorum" } });
  await admin.assertQueue(queue, {
    durable: true,
    arguments: { "x-queue-type": "quorum", "x-delivery-limit": 10, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead, "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish" },
  });
  try {
    return await brokerUs(MESSAGES, async () => {
      const consumed = consume(queue, MESSAGES, consumers, prefetch, false);
      await publish("", MESSAGES, () => ({ key: queue, body: job }), true);
      await consumed;
    });
  } finally {
    await admin.deleteQueue(queue);
    await admin.deleteQueue(dead);
  }
}

async function eventShape(form: "persistent" | "transient" | "batched"): Promise<number> {
  const exchange = `bench-cost-${randomUUID()}`;
  const queue = `${exchange}.sub`;
  await admin.assertExchange(exchange, "topic", { durable: false });
  await admin.assertQueue(queue, { durable: true, arguments: { "x-expires": 60_000 } });
  await admin.bindQueue(queue, exchange, "#");
  const messages = form === "batched" ? MESSAGES / BATCH : MESSAGES;
  const message = (i: number) => {
    if (form !== "batched") return { key: `result.job-${i}`, body: Buffer.from(event(i)) };
    const ids = Array.from({ length: BATCH }, (_, k) => i * BATCH + k);
    return {
      key: `result.job-${ids[0]}`,
      body: Buffer.from(`{"v":2,"events":[${ids.map(event).join(",")}]}`),
      bcc: ids.slice(1).map((id) => `result.job-${id}`),
    };
  };
  try {
    return await brokerUs(MESSAGES, async () => {
      const consumed = consume(queue, messages, 1, 1000, true);
      await publish(exchange, messages, message, form !== "transient");
      await consumed;
    });
  } finally {
    await admin.deleteQueue(queue);
    await admin.deleteExchange(exchange);
  }
}

const samples: Record<string, number[]> = Object.fromEntries(Object.keys(shapes).map((name) => [name, []]));
try {
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, run] of Object.entries(shapes)) samples[name]!.push(await run());
  }
} finally {
  await connection.close().catch(() => {});
}
console.log(`\nRabbitMQ CPU per job or event, ${MESSAGES.toLocaleString("en-US")} per shape, median of ${ROUNDS} rounds (all rounds in brackets)\n`);
console.log("| shape | broker µs per job / event |\n| --- | --- |");
for (const [name, values] of Object.entries(samples)) {
  console.log(`| ${name} | ${median(values)!.toFixed(1)} (${values.map((v) => v.toFixed(0)).join(", ")}) |`);
}
