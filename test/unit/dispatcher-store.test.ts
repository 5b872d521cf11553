import { afterEach, describe, expect, it } from "vitest";
import { JobClient } from "../../src/client/job-client.ts";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import type { DispatcherOptions } from "../../src/dispatcher/types.ts";
import { nonRetryable, OrchestratorError } from "../../src/errors.ts";
import type { JobEnvelope } from "../../src/job/envelope.ts";
import type { JobEvent } from "../../src/job/types.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import type { Delivery, JobQueue } from "../../src/queue/types.ts";
import { MemoryJobStore } from "../../src/store/memory-job-store.ts";
import type { JobStore, JobTransition } from "../../src/store/types.ts";
import { rejectionOf } from "../../src/testing/rejection-of.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import type { JobContext, JobHandlers } from "../../src/worker/types.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup().catch(() => {});
});

/** A store whose writes can be logged and made to fail, as a database that is down. */
function flakyStore(inner: JobStore, log: string[]) {
  const state = { failFinished: false };
  const store: JobStore = Object.create(inner) as JobStore;
  store.record = async (t: JobTransition, options) => {
    if (t.kind === "finished" && state.failFinished) throw new OrchestratorError("unavailable", "the store is down");
    const result = await inner.record(t, options);
    log.push(`record:${t.kind}:${result.status}`);
    return result;
  };
  for (const method of ["create", "get", "getByIdempotencyKey", "list", "counts", "expireUnstarted", "cleanup", "close", "appendLogs", "logs"] as const) {
    (store as unknown as Record<string, unknown>)[method] = (inner[method] as (...args: unknown[]) => unknown).bind(inner);
  }
  return { store, state };
}

/** The queue with every settle of a delivery logged. */
function loggingQueue(queue: MemoryQueue, log: string[]): JobQueue {
  return {
    enqueue: (job, options) => queue.enqueue(job, options),
    redrive: (options) => queue.redrive(options),
    close: () => queue.close(),
    consume: (handler, options) =>
      queue.consume((delivery: Delivery) => {
        const logged: Delivery = {
          get job() { return delivery.job; },
          get attempt() { return delivery.attempt; },
          get redelivered() { return delivery.redelivered; },
          get settled() { return delivery.settled; },
          get signal() { return delivery.signal; },
          ack: () => (log.push("settle:ack"), delivery.ack()),
          retry: (delayMs, reason) => (log.push("settle:retry"), delivery.retry(delayMs, reason)),
          deadLetter: (reason) => (log.push("settle:deadLetter"), delivery.deadLetter(reason)),
        };
        handler(logged);
      }, options),
  };
}

async function setup(options: { handlers?: JobHandlers; workers?: Array<{ id: string; labels?: Record<string, string>; jobTypes?: string[] }>; dispatcher?: Partial<DispatcherOptions> } = {}) {
  const log: string[] = [];
  const memory = new MemoryQueue();
  memory.on("error", () => {});
  const queue = loggingQueue(memory, log);
  const inner = new MemoryJobStore();
  const { store, state } = flakyStore(inner, log);
  const calls: Array<{ type: string; attempt: number }> = [];
  const handlers: JobHandlers = options.handlers ?? {
    echo: async (payload: unknown, ctx: JobContext) => {
      calls.push({ type: "echo", attempt: ctx.attempt });
      ctx.progress(0.5, "half");
      return payload;
    },
  };
  const pool = new WorkerPool();
  for (const worker of options.workers ?? [{ id: "w1" }]) {
    pool.add({ id: worker.id, transport: new InProcessTransport({ handlers, slots: 2 }), slots: 2, labels: worker.labels, jobTypes: worker.jobTypes, admission: "trust" });
  }
  memory.subscribe("*", (event: JobEvent) => {
    if (event.kind === "result") log.push(`publish:result:${event.outcome.status}`);
  });
  const dispatcher = new Dispatcher({ queue, events: memory, pool, store, dispatcherId: "d1", retry: { baseDelayMs: 0, jitter: 0 }, noWorkerDelayMs: 20, ...options.dispatcher });
  dispatcher.on("error", () => {});
  const client = new JobClient({ queue, events: memory, store, storePollIntervalMs: 50 });
  cleanups.push(() => client.close(), () => dispatcher.close({ signal: AbortSignal.abort() }), () => pool.close(), () => memory.close());
  await dispatcher.start();
  return { memory, queue, store: inner, state, pool, dispatcher, client, calls, log };
}

