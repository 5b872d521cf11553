import { randomUUID } from "node:crypto";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { OrchestratorError } from "../../errors.ts";
import { DEFAULT_MAX_ENVELOPE_BYTES, ENVELOPE_VERSION } from "../../job/envelope.ts";
import type { JobEnvelope } from "../../job/envelope.ts";
import { cancelError, delay } from "../../signals.ts";
import type { CancelCommand, JobEvent } from "../../job/types.ts";
import type { ConsumeOptions, Consumer, DeadLetterInfo, Delivery, JobEvents, JobQueue } from "../../queue/types.ts";
import { rejectionOf } from "../rejection-of.ts";
import { waitFor } from "../wait-for.ts";

/** One fresh queue under test, as {@link describeQueueContract}'s factory returns it. */
export interface QueueContractSubject {
  /** The queue under test; empty, used by this test only. */
  queue: JobQueue;
  /** The events of the same deployment. */
  events: JobEvents;
  /** Puts raw bytes on the queue as a foreign producer would (no validation). */
  publishRaw(bytes: Uint8Array): Promise<void>;
  /** Everything dead-lettered from this queue so far, oldest first. */
  deadLetters(): Promise<DeadLetterInfo[]>;
  /**
   * Optional: another client of the same queue and events, as a second process would open; the
   * suite then runs competing consumers and late cancel subscribers on it. Closed by `dispose`.
   */
  connectPeer?(): Promise<{ queue: JobQueue; events: JobEvents }>;
  /** Closes everything the factory opened (tolerating what the test already closed) and deletes the queue. */
  dispose(): Promise<void>;
}

/** Creates one {@link QueueContractSubject} per test. */
export type QueueContractFactory = () => Promise<QueueContractSubject>;

/** Options of {@link describeQueueContract}. */
export interface QueueContractOptions {
  /** Longest wait for something that must happen. @default 5000 */
  timeoutMs?: number;
  /** How long the suite watches for something that must NOT happen. @default 150 */
  quietMs?: number;
  /** The implementation's envelope size limit. @default 1 MiB */
  maxEnvelopeBytes?: number;
}

/**
 * The concurrency keys the contract's jobs use, so a factory can delete what a broker made for
 * them (on RabbitMQ, one queue per key: `keyQueueName(names, key)`).
 */
export const CONTRACT_KEYS = ["contract-limit", "contract-lost", "contract-drop"] as const;

/** A valid envelope with a fresh id. */
export function contractJob(overrides: Partial<JobEnvelope> = {}): JobEnvelope {
  return {
    v: ENVELOPE_VERSION,
    id: randomUUID(),
    type: "contract",
    payload: { n: 0 },
    attempt: 1,
    maxAttempts: 5,
    timeoutMs: 60_000,
    createdAt: new Date().toISOString(),
    ...overrides,
  };
}

/** Rejection code of a promise, or "resolved". */
async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return "resolved";
  } catch (error) {
    return error instanceof OrchestratorError ? error.code : `not an OrchestratorError: ${String(error)}`;
  }
}

/**
 * A vitest suite that checks a {@link JobQueue} and {@link JobEvents} implementation keeps the
 * semantics the dispatcher relies on: confirmation, FIFO, prefetch (changed at run time, 0
 * pauses), delayed retry with a higher attempt, dead letters with reasons (invalid messages
 * never reach a consumer), redelivery after a consumer stops (and, when the implementation
 * provides `Delivery.signal`, that signal aborting with `delivery_lost`), exactly-once settle,
 * competing consumers, concurrency keys (a limit held across consumers, outside the prefetch,
 * freed by a cancelled consumer; `drop_newest`), ordered events, cancel replay and close. It runs on real time with small
 * delays, so it works against a broker; every wait is bounded.
 *
 * @example
 * ```ts
 * describeQueueContract("MemoryQueue", async () => {
 *   const queue = new MemoryQueue();
 *   return { queue, events: queue, publishRaw: (b) => queue.publishRaw(b),
 *     deadLetters: async () => queue.deadLetters(), dispose: () => queue.close() };
 * });
 * ```
 */
