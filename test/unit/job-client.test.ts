import { afterEach, beforeEach, describe, expect, expectTypeOf, it, vi } from "vitest";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { nonRetryable, OrchestratorError } from "../../src/errors.ts";
import { JobClient } from "../../src/client/job-client.ts";
import { JobHandle } from "../../src/client/job-handle.ts";
import type { JobClientOptions, JobHandleEvent, JobTypesOf } from "../../src/client/types.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import type { JobContext, JobHandlers } from "../../src/worker/types.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";

// Captured before the fake timers replace it: lets every pending promise chain run.
const realSetImmediate = globalThis.setImmediate;
const flush = (): Promise<void> => new Promise((resolve) => realSetImmediate(resolve));

const handlers = {
  build: async (payload: { tag: string }, ctx: JobContext) => {
    ctx.progress(0.5, "layers");
    ctx.log(`building ${payload.tag}`);
    ctx.progress(1);
    return { imageId: `sha256:${payload.tag}` };
  },
  wait: (_payload: null, ctx: JobContext): Promise<string> =>
    new Promise((_resolve, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true })),
  fail: async (payload: { message: string }): Promise<never> => {
    throw nonRetryable(payload.message);
  },
};
type Jobs = JobTypesOf<typeof handlers>;

const cleanups: Array<() => Promise<unknown>> = [];