describe("Dispatcher with a job store", () => {
  it("writes the handlers' log lines to the store, and none with keepLogs: false", async () => {
    const handlers: JobHandlers = {
      chatty: async (_payload: unknown, ctx: JobContext) => {
        ctx.log("first line");
        ctx.log("second line", "stderr");
        return null;
      },
    };
    const kept = await setup({ handlers });
    const one = await kept.client.submit({ type: "chatty", payload: null });
    await one.result();
    const lines = await waitFor(async () => {
      const l = await kept.store.logs(one.id);
      return l.length === 2 && l;
    }, { what: "both lines kept" });
    expect(lines.map((l) => l.line)).toEqual(["first line", "second line"]);

    const quiet = await setup({ handlers, dispatcher: { keepLogs: false } });
    const events: string[] = [];
    quiet.memory.subscribe("*", (event: JobEvent) => {
      if (event.kind === "log") events.push(event.line);
    });
    const two = await quiet.client.submit({ type: "chatty", payload: null });
    await two.result();
    await waitFor(async () => (await quiet.store.get(two.id))?.state === "completed", { what: "the record completed" });
    // The lines still go out as job events; the store gets none.
    expect(events).toEqual(["first line", "second line"]);
    expect(await quiet.store.logs(two.id)).toEqual([]);
    expect(() => new Dispatcher({ queue: quiet.memory, events: quiet.memory, pool: quiet.pool, store: quiet.store, keepLogs: "no" as never })).toThrow(/keepLogs/);
  });

  it("records every transition, and the outcome before it is published and the delivery settled", async () => {
    const { client, store, log } = await setup();
    const handle = await client.submit({ type: "echo", payload: { n: 1 } });
    expect(await handle.result()).toEqual({ n: 1 });
    const record = await waitFor(async () => {
      const r = await store.get(handle.id);
      return r?.state === "completed" && r;
    });
    expect(record).toMatchObject({ result: { n: 1 }, fencingToken: 1, progress: { progress: 0.5, message: "half", attempt: 1 } });
    expect(record.attempts).toMatchObject([{ number: 1, round: 0, workerId: "w1", dispatcherId: "d1", outcome: "completed" }]);
    // The result event resolves the handle; the ack follows it (after the confirm), so wait for it.
    await waitFor(() => log.includes("settle:ack"), { what: "the delivery acked" });
    const order = log.filter((line) => /finished|publish|settle/.test(line));
    expect(order).toEqual(["record:finished:applied", "publish:result:completed", "settle:ack"]);
  });

  it("keeps the history of a retried job, a failed job's dead letter and its reason", async () => {
    let runs = 0;
    const { client, store } = await setup({
      handlers: {
        flaky: async () => {
          if (++runs === 1) throw new Error("first time fails");
          throw nonRetryable("then it gives up");
        },
      },
    });
    const handle = await client.submit({ type: "flaky", payload: null, maxAttempts: 3 });
    expect((await rejectionOf(handle.result())).rawMessage).toBe("then it gives up");
    const record = await waitFor(async () => (await store.get(handle.id))?.deadLetter !== undefined && store.get(handle.id));
    expect(record?.state).toBe("failed");
    expect(record?.deadLetter?.reason).toContain("then it gives up (attempt 2 of 3)");
    expect(record?.attempts).toMatchObject([
      { number: 1, outcome: "retrying", error: { code: "handler_failed", message: "first time fails" } },
      { number: 2, outcome: "failed", error: { message: "then it gives up" } },
    ]);
    expect((await client.deadLetters()).records.map((r) => r.id)).toEqual([handle.id]);
  });

  it("acks nothing while the store cannot record the outcome, and loses nothing: the job completes once it can", async () => {
    // Each unrecorded outcome gives the delivery back after the backoff, as an unpublishable one does.
    const { client, store, state, log, calls } = await setup({ dispatcher: { retry: { baseDelayMs: 100, factor: 1, jitter: 0 } } });
    state.failFinished = true;
    const handle = await client.submit({ type: "echo", payload: "x", maxAttempts: 10 });
    await waitFor(() => calls.length >= 2, { what: "a second attempt after the unrecorded first" });
    expect(log.filter((line) => line.startsWith("settle:"))).not.toContain("settle:ack");
    expect(log).not.toContain("publish:result:completed");
    state.failFinished = false;
    expect(await handle.result()).toBe("x");
    const record = await waitFor(async () => {
      const r = await store.get(handle.id);
      return r?.state === "completed" && r;
    });
    expect(record.attempts.at(-1)).toMatchObject({ outcome: "completed" });
    await waitFor(() => log.includes("settle:ack"), { what: "the delivery acked" });
    expect(log.filter((line) => line === "settle:ack")).toHaveLength(1);
  });

  it("does not run again a job whose record is final: publishes the recorded outcome and acks (a crash lost the ack)", async () => {
    const { memory, store, calls, log, client } = await setup();
    const envelope: JobEnvelope = { v: 1, id: "done-before-crash", type: "echo", payload: "new", attempt: 2, maxAttempts: 3, timeoutMs: 10_000, createdAt: new Date().toISOString() };
    await store.create({ id: envelope.id, type: "echo", payload: "old", maxAttempts: 3, timeoutMs: 10_000, startTimeoutMs: 60_000 });
    await store.record({ kind: "started", jobId: envelope.id, attempt: 1, fencingToken: 1, workerId: "w1", at: Date.now() });
    await store.record({ kind: "finished", jobId: envelope.id, attempt: 1, fencingToken: 1, started: true, at: Date.now(), outcome: { status: "completed", result: "recorded" } });
    const follower = await client.get(envelope.id);
    await memory.enqueue(envelope);
    await waitFor(() => log.includes("settle:ack"));
    expect(calls).toEqual([]);
    expect(log).toContain("publish:result:completed");
    expect(await follower?.result()).toBe("recorded");
    expect((await store.get(envelope.id))?.result).toBe("recorded");
  });

  it("acks without running an older copy of a job a newer attempt owns (a stale attempt never overwrites a newer one)", async () => {
    const { memory, store, calls, dispatcher, log } = await setup();
    const abandoned: string[] = [];
    dispatcher.on("jobAbandoned", ({ reason }) => abandoned.push(reason));
    await store.create({ id: "owned", type: "echo", payload: 1, maxAttempts: 5, timeoutMs: 10_000, startTimeoutMs: 60_000 });
    await store.record({ kind: "started", jobId: "owned", attempt: 3, fencingToken: 3, workerId: "elsewhere", at: Date.now() });
    // Attempt 2, as the retry copy of an attempt this dispatcher gave back, while attempt 3 runs elsewhere.
    await memory.enqueue({ v: 1, id: "owned", type: "echo", payload: 1, attempt: 2, maxAttempts: 5, timeoutMs: 10_000, createdAt: new Date().toISOString() });
    await waitFor(() => abandoned.length === 1);
    expect(abandoned).toEqual(["superseded"]);
    expect(calls).toEqual([]);
    expect(log).toContain("record:started:stale");
    expect(await store.get("owned")).toMatchObject({ state: "running", fencingToken: 3, attempts: [{ workerId: "elsewhere" }] });
  });

  it("shows a job of a type no worker serves as unschedulable with the reason, and fails it at its start timeout", async () => {
    const { client, store } = await setup({ workers: [{ id: "w1", jobTypes: ["echo"] }] });
    const handle = await client.submit({ type: "convert", payload: null, startTimeoutMs: 300 });
    const states: string[] = [];
    handle.on("state", ({ state }) => states.push(state));
    await waitFor(() => handle.state === "unschedulable");
    expect(handle.reason).toBe("no worker serves job type `convert`");
    expect(await store.get(handle.id)).toMatchObject({ state: "unschedulable", reason: "no worker serves job type `convert`" });
    const error = await rejectionOf(handle.result());
    expect(error.code).toBe("deadline_exceeded");
    expect(error.details).toMatchObject({ reason: "start_timeout", startTimeoutMs: 300 });
    expect(error.message).toContain("no worker serves job type `convert`");
    expect(states.at(-1)).toBe("failed");
    const record = await waitFor(async () => (await store.get(handle.id))?.deadLetter !== undefined && store.get(handle.id));
    expect(record).toMatchObject({ state: "failed", error: { code: "deadline_exceeded" } });
  });

  it("names labels no healthy worker carries while the job waits, and fails it at its start timeout", async () => {
    const { client, pool, store } = await setup({ workers: [{ id: "arm", labels: { arch: "arm64" } }, { id: "x86", labels: { arch: "amd64" } }] });
    pool.report("arm", false, "health checks failed");
    const handle = await client.submit({ type: "echo", payload: 1, labels: { arch: "arm64" }, startTimeoutMs: 300 });
    await waitFor(() => handle.state === "unschedulable");
    expect(handle.reason).toBe("no healthy worker with labels {arch: arm64}");
    expect((await store.get(handle.id))?.reason).toBe("no healthy worker with labels {arch: arm64}");
    const error = await rejectionOf(handle.result());
    expect(error.details).toMatchObject({ reason: "start_timeout", unschedulable: "no healthy worker with labels {arch: arm64}" });
  });

  it("gives a record to a job submitted without a store, on its first transition", async () => {
    const { memory, store } = await setup();
    const bare = new JobClient({ queue: memory, events: memory });
    cleanups.push(() => bare.close());
    const handle = await bare.submit({ type: "echo", payload: 2 });
    expect(await handle.result()).toBe(2);
    expect(await waitFor(() => store.get(handle.id))).toMatchObject({ state: "completed", result: 2 });
  });

  it("redrives a dead letter: it runs again from attempt 1, its history kept and its tokens higher", async () => {
    let fixed = false;
    const { client, store } = await setup({
      handlers: {
        job: async (_payload: unknown, ctx: JobContext) => {
          if (!fixed) throw new Error(`broken (attempt ${ctx.attempt})`);
          return `fixed at attempt ${ctx.attempt}`;
        },
      },
    });
    const handle = await client.submit({ type: "job", payload: null, maxAttempts: 2 });
    await rejectionOf(handle.result());
    await waitFor(async () => (await client.deadLetters()).records.length === 1);
    const dead = await store.get(handle.id);
    expect(dead?.attempts.map((a) => a.outcome)).toEqual(["retrying", "failed"]);
    fixed = true;
    expect(await client.redrive(handle.id)).toEqual({ redriven: [handle.id], missing: [] });
    const again = await client.get(handle.id);
    expect(await again?.result()).toBe("fixed at attempt 1");
    const record = await waitFor(async () => {
      const r = await store.get(handle.id);
      return r?.state === "completed" && r;
    });
    expect(record.redrives).toBe(1);
    expect(record.deadLetter).toBeUndefined();
    expect(record.attempts.map((a) => [a.round, a.number, a.outcome, a.fencingToken])).toEqual([
      [0, 1, "retrying", 1],
      [0, 2, "failed", 2],
      [1, 1, "completed", 3],
    ]);
    expect((await client.deadLetters()).records).toEqual([]);
  });

  it("redrives by filter and all, and says which it could not find", async () => {
    const { client, store } = await setup({ handlers: { bad: async () => { throw nonRetryable("no"); } } });
    const a = await client.submit({ type: "bad", payload: null, metadata: { team: "a" } });
    const b = await client.submit({ type: "bad", payload: null, metadata: { team: "b" } });
    await Promise.all([rejectionOf(a.result()), rejectionOf(b.result())]);
    await waitFor(async () => (await client.deadLetters()).records.length === 2);
    expect((await client.redrive({ metadata: { team: "a" } })).redriven).toEqual([a.id]);
    await waitFor(async () => (await store.get(a.id))?.deadLetter !== undefined && (await store.get(a.id))?.redrives === 1);
    const all = await client.redrive({ all: true });
    expect(all.redriven.sort()).toEqual([a.id, b.id].sort());
    expect((await rejectionOf(client.redrive(b.id, { limit: 0 }))).code).toBe("invalid_argument");
  });

  it("removes finished records past the store's retention, and fails queued jobs past their start timeout, on its maintenance interval", async () => {
    const log: string[] = [];
    const memory = new MemoryQueue();
    const store = new MemoryJobStore({ retentionMs: 0 });
    const pool = new WorkerPool();
    pool.add({ id: "w1", transport: new InProcessTransport({ handlers: { echo: async (p: unknown) => p } }), admission: "trust" });
    const dispatcher = new Dispatcher({ queue: memory, events: memory, pool, store, maintenanceIntervalMs: 20 });
    const client = new JobClient({ queue: memory, events: memory, store });
    cleanups.push(() => client.close(), () => dispatcher.close(), () => pool.close(), () => memory.close());
    await dispatcher.start();
    const done = await client.submit({ type: "echo", payload: 1 });
    expect(await done.result()).toBe(1);
    await waitFor(async () => (await store.get(done.id)) === undefined, { what: "the finished record removed" });
    // A record whose job never reached any queue (its producer died between create and enqueue).
    await store.create({ id: "orphan", type: "echo", payload: null, maxAttempts: 1, timeoutMs: 1000, startTimeoutMs: 1, createdAt: Date.now() - 1000 });
    memory.subscribe("orphan", (event) => log.push(event.kind));
    await waitFor(() => log.includes("result"), { what: "the orphan failed at its start timeout and its outcome published" });
  });
});
