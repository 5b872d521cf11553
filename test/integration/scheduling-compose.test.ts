import { afterAll, describe, expect, it } from "vitest";
import { JobClient } from "../../src/client/job-client.ts";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { laneQueueName } from "../../src/queue/amqp/topology.ts";
import { MemoryJobStore } from "../../src/store/memory-job-store.ts";
import { rejectionOf } from "../../src/testing/rejection-of.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import type { JobContext } from "../../src/worker/types.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";

// How the scheduling features compose on the real broker: priority lanes × retries × concurrency
// keys × redrive, judged by the order of starts and by where the broker holds each message.

const rabbit = await useRabbitMq();

type Step = { name: string; hold?: boolean; failOnce?: boolean };
type Jobs = { step: { payload: Step; result: string } };

async function deployment(label: string, options: { slots: number; keys?: readonly string[]; start?: boolean }) {
  const queueName = rabbit.queueName(`review-${label}`, { keys: options.keys ?? [] });
  const connection = new AmqpConnection({ url: rabbit.url, heartbeatSec: 5 });
  const queue = new AmqpQueue({ connection, queueName });
  const events = new AmqpEvents({ connection, queueName, subscriberExpiresMs: 5000 });
  const store = new MemoryJobStore();
  const log: string[] = [];
  const gates = new Map<string, () => void>();
  const failed = new Set<string>();
  const handlers = {
    step: async (payload: Step, ctx: JobContext): Promise<string> => {
      log.push(`start ${payload.name} ${ctx.attempt}`);
      try {
        if (payload.failOnce === true && !failed.has(payload.name)) {
          failed.add(payload.name);
          throw new Error(`${payload.name} fails once`);
        }
        if (payload.hold === true) {
          await new Promise<void>((resolve, reject) => {
            gates.set(payload.name, resolve);
            ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true });
          });
        }
      } finally {
        log.push(`end ${payload.name} ${ctx.attempt}`);
      }
      return payload.name;
    },
  };
  const pool = new WorkerPool();
  pool.add({ id: "w", transport: new InProcessTransport({ handlers, slots: options.slots }), slots: options.slots });
  const client = new JobClient<Jobs>({ queue, events, store, defaults: { timeoutMs: 60_000, maxAttempts: 3 } });
  queue.on("error", () => {});
  events.on("error", () => {});
  client.on("error", () => {});
  const dispatchers: Dispatcher[] = [];
  /** Starts a dispatcher on the pool (the previous one, if any, closed first). */
  const start = async (): Promise<void> => {
    await dispatchers.at(-1)?.close({ signal: AbortSignal.timeout(5000) });
    const dispatcher = new Dispatcher({ queue, events, pool, store, retry: { baseDelayMs: 300, maxDelayMs: 300, jitter: 0 } });
    dispatcher.on("error", () => {});
    dispatchers.push(dispatcher);
    await dispatcher.start();
  };
  if (options.start !== false) await start();
  return {
    queue, client, store, log, start,
    stop: () => dispatchers.at(-1)?.close({ signal: AbortSignal.timeout(5000) }),
    started: (name: string) => waitFor(() => log.some((line) => line.startsWith(`start ${name} `)), { timeoutMs: 15_000, what: `${name} started` }),
    release: (name: string) => gates.get(name)?.(),
    starts: () => log.filter((line) => line.startsWith("start ")).map((line) => line.split(" ").slice(1).join(" ")),
    async [Symbol.asyncDispose]() {
      for (const dispatcher of dispatchers) await dispatcher.close({ signal: AbortSignal.timeout(5000) }).catch(() => {});
      await client.close();
      await pool.close();
      await queue.close();
      await events.close();
      await connection.close();
    },
  };
}

/** The most jobs among `names` running at once, from the order of the start/end lines. */
function peak(log: readonly string[], names: readonly string[]): number {
  let running = 0;
  let most = 0;
  for (const line of log) {
    const [kind, name] = line.split(" ");
    if (!names.includes(name as string)) continue;
    running += kind === "start" ? 1 : -1;
    most = Math.max(most, running);
  }
  return most;
}

