import { connect } from "amqplib";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { JobClient } from "../../src/client/job-client.ts";
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { startDispatcherProcess } from "../helpers/amqp-dispatcher-process.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";
import { startWorkerProcess } from "../helpers/worker-process.ts";

/**
 * Issue 8: whatever arrives on the job queue, from whoever, is dead-lettered exactly once with a
 * reason and never harms another job. A seeded fast-check run builds at least 500 hostile
 * messages (random bodies, AMQP properties and header tables: routing headers, forged x-death /
 * x-delivery-count / x-blacktree-*, tables near amqplib's 64 KiB limit) and publishes them straight
 * onto the real broker's job queue, interleaved with valid jobs, while an orchestrator process
 * (Dispatcher on AmqpQueue, gRPC worker processes) consumes. Replay a failure with
 * `FC_SEED=<seed> npx vitest run test/integration/amqp-generative.test.ts`.
 */

const rabbit = await useRabbitMq();
const SEED = Number(process.env.FC_SEED ?? 20_260_803);
const BAD_MESSAGES = 500;
const VALID_JOBS = 60;

/** One message a foreign producer puts on the job queue. */
interface Hostile {
  body: Uint8Array;
  properties: Record<string, unknown>;
}

const text = fc.string({ maxLength: 40 });
const headerValue: fc.Arbitrary<unknown> = fc.oneof(
  text,
  fc.integer(),
  fc.double({ min: -1e6, max: 1e6, noNaN: true }),
  fc.boolean(),
  fc.array(text, { maxLength: 4 }),
  fc.dictionary(text, fc.oneof(text, fc.integer()), { maxKeys: 3 }),
  fc.uint8Array({ maxLength: 32 }).map((b) => Buffer.from(b)),
);

/** Header tables: forged broker/SDK headers, random keys, and now and then one near 64 KiB. */
function headerTable(jobQueue: string): fc.Arbitrary<Record<string, unknown>> {
  const routes = fc.array(fc.oneof(fc.constant(jobQueue), text), { minLength: 1, maxLength: 3 });
  return fc.record(
    {
      CC: routes,
      BCC: routes,
      "x-delivery-count": fc.oneof(fc.integer({ min: -5, max: 50 }), text),
      "x-death": fc.array(fc.record({ queue: fc.oneof(fc.constant(jobQueue), text), reason: fc.constantFrom("delivery_limit", "rejected", "expired", "x"), count: fc.integer() }), { maxLength: 2 }),
      "x-first-death-reason": text,
      "x-blacktree-reason": text,
      "x-blacktree-attempt": fc.integer(),
      "x-blacktree-retry-reason": text,
      filler: fc.integer({ min: 1, max: 63_000 }).map((n) => "f".repeat(n)),
      // RabbitMQ refuses (closes the channel on) a CC or BCC that is not an array of strings.
      random: fc.dictionary(fc.string({ minLength: 1, maxLength: 20 }).filter((k) => k !== "CC" && k !== "BCC"), headerValue, { maxKeys: 6 }),
    },
    { requiredKeys: [] },
  ).map(({ random, ...fixed }) => ({ ...random, ...fixed }));
}

const properties = (jobQueue: string): fc.Arbitrary<Record<string, unknown>> =>
  fc.record(
    {
      headers: headerTable(jobQueue),
      contentType: fc.oneof(text, fc.constant("application/json")),
      contentEncoding: text,
      correlationId: text,
      replyTo: text,
      messageId: text,
      type: text,
      appId: text,
      priority: fc.integer({ min: 0, max: 9 }),
      timestamp: fc.integer({ min: 0, max: 2 ** 31 }),
      persistent: fc.boolean(),
    },
    { requiredKeys: [] },
  ).map((p) => {
    // A table amqplib itself cannot encode never reaches the broker: keep the filler within it.
    const headers = p.headers as Record<string, unknown> | undefined;
    if (headers && typeof headers.filler === "string") {
      const { filler, ...rest } = headers;
      const room = 56_000 - Buffer.byteLength(JSON.stringify(rest));
      headers.filler = (filler as string).slice(0, Math.max(1, room));
    }
    return p;
  });

const envelopeLike = fc.record(
  {
    v: fc.oneof(fc.constant(1), fc.constant(2), text),
    id: fc.oneof(fc.uuid(), fc.constant(""), fc.integer(), fc.string({ minLength: 257, maxLength: 300 })),
    type: fc.oneof(fc.constant("echo"), fc.constant(""), fc.integer()),
    payload: fc.jsonValue(),
    attempt: fc.oneof(fc.integer({ min: -3, max: 3 }), fc.double(), text),
    maxAttempts: fc.oneof(fc.integer({ min: -3, max: 2000 }), text),
    timeoutMs: fc.oneof(fc.integer({ min: -10, max: 10 }), text),
    createdAt: fc.oneof(fc.constant(new Date(0).toISOString()), fc.integer()),
    labels: fc.oneof(fc.dictionary(text, text), fc.dictionary(text, fc.integer(), { minKeys: 1 })),
  },
  { requiredKeys: [] },
);