export function describeQueueContract(name: string, factory: QueueContractFactory, options: QueueContractOptions = {}): void {
  const { timeoutMs = 5000, quietMs = 150, maxEnvelopeBytes = DEFAULT_MAX_ENVELOPE_BYTES } = options;
  const quiet = () => delay(quietMs);
  const until = <T>(check: () => T | undefined | null | false | Promise<T | undefined | null | false>, what: string) =>
    waitFor(check, { timeoutMs, what });

  describe(`JobQueue/JobEvents contract: ${name}`, () => {
    let subject: QueueContractSubject;
    let peer: { queue: JobQueue; events: JobEvents };

    beforeEach(async () => {
      subject = await factory();
      peer = subject.connectPeer ? await subject.connectPeer() : subject;
    });
    afterEach(async () => {
      await subject.dispose();
    });

    /** Consumes into an array, noting arrival times; `autoAck` acks each delivery on arrival. */
    async function collect(queue: JobQueue, consumeOptions: ConsumeOptions, autoAck = false) {
      const deliveries: Delivery[] = [];
      const arrivals: number[] = [];
      const consumer: Consumer = await queue.consume((delivery) => {
        deliveries.push(delivery);
        arrivals.push(Date.now());
        if (autoAck) void delivery.ack();
      }, consumeOptions);
      return { deliveries, arrivals, consumer, unsettled: () => deliveries.filter((d) => !d.settled) };
    }

    /**
     * The first delayed enqueue may set things up (a broker declares its delay topology), which
     * can take longer than the short delays of a test: done once beforehand, with a job due long
     * after the test's own (its consumer acks it if it comes).
     */
    async function warmUpDelays(): Promise<void> {
      await subject.queue.enqueue(contractJob({ payload: { warmUp: true } }), { delayMs: 20_000 });
    }

    async function deadLetterFor(id: string): Promise<DeadLetterInfo> {
      return until(async () => (await subject.deadLetters()).find((info) => info.job?.id === id), `dead letter of ${id}`);
    }

    it("delivers an enqueued job unchanged with attempt 1, not redelivered, and never again once acked", async () => {
      const job = contractJob({ idempotencyKey: "key-1", labels: { gpu: "yes" }, trace: { traceparent: "00-abc-def-01" }, payload: { text: "héllo ✓", list: [1, null] } });
      await subject.queue.enqueue(job);
      const { deliveries } = await collect(subject.queue, { prefetch: 1 });
      const [delivery] = await until(() => deliveries.length === 1 && deliveries, "first delivery");
      expect(delivery?.job).toEqual(job);
      expect(delivery?.attempt).toBe(1);
      expect(delivery?.redelivered).toBe(false);
      expect(delivery?.settled).toBe(false);
      await delivery?.ack();
      expect(delivery?.settled).toBe(true);
      const second = contractJob();
      await subject.queue.enqueue(second);
      await until(() => deliveries.length === 2, "second delivery");
      await deliveries[1]?.ack();
      await quiet();
      expect(deliveries.map((d) => d.job.id)).toEqual([job.id, second.id]);
    });

    it("delivers jobs to a single consumer in the order they were enqueued", async () => {
      const jobs = Array.from({ length: 20 }, (_, n) => contractJob({ payload: { n } }));
      for (const job of jobs) await subject.queue.enqueue(job);
      const { deliveries } = await collect(subject.queue, { prefetch: 5 }, true);
      await until(() => deliveries.length === jobs.length, "20 deliveries");
      expect(deliveries.map((d) => d.job.id)).toEqual(jobs.map((j) => j.id));
    });

    it("never holds more unsettled deliveries than the prefetch, raised and lowered at run time", async () => {
      for (let n = 0; n < 10; n++) await subject.queue.enqueue(contractJob({ payload: { n } }));
      const { deliveries, consumer, unsettled } = await collect(subject.queue, { prefetch: 3 });
      await until(() => deliveries.length === 3, "3 deliveries");
      await quiet();
      expect(deliveries).toHaveLength(3);

      await consumer.setPrefetch(5);
      expect(consumer.prefetch).toBe(5);
      await until(() => deliveries.length === 5, "5 deliveries after raising the prefetch");
      await quiet();
      expect(deliveries).toHaveLength(5);

      await consumer.setPrefetch(2); // lowering settles nothing: 5 stay held
      await quiet();
      expect(unsettled()).toHaveLength(5);
      for (const delivery of deliveries.slice(0, 4)) await delivery.ack();
      await until(() => deliveries.length === 6, "one more delivery once fewer than 2 are held");
      await quiet();
      expect(deliveries).toHaveLength(6);
      expect(unsettled()).toHaveLength(2);
    });

    it("pauses delivery at prefetch 0 and resumes when it is raised", async () => {
      const { deliveries, consumer } = await collect(subject.queue, { prefetch: 0 });
      await subject.queue.enqueue(contractJob());
      await subject.queue.enqueue(contractJob());
      await quiet();
      expect(deliveries).toHaveLength(0);
      await consumer.setPrefetch(1);
      await until(() => deliveries.length === 1, "delivery after resuming");
      await consumer.setPrefetch(0);
      await deliveries[0]?.ack();
      await quiet();
      expect(deliveries).toHaveLength(1);
      await consumer.setPrefetch(2);
      await until(() => deliveries.length === 2, "delivery after resuming again");
    });

    it("rejects a prefetch that is not an integer >= 0 with invalid_argument", async () => {
      expect(await codeOf(subject.queue.consume(() => {}, { prefetch: -1 }))).toBe("invalid_argument");
      const { consumer } = await collect(subject.queue, { prefetch: 1 });
      expect(await codeOf(consumer.setPrefetch(1.5))).toBe("invalid_argument");
      expect(consumer.prefetch).toBe(1);
    });

    it("delivers a delayed enqueue no earlier than its delay, after jobs enqueued without one", async () => {
      await warmUpDelays();
      const late = contractJob();
      const early = contractJob();
      const enqueuedAt = Date.now();
      await subject.queue.enqueue(late, { delayMs: 300 });
      await subject.queue.enqueue(early);
      const { deliveries, arrivals } = await collect(subject.queue, { prefetch: 2 }, true);
      await until(() => deliveries.length === 2, "both deliveries");
      expect(deliveries.map((d) => d.job.id)).toEqual([early.id, late.id]);
      expect((arrivals[1] as number) - enqueuedAt).toBeGreaterThanOrEqual(250);
    });

    it("delivers jobs due later (runAt) in the order they come due, none before its time, after jobs due now", async () => {
      await warmUpDelays();
      const now = Date.now();
      // Enqueued out of due order; a job whose runAt has passed is due at once.
      const jobs = [contractJob({ runAt: now + 700 }), contractJob({ runAt: now + 150 }), contractJob({ runAt: now - 60_000 }), contractJob({ runAt: now + 400 })];
      for (const job of jobs) await subject.queue.enqueue(job);
      const { deliveries, arrivals } = await collect(subject.queue, { prefetch: 4 }, true);
      await until(() => deliveries.length === 4, "four deliveries");
      expect(deliveries.map((d) => d.job.id)).toEqual([jobs[2], jobs[1], jobs[3], jobs[0]].map((job) => job?.id));
      // The job travels unchanged, its due time included.
      expect(deliveries[3]?.job).toEqual(jobs[0]);
      // Never early (a few ms of slack for a broker's clock ticks, well under its per-hop overhead).
      deliveries.forEach((delivery, i) => expect(arrivals[i] as number).toBeGreaterThanOrEqual((delivery.job.runAt as number) - 5));
    });

    it("refuses a job due more than 90 days ahead with invalid_argument naming runAt", async () => {
      const error = await rejectionOf(subject.queue.enqueue(contractJob({ runAt: Date.now() + 91 * 86_400_000 })));
      expect(error).toMatchObject({ code: "invalid_argument" });
      expect(error.message).toContain("`runAt`");
    });

    it("redelivers a retried job after its delay with attempt raised by one", async () => {
      const job = contractJob({ payload: { keep: "me" } });
      await subject.queue.enqueue(job);
      const { deliveries, arrivals } = await collect(subject.queue, { prefetch: 1 });
      await until(() => deliveries.length === 1, "first delivery");
      const retriedAt = Date.now();
      await deliveries[0]?.retry(300, "flaky dependency");
      expect(deliveries[0]?.settled).toBe(true);
      await until(() => deliveries.length === 2, "redelivery after retry");
      const again = deliveries[1] as Delivery;
      expect((arrivals[1] as number) - retriedAt).toBeGreaterThanOrEqual(250);
      expect(again.job.id).toBe(job.id);
      expect(again.job.payload).toEqual(job.payload);
      expect(again.job.attempt).toBe(2);
      expect(again.attempt).toBe(2);
      await again.ack();
      await quiet();
      expect(deliveries).toHaveLength(2);
    });

    it("moves a dead-lettered job to the dead letters with its reason and never redelivers it", async () => {
      const job = contractJob();
      await subject.queue.enqueue(job);
      const { deliveries } = await collect(subject.queue, { prefetch: 1 });
      await until(() => deliveries.length === 1, "delivery");
      await deliveries[0]?.deadLetter("cannot process: bad input");
      const info = await deadLetterFor(job.id);
      expect(info.reason).toContain("cannot process: bad input");
      expect(info.job).toEqual(job);
      expect(JSON.parse(Buffer.from(info.body).toString("utf8"))).toMatchObject({ id: job.id });
      expect(Number.isNaN(Date.parse(info.at))).toBe(false);
      await quiet();
      expect(deliveries).toHaveLength(1);
    });

    it("redrive() (when implemented) puts dead letters back with attempt 1 and their history, leaving the others unchanged", async (context) => {
      const queue = subject.queue;
      if (!queue.redrive) return context.skip();
      const keep = contractJob({ payload: { keep: true } });
      const twice = contractJob({ maxAttempts: 2 });
      for (const job of [twice, keep]) await queue.enqueue(job);
      await subject.publishRaw(new TextEncoder().encode("not an envelope"));
      const first = await collect(queue, { prefetch: 4 });
      await until(() => first.deliveries.length === 2, "two deliveries");
      const byId = (d: Delivery[], id: string) => d.find((x) => x.job.id === id) as Delivery;
      await byId(first.deliveries, keep.id).deadLetter("keep me dead");
      await byId(first.deliveries, twice.id).retry(0, "try again");
      await until(() => first.deliveries.length === 3, "the retry");
      const retried = first.deliveries[2] as Delivery;
      expect(retried.attempt).toBe(2);
      await retried.deadLetter("out of attempts");
      await first.consumer.cancel();
      await until(async () => (await subject.deadLetters()).length === 3, "three dead letters");
      const before = await subject.deadLetters();

      const { redriven } = await queue.redrive({ jobIds: [twice.id] });
      expect(redriven).toHaveLength(1);
      expect(redriven[0]).toMatchObject({ id: twice.id, attempt: 1, priorAttempts: 2, redrives: [{ attempts: 2 }] });
      expect(redriven[0]?.redrives?.[0]?.reason).toContain("out of attempts");
      const after = await subject.deadLetters();
      expect(after.map((l) => l.reason)).toEqual(before.filter((l) => l.job?.id !== twice.id).map((l) => l.reason));
      expect(after.map((l) => Buffer.from(l.body).toString("base64"))).toEqual(
        before.filter((l) => l.job?.id !== twice.id).map((l) => Buffer.from(l.body).toString("base64")),
      );

      const second = await collect(queue, { prefetch: 1 }, true);
      await until(() => second.deliveries.length === 1, "the redriven job");
      expect(second.deliveries[0]?.job).toEqual(redriven[0]);
      expect(second.deliveries[0]?.attempt).toBe(1);
      expect(second.deliveries[0]?.redelivered).toBe(false);
      // Nothing else: the invalid message and the job not asked for stay dead.
      await quiet();
      expect(second.deliveries).toHaveLength(1);
      expect((await queue.redrive({ limit: 5 })).redriven.map((job) => job.id)).toEqual([keep.id]);
      expect((await subject.deadLetters()).map((l) => l.job)).toEqual([undefined]);
    });

    it("redrive() (when implemented) rejects bad options with invalid_argument", async (context) => {
      const queue = subject.queue;
      if (!queue.redrive) return context.skip();
      expect(await codeOf(queue.redrive({ limit: 0 }))).toBe("invalid_argument");
      expect(await codeOf(queue.redrive({ jobIds: "x" as never }))).toBe("invalid_argument");
    });

    it("lists dead letters with ids stable across reads, and discards (when implemented) exactly those asked", async (context) => {
      const queue = subject.queue;
      if (!queue.deadLetters || !queue.discardDeadLetters) return context.skip();
      const job = contractJob();
      await subject.publishRaw(new TextEncoder().encode("<not an envelope>"));
      await queue.enqueue(job);
      await subject.publishRaw(new TextEncoder().encode("also not one"));
      const { deliveries, consumer } = await collect(queue, { prefetch: 1 });
      await until(() => deliveries.length === 1, "the valid job");
      await (deliveries[0] as Delivery).deadLetter("dead on purpose");
      // The consumer reads on until it has met the second invalid message too.
      const first = await until(async () => {
        const all = await queue.deadLetters?.();
        return all?.length === 3 && all;
      }, "three dead letters");
      await consumer.cancel();
      const ids = first.map((l) => l.id);
      expect(new Set(ids).size).toBe(3);
      expect((await queue.deadLetters({ limit: 2 })).map((l) => l.id)).toEqual(ids.slice(0, 2));
      expect((await queue.deadLetters()).map((l) => l.id)).toEqual(ids);
      const invalid = first.filter((l) => l.job === undefined);
      expect(invalid.map((l) => Buffer.from(l.body).toString())).toEqual(["<not an envelope>", "also not one"]);
      const target = invalid[0] as DeadLetterInfo;
      expect(await queue.discardDeadLetters([target.id, "no-such-dead-letter"])).toEqual({ discarded: [target.id] });
      const left = await queue.deadLetters();
      expect(left.map((l) => l.id)).toEqual(ids.filter((id) => id !== target.id));
      expect(await queue.discardDeadLetters([target.id])).toEqual({ discarded: [] });
      // It looks among the oldest `limit` only: the other invalid one is second of the two left.
      const other = invalid[1] as DeadLetterInfo;
      expect(left.map((l) => l.id).indexOf(other.id)).toBe(1);
      expect(await queue.discardDeadLetters([other.id], { limit: 1 })).toEqual({ discarded: [] });
      expect((await queue.deadLetters()).map((l) => l.id)).toContain(other.id);
      expect(await queue.discardDeadLetters([other.id], { limit: 2 })).toEqual({ discarded: [other.id] });
      expect(await codeOf(queue.discardDeadLetters([other.id], { limit: 0 }))).toBe("invalid_argument");
      expect(await codeOf(queue.discardDeadLetters("x" as never))).toBe("invalid_argument");
      expect(await codeOf(queue.discardDeadLetters([""]))).toBe("invalid_argument");
      // The valid job is still there to redrive.
      expect((await queue.redrive?.({ jobIds: [job.id] }))?.redriven.map((j) => j.id)).toEqual([job.id]);
    });

    it("dead-letters invalid messages with a reason saying what was wrong, while valid jobs flow past them", async () => {
      const text = (s: string) => new Uint8Array(Buffer.from(s));
      const notJson = text("{ this is not json");
      const noId = text(JSON.stringify({ ...contractJob(), id: undefined }));
      const badVersion = text(JSON.stringify({ ...contractJob(), v: 99 }));
      const oversized = text(JSON.stringify(contractJob({ payload: "x".repeat(maxEnvelopeBytes + 1) })));
      const good = [contractJob(), contractJob(), contractJob()];
      await subject.publishRaw(notJson);
      await subject.queue.enqueue(good[0] as JobEnvelope);
      await subject.publishRaw(noId);
      await subject.publishRaw(badVersion);
      await subject.queue.enqueue(good[1] as JobEnvelope);
      await subject.publishRaw(oversized);
      await subject.queue.enqueue(good[2] as JobEnvelope);
      const { deliveries } = await collect(subject.queue, { prefetch: 2 }, true);
      const letters = await until(async () => {
        const all = await subject.deadLetters();
        return all.length === 4 && all;
      }, "4 dead letters");
      await until(() => deliveries.length === 3, "3 valid deliveries");
      await quiet();
      expect(deliveries.map((d) => d.job.id)).toEqual(good.map((j) => j.id));
      const reasonFor = (body: Uint8Array) => letters.find((l) => l.body.byteLength === body.byteLength && Buffer.from(l.body).equals(body))?.reason;
      expect(reasonFor(notJson)).toMatch(/json/i);
      expect(reasonFor(noId)).toMatch(/`id`/);
      expect(reasonFor(badVersion)).toMatch(/`v`|version/i);
      expect(reasonFor(oversized)).toMatch(/exceeds|too large|limit/i);
    });

    it("dead-letters a valid job its consumer's accept() refuses, with the reason accept() gave", async () => {
      const known = contractJob();
      const unknown = contractJob({ type: "no-such-type" });
      await subject.queue.enqueue(unknown);
      await subject.queue.enqueue(known);
      const { deliveries } = await collect(
        subject.queue,
        { prefetch: 1, accept: (job) => (job.type === "contract" ? undefined : `no handler for job type ${job.type}`) },
        true,
      );
      const info = await deadLetterFor(unknown.id);
      expect(info.reason).toContain("no handler for job type no-such-type");
      await until(() => deliveries.length === 1, "the known job");
      await quiet();
      expect(deliveries.map((d) => d.job.id)).toEqual([known.id]);
    });

    it("delivers a job held by a cancelled consumer again, redelivered and with a higher attempt", async () => {
      const job = contractJob();
      const first = await collect(subject.queue, { prefetch: 1 });
      await subject.queue.enqueue(job);
      await until(() => first.deliveries.length === 1, "first delivery");
      const second = await collect(peer.queue, { prefetch: 1 });
      await first.consumer.cancel();
      await first.consumer.cancel(); // idempotent
      await until(() => second.deliveries.length === 1, "redelivery to the other consumer");
      const again = second.deliveries[0] as Delivery;
      expect(again.job.id).toBe(job.id);
      expect(again.redelivered).toBe(true);
      expect(again.attempt).toBeGreaterThan(first.deliveries[0]?.attempt as number);
      expect(await codeOf((first.deliveries[0] as Delivery).ack())).toBe("queue_closed");
      await again.ack();
      await quiet();
      expect(first.deliveries).toHaveLength(1);
      expect(second.deliveries).toHaveLength(1);
    });

    it("aborts a delivery's signal with reason delivery_lost when its consumer is cancelled before it was settled (checks only the redelivery when Delivery.signal is undefined)", async (context) => {
      const lost = contractJob();
      const done = contractJob();
      await subject.queue.enqueue(done);
      await subject.queue.enqueue(lost);
      const first = await collect(subject.queue, { prefetch: 2 });
      await until(() => first.deliveries.length === 2, "both deliveries");
      const [acked, held] = first.deliveries as [Delivery, Delivery];
      expect([acked.job.id, held.job.id]).toEqual([done.id, lost.id]);
      const signal = held.signal;
      const ackedSignal = acked.signal;
      const aborts: unknown[] = [];
      if (signal === undefined) {
        // Optional in the contract: without it, only what every queue must do is checked below.
        await context.annotate?.("Delivery.signal is undefined: checked the redelivery only");
      } else {
        expect(signal.aborted).toBe(false);
        signal.addEventListener("abort", () => aborts.push(signal.reason));
      }
      await acked.ack();
      await first.consumer.cancel();
      if (signal !== undefined) {
        await until(() => aborts.length > 0, "the held delivery's signal to abort");
        expect(aborts).toEqual([expect.any(OrchestratorError)]);
        expect(aborts[0]).toMatchObject({ code: "queue_closed", details: { reason: "delivery_lost" } });
        expect(ackedSignal?.aborted).toBe(false); // a settled delivery was not taken away
      }
      const second = await collect(peer.queue, { prefetch: 1 });
      await until(() => second.deliveries.length === 1, "redelivery");
      const again = second.deliveries[0] as Delivery;
      expect(again.job.id).toBe(lost.id);
      expect(again.attempt).toBeGreaterThan(held.attempt);
      expect(again.signal?.aborted ?? false).toBe(false);
      await again.ack();
      await quiet();
      expect(again.signal?.aborted ?? false).toBe(false); // settling does not abort it
      expect(aborts).toHaveLength(signal === undefined ? 0 : 1);
      expect(second.deliveries).toHaveLength(1);
    });

    it("drops a settle made after the consumer was cancelled: the job comes back instead", async () => {
      const job = contractJob();
      await subject.queue.enqueue(job);
      const first = await collect(subject.queue, { prefetch: 1 });
      await until(() => first.deliveries.length === 1, "first delivery");
      await first.consumer.cancel();
      expect(await codeOf((first.deliveries[0] as Delivery).deadLetter("too late"))).toBe("queue_closed");
      const second = await collect(subject.queue, { prefetch: 1 }, true);
      await until(() => second.deliveries.length === 1, "redelivery");
      expect(second.deliveries[0]?.job.id).toBe(job.id);
      await quiet();
      expect((await subject.deadLetters()).filter((info) => info.job?.id === job.id)).toEqual([]);
    });

    it("rejects a second settle of a delivery with already_settled and acts on the first only", async () => {
      await subject.queue.enqueue(contractJob());
      const { deliveries } = await collect(subject.queue, { prefetch: 1 });
      await until(() => deliveries.length === 1, "delivery");
      const delivery = deliveries[0] as Delivery;
      await delivery.retry(0, "once");
      expect(await codeOf(delivery.ack())).toBe("already_settled");
      expect(await codeOf(delivery.retry(0, "twice"))).toBe("already_settled");
      expect(await codeOf(delivery.deadLetter("thrice"))).toBe("already_settled");
      await until(() => deliveries.length === 2, "the one retried copy");
      await deliveries[1]?.ack();
      expect(await codeOf((deliveries[1] as Delivery).ack())).toBe("already_settled");
      await quiet();
      expect(deliveries).toHaveLength(2);
      expect(deliveries[1]?.attempt).toBe(2);
    });

    it("gives a free slot the highest-priority job waiting, even behind many lower ones, FIFO within a level", async () => {
      const { deliveries } = await collect(subject.queue, { prefetch: 1 });
      await subject.queue.enqueue(contractJob({ payload: { n: "blocker" }, priority: 5 }));
      await until(() => deliveries.length === 1, "the blocker holds the only slot");
      const low = Array.from({ length: 20 }, (_, n) => contractJob({ payload: { n }, priority: 5 }));
      for (const job of low) await subject.queue.enqueue(job);
      const normal = contractJob({ payload: { n: "normal" } });
      const high = [contractJob({ payload: { n: "high-1" }, priority: 1 }), contractJob({ payload: { n: "high-2" }, priority: 1 })];
      await subject.queue.enqueue(normal);
      for (const job of high) await subject.queue.enqueue(job);
      await quiet(); // lets a broker-backed queue see every level before the slot frees
      for (let n = 1; n <= 3; n++) {
        await deliveries[n - 1]?.ack();
        await until(() => deliveries.length === n + 1, `delivery ${n + 1}`);
        await quiet();
      }
      expect(deliveries.slice(1, 4).map((d) => d.job.id)).toEqual([high[0]?.id, high[1]?.id, normal.id]);
      expect(deliveries[1]?.job.priority).toBe(1);
      for (let n = 4; n <= 6; n++) {
        await deliveries[n - 1]?.ack();
        await until(() => deliveries.length === n + 1, `delivery ${n + 1}`);
      }
      expect(deliveries.slice(4, 7).map((d) => d.job.id)).toEqual(low.slice(0, 3).map((j) => j.id));
    });

    it("brings a delayed job in at its own priority: due, it goes before lower ones that waited longer", async () => {
      await warmUpDelays();
      const { deliveries, consumer } = await collect(subject.queue, { prefetch: 1 });
      await subject.queue.enqueue(contractJob({ payload: { n: "blocker" } }));
      await until(() => deliveries.length === 1, "the blocker");
      // At the default level: a delayed job that came due there would wait behind them.
      const low = Array.from({ length: 5 }, (_, n) => contractJob({ payload: { n } }));
      for (const job of low) await subject.queue.enqueue(job);
      const high = contractJob({ payload: { n: "high, delayed" }, priority: 1, runAt: Date.now() + 300 });
      await subject.queue.enqueue(high);
      await delay(300 + quietMs * 2);
      await deliveries[0]?.ack();
      await until(() => deliveries.length === 2, "the next delivery");
      expect(deliveries[1]?.job.id).toBe(high.id);
      await consumer.setPrefetch(10);
      for (const d of deliveries) if (!d.settled) await d.ack();
      await until(() => deliveries.length === 7, "the rest");
      for (const d of deliveries) if (!d.settled) await d.ack();
    });

    it("gives a waiting lower-priority job a turn under a steady stream of higher ones (no starvation)", async () => {
      const { deliveries } = await collect(subject.queue, { prefetch: 1 });
      await subject.queue.enqueue(contractJob({ payload: { n: "blocker" }, priority: 1 }));
      await until(() => deliveries.length === 1, "the blocker holds the only slot");
      const low = contractJob({ payload: { n: "low" }, priority: 5 });
      await subject.queue.enqueue(low);
      const high = Array.from({ length: 30 }, (_, n) => contractJob({ payload: { n }, priority: 1 }));
      for (const job of high) await subject.queue.enqueue(job);
      await quiet();
      let n = 1;
      while (!deliveries.some((d) => d.job.id === low.id) && n <= 20) {
        await deliveries[n - 1]?.ack();
        await until(() => deliveries.length === n + 1, `delivery ${n + 1}`);
        await quiet(); // the next high-priority job is there before the slot frees
        n++;
      }
      const position = deliveries.findIndex((d) => d.job.id === low.id);
      // Highest first, but the low job's turn comes after at most 10 picks (the default aging).
      expect(deliveries[1]?.job.priority).toBe(1);
      expect(position).toBeGreaterThan(1);
      expect(position).toBeLessThanOrEqual(11);
    });

    it("keeps a job's priority through a retry", async () => {
      const job = contractJob({ priority: 2 });
      await subject.queue.enqueue(job);
      const { deliveries } = await collect(subject.queue, { prefetch: 1 });
      await until(() => deliveries.length === 1, "first delivery");
      await deliveries[0]?.retry(0, "again");
      await until(() => deliveries.length === 2, "redelivery");
      expect(deliveries[1]?.job).toMatchObject({ id: job.id, priority: 2, attempt: 2 });
      await deliveries[1]?.ack();
    });

    it("shares jobs between competing consumers, each job delivered once", async () => {
      const jobs = Array.from({ length: 40 }, (_, n) => contractJob({ payload: { n } }));
      const received: string[][] = [[], []];
      for (const [index, queue] of [subject.queue, peer.queue].entries()) {
        await queue.consume((delivery) => {
          received[index]?.push(delivery.job.id);
          setTimeout(() => void delivery.ack(), 5);
        }, { prefetch: 2 });
      }
      for (const job of jobs) await subject.queue.enqueue(job);
      await until(() => (received[0]?.length ?? 0) + (received[1]?.length ?? 0) >= jobs.length, "40 deliveries");
      await quiet();
      const all = [...(received[0] ?? []), ...(received[1] ?? [])];
      expect(all).toHaveLength(jobs.length);
      expect(new Set(all)).toEqual(new Set(jobs.map((j) => j.id)));
      expect(received[0]?.length).toBeGreaterThan(0);
      expect(received[1]?.length).toBeGreaterThan(0);
    });

    it("holds at most `limit` deliveries of a concurrency key, first in first out, each held counted against the prefetch", async () => {
      const key = CONTRACT_KEYS[0];
      const jobs = Array.from({ length: 5 }, (_, n) => contractJob({ payload: { n }, concurrency: { key, limit: 2, strategy: "wait" } }));
      const all: Delivery[] = [];
      await subject.queue.consume((delivery) => all.push(delivery), { prefetch: 3 });
      const keyed = () => all.filter((d) => d.job.concurrency !== undefined);
      const held = () => keyed().filter((d) => !d.settled);
      for (const job of jobs) await subject.queue.enqueue(job);
      await until(() => keyed().length === 2, "2 keyed deliveries");
      await quiet();
      expect(keyed()).toHaveLength(2);
      // The two keyed deliveries take two of the three slots: one unkeyed job is delivered, the
      // next only once a slot is free again.
      const [plain, second] = [contractJob(), contractJob()] as [JobEnvelope, JobEnvelope];
      await subject.queue.enqueue(plain);
      const plainDelivery = await until(() => all.find((d) => d.job.id === plain.id), "the unkeyed job");
      await subject.queue.enqueue(second);
      await quiet();
      expect(all.some((d) => d.job.id === second.id), "an unkeyed job delivered beyond the slots the keyed ones left").toBe(false);
      await plainDelivery.ack();
      const secondDelivery = await until(() => all.find((d) => d.job.id === second.id), "the second unkeyed job, once a slot freed");
      await secondDelivery.ack();
      for (let acked = 0; acked < jobs.length; acked++) {
        await until(() => keyed().length === Math.min(jobs.length, acked + 2), `keyed delivery ${Math.min(jobs.length, acked + 2)}`);
        expect(held().length).toBeLessThanOrEqual(2);
        await held()[0]?.ack();
      }
      await quiet();
      expect(held()).toHaveLength(0);
      expect(keyed().map((d) => d.job.id)).toEqual(jobs.map((j) => j.id));
      expect(keyed().map((d) => d.job.id)).toEqual(jobs.map((j) => j.id));
    });

    it("frees a concurrency key's place held by a cancelled consumer: that job comes back first, redelivered, then the next", async () => {
      const key = CONTRACT_KEYS[1];
      const [j1, j2] = [0, 1].map((n) => contractJob({ payload: { n }, concurrency: { key, limit: 1, strategy: "wait" } })) as [JobEnvelope, JobEnvelope];
      const a = await collect(subject.queue, { prefetch: 1 });
      await subject.queue.enqueue(j1);
      await subject.queue.enqueue(j2);
      await until(() => a.deliveries.length === 1, "the first keyed delivery");
      await quiet();
      expect(a.deliveries.map((d) => d.job.id)).toEqual([j1.id]);
      const b = await collect(peer.queue, { prefetch: 1 });
      await a.consumer.cancel();
      const again = await until(() => b.deliveries[0], "the held job on the other consumer");
      expect(again.job.id).toBe(j1.id);
      expect(again.redelivered).toBe(true);
      await quiet();
      expect(b.deliveries).toHaveLength(1);
      await again.ack();
      const next = await until(() => b.deliveries[1], "the next job of the key");
      expect(next.job.id).toBe(j2.id);
      await next.ack();
    });

    it("delivers a drop_newest job whose key is full with `dropped` saying why, holding no place", async () => {
      const key = CONTRACT_KEYS[2];
      const spec = { key, limit: 1, strategy: "drop_newest" as const };
      const holder = contractJob({ concurrency: spec });
      const newest = contractJob({ concurrency: spec });
      const a = await collect(subject.queue, { prefetch: 1 });
      await subject.queue.enqueue(holder);
      await until(() => a.deliveries.length === 1, "the holder");
      await subject.queue.enqueue(newest);
      const dropped = await until(() => a.deliveries[1], "the newest job");
      expect(dropped.job.id).toBe(newest.id);
      expect(dropped.dropped).toMatch(/at its limit of 1/);
      expect(a.deliveries[0]?.dropped).toBeUndefined();
      await dropped.ack();
      await a.deliveries[0]?.ack();
      const after = contractJob({ concurrency: spec });
      await subject.queue.enqueue(after);
      const third = await until(() => a.deliveries[2], "a job after the key freed");
      expect(third.dropped).toBeUndefined();
      await third.ack();
    });

    it("rejects enqueue with the reason of an already aborted signal and enqueues nothing", async () => {
      const job = contractJob();
      expect(await codeOf(subject.queue.enqueue(job, { signal: AbortSignal.abort(cancelError("requested")) }))).toBe("canceled");
      const { deliveries } = await collect(subject.queue, { prefetch: 1 });
      await quiet();
      expect(deliveries).toHaveLength(0);
    });

    it("delivers each job's events to its subscribers, and every job's to '*', in publish order", async () => {
      const forJob: JobEvent[] = [];
      const forAll: JobEvent[] = [];
      await subject.events.subscribe("job-a", (event) => forJob.push(event));
      await subject.events.subscribe("*", (event) => forAll.push(event));
      const published: JobEvent[] = [];
      for (let i = 1; i <= 30; i++) {
        const jobId = i % 3 === 0 ? "job-b" : "job-a";
        published.push({ kind: "progress", jobId, attempt: 1, at: Date.now(), progress: i / 30, message: `step ${i}` });
      }
      published.push({ kind: "result", jobId: "job-a", attempt: 1, at: Date.now(), outcome: { status: "completed", result: { ok: true } } });
      // Not awaited one by one: fire-and-forget progress must keep its order too.
      await Promise.all(published.map((event) => subject.events.publish(event)));
      const ofA = published.filter((e) => e.jobId === "job-a");
      await until(() => forJob.length === ofA.length && forAll.length === published.length, "all events");
      await quiet();
      expect(forJob).toEqual(ofA);
      expect(forAll.filter((e) => e.jobId === "job-a")).toEqual(ofA);
      expect(forAll.filter((e) => e.jobId === "job-b")).toEqual(published.filter((e) => e.jobId === "job-b"));
    });

    it("keeps delivering to a listener that throws and to the listeners beside it", async () => {
      let thrown = 0;
      const calm: JobEvent[] = [];
      await subject.events.subscribe("job-t", () => {
        thrown++;
        throw new Error("listener bug");
      });
      await subject.events.subscribe("job-t", (event) => calm.push(event));
      for (let i = 0; i < 3; i++) await subject.events.publish({ kind: "log", jobId: "job-t", attempt: 1, at: Date.now(), line: `line ${i}` });
      await until(() => calm.length === 3 && thrown === 3, "3 events to both listeners");
      expect(calm.map((e) => (e.kind === "log" ? e.line : ""))).toEqual(["line 0", "line 1", "line 2"]);
    });

    it("stops delivering to a closed subscription", async () => {
      const closedOne: JobEvent[] = [];
      const openOne: JobEvent[] = [];
      const subscription = await subject.events.subscribe("job-c", (event) => closedOne.push(event));
      await subject.events.subscribe("job-c", (event) => openOne.push(event));
      await subscription.close();
      await subscription.close(); // idempotent
      await subject.events.publish({ kind: "state", jobId: "job-c", attempt: 1, at: Date.now(), state: "running" });
      await until(() => openOne.length === 1, "event to the open subscription");
      await quiet();
      expect(closedOne).toEqual([]);
    });

    it("sends cancel commands to current subscribers and replays retained ones to later subscribers", async () => {
      const early: CancelCommand[] = [];
      const late: CancelCommand[] = [];
      await subject.events.subscribeCancels((command) => early.push(command));
      const first: CancelCommand = { jobId: randomUUID(), reason: "requested", message: "user pressed stop", at: Date.now() };
      await subject.events.cancel(first);
      await until(() => early.length === 1, "cancel to the early subscriber");
      await peer.events.subscribeCancels((command) => late.push(command));
      await until(() => late.length === 1, "replay to the late subscriber");
      const second: CancelCommand = { jobId: randomUUID(), reason: "shutdown", at: Date.now() };
      await peer.events.cancel(second);
      await until(() => early.length === 2 && late.length === 2, "second cancel to both");
      await quiet();
      expect(early).toEqual([first, second]);
      expect(late).toEqual([first, second]);
    });

    it("validates job events and cancel commands alike: ids up to 256 characters, known kinds and reasons", async () => {
      const longest = "j".repeat(256);
      const tooLong = "j".repeat(257);
      const event = (jobId: string, kind = "progress"): JobEvent => ({ kind, jobId, attempt: 1, at: Date.now(), progress: 0.5 }) as JobEvent;
      const command = (jobId: string, reason = "requested"): CancelCommand => ({ jobId, reason, at: Date.now() }) as CancelCommand;
      expect(await codeOf(subject.events.publish(event(longest)))).toBe("resolved");
      expect(await codeOf(subject.events.cancel(command(longest)))).toBe("resolved");
      expect(await codeOf(subject.events.publish(event(tooLong)))).toBe("invalid_argument");
      expect(await codeOf(subject.events.publish(event(longest, "progess")))).toBe("invalid_argument");
      expect(await codeOf(subject.events.subscribe(tooLong, () => {}))).toBe("invalid_argument");
      expect(await codeOf(subject.events.cancel(command(tooLong)))).toBe("invalid_argument");
      expect(await codeOf(subject.events.cancel(command(longest, "bored")))).toBe("invalid_argument");
      expect(await codeOf(subject.events.cancel({ ...command(longest), message: "m".repeat(16 * 1024 + 1) }))).toBe("invalid_argument");
    });

    it("after close rejects every call and every settle of a held delivery with queue_closed", async () => {
      await subject.queue.enqueue(contractJob());
      const { deliveries } = await collect(subject.queue, { prefetch: 1 });
      await until(() => deliveries.length === 1, "delivery");
      await subject.queue.close();
      await subject.events.close();
      await subject.queue.close(); // idempotent
      await subject.events.close();
      expect(await codeOf((deliveries[0] as Delivery).ack())).toBe("queue_closed");
      expect(await codeOf(subject.queue.enqueue(contractJob()))).toBe("queue_closed");
      expect(await codeOf(subject.queue.consume(() => {}, { prefetch: 1 }))).toBe("queue_closed");
      const event: JobEvent = { kind: "state", jobId: "job-x", attempt: 1, at: Date.now(), state: "queued" };
      expect(await codeOf(subject.events.publish(event))).toBe("queue_closed");
      expect(await codeOf(subject.events.subscribe("job-x", () => {}))).toBe("queue_closed");
      expect(await codeOf(subject.events.cancel({ jobId: "job-x", reason: "requested", at: Date.now() }))).toBe("queue_closed");
      expect(await codeOf(subject.events.subscribeCancels(() => {}))).toBe("queue_closed");
    });
  });
}