describe.skipIf(!rabbit.available)("scheduling features composed on RabbitMQ", () => {
  afterAll(() => rabbit.cleanup());

  it("a retried keyed job keeps its key (never two at once) and its priority on the record", async () => {
    await using d = await deployment("retry-key", { slots: 2, keys: ["review-k"] });
    const flaky = await d.client.submit({ type: "step", payload: { name: "flaky", failOnce: true }, priority: 2, concurrency: { key: "review-k" } });
    await waitFor(() => d.log.includes("end flaky 1"), { timeoutMs: 15_000, what: "flaky's first attempt failed" });
    const sibling = await d.client.submit({ type: "step", payload: { name: "sibling", hold: true }, concurrency: { key: "review-k" } });
    await waitFor(() => d.starts().includes("flaky 2") || d.starts().includes("sibling 1"), { timeoutMs: 15_000, what: "a job of the key started" });
    d.release("sibling");
    expect(await flaky.result({ timeoutMs: 15_000 })).toBe("flaky");
    expect(await sibling.result({ timeoutMs: 15_000 })).toBe("sibling");
    expect(peak(d.log, ["flaky", "sibling"])).toBe(1);
    const record = await d.store.get(flaky.id);
    expect(record?.priority).toBe(2);
    expect(record?.attempts.map((a) => a.outcome)).toEqual(["retrying", "completed"]);
  });

  it("redrives a dead-lettered priority-2 keyed job: it waits for its key, says why, keeps its priority, then completes", async () => {
    await using d = await deployment("redrive", { slots: 2, keys: ["review-r"] });
    const dead = await d.client.submit({ type: "step", payload: { name: "dead", failOnce: true }, priority: 2, concurrency: { key: "review-r" }, maxAttempts: 1 });
    expect((await rejectionOf(dead.result({ timeoutMs: 15_000 }))).code).toBe("handler_failed");
    await waitFor(async () => (await rabbit.messageCount(d.queue.names.deadLetters)) === 1, { timeoutMs: 15_000, what: "the dead letter" });
    const holder = await d.client.submit({ type: "step", payload: { name: "holder", hold: true }, concurrency: { key: "review-r" } });
    await d.started("holder");
    expect((await d.client.redrive(dead.id)).redriven).toEqual([dead.id]);
    const again = await d.client.get(dead.id);
    await waitFor(() => again?.reason?.includes('concurrency key "review-r"'), { timeoutMs: 15_000, what: "the redriven job waits for its key" });
    expect(again?.state).toBe("queued");
    expect(d.starts().filter((s) => s.startsWith("dead"))).toEqual(["dead 1"]);
    d.release("holder");
    expect(await holder.result({ timeoutMs: 15_000 })).toBe("holder");
    expect(await again?.result({ timeoutMs: 15_000 })).toBe("dead");
    expect(peak(d.log, ["dead", "holder"])).toBe(1);
    expect((await d.store.get(dead.id))?.priority).toBe(2);
  });
  it("a retried priority-1 job comes back through its backoff into lane p1, not the default lane", async () => {
    await using d = await deployment("retry-lane", { slots: 1 });
    const flaky = await d.client.submit({ type: "step", payload: { name: "flaky", failOnce: true }, priority: 1 });
    await waitFor(async () => (await d.store.get(flaky.id))?.attempts[0]?.outcome === "retrying", { timeoutMs: 15_000, what: "flaky's first attempt retrying" });
    await d.stop();
    const mid = await d.client.submit({ type: "step", payload: { name: "mid" } });
    // With no consumer, the broker shows where the retry came due.
    await waitFor(async () => (await rabbit.messageCount(laneQueueName(d.queue.names, 1))) === 1, { timeoutMs: 15_000, what: "the retry ready in lane p1" });
    expect(await rabbit.messageCount(laneQueueName(d.queue.names, 3))).toBe(1);
    await d.start();
    expect(await flaky.result({ timeoutMs: 15_000 })).toBe("flaky");
    expect(await mid.result({ timeoutMs: 15_000 })).toBe("mid");
    expect(d.starts().filter((s) => s.startsWith("flaky"))).toEqual(["flaky 1", "flaky 2"]);
    expect((await d.store.get(flaky.id))?.priority).toBe(1);
  });

  it("a delayed priority-1 job shows scheduled, then comes due through the cascade into lane p1 and completes there", async () => {
    await using d = await deployment("delay-lane", { slots: 1, start: false });
    const late = await d.client.submit({ type: "step", payload: { name: "late" }, priority: 1, delayMs: 300 });
    expect(late.state).toBe("scheduled");
    expect((await d.client.list({ state: "scheduled" })).records.map((r) => r.id)).toEqual([late.id]);
    const mid = await d.client.submit({ type: "step", payload: { name: "mid" } });
    // With no consumer yet, the broker shows where the job came due: lane p1, not the default lane.
    await waitFor(async () => (await rabbit.messageCount(laneQueueName(d.queue.names, 1))) === 1, { timeoutMs: 15_000, what: "the due job ready in lane p1" });
    expect(await rabbit.messageCount(laneQueueName(d.queue.names, 3))).toBe(1);
    expect((await d.store.get(late.id))?.state).toBe("scheduled");
    await d.start();
    expect(await late.result({ timeoutMs: 15_000 })).toBe("late");
    expect(await mid.result({ timeoutMs: 15_000 })).toBe("mid");
    expect(await d.store.get(late.id)).toMatchObject({ state: "completed", priority: 1 });
  });

  it("a delayed keyed job holds no key while scheduled, waits for it when due; one cancelled while scheduled never runs nor holds it", async () => {
    await using d = await deployment("delay-key", { slots: 2, keys: ["review-d"] });
    const cancelled = await d.client.submit({ type: "step", payload: { name: "cancelled" }, delayMs: 200, concurrency: { key: "review-d" } });
    const later = await d.client.submit({ type: "step", payload: { name: "later" }, priority: 2, delayMs: 600, concurrency: { key: "review-d" } });
    await cancelled.cancel();
    // Ended at once by the client while it waits; on a loaded machine a dispatcher may take it
    // first (200 ms), and then reports it cancelled itself: either way the record ends cancelled.
    await waitFor(async () => (await d.store.get(cancelled.id))?.state === "cancelled", { timeoutMs: 15_000, what: "the cancelled job's record" });
    const now = await d.client.submit({ type: "step", payload: { name: "now", hold: true }, concurrency: { key: "review-d" } });
    await d.started("now");
    await waitFor(() => later.reason?.includes('concurrency key "review-d"'), { timeoutMs: 15_000, what: "the due job waits for its key" });
    expect(later.state).toBe("queued");
    d.release("now");
    expect(await now.result({ timeoutMs: 15_000 })).toBe("now");
    expect(await later.result({ timeoutMs: 15_000 })).toBe("later");
    expect(d.starts()).toEqual(["now 1", "later 1"]);
    expect(peak(d.log, ["now", "later"])).toBe(1);
    expect((await d.store.get(cancelled.id))?.state).toBe("cancelled");
  });
});
