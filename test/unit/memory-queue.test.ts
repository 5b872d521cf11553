import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import type { MemoryQueueOptions } from "../../src/queue/memory-queue.ts";
import type { CancelCommand, JobEvent } from "../../src/job/types.ts";
import type { ConsumeOptions, Delivery } from "../../src/queue/types.ts";
import { contractJob as job } from "../../src/testing/contracts/queue-contract.ts";
import { rejectionOf } from "../../src/testing/rejection-of.ts";

/** Lets queued microtasks (deliveries) and timers due now run. */
const flush = () => vi.advanceTimersByTimeAsync(0);

describe("MemoryQueue", () => {
  let queue: MemoryQueue;
  const open = (options?: MemoryQueueOptions) => (queue = new MemoryQueue(options));

  beforeEach(() => {
    vi.useFakeTimers();
    open();
  });
  afterEach(async () => {
    await queue.close();
    vi.useRealTimers();
  });

  async function collect(options: ConsumeOptions = { prefetch: 10 }) {
    const deliveries: Delivery[] = [];
    const consumer = await queue.consume((d) => deliveries.push(d), options);
    return { deliveries, consumer };
  }

  describe("options and input", () => {
    it.each([
      [{ deliveryLimit: -1 }, "`deliveryLimit`"],
      [{ cancelRetentionMs: "1h" }, "`cancelRetentionMs`"],
      [{ maxEnvelopeBytes: 0 }, "`maxEnvelopeBytes`"],
      [{ handlerErrorDelayMs: 1.5 }, "`handlerErrorDelayMs`"],
    ])("rejects %j with invalid_argument naming %s", (options, field) => {
      expect(() => new MemoryQueue(options as never)).toThrow(expect.objectContaining({ code: "invalid_argument", message: expect.stringContaining(field) }));
    });

    it("rejects an invalid envelope, an oversized one and a bad delay at enqueue, naming what was wrong", async () => {
      const missingId = await rejectionOf(queue.enqueue({ ...job(), id: "" }));
      expect(missingId.code).toBe("invalid_argument");
      expect(missingId.message).toContain("`id`");
      expect((await rejectionOf(queue.enqueue(job(), { delayMs: -5 }))).message).toContain("`options.delayMs`");
      open({ maxEnvelopeBytes: 300 });
      const big = await rejectionOf(queue.enqueue(job({ payload: "x".repeat(300) })));
      expect(big.message).toMatch(/`payload`.*over the queue's limit of 300 bytes/);
      expect(big.details).toMatchObject({ field: "payload", maxBytes: 300 });
      expect(queue.info().ready).toBe(0);
    });

    it("rejects a bad consume handler, prefetch or accept with invalid_argument", async () => {
      expect((await rejectionOf(queue.consume("nope" as never, { prefetch: 1 }))).message).toContain("`handler`");
      expect((await rejectionOf(queue.consume(() => {}, { prefetch: 1.5 }))).message).toContain("`options.prefetch`");
      expect((await rejectionOf(queue.consume(() => {}, { prefetch: 1, accept: 3 as never }))).message).toContain("`options.accept`");
    });
  });

  describe("delivery", () => {
    it("stores copies: changing the enqueued object or the published bytes afterwards changes nothing", async () => {
      const envelope = job({ payload: { n: 1 } });
      await queue.enqueue(envelope);
      (envelope.payload as { n: number }).n = 2;
      const bytes = new Uint8Array(Buffer.from("not json"));
      await queue.publishRaw(bytes);
      bytes.fill(0);
      const { deliveries } = await collect();
      await flush();
      expect(deliveries[0]?.job.payload).toEqual({ n: 1 });
      expect(Buffer.from(queue.deadLetters()[0]?.body ?? []).toString()).toBe("not json");
    });

    it("delivers a delayed enqueue only once its delay has passed", async () => {
      const { deliveries } = await collect();
      await queue.enqueue(job(), { delayMs: 5000 });
      expect(queue.info().delayed).toBe(1);
      await vi.advanceTimersByTimeAsync(4999);
      expect(deliveries).toHaveLength(0);
      await vi.advanceTimersByTimeAsync(1);
      expect(deliveries).toHaveLength(1);
      expect(queue.info()).toMatchObject({ delayed: 0, ready: 0, unsettled: 1 });
    });

    it("retry puts a copy back after the delay with attempt one above the delivery's", async () => {
      const { deliveries, consumer } = await collect({ prefetch: 1 });
      await queue.enqueue(job());
      await flush();
      await consumer.cancel(); // returned once: the next delivery runs attempt 2
      const second = await collect({ prefetch: 1 });
      await flush();
      expect(second.deliveries[0]?.attempt).toBe(2);
      await second.deliveries[0]?.retry(10_000, "flaky");
      await vi.advanceTimersByTimeAsync(9999);
      expect(second.deliveries).toHaveLength(1);
      await vi.advanceTimersByTimeAsync(1);
      const third = second.deliveries[1] as Delivery;
      expect(third.attempt).toBe(3);
      expect(third.job.attempt).toBe(3);
      expect(third.redelivered).toBe(false);
      expect(deliveries).toHaveLength(1);
    });

    it("rejects a bad retry or dead-letter argument without settling the delivery", async () => {
      const { deliveries } = await collect();
      await queue.enqueue(job());
      await flush();
      const delivery = deliveries[0] as Delivery;
      expect((await rejectionOf(delivery.retry(-1, "x"))).message).toContain("`delayMs`");
      expect((await rejectionOf(delivery.deadLetter(""))).message).toContain("`reason`");
      expect(delivery.settled).toBe(false);
      await delivery.ack();
      expect(queue.info().unsettled).toBe(0);
    });

    it("shares messages round-robin between consumers with free prefetch", async () => {
      const a = await collect({ prefetch: 2 });
      const b = await collect({ prefetch: 2 });
      for (let n = 0; n < 4; n++) await queue.enqueue(job({ payload: { n } }));
      await flush();
      expect(a.deliveries.map((d) => d.job.payload)).toEqual([{ n: 0 }, { n: 2 }]);
      expect(b.deliveries.map((d) => d.job.payload)).toEqual([{ n: 1 }, { n: 3 }]);
    });

    it("puts a cancelled consumer's deliveries back at the head, in their order, with attempts counting each return", async () => {
      const first = await collect({ prefetch: 3 });
      for (let n = 0; n < 5; n++) await queue.enqueue(job({ payload: { n } }));
      await flush();
      await first.consumer.cancel();
      expect(queue.info()).toMatchObject({ ready: 5, unsettled: 0, consumers: 0 });
      const second = await collect({ prefetch: 1 });
      await flush();
      await second.consumer.cancel();
      const third = await collect({ prefetch: 5 });
      await flush();
      expect(third.deliveries.map((d) => [d.job.payload, d.attempt, d.redelivered])).toEqual([
        [{ n: 0 }, 3, true],
        [{ n: 1 }, 2, true],
        [{ n: 2 }, 2, true],
        [{ n: 3 }, 1, false],
        [{ n: 4 }, 1, false],
      ]);
    });

    it("ignores setPrefetch on a cancelled consumer", async () => {
      const { deliveries, consumer } = await collect({ prefetch: 0 });
      await consumer.cancel();
      await consumer.setPrefetch(5);
      await queue.enqueue(job());
      await flush();
      expect(deliveries).toHaveLength(0);
      expect(queue.info().ready).toBe(1);
    });

    // Its speed (no O(n) work per dequeue) is the bench's to judge, not a timed test's.
    it("carries 100k jobs through one consumer, in order", async () => {
      vi.useRealTimers();
      let acked = 0;
      let inOrder = true;
      const done = new Promise<void>((resolve) => {
        void queue.consume((d) => {
          if (d.job.id !== `job-${acked}`) inOrder = false;
          void d.ack();
          if (++acked === 100_000) resolve();
        }, { prefetch: 500 });
      });
      const template = job();
      for (let n = 0; n < 100_000; n++) await queue.enqueue({ ...template, id: `job-${n}` });
      await done;
      expect(inOrder).toBe(true);
    });
  });

  describe("dead letters", () => {
    it("dead-letters invalid messages with the decode error as reason and emits deadLettered", async () => {
      open({ maxEnvelopeBytes: 200 });
      const seen: string[] = [];
      queue.on("deadLettered", ({ info }) => seen.push(info.reason));
      await queue.publishRaw(new Uint8Array(Buffer.from("[1, 2")));
      await queue.publishRaw(new Uint8Array(Buffer.from(JSON.stringify({ ...job(), v: 2 }))));
      await queue.publishRaw(new Uint8Array(Buffer.from(JSON.stringify(job({ payload: "y".repeat(200) })))));
      const { deliveries } = await collect();
      await flush();
      expect(deliveries).toHaveLength(0);
      expect(seen).toHaveLength(3);
      expect(seen[0]).toMatch(/^invalid envelope: Envelope is not valid JSON/);
      expect(seen[1]).toMatch(/^invalid envelope: Expected `v` to be envelope version 1, got `2`/);
      expect(seen[2]).toMatch(/^invalid envelope: Envelope of \d+ bytes exceeds the limit of 200 bytes/);
      expect(queue.deadLetters().map((d) => d.job)).toEqual([undefined, undefined, undefined]);
    });

    it("dead-letters a job whose accept() throws, and reports the error", async () => {
      const errors: string[] = [];
      queue.on("error", ({ error, source }) => errors.push(`${source}: ${error.rawMessage}`));
      const envelope = job();
      await queue.enqueue(envelope);
      const { deliveries } = await collect({
        prefetch: 1,
        accept: () => {
          throw new Error("accept bug");
        },
      });
      await flush();
      expect(deliveries).toHaveLength(0);
      expect(queue.deadLetters()[0]).toMatchObject({ reason: "accept() threw: accept bug", job: envelope });
      expect(errors).toEqual(["accept: accept bug"]);
    });

    it("dead-letters a message returned more than deliveryLimit times", async () => {
      open({ deliveryLimit: 1 });
      const envelope = job();
      await queue.enqueue(envelope);
      for (let round = 0; round < 2; round++) {
        const { deliveries, consumer } = await collect({ prefetch: 1 });
        await flush();
        expect(deliveries[0]?.attempt).toBe(round + 1);
        await consumer.cancel();
      }
      expect(queue.info()).toMatchObject({ ready: 0, deadLettered: 1 });
      expect(queue.deadLetters()[0]).toMatchObject({ job: envelope, reason: "delivery limit of 1 exceeded: returned unsettled 2 times" });
    });

    it("returns copies from deadLetters()", async () => {
      await queue.publishRaw(new Uint8Array([1]));
      await collect();
      await flush();
      const letters = queue.deadLetters();
      letters.pop();
      (queue.deadLetters()[0] as { reason: string }).reason = "changed";
      expect(queue.deadLetters()).toHaveLength(1);
      expect(queue.deadLetters()[0]?.reason).toMatch(/^invalid envelope/);
    });
  });

  describe("throwing consumer handlers", () => {
    it("reports the throw and retries the delivery after handlerErrorDelayMs with attempt raised", async () => {
      open({ handlerErrorDelayMs: 2000 });
      const errors: string[] = [];
      queue.on("error", ({ error, source }) => errors.push(`${source}: ${error.rawMessage}`));
      const attempts: number[] = [];
      await queue.consume((d) => {
        attempts.push(d.attempt);
        if (d.attempt === 1) throw new Error("handler bug");
        void d.ack();
      }, { prefetch: 1 });
      await queue.enqueue(job());
      await flush();
      expect(errors).toEqual(["consumer: handler bug"]);
      await vi.advanceTimersByTimeAsync(1999);
      expect(attempts).toEqual([1]);
      await vi.advanceTimersByTimeAsync(1);
      expect(attempts).toEqual([1, 2]);
    });

    it("warns once on the console when nobody listens to 'error'", async () => {
      const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
      try {
        await queue.consume(() => {
          throw new Error("again and again");
        }, { prefetch: 5 });
        await queue.enqueue(job());
        await queue.enqueue(job());
        await flush();
        expect(warn).toHaveBeenCalledTimes(1);
        expect(String(warn.mock.calls[0]?.[0])).toContain("again and again");
      } finally {
        warn.mockRestore();
      }
    });
  });

  describe("close", () => {
    it("puts held deliveries back, drops delayed messages with their timers and rejects later settles", async () => {
      const { deliveries, consumer } = await collect({ prefetch: 1 });
      await queue.enqueue(job());
      await queue.enqueue(job(), { delayMs: 60_000 });
      await flush();
      await queue.close();
      expect(queue.closed).toBe(true);
      expect(queue.info()).toMatchObject({ ready: 1, delayed: 0, unsettled: 0, consumers: 0 });
      expect(vi.getTimerCount()).toBe(0);
      expect((await rejectionOf((deliveries[0] as Delivery).ack())).code).toBe("queue_closed");
      expect((await rejectionOf(queue.publishRaw(new Uint8Array([1])))).code).toBe("queue_closed");
      await consumer.cancel(); // idempotent after close
    });

    it("aborts the signals of held deliveries with delivery_lost, not of settled ones, and a signal first read later is already aborted", async () => {
      const { deliveries } = await collect({ prefetch: 3 });
      for (let n = 0; n < 3; n++) await queue.enqueue(job({ payload: { n } }));
      await flush();
      const [settled, held, unread] = deliveries as [Delivery, Delivery, Delivery];
      await settled.ack();
      const seen: Array<{ reason: unknown; info: unknown }> = [];
      // The queue is consistent when a listener runs: it may look at it or call into it.
      held.signal?.addEventListener("abort", () => seen.push({ reason: held.signal?.reason, info: queue.info() }), { once: true });
      expect(settled.signal?.aborted).toBe(false);
      await queue.close();

      expect(seen).toEqual([
        {
          reason: expect.objectContaining({ code: "queue_closed", details: { reason: "delivery_lost", jobId: held.job.id } }),
          info: expect.objectContaining({ ready: 2, unsettled: 0, consumers: 0 }),
        },
      ]);
      expect(settled.signal?.aborted).toBe(false);
      expect(unread.signal?.aborted).toBe(true);
      expect(unread.signal?.reason).toMatchObject({ code: "queue_closed", details: { reason: "delivery_lost" } });
      expect((await rejectionOf(held.ack())).details).toMatchObject({ reason: "delivery_lost" });
    });
  });

  describe("events", () => {
    const progress = (jobId: string, n: number): JobEvent => ({ kind: "progress", jobId, attempt: 1, at: 0, progress: n / 10 });

    it("gives each listener its own copy of an event", async () => {
      const seen: JobEvent[] = [];
      await queue.subscribe("a", (e) => {
        (e as { progress: number }).progress = 99;
      });
      await queue.subscribe("a", (e) => seen.push(e));
      const event = progress("a", 1);
      await queue.publish(event);
      expect(seen).toEqual([progress("a", 1)]);
      expect((event as { progress: number }).progress).toBe(0.1);
    });

    it("rejects an event that is not JSON-serialisable or of an unknown kind with invalid_argument", async () => {
      expect((await rejectionOf(queue.publish({ ...progress("a", 1), extra: 1n } as never))).message).toContain("`event` to be JSON-serialisable");
      expect((await rejectionOf(queue.publish({ ...progress("a", 1), kind: "other" } as never))).message).toContain("`event.kind`");
      expect((await rejectionOf(queue.cancel({ jobId: "a", reason: "bored", at: 0 } as never))).message).toContain("`command.reason`");
    });

    it("delivers an event published from a listener after the event being delivered, to every listener", async () => {
      const all: string[] = [];
      await queue.subscribe("a", (e) => {
        if (e.kind === "progress" && e.progress === 0.1) void queue.publish(progress("b", 1));
      });
      await queue.subscribe("*", (e) => all.push(`${e.jobId}${e.kind === "progress" ? e.progress * 10 : ""}`));
      await queue.publish(progress("a", 1));
      await queue.publish(progress("a", 2));
      expect(all).toEqual(["a1", "b1", "a2"]);
    });

    it("does not hand a listener subscribed during delivery the event being delivered", async () => {
      const late: JobEvent[] = [];
      await queue.subscribe("a", () => {
        void queue.subscribe("a", (e) => late.push(e));
      });
      await queue.publish(progress("a", 1));
      expect(late).toEqual([]);
      await queue.publish(progress("a", 2));
      expect(late).toEqual([progress("a", 2)]);
    });

    it("replays a cancel command to new subscribers for cancelRetentionMs, then forgets it", async () => {
      open({ cancelRetentionMs: 1000 });
      const command: CancelCommand = { jobId: "a", reason: "requested", at: Date.now() };
      await queue.cancel(command);
      await vi.advanceTimersByTimeAsync(999);
      const within: CancelCommand[] = [];
      await queue.subscribeCancels((c) => within.push(c));
      expect(within).toEqual([command]);
      await vi.advanceTimersByTimeAsync(1);
      const after: CancelCommand[] = [];
      await queue.subscribeCancels((c) => after.push(c));
      expect(after).toEqual([]);
    });

    it("keeps the default retention of 24 hours", async () => {
      await queue.cancel({ jobId: "a", reason: "requested", at: Date.now() });
      await vi.advanceTimersByTimeAsync(24 * 60 * 60 * 1000 - 1);
      const seen: CancelCommand[] = [];
      await queue.subscribeCancels((c) => seen.push(c));
      expect(seen).toHaveLength(1);
    });

    it("reports a throwing cancel listener and keeps delivering to it", async () => {
      const errors: string[] = [];
      queue.on("error", ({ error, source }) => errors.push(`${source}: ${error.rawMessage}`));
      let calls = 0;
      await queue.subscribeCancels(() => {
        calls++;
        throw new Error("listener bug");
      });
      await queue.cancel({ jobId: "a", reason: "requested", at: 0 });
      await queue.cancel({ jobId: "b", reason: "timeout", at: 0 });
      expect(calls).toBe(2);
      expect(errors).toEqual(["listener: listener bug", "listener: listener bug"]);
    });
  });
});