/** Bodies that are never a valid envelope: bytes, JSON of other shapes, envelopes with a bad field. */
const invalidBody: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.uint8Array({ maxLength: 512 }),
  fc.string({ maxLength: 200 }).map((s) => Buffer.from(s)),
  fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v) ?? "null")),
  envelopeLike.map((o) => Buffer.from(JSON.stringify(o))),
);

function hostileMessages(jobQueue: string): fc.Arbitrary<Hostile[]> {
  return fc
    .uniqueArray(fc.record({ body: invalidBody, properties: properties(jobQueue) }), {
      minLength: BAD_MESSAGES,
      maxLength: BAD_MESSAGES + 40,
      selector: (m) => Buffer.from(m.body).toString("base64"),
    })
    .filter((messages) => messages.every((m) => !isValidEnvelope(m.body)));
}

function isValidEnvelope(body: Uint8Array): boolean {
  try {
    const o = JSON.parse(Buffer.from(body).toString("utf8")) as Record<string, unknown>;
    return o?.v === 1 && typeof o.id === "string" && typeof o.type === "string" && "payload" in o && Number.isInteger(o.attempt) && (o.attempt as number) >= 1
      && Number.isInteger(o.maxAttempts) && Number.isInteger(o.timeoutMs) && typeof o.createdAt === "string";
  } catch {
    return false;
  }
}

describe.skipIf(!rabbit.available)("the job queue under generated hostile input (seeded fast-check)", () => {
  afterAll(() => rabbit.cleanup());

  it(`dead-letters each of ${BAD_MESSAGES}+ random messages exactly once with a reason, completes every valid job beside them, and the orchestrator still stops on SIGTERM`, async () => {
    const queueName = rabbit.queueName("hostile");
    await using workerA = await startWorkerProcess({ slots: 4 });
    await using workerB = await startWorkerProcess({ slots: 4 });
    await using dispatcher = await startDispatcherProcess({ url: rabbit.url, queueName, workers: [workerA.address, workerB.address], slots: 4 });
    await using connection = new AmqpConnection({ url: rabbit.url });
    await using queue = new AmqpQueue({ connection, queueName });
    await using events = new AmqpEvents({ connection, queueName });
    const client = new JobClient({ queue, events });
    await queue.ready();

    const [messages] = fc.sample(hostileMessages(queue.names.jobs), { seed: SEED, numRuns: 1 }) as [Hostile[]];
    console.info(`amqp-generative: seed ${SEED}, ${messages.length} hostile messages, ${VALID_JOBS} valid jobs`);

    // One raw producer publishes the hostile messages; valid jobs go in between, every tenth message.
    const raw = await connect(rabbit.url);
    raw.on("error", () => {});
    const handles: Array<ReturnType<typeof client.submit>> = [];
    // Awaited below; marked handled so a failure while publishing reports that failure alone.
    const submit = (payload: unknown) => {
      const handle = client.submit({ type: "echo", payload });
      handle.catch(() => {});
      return handle;
    };
    try {
      const channel = await raw.createConfirmChannel();
      channel.on("error", () => {});
      for (const [i, message] of messages.entries()) {
        channel.sendToQueue(queue.names.jobs, Buffer.from(message.body), message.properties);
        if (i % 10 === 0 && handles.length < VALID_JOBS) handles.push(submit({ n: i }));
        if (i % 50 === 49) await channel.waitForConfirms();
      }
      while (handles.length < VALID_JOBS) handles.push(submit({ n: handles.length }));
      await channel.waitForConfirms();
    } finally {
      await raw.close().catch(() => {});
    }

    const results = await Promise.all(handles.map(async (handle) => (await handle).result({ timeoutMs: 60_000 })));
    expect(results).toHaveLength(VALID_JOBS);

    const letters = await waitFor(async () => {
      const all = await queue.deadLetters({ limit: 10_000 });
      return all.length >= messages.length && all;
    }, { timeoutMs: 60_000, intervalMs: 250, what: `${messages.length} dead letters` });
    // A sentinel submitted after the last dead letter arrived completes after any copy routed
    // back to the job queue would have been consumed (and dead-lettered a second time).
    const sentinel = await client.submit({ type: "echo", payload: { sentinel: true } });
    expect(await sentinel.result({ timeoutMs: 30_000 })).toEqual({ sentinel: true });

    const after = await queue.deadLetters({ limit: 10_000 });
    expect(after.length).toBe(messages.length);
    const seen = new Map<string, number>();
    for (const letter of after) {
      const key = Buffer.from(letter.body).toString("base64");
      seen.set(key, (seen.get(key) ?? 0) + 1);
      expect(letter.reason.length, "every dead letter has a reason").toBeGreaterThan(0);
      expect(letter.job, "no valid envelope was dead-lettered").toBeUndefined();
    }
    for (const message of messages) expect(seen.get(Buffer.from(message.body).toString("base64")), "dead-lettered exactly once").toBe(1);
    expect(letters.length).toBe(messages.length);
    expect(await rabbit.messageCount(queue.names.jobs)).toBe(0);

    // The orchestrator answers SIGTERM: a graceful exit (code 0), not the SIGKILL stop() falls back to.
    await dispatcher.stop();
    expect(dispatcher.exitStatus()).toEqual({ code: 0, signal: null });
    expect(dispatcher.output()).not.toMatch(/error .*(blocking or slow|cannot be encoded)/);
  }, 180_000);
});