async function setup(options: { start?: boolean; client?: Partial<JobClientOptions>; handlers?: JobHandlers } = {}) {
  const queue = new MemoryQueue();
  const pool = new WorkerPool();
  const calls: Array<{ type: string; attempt: number; signal: AbortSignal }> = [];
  const recorded: JobHandlers = {};
  for (const [type, handler] of Object.entries(options.handlers ?? handlers)) {
    recorded[type] = (payload: never, ctx: JobContext) => {
      calls.push({ type, attempt: ctx.attempt, signal: ctx.signal });
      return handler(payload, ctx);
    };
  }
  pool.add({ id: "w1", transport: new InProcessTransport({ handlers: recorded, slots: 4 }), slots: 4 });
  const dispatcher = new Dispatcher({ queue, events: queue, pool });
  const client = new JobClient<Jobs>({ queue, events: queue, ...options.client });
  cleanups.push(
    () => client.close(),
    () => dispatcher.close({ signal: AbortSignal.abort() }),
    () => pool.close(),
    () => queue.close(),
  );
  if (options.start !== false) await dispatcher.start();
  return { queue, pool, dispatcher, client, calls };
}

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup().catch(() => {});
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe("JobClient and JobHandle", () => {
  it("submits a typed job and resolves result() with the handler's typed result", async () => {
    const { client } = await setup();
    const handle = await client.submit({ type: "build", payload: { tag: "app-1" } });

    expectTypeOf(handle).toEqualTypeOf<JobHandle<{ imageId: string }>>();
    expectTypeOf(handle.result()).resolves.toEqualTypeOf<{ imageId: string }>();
    expect(handle.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(handle.type).toBe("build");
    expect(await handle.result()).toEqual({ imageId: "sha256:app-1" });
    expect(handle.state).toBe("completed");
    expect(handle.attempt).toBe(1);
    expect(handle.outcome).toEqual({ status: "completed", result: { imageId: "sha256:app-1" } });
  });

  it("types payloads by job type and falls back to unknown without a type map", async () => {
    const { queue } = await setup({ start: false });
    const typed = new JobClient<Jobs>({ queue, events: queue });
    const untyped = new JobClient({ queue, events: queue });
    cleanups.push(() => typed.close(), () => untyped.close());
    expectTypeOf(typed.submit<"build">).parameter(0).toHaveProperty("payload").toEqualTypeOf<{ tag: string }>();
    expectTypeOf(typed.submit<"wait">).returns.resolves.toEqualTypeOf<JobHandle<string>>();
    expectTypeOf(untyped.submit).returns.resolves.toEqualTypeOf<JobHandle<unknown>>();
    // Compile-time checks only: tsc rejects a wrong payload and an unknown type.
    const compileOnly = (): void => {
      // @ts-expect-error tag must be a string
      void typed.submit({ type: "build", payload: { tag: 1 } });
      // @ts-expect-error no such job type
      void typed.submit({ type: "deploy", payload: null });
    };
    expect(typeof compileOnly).toBe("function");
  });

  it("reports state, progress and log events in order, as events and through the async iterator", async () => {
    const { client, dispatcher } = await setup({ start: false });
    const handle = await client.submit({ type: "build", payload: { tag: "v2" } });
    const heard: string[] = [];
    handle.on("state", (e) => heard.push(`state:${e.state}`));
    handle.on("progress", (e) => heard.push(`progress:${e.progress}${e.message ? `:${e.message}` : ""}`));
    handle.on("log", (e) => heard.push(`log:${e.line}`));
    const iterated: JobHandleEvent[] = [];
    const iterating = (async () => {
      for await (const event of handle) iterated.push(event);
    })();
    await dispatcher.start();
    await handle.result();
    await iterating;

    const expected = ["state:running", "progress:0.5:layers", "log:building v2", "progress:1", "state:completed"];
    expect(heard).toEqual(expected);
    expect(iterated.map((e) => (e.kind === "state" ? `state:${e.state}` : e.kind === "log" ? `log:${e.line}` : `progress:${e.progress}${e.message ? `:${e.message}` : ""}`))).toEqual(expected);
    expect(iterated.at(-1)).toMatchObject({ kind: "state", state: "completed", outcome: { status: "completed" } });
  });

  it("yields only the final state when iterating a handle whose job already ended", async () => {
    const { client } = await setup();
    const handle = await client.submit({ type: "build", payload: { tag: "x" } });
    await handle.result();
    const events: JobHandleEvent[] = [];
    for await (const event of handle) events.push(event);
    expect(events).toEqual([expect.objectContaining({ kind: "state", state: "completed" })]);
  });

  it("rejects result() with code 'canceled' when cancelled while queued, and the job never starts", async () => {
    const { client, dispatcher, calls } = await setup({ start: false });
    const handle = await client.submit({ type: "build", payload: { tag: "never" } });
    await handle.cancel();
    await dispatcher.start();

    const error = await handle.result().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OrchestratorError);
    expect(error).toMatchObject({ code: "canceled", retryable: false, details: { reason: "requested", jobId: handle.id } });
    expect(handle.state).toBe("cancelled");
    expect(calls).toEqual([]);
  });

  it("cancels a running job: the handler's signal fires and result() rejects with 'canceled'", async () => {
    const { client, calls, dispatcher } = await setup({ start: false });
    const handle = await client.submit({ type: "wait", payload: null });
    const running = new Promise<void>((resolve) => handle.on("state", (e) => e.state === "running" && resolve()));
    await dispatcher.start();
    await running;
    await handle.cancel("requested", { message: "user pressed stop" });

    await expect(handle.result()).rejects.toMatchObject({ code: "canceled", message: expect.stringContaining("user pressed stop") });
    expect(calls).toHaveLength(1);
    expect(calls[0]?.signal.aborted).toBe(true);
    expect(calls[0]?.signal.reason).toMatchObject({ code: "canceled" });
  });

  it("rejects result() with the job's own error when it failed", async () => {
    const { client } = await setup();
    const handle = await client.submit({ type: "fail", payload: { message: "image not found" }, maxAttempts: 5 });
    const error = await handle.result().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OrchestratorError);
    expect(error).toMatchObject({ code: "handler_failed", rawMessage: "image not found", retryable: false });
    expect(handle.state).toBe("failed");
  });

  it("does not settle result() before the job ends when it is given a signal or timeout", async () => {
    const { client } = await setup();
    const handle = await client.submit({ type: "wait", payload: null });
    const timedOut = expect(handle.result({ timeoutMs: 1000 })).rejects.toMatchObject({ code: "deadline_exceeded" });
    await vi.advanceTimersByTimeAsync(1000);
    await timedOut;
    const controller = new AbortController();
    const aborted = expect(handle.result({ signal: controller.signal })).rejects.toMatchObject({ code: "canceled" });
    controller.abort();
    await aborted;
    expect(handle.state).toBe("running"); // the job itself goes on
    await handle.cancel();
    await expect(handle.result()).rejects.toMatchObject({ code: "canceled" });
  });

  it("returns the same handle for the same idempotency key while the job is known, and a new job after the retention", async () => {
    const { client, calls } = await setup({ client: { idempotencyRetentionMs: 60_000 } });
    const [a, b] = await Promise.all([
      client.submit({ type: "build", payload: { tag: "k" }, idempotencyKey: "build-k" }),
      client.submit({ type: "build", payload: { tag: "k" }, idempotencyKey: "build-k" }),
    ]);
    expect(b).toBe(a);
    await a.result();
    const c = await client.submit({ type: "build", payload: { tag: "k" }, idempotencyKey: "build-k" });
    expect(c).toBe(a); // finished, but within the retention window
    expect(calls).toHaveLength(1);

    await expect(client.submit({ type: "fail", payload: { message: "x" }, idempotencyKey: "build-k" })).rejects.toMatchObject({
      code: "invalid_argument",
      details: { field: "idempotencyKey" },
    });

    await vi.advanceTimersByTimeAsync(60_000);
    const d = await client.submit({ type: "build", payload: { tag: "k" }, idempotencyKey: "build-k" });
    expect(d).not.toBe(a);
    expect(d.id).not.toBe(a.id);
    await d.result();
    expect(calls).toHaveLength(2);
  });

  it("forgets an idempotency key whose submit failed, so a later submit queues the job", async () => {
    const { client, queue, calls } = await setup();
    const enqueue = queue.enqueue.bind(queue);
    vi.spyOn(queue, "enqueue").mockRejectedValueOnce(new OrchestratorError("unavailable", "broker down")).mockImplementation(enqueue);
    await expect(client.submit({ type: "build", payload: { tag: "r" }, idempotencyKey: "r" })).rejects.toMatchObject({ code: "unavailable" });
    expect(client.pending).toBe(0);
    const handle = await client.submit({ type: "build", payload: { tag: "r" }, idempotencyKey: "r" });
    await handle.result();
    expect(calls).toHaveLength(1);
  });

  it.each([
    ["type", { payload: null }],
    ["type", { type: "", payload: null }],
    ["payload", { type: "build" }],
    ["payload.fn", { type: "build", payload: { fn: () => 1 } }],
    ["payload.n", { type: "build", payload: { n: Number.NaN } }],
    ["payload.big", { type: "build", payload: { big: 10n } }],
    ["payload.items[1].at", { type: "build", payload: { items: [{}, { at: new Date(0) }] } }],
    ["payload[0]", { type: "build", payload: [new Map()] }],
    ["payload.self", { type: "build", payload: (() => { const o: Record<string, unknown> = {}; o.self = o; return o; })() }],
    ["timeoutMs", { type: "build", payload: null, timeoutMs: 0 }],
    ["timeoutMs", { type: "build", payload: null, timeoutMs: 1.5 }],
    ["maxAttempts", { type: "build", payload: null, maxAttempts: 0 }],
    ["maxAttempts", { type: "build", payload: null, maxAttempts: 1001 }],
    ["idempotencyKey", { type: "build", payload: null, idempotencyKey: "" }],
    ["labels.gpu", { type: "build", payload: null, labels: { gpu: 1 } }],
    ["id", { type: "build", payload: null, id: 42 }],
    ["trace.traceparent", { type: "build", payload: null, trace: { traceparent: 7 } }],
    ["signal", { type: "build", payload: null, signal: "stop" }],
  ])("rejects a spec with a bad %s with invalid_argument naming the field", async (field, spec) => {
    const { client, queue } = await setup({ start: false });
    const enqueue = vi.spyOn(queue, "enqueue");
    const error = await client.submit(spec as never).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OrchestratorError);
    expect(error).toMatchObject({ code: "invalid_argument", details: { field } });
    expect((error as Error).message).toContain(`\`${field}\``);
    expect(enqueue).not.toHaveBeenCalled();
  });

  it("rejects a submit whose id belongs to a job it still follows", async () => {
    const { client } = await setup({ start: false });
    await client.submit({ type: "build", payload: { tag: "a" }, id: "job-1" });
    await expect(client.submit({ type: "build", payload: { tag: "b" }, id: "job-1" })).rejects.toMatchObject({
      code: "invalid_argument",
      details: { field: "id" },
    });
  });

  it("subscribes before enqueueing, so a job that ends before submit() resolves still settles its handle", async () => {
    const { client, queue, dispatcher } = await setup();
    const enqueue = queue.enqueue.bind(queue);
    vi.spyOn(queue, "enqueue").mockImplementation(async (job, options) => {
      const completed = new Promise((resolve) => dispatcher.once("jobCompleted", resolve));
      await enqueue(job, options);
      await completed; // the confirm arrives only after the job has run
    });
    const handle = await client.submit({ type: "build", payload: { tag: "fast" } });
    expect(handle.state).toBe("completed");
    expect(await handle.result()).toEqual({ imageId: "sha256:fast" });
  });

  it("shares one event subscription among all its jobs", async () => {
    const { client, queue } = await setup();
    const subscribe = vi.spyOn(queue, "subscribe");
    const handles = await Promise.all([1, 2, 3].map((n) => client.submit({ type: "build", payload: { tag: `t${n}` } })));
    await Promise.all(handles.map((h) => h.result()));
    expect(subscribe).toHaveBeenCalledTimes(1);
    expect(subscribe).toHaveBeenCalledWith("*", expect.any(Function));
    expect(client.pending).toBe(0);
  });

  it("keeps delivering to other handles when a handle's listener throws, and reports it as an error event", async () => {
    const { client, dispatcher } = await setup({ start: false });
    const errors: OrchestratorError[] = [];
    client.on("error", ({ error }) => errors.push(error));
    const first = await client.submit({ type: "build", payload: { tag: "1" } });
    first.on("progress", () => {
      throw new Error("listener bug");
    });
    const second = await client.submit({ type: "build", payload: { tag: "2" } });
    await dispatcher.start();
    expect(await second.result()).toEqual({ imageId: "sha256:2" });
    expect(await first.result()).toEqual({ imageId: "sha256:1" });
    expect(errors.length).toBeGreaterThan(0);
    expect(errors[0]).toMatchObject({ code: "internal", message: expect.stringContaining("listener bug") });
  });

  it("does nothing when cancelling a job that already ended", async () => {
    const { client, queue } = await setup();
    const handle = await client.submit({ type: "build", payload: { tag: "done" } });
    await handle.result();
    const cancel = vi.spyOn(queue, "cancel");
    await handle.cancel();
    expect(cancel).not.toHaveBeenCalled();
    await expect(handle.cancel("bogus" as never)).rejects.toMatchObject({ code: "invalid_argument" });
  });

  it("rejects pending results with queue_closed on close() and refuses later submits", async () => {
    const { client } = await setup({ start: false });
    const handle = await client.submit({ type: "build", payload: { tag: "pending" } });
    const iterator = handle[Symbol.asyncIterator]();
    await client.close();
    await expect(handle.result()).rejects.toMatchObject({ code: "queue_closed" });
    await expect(iterator.next()).resolves.toEqual({ value: undefined, done: true });
    await expect(client.submit({ type: "build", payload: { tag: "late" } })).rejects.toMatchObject({ code: "queue_closed" });
    await expect(handle.cancel()).rejects.toMatchObject({ code: "queue_closed" });
  });

  it("reports the state changes of every attempt and the attempt that completed", async () => {
    const { client, dispatcher } = await setup({
      start: false,
      handlers: {
        build: async (_payload: unknown, ctx: JobContext) => {
          if (ctx.attempt === 1) throw new Error("transient");
          return "second time lucky";
        },
      },
    });
    const handle = await client.submit({ type: "build", payload: { tag: "retry" } });
    const states: string[] = [];
    handle.on("state", (e) => states.push(`${e.state}@${e.attempt}`));
    await dispatcher.start();
    await flush();
    await vi.advanceTimersByTimeAsync(2000);
    expect(await handle.result()).toBe("second time lucky");
    expect(handle.attempt).toBe(2);
    expect(states).toEqual(["running@1", "retrying@1", "running@2", "completed@2"]);
  });

  it("drops events of an older attempt and keeps the first result of a job run twice", async () => {
    const { client, queue } = await setup({ start: false });
    const handle = await client.submit({ type: "build", payload: { tag: "dup" } });
    const heard: string[] = [];
    handle.on("progress", (e) => heard.push(`progress ${e.progress}@${e.attempt}`));
    handle.on("state", (e) => heard.push(`${e.state}@${e.attempt}`));
    const at = Date.now();
    const jobId = handle.id;
    await queue.publish({ kind: "state", state: "running", jobId, attempt: 2, at });
    await queue.publish({ kind: "progress", progress: 0.9, jobId, attempt: 1, at });
    await queue.publish({ kind: "progress", progress: 0.1, jobId, attempt: 2, at });
    await queue.publish({ kind: "result", jobId, attempt: 1, at, outcome: { status: "completed", result: { imageId: "first" } } });
    await queue.publish({ kind: "result", jobId, attempt: 2, at, outcome: { status: "completed", result: { imageId: "second" } } });

    expect(await handle.result()).toEqual({ imageId: "first" });
    expect(heard).toEqual(["running@2", "progress 0.1@2", "completed@1"]);
  });

  it("rejects bad client options with invalid_argument naming the option", () => {
    const queue = new MemoryQueue();
    expect(() => new JobClient({ queue, events: {} as never })).toThrow(/events\.subscribe/);
    expect(() => new JobClient({ queue, events: queue, defaults: { maxAttempts: 0 } })).toThrow(/defaults\.maxAttempts/);
    expect(() => new JobClient({ queue, events: queue, defaults: { timeoutMs: -5 } })).toThrow(/defaults\.timeoutMs/);
    expect(() => new JobClient({ queue, events: queue, idempotencyRetentionMs: "1m" as never })).toThrow(/idempotencyRetentionMs/);
  });
});
