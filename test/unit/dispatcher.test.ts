import { randomUUID } from "node:crypto";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import type { DispatcherEvents, DispatcherOptions, DispatcherPool } from "../../src/dispatcher/types.ts";
import { nonRetryable, OrchestratorError } from "../../src/errors.ts";
import type { JobEnvelope } from "../../src/job/envelope.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import type { ConsumeOptions, Consumer, Delivery } from "../../src/queue/types.ts";
import type { JobEvent, JobResultEvent } from "../../src/job/types.ts";
import { HealthMonitor } from "../../src/health/health-monitor.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import type { WorkerTransport } from "../../src/transport/types.ts";
import type { JobContext, JobHandler, JobHandlers } from "../../src/worker/types.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";

// Captured before the fake timers replace it: lets every pending promise chain run.
const realSetImmediate = globalThis.setImmediate;
const flush = (): Promise<void> => new Promise((resolve) => realSetImmediate(resolve));

function envelope(partial: Partial<JobEnvelope> = {}): JobEnvelope {
  return {
    v: 1,
    id: randomUUID(),
    type: "work",
    payload: {},
    attempt: 1,
    maxAttempts: 3,
    timeoutMs: 60_000,
    createdAt: new Date().toISOString(),
    ...partial,
  };
}

/** Resolves with the next payload of `event`. */
function next<K extends keyof DispatcherEvents & string>(dispatcher: Dispatcher, event: K): Promise<DispatcherEvents[K][0]> {
  return new Promise((resolve) => dispatcher.once(event, ((payload: DispatcherEvents[K][0]) => resolve(payload)) as never));
}

/** Runs until the abort signal fires, then rejects with its reason, as a well-behaved handler does. */
function untilAborted(ctx: JobContext): Promise<never> {
  return new Promise((_resolve, reject) => {
    if (ctx.signal.aborted) reject(ctx.signal.reason);
    ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true });
  });
}

/** A handler that runs until its signal fires, with the abort reasons it saw. */
function blockingHandler(): { reasons: unknown[]; handler: (payload: unknown, ctx: JobContext) => Promise<never> } {
  const reasons: unknown[] = [];
  return {
    reasons,
    handler: async (_payload, ctx) => {
      ctx.signal.addEventListener("abort", () => reasons.push(ctx.signal.reason));
      return untilAborted(ctx);
    },
  };
}

/**
 * Consumes from `queue` as AmqpQueue does across a channel loss: `lose()` stops the inner
 * consumer (its unsettled deliveries go back to the queue and their signals abort with
 * `delivery_lost`) and consumes again for the same handler, so the redelivered copies come back
 * to the same dispatcher.
 */
function losableConsumer(queue: MemoryQueue): { lose(): Promise<void> } {
  const consume = queue.consume.bind(queue);
  let current: { inner: Consumer; handler: (delivery: Delivery) => void; options: ConsumeOptions } | undefined;
  vi.spyOn(queue, "consume").mockImplementation(async (handler, options) => {
    const state = { inner: await consume(handler, options), handler, options: { ...options } };
    current = state;
    return {
      get prefetch() {
        return state.inner.prefetch;
      },
      setPrefetch: async (prefetch: number) => {
        state.options.prefetch = prefetch;
        await state.inner.setPrefetch(prefetch);
      },
      cancel: () => state.inner.cancel(),
    };
  });
  return {
    async lose() {
      if (current === undefined) throw new Error("nothing consumes yet");
      await current.inner.cancel();
      current.inner = await consume(current.handler, current.options);
    },
  };
}

/**
 * Wraps each delivery of `queue` as AmqpQueue does near the broker's `consumer_timeout`:
 * `expire()` dead-letters the job itself (the delivery counts as settled), then aborts the
 * delivery's signal with `deadline_exceeded`, `details.reason: "consumer_timeout"`. Records the
 * settle calls the consumer makes.
 */
function expiringDeliveries(queue: MemoryQueue): Array<{ settleCalls: string[]; expire(): Promise<void> }> {
  const wrapped: Array<{ settleCalls: string[]; expire(): Promise<void> }> = [];
  const consume = queue.consume.bind(queue);
  vi.spyOn(queue, "consume").mockImplementation((handler, options) =>
    consume((inner) => {
      const controller = new AbortController();
      const settleCalls: string[] = [];
      let expired = false;
      wrapped.push({
        settleCalls,
        async expire() {
          expired = true;
          const reason = `consumer_timeout: job ${inner.job.id} was held too long without an ack`;
          await inner.deadLetter(reason);
          const details = { reason: "consumer_timeout", jobId: inner.job.id };
          controller.abort(new OrchestratorError("deadline_exceeded", reason, { retryable: false, details }));
        },
      });
      handler({
        job: inner.job,
        attempt: inner.attempt,
        redelivered: inner.redelivered,
        signal: controller.signal,
        get settled() {
          return expired || inner.settled;
        },
        ack: () => (settleCalls.push("ack"), inner.ack()),
        retry: (delayMs, reason) => (settleCalls.push("retry"), inner.retry(delayMs, reason)),
        deadLetter: (reason) => (settleCalls.push("deadLetter"), inner.deadLetter(reason)),
      });
    }, options),
  );
  return wrapped;
}

/**
 * An in-process worker whose transport call ends only once its handler has returned, even when
 * aborted, as a transport that waits for the worker to confirm a cancel would (InProcessTransport
 * and GrpcTransport end the call at once): an aborted attempt stays winding down meanwhile.
 */
function confirmingWorker(work: JobHandler): WorkerTransport {
  const ends = new Map<string, Promise<unknown>>();
  const inner = new InProcessTransport({
    handlers: {
      work: (payload: unknown, ctx: JobContext) => {
        const end = Promise.resolve().then(() => work(payload as never, ctx));
        ends.set(`${ctx.jobId}@${ctx.attempt}`, end.catch(() => {}));
        return end;
      },
    },
  });
  return {
    async execute(request, options) {
      try {
        return await inner.execute(request, options);
      } finally {
        await ends.get(`${request.jobId}@${request.attempt}`);
      }
    },
    check: (options) => inner.check(options),
    describe: (options) => inner.describe(options),
    close: () => inner.close(),
  };
}

interface Harness {
  queue: MemoryQueue;
  pool: WorkerPool;
  dispatcher: Dispatcher;
  /** Every job event published on the queue's event bus, in order. */
  published: JobEvent[];
  /** `error` events of the dispatcher. */
  errors: OrchestratorError[];
  results(jobId: string): JobResultEvent[];
  addWorker(id: string, handlers: JobHandlers, options?: { slots?: number; jobTypes?: string[] }): InProcessTransport;
}

const cleanups: Array<() => Promise<unknown>> = [];

/**
 * Enqueues job "first", which runs on the harness's one worker, then job "second", which the
 * dispatcher holds waiting for a slot (a second worker, for another job type only, raises the
 * capacity without giving it one).
 */
async function runOneHoldOne(h: Harness): Promise<{ first: JobEnvelope; second: JobEnvelope }> {
  const first = envelope({ payload: { name: "first" } });
  const second = envelope({ payload: { name: "second" } });
  await h.queue.enqueue(first);
  await flush();
  h.addWorker("w2", {}, { jobTypes: ["other"] });
  await h.queue.enqueue(second);
  await flush();
  expect(h.queue.info().unsettled).toBe(2);
  return { first, second };
}

async function harness(options: Partial<DispatcherOptions> & { queue?: MemoryQueue } = {}): Promise<Harness> {
  const queue = options.queue ?? new MemoryQueue();
  const pool = new WorkerPool();
  const dispatcher = new Dispatcher({ queue, events: queue, pool, retry: { baseDelayMs: 100, maxDelayMs: 10_000, jitter: 0 }, ...options });
  const errors: OrchestratorError[] = [];
  dispatcher.on("error", ({ error }) => errors.push(error));
  const published: JobEvent[] = [];
  await queue.subscribe("*", (event) => published.push(event));
  cleanups.push(
    () => dispatcher.close({ signal: AbortSignal.abort() }),
    () => pool.close(),
    () => queue.close(),
  );
  return {
    queue,
    pool,
    dispatcher,
    published,
    errors,
    results: (jobId) => published.filter((e): e is JobResultEvent => e.kind === "result" && e.jobId === jobId),
    addWorker(id, handlers, workerOptions = {}) {
      const transport = new InProcessTransport({ handlers, slots: workerOptions.slots ?? 1 });
      pool.add({ admission: "trust", id, transport, slots: workerOptions.slots ?? 1, jobTypes: workerOptions.jobTypes });
      return transport;
    },
  };
}

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe("Dispatcher", () => {
  it("rejects start() with queue_closed once close() was called, before or after a first start", async () => {
    const h = await harness();
    await h.dispatcher.start();
    await h.dispatcher.close();
    await expect(h.dispatcher.start()).rejects.toMatchObject({ code: "queue_closed" });
    const never = await harness();
    await never.dispatcher.close();
    await expect(never.dispatcher.start()).rejects.toMatchObject({ code: "queue_closed" });
  });

  it("runs a job on a worker, publishes its result, acks it and frees the slot", async () => {
    const h = await harness();
    h.addWorker("w1", { work: async (payload: { n: number }) => ({ doubled: payload.n * 2 }) });
    await h.dispatcher.start();
    const started = next(h.dispatcher, "jobStarted");
    const completed = next(h.dispatcher, "jobCompleted");
    const job = envelope({ payload: { n: 21 } });
    await h.queue.enqueue(job);

    expect(await started).toMatchObject({ job: { id: job.id }, attempt: 1, workerId: "w1" });
    expect(await completed).toMatchObject({ attempt: 1, workerId: "w1", result: { doubled: 42 } });
    await h.dispatcher.onIdle();
    expect(h.results(job.id)).toEqual([expect.objectContaining({ attempt: 1, outcome: { status: "completed", result: { doubled: 42 } } })]);
    expect(h.published.filter((e) => e.jobId === job.id).map((e) => (e.kind === "state" ? e.state : e.kind))).toEqual(["running", "result"]);
    expect(h.queue.info()).toMatchObject({ ready: 0, unsettled: 0, deadLettered: 0 });
    expect(h.pool.freeSlots).toBe(1);
    expect(h.dispatcher.running).toBe(0);
  });

  it("publishes the outcome, then settles the delivery, then releases the lease", async () => {
    const log: string[] = [];
    const queue = new MemoryQueue();
    const publish = queue.publish.bind(queue);
    vi.spyOn(queue, "publish").mockImplementation(async (event, options) => {
      await publish(event, options);
      if (event.kind === "result") log.push(`published result ${event.outcome.status}`);
      if (event.kind === "state" && event.state === "retrying") log.push("published retrying");
    });
    const consume = queue.consume.bind(queue);
    vi.spyOn(queue, "consume").mockImplementation((handler, options) =>
      consume((delivery) => {
        const recorded: Delivery = {
          job: delivery.job,
          attempt: delivery.attempt,
          redelivered: delivery.redelivered,
          get settled() {
            return delivery.settled;
          },
          ack: async () => {
            log.push("ack");
            await delivery.ack();
            log.push("acked");
          },
          retry: async (delayMs, reason) => {
            log.push("retry");
            await delivery.retry(delayMs, reason);
            log.push("retried");
          },
          deadLetter: async (reason) => {
            log.push("deadLetter");
            await delivery.deadLetter(reason);
            log.push("dead-lettered");
          },
        };
        handler(recorded);
      }, options),
    );
    const pool = new WorkerPool();
    const recordingPool = {
      get capacity() {
        return pool.capacity;
      },
      canRun: (job) => pool.canRun(job),
      onAvailable: (job, options) => pool.onAvailable(job, options),
      on: (event: never, fn: never) => pool.on(event, fn),
      off: (event: never, fn: never) => pool.off(event, fn),
      acquire: (job) => {
        const lease = pool.acquire(job);
        if (lease === undefined) return undefined;
        return {
          workerId: lease.workerId,
          transport: lease.transport,
          signal: lease.signal,
          release: () => {
            log.push("release");
            lease.release();
          },
        };
      },
    } as DispatcherPool;
    pool.add({
      id: "w1",
      transport: new InProcessTransport({
        handlers: {
          ok: async () => "done",
          flaky: async (_p, ctx) => {
            if (ctx.attempt === 1) throw new Error("first attempt fails");
            return "second";
          },
          broken: async () => {
            throw nonRetryable("cannot work");
          },
        },
      }),
    });
    const dispatcher = new Dispatcher({ queue, events: queue, pool: recordingPool, retry: { baseDelayMs: 10, jitter: 0 } });
    cleanups.push(() => dispatcher.close(), () => pool.close(), () => queue.close());
    await dispatcher.start();

    await queue.enqueue(envelope({ type: "ok" }));
    await next(dispatcher, "jobCompleted");
    await dispatcher.onIdle();
    expect(log.splice(0)).toEqual(["published result completed", "ack", "acked", "release"]);

    const retried = next(dispatcher, "jobRetrying");
    await queue.enqueue(envelope({ type: "flaky" }));
    await retried;
    await flush();
    expect(log.splice(0)).toEqual(["published retrying", "retry", "retried", "release"]);
    await vi.advanceTimersByTimeAsync(10);
    await dispatcher.onIdle();
    expect(log.splice(0)).toEqual(["published result completed", "ack", "acked", "release"]);

    await queue.enqueue(envelope({ type: "broken" }));
    await next(dispatcher, "jobFailed");
    await dispatcher.onIdle();
    expect(log.splice(0)).toEqual(["published result failed", "deadLetter", "dead-lettered", "release"]);
  });

  it("retries a failing job with exponential backoff and completes it on a later attempt", async () => {
    const h = await harness();
    const attempts: number[] = [];
    h.addWorker("w1", {
      work: async (_p, ctx) => {
        attempts.push(ctx.attempt);
        if (ctx.attempt < 3) throw new Error(`boom ${ctx.attempt}`);
        return "ok";
      },
    });
    const retrying: Array<{ attempt: number; delayMs: number; code: string }> = [];
    h.dispatcher.on("jobRetrying", ({ attempt, delayMs, error }) => retrying.push({ attempt, delayMs, code: error.code }));
    await h.dispatcher.start();
    const job = envelope({ maxAttempts: 3 });
    await h.queue.enqueue(job);
    await flush();
    expect(attempts).toEqual([1]);

    await vi.advanceTimersByTimeAsync(99);
    expect(attempts).toEqual([1]); // not before the 100 ms backoff
    await vi.advanceTimersByTimeAsync(1);
    await flush();
    expect(attempts).toEqual([1, 2]);
    await vi.advanceTimersByTimeAsync(199);
    expect(attempts).toEqual([1, 2]); // 100 * 2^1
    await vi.advanceTimersByTimeAsync(1);
    await flush();
    await h.dispatcher.onIdle();

    expect(attempts).toEqual([1, 2, 3]);
    expect(retrying).toEqual([
      { attempt: 1, delayMs: 100, code: "handler_failed" },
      { attempt: 2, delayMs: 200, code: "handler_failed" },
    ]);
    const states = h.published.filter((e) => e.kind === "state" && e.state === "retrying");
    expect(states).toEqual([
      expect.objectContaining({ attempt: 1, delayMs: 100, error: expect.objectContaining({ message: "boom 1" }) }),
      expect.objectContaining({ attempt: 2, delayMs: 200, error: expect.objectContaining({ message: "boom 2" }) }),
    ]);
    expect(h.results(job.id)).toEqual([expect.objectContaining({ attempt: 3, outcome: { status: "completed", result: "ok" } })]);
  });

  it("sends a non-retryable failure straight to the dead-letter queue with result failed", async () => {
    const h = await harness();
    let calls = 0;
    h.addWorker("w1", {
      work: async () => {
        calls++;
        throw nonRetryable("payload.image is required");
      },
    });
    const deadLettered = next(h.dispatcher, "jobDeadLettered");
    const failed = next(h.dispatcher, "jobFailed");
    await h.dispatcher.start();
    const job = envelope({ maxAttempts: 5 });
    await h.queue.enqueue(job);

    expect((await failed).error).toMatchObject({ code: "handler_failed", retryable: false });
    expect((await deadLettered).reason).toContain("payload.image is required");
    await h.dispatcher.onIdle();
    expect(calls).toBe(1);
    expect(h.results(job.id)).toEqual([
      expect.objectContaining({
        outcome: { status: "failed", error: expect.objectContaining({ code: "handler_failed", message: "payload.image is required", retryable: false }) },
      }),
    ]);
    expect(h.queue.deadLetters()).toEqual([expect.objectContaining({ reason: expect.stringContaining("payload.image is required"), job: expect.objectContaining({ id: job.id }) })]);
  });

  it("dead-letters a job with result failed once its attempts are exhausted", async () => {
    const h = await harness();
    const attempts: number[] = [];
    h.addWorker("w1", {
      work: async (_p, ctx) => {
        attempts.push(ctx.attempt);
        throw new Error("always fails");
      },
    });
    await h.dispatcher.start();
    const job = envelope({ maxAttempts: 2 });
    const failed = next(h.dispatcher, "jobFailed");
    await h.queue.enqueue(job);
    await flush();
    await vi.advanceTimersByTimeAsync(100);
    const { attempt, error } = await failed;
    await h.dispatcher.onIdle();

    expect(attempts).toEqual([1, 2]);
    expect(attempt).toBe(2);
    expect(error.message).toContain("always fails");
    expect(h.results(job.id)).toEqual([expect.objectContaining({ attempt: 2, outcome: expect.objectContaining({ status: "failed" }) })]);
    expect(h.queue.deadLetters()).toEqual([expect.objectContaining({ reason: expect.stringContaining("attempt 2 of 2") })]);
  });

  it("aborts the work on the worker when the job's timeout passes", async () => {
    const h = await harness();
    const { reasons, handler } = blockingHandler();
    h.addWorker("w1", { work: handler });
    await h.dispatcher.start();
    const job = envelope({ timeoutMs: 1000, maxAttempts: 1 });
    const failed = next(h.dispatcher, "jobFailed");
    await h.queue.enqueue(job);
    await flush();
    expect(h.dispatcher.running).toBe(1);
    await vi.advanceTimersByTimeAsync(999);
    expect(reasons).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);

    expect((await failed).error.code).toBe("deadline_exceeded");
    expect(reasons).toEqual([expect.objectContaining({ code: "deadline_exceeded" })]);
    await h.dispatcher.onIdle();
    expect(h.results(job.id)).toEqual([expect.objectContaining({ outcome: expect.objectContaining({ status: "failed", error: expect.objectContaining({ code: "deadline_exceeded" }) }) })]);
  });

  it("retries a timed-out job while it has attempts left", async () => {
    const h = await harness();
    const attempts: number[] = [];
    h.addWorker("w1", {
      work: async (_p, ctx) => {
        attempts.push(ctx.attempt);
        if (ctx.attempt === 1) return untilAborted(ctx);
        return "fast enough";
      },
    });
    await h.dispatcher.start();
    const job = envelope({ timeoutMs: 500, maxAttempts: 2 });
    const retrying = next(h.dispatcher, "jobRetrying");
    await h.queue.enqueue(job);
    await flush();
    await vi.advanceTimersByTimeAsync(500);
    expect((await retrying).error.code).toBe("deadline_exceeded");
    await vi.advanceTimersByTimeAsync(100);
    await flush();
    await h.dispatcher.onIdle();
    expect(attempts).toEqual([1, 2]);
    expect(h.results(job.id)).toEqual([expect.objectContaining({ attempt: 2, outcome: { status: "completed", result: "fast enough" } })]);
  });

  it("never starts a job cancelled while queued, even on a dispatcher started after the cancel", async () => {
    const h = await harness();
    let calls = 0;
    h.addWorker("w1", {
      work: async () => {
        calls++;
        return "ran";
      },
    });
    const job = envelope();
    await h.queue.enqueue(job);
    await h.queue.cancel({ jobId: job.id, reason: "requested", message: "not needed", at: Date.now() });
    const cancelled = next(h.dispatcher, "jobCancelled");
    await h.dispatcher.start();

    expect(await cancelled).toMatchObject({ job: { id: job.id }, reason: "requested", started: false });
    await h.dispatcher.onIdle();
    expect(calls).toBe(0);
    expect(h.results(job.id)).toEqual([expect.objectContaining({ outcome: { status: "cancelled", reason: "requested", message: "not needed" } })]);
    expect(h.published.some((e) => e.jobId === job.id && e.kind === "state")).toBe(false);
    expect(h.queue.info()).toMatchObject({ ready: 0, unsettled: 0, deadLettered: 0 });
  });

  it("remembers cancels for queued jobs only for cancelRetentionMs and at most maxRetainedCancels of them", async () => {
    const h = await harness({ cancelRetentionMs: 60_000, maxRetainedCancels: 2 });
    const ran: string[] = [];
    await h.dispatcher.start(); // no worker yet: capacity 0, nothing is consumed
    const jobs = ["expired", "evicted", "kept", "alsoKept"].map((name) => envelope({ id: name, payload: { name } }));
    for (const job of jobs) await h.queue.enqueue(job);
    const cancel = (jobId: string) => h.queue.cancel({ jobId, reason: "requested", at: Date.now() });
    await cancel("expired");
    await vi.advanceTimersByTimeAsync(60_001);
    await cancel("evicted");
    await cancel("kept");
    await cancel("alsoKept");
    h.addWorker("w1", { work: async (payload: { name: string }) => void ran.push(payload.name) });
    await flush();
    await h.dispatcher.onIdle();

    expect(ran).toEqual(["expired", "evicted"]);
    expect(h.results("kept")[0]?.outcome).toMatchObject({ status: "cancelled" });
    expect(h.results("alsoKept")[0]?.outcome).toMatchObject({ status: "cancelled" });
  });

  it("never starts a job cancelled while it waits for a free slot", async () => {
    const h = await harness();
    const ran: string[] = [];
    const transport = h.addWorker("w1", {
      work: async (payload: { name: string }, ctx) => {
        ran.push(payload.name);
        return untilAborted(ctx);
      },
    });
    await h.dispatcher.start();
    const { second } = await runOneHoldOne(h);
    await h.queue.cancel({ jobId: second.id, reason: "requested", at: Date.now() });
    await flush();

    expect(h.results(second.id)).toEqual([expect.objectContaining({ outcome: expect.objectContaining({ status: "cancelled" }) })]);
    expect(ran).toEqual(["first"]);
    expect(transport.running).toBe(1);
  });

  it("aborts a running job on cancel: the handler's signal fires and the job ends cancelled exactly once", async () => {
    const h = await harness();
    const { reasons, handler } = blockingHandler();
    h.addWorker("w1", { work: handler });
    await h.dispatcher.start();
    const job = envelope();
    const started = next(h.dispatcher, "jobStarted");
    const cancelled = next(h.dispatcher, "jobCancelled");
    await h.queue.enqueue(job);
    await started;
    await h.queue.cancel({ jobId: job.id, reason: "requested", at: Date.now() });
    // A second cancel of the same job changes nothing.
    await h.queue.cancel({ jobId: job.id, reason: "requested", at: Date.now() });

    expect(await cancelled).toMatchObject({ reason: "requested", started: true, workerId: "w1" });
    await h.dispatcher.onIdle();
    await flush();
    expect(reasons).toEqual([expect.objectContaining({ code: "canceled" })]);
    expect(h.results(job.id)).toHaveLength(1);
    expect(h.results(job.id)[0]?.outcome).toEqual({ status: "cancelled", reason: "requested" });
    expect(h.queue.info()).toMatchObject({ ready: 0, unsettled: 0, delayed: 0, deadLettered: 0 });
    expect(h.pool.freeSlots).toBe(1);
  });

  it("runs the next job on a worker whose cancelled handler is still winding down without failing an attempt", async () => {
    const h = await harness();
    const attempts: string[] = [];
    h.addWorker("w1", {
      work: async (payload: { name: string }, ctx) => {
        attempts.push(`${payload.name}@${ctx.attempt}`);
        if (payload.name === "second") return "done";
        await untilAborted(ctx).catch(() => {});
        // Cleanup after the abort (killing a process group, say) takes a moment.
        await new Promise((resolve) => setTimeout(resolve, 50));
        throw ctx.signal.reason;
      },
    });
    const retried = vi.fn();
    h.dispatcher.on("jobRetrying", retried);
    await h.dispatcher.start();
    const first = envelope({ payload: { name: "first" } });
    const started = next(h.dispatcher, "jobStarted");
    await h.queue.enqueue(first);
    await started;
    const second = envelope({ payload: { name: "second" } });
    await h.queue.enqueue(second);
    await h.queue.cancel({ jobId: first.id, reason: "requested", at: Date.now() });
    await flush();
    await vi.advanceTimersByTimeAsync(50);
    await h.dispatcher.onIdle();

    expect(retried).not.toHaveBeenCalled();
    expect(h.results(second.id)).toEqual([expect.objectContaining({ attempt: 1, outcome: { status: "completed", result: "done" } })]);
    expect(attempts).toEqual(["first@1", "second@1"]);
  });

  it("retries a job whose worker went unhealthy mid-run on another worker, with a higher attempt", async () => {
    const h = await harness();
    const runs: Array<{ worker: string; attempt: number }> = [];
    const lostReasons: unknown[] = [];
    h.addWorker("w1", {
      work: async (_p, ctx) => {
        runs.push({ worker: "w1", attempt: ctx.attempt });
        ctx.signal.addEventListener("abort", () => lostReasons.push(ctx.signal.reason));
        return untilAborted(ctx);
      },
    });
    await h.dispatcher.start();
    const job = envelope({ maxAttempts: 3 });
    const started = next(h.dispatcher, "jobStarted");
    await h.queue.enqueue(job);
    await started;
    h.addWorker("w2", {
      work: async (_p, ctx) => {
        runs.push({ worker: "w2", attempt: ctx.attempt });
        return "survived";
      },
    });
    const retrying = next(h.dispatcher, "jobRetrying");
    const completed = next(h.dispatcher, "jobCompleted");
    h.pool.report("w1", false, "3 failed health checks");

    expect(await retrying).toMatchObject({ attempt: 1, workerId: "w1", delayMs: 0, error: { code: "worker_lost" } });
    expect(await completed).toMatchObject({ attempt: 2, workerId: "w2", result: "survived" });
    expect(runs).toEqual([
      { worker: "w1", attempt: 1 },
      { worker: "w2", attempt: 2 },
    ]);
    expect(lostReasons).toEqual([expect.objectContaining({ code: "worker_lost" })]);
  });

  it("moves a job off a frozen worker once health checks evict it, and runs it elsewhere", async () => {
    const h = await harness();
    const runs: string[] = [];
    const frozen = h.addWorker("w1", {
      work: async (_p, ctx) => {
        runs.push(`w1@${ctx.attempt}`);
        return untilAborted(ctx);
      },
    });
    const monitor = new HealthMonitor({ target: h.pool, intervalMs: 1000, timeoutMs: 500, jitter: 0, failureThreshold: 2 });
    cleanups.push(() => monitor.close());
    monitor.start();
    await h.dispatcher.start();
    const job = envelope();
    const started = next(h.dispatcher, "jobStarted");
    await h.queue.enqueue(job);
    await started;
    h.addWorker("w2", {
      work: async (_p, ctx) => {
        runs.push(`w2@${ctx.attempt}`);
        return "moved";
      },
    });
    const states: string[] = [];
    h.dispatcher.on("workerStateChanged", ({ workerId, to }) => states.push(`${workerId}:${to}`));
    const completed = next(h.dispatcher, "jobCompleted");
    frozen.freeze(); // hangs with its connection open: only the health checks can tell
    await vi.advanceTimersByTimeAsync(3000);

    expect(await completed).toMatchObject({ workerId: "w2", attempt: 2, result: "moved" });
    expect(runs).toEqual(["w1@1", "w2@2"]);
    expect(states).toContain("w1:unhealthy");
  });

  it("holds only as many jobs as healthy slots exist, following capacity changes", async () => {
    const h = await harness();
    const block = { work: async (_p: unknown, ctx: JobContext) => untilAborted(ctx) };
    await h.dispatcher.start();
    for (let i = 0; i < 4; i++) await h.queue.enqueue(envelope());
    await flush();
    expect(h.queue.info()).toMatchObject({ ready: 4, unsettled: 0 }); // no worker: nothing taken

    h.addWorker("w1", block);
    await flush();
    expect(h.queue.info()).toMatchObject({ ready: 3, unsettled: 1 });

    h.addWorker("w2", block, { slots: 2 });
    await flush();
    expect(h.queue.info()).toMatchObject({ ready: 1, unsettled: 3 });
    expect(h.dispatcher.running).toBe(3);

    h.pool.report("w2", false, "unhealthy");
    await flush();
    // Its two jobs went back (worker_lost) and only one slot is healthy.
    expect(h.queue.info().unsettled).toBe(1);
    expect(h.dispatcher.running).toBe(1);
  });

  it("gives back a job waiting for a slot when the pool's capacity drops below what it holds, so another dispatcher can run it", async () => {
    const h = await harness();
    h.addWorker("w1", { work: async (_p, ctx) => untilAborted(ctx) });
    await h.dispatcher.start();
    const { second } = await runOneHoldOne(h);
    const deferred = vi.fn();
    h.dispatcher.on("jobDeferred", deferred);
    // The only other worker leaves the healthy pool: this dispatcher may now hold one job, and
    // holds two, one of which no healthy slot will take while w1 runs.
    h.pool.report("w2", false, "down");
    await flush();

    expect(deferred).toHaveBeenCalledWith(expect.objectContaining({ job: expect.objectContaining({ id: second.id }), attempt: 1, reason: "no_worker", delayMs: 0 }));
    expect(h.queue.info()).toMatchObject({ ready: 1, unsettled: 1 });
    expect(h.dispatcher.running).toBe(1);
  });

  it("drains running jobs on close and takes no new ones", async () => {
    const h = await harness();
    const finish: Array<() => void> = [];
    h.addWorker("w1", { work: () => new Promise((resolve) => finish.push(() => resolve("finished"))) }, { slots: 2 });
    await h.dispatcher.start();
    const job = envelope();
    const started = next(h.dispatcher, "jobStarted");
    await h.queue.enqueue(job);
    await started;

    let closed = false;
    const closing = h.dispatcher.close().then(() => (closed = true));
    await flush();
    const late = envelope();
    await h.queue.enqueue(late);
    await flush();
    expect(closed).toBe(false);
    expect(h.queue.info().ready).toBe(1); // the late job stays in the queue

    finish[0]?.();
    await closing;
    expect(h.results(job.id)).toEqual([expect.objectContaining({ outcome: { status: "completed", result: "finished" } })]);
    expect(h.results(late.id)).toEqual([]);
    expect(finish).toHaveLength(1);
    expect(h.queue.info()).toMatchObject({ ready: 1, unsettled: 0, consumers: 0 });
  });

  it("aborts running jobs with reason shutdown when the close signal fires and leaves them for redelivery", async () => {
    const h = await harness();
    const reasons: unknown[] = [];
    h.addWorker("w1", {
      work: async (_p, ctx) => {
        ctx.signal.addEventListener("abort", () => reasons.push(ctx.signal.reason));
        if (ctx.attempt === 1) return untilAborted(ctx);
        return `attempt ${ctx.attempt}`;
      },
    });
    const failures: unknown[] = [];
    h.dispatcher.on("jobFailed", (e) => failures.push(e));
    h.dispatcher.on("jobRetrying", (e) => failures.push(e));
    await h.dispatcher.start();
    const job = envelope({ maxAttempts: 2 });
    const started = next(h.dispatcher, "jobStarted");
    await h.queue.enqueue(job);
    await started;

    const force = new AbortController();
    const closing = h.dispatcher.close({ signal: force.signal });
    await flush();
    force.abort();
    await closing;

    expect(reasons).toEqual([expect.objectContaining({ code: "canceled", details: expect.objectContaining({ reason: "shutdown" }) })]);
    expect(h.results(job.id)).toEqual([]);
    expect(failures).toEqual([]);
    expect(h.queue.info()).toMatchObject({ ready: 1, unsettled: 0, deadLettered: 0 });

    // Another dispatcher picks it up again: a redelivery, with a higher attempt.
    const other = new Dispatcher({ queue: h.queue, events: h.queue, pool: h.pool });
    cleanups.push(() => other.close());
    const completed = next(other, "jobCompleted");
    await other.start();
    expect(await completed).toMatchObject({ attempt: 2, result: "attempt 2" });
  });

  it("gives jobs waiting for a slot back to the queue on close without using an attempt", async () => {
    const h = await harness();
    h.addWorker("w1", { work: async (_p, ctx) => untilAborted(ctx) });
    h.addWorker("w2", {}, { jobTypes: ["other"] });
    await h.dispatcher.start();
    const running = envelope();
    const waiting = envelope();
    await h.queue.enqueue(running);
    await h.queue.enqueue(waiting);
    await flush();
    expect(h.queue.info().unsettled).toBe(2);
    const deferred = next(h.dispatcher, "jobDeferred");
    const force = new AbortController();
    const closing = h.dispatcher.close({ signal: force.signal });

    expect(await deferred).toMatchObject({ job: { id: waiting.id }, reason: "shutdown", attempt: 1 });
    force.abort();
    await closing;
    expect(h.queue.info()).toMatchObject({ ready: 2, unsettled: 0 });
  });

  it("keeps working when an event listener throws, and reports the throw as an error event", async () => {
    const h = await harness();
    h.addWorker("w1", { work: async () => "ok" });
    h.dispatcher.on("jobStarted", () => {
      throw new Error("listener bug");
    });
    h.dispatcher.on("workerStateChanged", () => {
      throw new Error("another listener bug");
    });
    await h.dispatcher.start();
    const jobs = [envelope(), envelope()];
    for (const job of jobs) await h.queue.enqueue(job);
    await flush();
    await h.dispatcher.onIdle();

    for (const job of jobs) expect(h.results(job.id)).toEqual([expect.objectContaining({ outcome: { status: "completed", result: "ok" } })]);
    expect(h.errors.map((e) => e.message)).toEqual(expect.arrayContaining([expect.stringContaining("listener bug")]));
    expect(h.errors.every((e) => e instanceof OrchestratorError && e.code === "internal")).toBe(true);
  });

  it("treats a handler that throws synchronously as a failed attempt and keeps dispatching", async () => {
    const h = await harness();
    h.addWorker("w1", {
      work: (payload: { bad?: boolean }) => {
        if (payload.bad) throw new TypeError("synchronous bug");
        return "fine";
      },
    });
    await h.dispatcher.start();
    const bad = envelope({ payload: { bad: true }, maxAttempts: 1 });
    const good = envelope({ payload: {} });
    await h.queue.enqueue(bad);
    await h.queue.enqueue(good);
    await flush();
    await h.dispatcher.onIdle();
    expect(h.results(bad.id)[0]?.outcome).toMatchObject({ status: "failed", error: { code: "handler_failed", message: "synchronous bug" } });
    expect(h.results(good.id)[0]?.outcome).toEqual({ status: "completed", result: "fine" });
  });

  it("dead-letters a job of a type outside jobTypes without running it", async () => {
    const h = await harness({ jobTypes: ["work"] });
    let calls = 0;
    h.addWorker("w1", {
      work: async () => "ok",
      mine: async () => {
        calls++;
      },
    });
    await h.dispatcher.start();
    const job = envelope({ type: "mine" });
    const deadLettered = next(h.dispatcher, "jobDeadLettered");
    await h.queue.enqueue(job);

    expect((await deadLettered).reason).toContain('type "mine"');
    expect(calls).toBe(0);
    expect(h.results(job.id)[0]?.outcome).toMatchObject({ status: "failed", error: { code: "not_found", retryable: false } });
    expect(h.queue.deadLetters()).toHaveLength(1);
  });

  it("puts a job no worker can run back in the queue without using an attempt, and runs it once a fitting worker joins", async () => {
    const h = await harness({ noWorkerDelayMs: 1000 });
    h.addWorker("w1", { work: async () => "work" }, { jobTypes: ["work"] });
    await h.dispatcher.start();
    const job = envelope({ type: "gpu" });
    const deferred = next(h.dispatcher, "jobDeferred");
    await h.queue.enqueue(job);
    expect(await deferred).toMatchObject({ reason: "no_worker", delayMs: 1000, attempt: 1 });
    expect(h.queue.info()).toMatchObject({ delayed: 1, unsettled: 0 });

    h.addWorker("w2", { gpu: async (_p, ctx) => `gpu attempt ${ctx.attempt}` }, { jobTypes: ["gpu"] });
    const completed = next(h.dispatcher, "jobCompleted");
    await vi.advanceTimersByTimeAsync(1000);
    expect(await completed).toMatchObject({ attempt: 1, workerId: "w2", result: "gpu attempt 1" });
  });

  it("gives the delivery back to the queue when the outcome cannot be published, so no prefetch slot stays taken", async () => {
    const h = await harness();
    const runs: number[] = [];
    h.addWorker("w1", { work: async (_p, ctx) => (runs.push(ctx.attempt), `attempt ${ctx.attempt}`) });
    const publish = h.queue.publish.bind(h.queue);
    let failures = 1;
    vi.spyOn(h.queue, "publish").mockImplementation(async (event, options) => {
      if (event.kind === "result" && failures-- > 0) throw new OrchestratorError("unavailable", "broker gone");
      return publish(event, options);
    });
    const completed = vi.fn();
    h.dispatcher.on("jobCompleted", completed);
    await h.dispatcher.start();
    const job = envelope();
    await h.queue.enqueue(job);
    await flush();
    await h.dispatcher.onIdle();

    expect(completed).not.toHaveBeenCalled();
    expect(h.errors).toEqual([expect.objectContaining({ code: "unavailable", message: expect.stringContaining("goes back to the queue") })]);
    // Not held unsettled (that would keep the only prefetch slot until the consumer stops): back
    // in the queue after the retry backoff, as after a crash before the ack.
    expect(h.queue.info()).toMatchObject({ unsettled: 0, delayed: 1 });
    expect(h.pool.freeSlots).toBe(1);

    await vi.advanceTimersByTimeAsync(100);
    await h.dispatcher.onIdle();
    expect(runs).toEqual([1, 2]);
    expect(completed).toHaveBeenCalledTimes(1);
    expect(h.results(job.id)).toEqual([expect.objectContaining({ attempt: 2, outcome: { status: "completed", result: "attempt 2" } })]);
    expect(h.queue.info()).toMatchObject({ ready: 0, unsettled: 0, delayed: 0 });
  });

  it("settles a retry even when its retrying event cannot be published", async () => {
    const h = await harness();
    h.addWorker("w1", {
      work: async (_p, ctx) => {
        if (ctx.attempt === 1) throw new Error("first attempt fails");
        return "second";
      },
    });
    const publish = h.queue.publish.bind(h.queue);
    vi.spyOn(h.queue, "publish").mockImplementation(async (event, options) => {
      if (event.kind === "state" && event.state === "retrying") throw new OrchestratorError("unavailable", "broker gone");
      return publish(event, options);
    });
    await h.dispatcher.start();
    const job = envelope();
    const retrying = next(h.dispatcher, "jobRetrying");
    await h.queue.enqueue(job);
    await retrying;
    await h.dispatcher.onIdle();
    expect(h.queue.info()).toMatchObject({ unsettled: 0, delayed: 1 });
    expect(h.errors).toEqual([expect.objectContaining({ code: "unavailable" })]);

    await vi.advanceTimersByTimeAsync(100);
    await h.dispatcher.onIdle();
    expect(h.results(job.id)).toEqual([expect.objectContaining({ attempt: 2, outcome: { status: "completed", result: "second" } })]);
  });

  it("gives a job back with retry when it cannot be put back for want of a worker", async () => {
    const h = await harness();
    h.addWorker("w1", {}, { jobTypes: ["other"] });
    const enqueue = h.queue.enqueue.bind(h.queue);
    await h.dispatcher.start();
    const job = envelope();
    await enqueue(job);
    vi.spyOn(h.queue, "enqueue").mockRejectedValue(new OrchestratorError("unavailable", "broker gone"));
    const deferred = vi.fn();
    h.dispatcher.on("jobDeferred", deferred);
    await flush();
    await h.dispatcher.onIdle();

    expect(deferred).not.toHaveBeenCalled();
    expect(h.errors).toEqual([expect.objectContaining({ code: "unavailable", message: expect.stringContaining("putting the job back") })]);
    expect(h.queue.info()).toMatchObject({ unsettled: 0, delayed: 1 });

    vi.mocked(h.queue.enqueue).mockRestore();
    await vi.advanceTimersByTimeAsync(5000);
    await h.dispatcher.onIdle();
    expect(deferred).toHaveBeenCalledWith(expect.objectContaining({ job: expect.objectContaining({ id: job.id }), attempt: 2, reason: "no_worker" }));
    expect(h.queue.info()).toMatchObject({ unsettled: 0, delayed: 1 });
  });

  it("gives the delivery back when something unexpected throws while its job waits for a slot", async () => {
    const pool = new WorkerPool();
    // A host's own pool whose wait for a slot fails with something other than the run's abort.
    const failingPool: DispatcherPool = {
      get capacity() {
        return pool.capacity;
      },
      canRun: (job) => pool.canRun(job),
      acquire: (job) => pool.acquire(job),
      onAvailable: async () => {
        throw new OrchestratorError("internal", "pool bug");
      },
      on: (event: never, fn: never) => pool.on(event, fn),
      off: (event: never, fn: never) => pool.off(event, fn),
    };
    const h = await harness({ pool: failingPool });
    cleanups.push(() => pool.close());
    pool.add({ admission: "trust", id: "w1", transport: new InProcessTransport({ handlers: { work: async (_p: unknown, ctx: JobContext) => untilAborted(ctx) } }) });
    pool.add({ admission: "trust", id: "w2", transport: new InProcessTransport({ handlers: {} }), jobTypes: ["other"] });
    await h.dispatcher.start();
    const first = envelope();
    const second = envelope();
    await h.queue.enqueue(first);
    await flush();
    await h.queue.enqueue(second);
    await flush();

    expect(h.errors).toEqual([expect.objectContaining({ code: "internal", details: expect.objectContaining({ jobId: second.id }) })]);
    // The running job holds one prefetch slot; the failed one is not held unsettled beside it.
    expect(h.queue.info()).toMatchObject({ unsettled: 1, delayed: 1 });
  });

  it("keeps counting and dispatching when the events' publish throws synchronously for progress and state events", async () => {
    const h = await harness();
    h.addWorker("w1", {
      work: async (_p, ctx) => {
        ctx.progress(0.5);
        return "ok";
      },
    });
    const publish = h.queue.publish.bind(h.queue);
    vi.spyOn(h.queue, "publish").mockImplementation((event, options) => {
      if (event.kind !== "result") throw new Error("not a promise-returning publish");
      return publish(event, options);
    });
    await h.dispatcher.start();
    const job = envelope();
    await h.queue.enqueue(job);
    await flush();
    await h.dispatcher.onIdle();
    expect(h.results(job.id)).toEqual([expect.objectContaining({ outcome: { status: "completed", result: "ok" } })]);
    expect(h.dispatcher.running).toBe(0);
    expect(h.queue.info()).toMatchObject({ unsettled: 0 });
  });

  it("ignores a cancel that arrives after the job completed", async () => {
    const h = await harness();
    h.addWorker("w1", { work: async () => "ok" });
    await h.dispatcher.start();
    const job = envelope();
    await h.queue.enqueue(job);
    await flush();
    await h.dispatcher.onIdle();
    // The job already completed; a late cancel changes nothing and breaks nothing.
    await h.queue.cancel({ jobId: job.id, reason: "requested", at: Date.now() });
    await flush();
    expect(h.results(job.id)).toEqual([expect.objectContaining({ outcome: { status: "completed", result: "ok" } })]);
    expect(h.errors).toEqual([]);
  });

  it("resolves onIdle at once when nothing is held, and once held jobs end", async () => {
    const h = await harness();
    await h.dispatcher.onIdle();
    let release!: () => void;
    h.addWorker("w1", { work: () => new Promise<string>((resolve) => (release = () => resolve("ok"))) });
    await h.dispatcher.start();
    const started = next(h.dispatcher, "jobStarted");
    await h.queue.enqueue(envelope());
    await started;
    let idle = false;
    const waiting = h.dispatcher.onIdle().then(() => (idle = true));
    await flush();
    expect(idle).toBe(false);
    const timedOut = expect(h.dispatcher.onIdle({ timeoutMs: 10 })).rejects.toMatchObject({ code: "deadline_exceeded" });
    await vi.advanceTimersByTimeAsync(10);
    await timedOut;
    release();
    await waiting;
    expect(idle).toBe(true);
  });

  describe("when the queue takes a delivery away (Delivery.signal)", () => {
    it("aborts a running job whose delivery was lost, publishes and settles nothing for it, and completes the redelivered copy exactly once", async () => {
      const h = await harness();
      const link = losableConsumer(h.queue);
      const reasons: unknown[] = [];
      const attempts: number[] = [];
      h.addWorker("w1", {
        work: async (_p, ctx) => {
          attempts.push(ctx.attempt);
          if (ctx.attempt > 1) return `attempt ${ctx.attempt}`;
          ctx.signal.addEventListener("abort", () => reasons.push(ctx.signal.reason));
          return untilAborted(ctx);
        },
      });
      const others: string[] = [];
      for (const event of ["jobFailed", "jobRetrying", "jobCancelled", "jobDeadLettered", "jobDeferred"] as const) {
        h.dispatcher.on(event, () => others.push(event));
      }
      await h.dispatcher.start();
      const job = envelope();
      const started = next(h.dispatcher, "jobStarted");
      await h.queue.enqueue(job);
      await started;
      const abandoned = next(h.dispatcher, "jobAbandoned");
      const completed = next(h.dispatcher, "jobCompleted");
      await link.lose();

      expect(await abandoned).toMatchObject({ job: { id: job.id }, attempt: 1, workerId: "w1", reason: "delivery_lost", error: { code: "queue_closed" } });
      expect(reasons).toEqual([expect.objectContaining({ code: "queue_closed", details: expect.objectContaining({ reason: "delivery_lost" }) })]);
      expect(await completed).toMatchObject({ attempt: 2, workerId: "w1", result: "attempt 2" });
      await h.dispatcher.onIdle();
      expect(attempts).toEqual([1, 2]);
      expect(h.results(job.id)).toEqual([expect.objectContaining({ attempt: 2, outcome: { status: "completed", result: "attempt 2" } })]);
      expect(h.published.filter((e) => e.attempt === 1).map((e) => (e.kind === "state" ? e.state : e.kind))).toEqual(["running"]);
      expect(others).toEqual([]);
      expect(h.errors).toEqual([]);
      expect(h.queue.info()).toMatchObject({ ready: 0, unsettled: 0, delayed: 0, deadLettered: 0 });
      expect(h.pool.freeSlots).toBe(1);
    });

    it("drops a job whose delivery was lost while it waited for a slot: it never runs on that delivery", async () => {
      const h = await harness();
      const link = losableConsumer(h.queue);
      const ran: string[] = [];
      h.addWorker("w1", {
        work: async (payload: { name: string }, ctx) => {
          ran.push(`${payload.name}@${ctx.attempt}`);
          return ctx.attempt === 1 ? untilAborted(ctx) : "ok";
        },
      });
      await h.dispatcher.start();
      const { first, second } = await runOneHoldOne(h);
      const abandoned: Array<{ id: string; workerId?: string }> = [];
      h.dispatcher.on("jobAbandoned", ({ job, workerId }) => abandoned.push({ id: job.id, workerId }));
      await link.lose();
      await flush();
      await h.dispatcher.onIdle();

      expect(abandoned).toEqual(expect.arrayContaining([{ id: first.id, workerId: "w1" }, { id: second.id, workerId: undefined }]));
      expect(abandoned).toHaveLength(2);
      expect(ran.filter((r) => r.startsWith("second"))).toEqual(["second@2"]);
      expect(h.results(second.id)).toEqual([expect.objectContaining({ attempt: 2, outcome: { status: "completed", result: "ok" } })]);
      expect(h.results(first.id)).toEqual([expect.objectContaining({ attempt: 2, outcome: { status: "completed", result: "ok" } })]);
      expect(h.errors).toEqual([]);
    });

    it("starts a redelivered copy only once the lost attempt's transport call has ended: never two attempts of one job at once", async () => {
      const h = await harness();
      const link = losableConsumer(h.queue);
      const timeline: string[] = [];
      let concurrent = 0;
      let maxConcurrent = 0;
      const work: JobHandler = async (_p, ctx) => {
        maxConcurrent = Math.max(maxConcurrent, ++concurrent);
        timeline.push(`start ${ctx.attempt}`);
        ctx.signal.addEventListener("abort", () => timeline.push(`abort ${ctx.attempt}`));
        try {
          // Attempt 1 ignores its signal for 5 s, as a handler busy in a step it cannot interrupt.
          if (ctx.attempt === 1) await new Promise((resolve) => setTimeout(resolve, 5000));
          return `attempt ${ctx.attempt}`;
        } finally {
          concurrent--;
          timeline.push(`end ${ctx.attempt}`);
        }
      };
      // Should an assertion fail, let attempt 1 end so that the dispatcher can close.
      cleanups.push(() => vi.advanceTimersByTimeAsync(5000));
      // Two workers: the copy would find a free slot at once if nothing held it back.
      h.pool.add({ admission: "trust", id: "w1", transport: confirmingWorker(work) });
      h.pool.add({ admission: "trust", id: "w2", transport: confirmingWorker(work) });
      await h.dispatcher.start();
      const job = envelope();
      const started = next(h.dispatcher, "jobStarted");
      await h.queue.enqueue(job);
      const { workerId } = await started;
      const abandoned = vi.fn();
      h.dispatcher.on("jobAbandoned", abandoned);
      await flush();
      expect(timeline).toEqual(["start 1"]);
      await link.lose();
      await vi.advanceTimersByTimeAsync(4999);

      expect(timeline).toEqual(["start 1", "abort 1"]);
      expect(h.queue.info()).toMatchObject({ ready: 0, unsettled: 1 }); // the copy is here, waiting
      expect(abandoned).not.toHaveBeenCalled(); // the lost attempt's call has not ended yet
      const completed = next(h.dispatcher, "jobCompleted");
      await vi.advanceTimersByTimeAsync(1);

      expect(await completed).toMatchObject({ attempt: 2, result: "attempt 2" });
      expect(abandoned).toHaveBeenCalledWith(expect.objectContaining({ attempt: 1, workerId, reason: "delivery_lost" }));
      expect(timeline).toEqual(["start 1", "abort 1", "end 1", "start 2", "end 2"]);
      expect(maxConcurrent).toBe(1);
      await h.dispatcher.onIdle();
      expect(h.results(job.id)).toEqual([expect.objectContaining({ attempt: 2, outcome: { status: "completed", result: "attempt 2" } })]);
      expect(h.pool.freeSlots).toBe(2);
    });

    it("fails a job whose delivery the queue dead-lettered past consumer_timeout: aborts it, publishes failed with that error, settles nothing", async () => {
      const h = await harness();
      const deliveries = expiringDeliveries(h.queue);
      const { reasons, handler } = blockingHandler();
      h.addWorker("w1", { work: handler });
      const others: string[] = [];
      for (const event of ["jobRetrying", "jobDeadLettered", "jobAbandoned"] as const) h.dispatcher.on(event, () => others.push(event));
      await h.dispatcher.start();
      const job = envelope({ maxAttempts: 3 });
      const started = next(h.dispatcher, "jobStarted");
      await h.queue.enqueue(job);
      await started;
      const failed = next(h.dispatcher, "jobFailed");
      await deliveries[0]?.expire();

      const { error, attempt, workerId } = await failed;
      expect({ attempt, workerId }).toEqual({ attempt: 1, workerId: "w1" });
      expect(error).toMatchObject({ code: "deadline_exceeded", details: { reason: "consumer_timeout" } });
      expect(reasons).toEqual([expect.objectContaining({ code: "deadline_exceeded", details: expect.objectContaining({ reason: "consumer_timeout" }) })]);
      await h.dispatcher.onIdle();
      expect(h.results(job.id)).toEqual([
        expect.objectContaining({ attempt: 1, outcome: { status: "failed", error: expect.objectContaining({ code: "deadline_exceeded", message: error.rawMessage }) } }),
      ]);
      expect(deliveries[0]?.settleCalls).toEqual([]);
      expect(h.queue.deadLetters()).toEqual([expect.objectContaining({ reason: expect.stringContaining("consumer_timeout"), job: expect.objectContaining({ id: job.id }) })]);
      expect(others).toEqual([]);
      expect(h.errors).toEqual([]);
      expect(h.queue.info()).toMatchObject({ ready: 0, unsettled: 0, delayed: 0 });
      expect(h.pool.freeSlots).toBe(1);
    });
  });

  it("rejects bad options with invalid_argument naming the option", () => {
    const queue = new MemoryQueue();
    const pool = new WorkerPool();
    const make = (extra: Record<string, unknown>) => () => new Dispatcher({ queue, events: queue, pool, ...extra } as DispatcherOptions);
    expect(make({ retry: { factor: 0 } })).toThrow(expect.objectContaining({ code: "invalid_argument", message: expect.stringContaining("retry.factor") }));
    expect(make({ retry: { baseDelayMs: 5000, maxDelayMs: 10 } })).toThrow(/retry\.maxDelayMs/);
    expect(make({ jobTypes: "build" })).toThrow(/jobTypes/);
    expect(make({ jobTypes: ["build", ""] })).toThrow(/jobTypes\[1\]/);
    expect(make({ closeTimeoutMs: -1 })).toThrow(/closeTimeoutMs/);
    expect(make({ pool: {} })).toThrow(/pool\.acquire/);
    expect(make({ queue: undefined })).toThrow(/`queue`/);
  });

  it("rejects bad onIdle() and close() options with invalid_argument naming the option", async () => {
    const h = await harness();
    await expect(h.dispatcher.onIdle({ timeoutMs: -5 })).rejects.toMatchObject({ code: "invalid_argument", message: expect.stringContaining("`timeoutMs`") });
    await expect(h.dispatcher.onIdle({ signal: "soon" } as never)).rejects.toMatchObject({ code: "invalid_argument", message: expect.stringContaining("`signal`") });
    expect(() => h.dispatcher.close(null as never)).toThrow(expect.objectContaining({ code: "invalid_argument", message: expect.stringContaining("`options`") }));
  });

  it("rejects start() after close()", async () => {
    const h = await harness();
    await h.dispatcher.close();
    await expect(h.dispatcher.start()).rejects.toMatchObject({ code: "queue_closed" });
  });
});
