import { randomUUID } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import type { DispatcherEvents, DispatcherOptions } from "../../src/dispatcher/types.ts";
import type { JobEnvelope } from "../../src/job/envelope.ts";
import type { JobEvent, JobResultEvent } from "../../src/job/types.ts";
import { OrchestratorError } from "../../src/errors.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import { MemoryJobStore } from "../../src/store/memory-job-store.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import type { JobContext } from "../../src/worker/types.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

function envelope(partial: Partial<JobEnvelope> = {}): JobEnvelope {
  return { v: 1, id: randomUUID(), type: "work", payload: {}, attempt: 1, maxAttempts: 3, timeoutMs: 60_000, createdAt: new Date().toISOString(), ...partial };
}

/** A handler that finishes when `release(jobId)` is called, or at once for jobs not held. */
function gate() {
  const held = new Map<string, () => void>();
  const wanted = new Set<string>();
  return {
    hold: (id: string) => wanted.add(id),
    release: (id: string) => held.get(id)?.(),
    handler: async (_payload: unknown, ctx: JobContext) => {
      if (!wanted.has(ctx.jobId)) return "done";
      await new Promise<void>((resolve, reject) => {
        held.set(ctx.jobId, resolve);
        ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true });
      });
      return "done";
    },
  };
}

async function harness(options: Partial<DispatcherOptions> = {}, queue = new MemoryQueue()) {
  const pool = new WorkerPool();
  const dispatcher = new Dispatcher({ queue, events: queue, pool, noWorkerDelayMs: 50, ...options });
  const published: JobEvent[] = [];
  const started: Array<{ jobId: string; workerId: string; at: number }> = [];
  dispatcher.on("jobStarted", ({ job, workerId }) => started.push({ jobId: job.id, workerId, at: Date.now() }));
  await queue.subscribe("*", (event) => published.push(event));
  cleanups.push(() => dispatcher.close({ signal: AbortSignal.abort() }), () => pool.close(), () => queue.close());
  const work = gate();
  return {
    queue, pool, dispatcher, published, started, work,
    addWorker(id: string, labels: Record<string, string> = {}, slots = 1) {
      pool.add({ admission: "trust", id, labels, slots, transport: new InProcessTransport({ handlers: { work: work.handler, other: work.handler }, slots }) });
    },
    result: (jobId: string) => new Promise<JobResultEvent>((resolve) => {
      const seen = published.find((e): e is JobResultEvent => e.kind === "result" && e.jobId === jobId);
      if (seen) return resolve(seen);
      void queue.subscribe(jobId, (event) => {
        if (event.kind === "result") resolve(event);
      });
    }),
  };
}

function next<K extends keyof DispatcherEvents & string>(dispatcher: Dispatcher, event: K, match: (payload: DispatcherEvents[K][0]) => boolean = () => true): Promise<DispatcherEvents[K][0]> {
  return new Promise((resolve) => {
    const listener = ((payload: DispatcherEvents[K][0]) => {
      if (!match(payload)) return;
      dispatcher.off(event, listener as never);
      resolve(payload);
    }) as never;
    dispatcher.on(event, listener);
  });
}

describe("Dispatcher affinity", () => {
  it("starts a job on the free worker carrying its preferred labels, though another was leased longer ago", async () => {
    const h = await harness();
    h.addWorker("cold", { arch: "arm64" });
    h.addWorker("warm", { arch: "arm64", cache: "warm" });
    await h.dispatcher.start();
    const job = envelope({ labels: { arch: "arm64" }, affinity: { preferred: { cache: { value: "warm", weight: 10 } } } });
    await h.queue.enqueue(job);
    expect((await h.result(job.id)).outcome.status).toBe("completed");
    expect(h.started).toMatchObject([{ jobId: job.id, workerId: "warm" }]);
  });

  it("soft sticky: the next job of a key goes to the worker that ran the previous one, while it is free", async () => {
    const h = await harness();
    h.addWorker("a");
    h.addWorker("b");
    await h.dispatcher.start();
    const first = envelope({ affinity: { stickyKey: "repo:web" } });
    await h.queue.enqueue(first);
    await h.result(first.id);
    // The slot is released after the outcome is published: wait for it.
    await h.dispatcher.onIdle();
    const ranOn = h.started[0]?.workerId as string;
    // Least recently leased would now be the other worker; stickiness wins.
    for (let i = 0; i < 3; i++) {
      const job = envelope({ affinity: { stickyKey: "repo:web", sticky: "soft" } });
      await h.queue.enqueue(job);
      await h.result(job.id);
      await h.dispatcher.onIdle();
    }
    expect(h.started.map((s) => s.workerId)).toEqual([ranOn, ranOn, ranOn, ranOn]);
    // Busy sticky worker: a soft job goes elsewhere rather than wait.
    const busy = envelope({ affinity: { stickyKey: "repo:web" } });
    h.work.hold(busy.id);
    await h.queue.enqueue(busy);
    await next(h.dispatcher, "jobStarted", ({ job }) => job.id === busy.id);
    const other = envelope({ affinity: { stickyKey: "repo:web", sticky: "soft" } });
    await h.queue.enqueue(other);
    await h.result(other.id);
    expect(h.started.at(-1)).toMatchObject({ jobId: other.id });
    expect(h.started.at(-1)?.workerId).not.toBe(ranOn);
    h.work.release(busy.id);
    await h.result(busy.id);
  });

  it("hard sticky: waits for its worker's slot, not another's, and fails saying why when that worker drains", async () => {
    const h = await harness();
    h.addWorker("a");
    // Two slots: the job waiting for its worker holds a prefetch slot, as any waiting job does.
    h.addWorker("b", {}, 2);
    await h.dispatcher.start();
    const first = envelope({ affinity: { stickyKey: "session:1", sticky: "hard" } });
    h.work.hold(first.id);
    await h.queue.enqueue(first);
    const { workerId } = await next(h.dispatcher, "jobStarted");
    const second = envelope({ affinity: { stickyKey: "session:1", sticky: "hard" } });
    await h.queue.enqueue(second);
    // The other worker is free: an unrelated job runs there while `second` keeps waiting.
    const unrelated = envelope();
    await h.queue.enqueue(unrelated);
    await h.result(unrelated.id);
    expect(h.started.map((s) => s.jobId)).toEqual([first.id, unrelated.id]);
    h.pool.drain(workerId);
    const failed = await h.result(second.id);
    expect(failed.outcome).toMatchObject({
      status: "failed",
      error: { code: "precondition_failed", details: { reason: "sticky_worker_gone", stickyKey: "session:1", workerId } },
    });
    expect(failed.outcome.status === "failed" && failed.outcome.error.message).toMatch(/is draining: a job with sticky "hard" runs nowhere else/);
    h.work.release(first.id);
    expect((await h.result(first.id)).outcome.status).toBe("completed");
  });

  it("hard sticky: fails a job at once, saying why, when its worker left the pool before it arrived", async () => {
    const h = await harness();
    h.addWorker("a");
    h.addWorker("b");
    await h.dispatcher.start();
    const first = envelope({ affinity: { stickyKey: "k", sticky: "hard" } });
    await h.queue.enqueue(first);
    await h.result(first.id);
    await h.dispatcher.onIdle();
    const home = h.started[0]?.workerId as string;
    await h.pool.remove(home);
    const next = envelope({ affinity: { stickyKey: "k", sticky: "hard" } });
    await h.queue.enqueue(next);
    const failed = await h.result(next.id);
    expect(failed.outcome).toMatchObject({ status: "failed", error: { code: "precondition_failed", details: { reason: "sticky_worker_gone", workerId: home } } });
    expect(failed.outcome.status === "failed" && failed.outcome.error.message).toContain("is no longer in the pool");
    // Soft stickiness falls back to the worker left, and the key follows it.
    const soft = envelope({ affinity: { stickyKey: "k" } });
    await h.queue.enqueue(soft);
    expect((await h.result(soft.id)).outcome.status).toBe("completed");
    expect(h.started.at(-1)?.workerId).not.toBe(home);
  });

  it("hard sticky: shows the job unschedulable with the reason while its worker is unhealthy, and runs it there once back", async () => {
    const h = await harness();
    h.addWorker("a");
    await h.dispatcher.start();
    const first = envelope({ affinity: { stickyKey: "k", sticky: "hard" } });
    await h.queue.enqueue(first);
    await h.result(first.id);
    await h.dispatcher.onIdle();
    h.addWorker("b");
    h.pool.report("a", false, "health check timed out");
    const second = envelope({ affinity: { stickyKey: "k", sticky: "hard" } });
    await h.queue.enqueue(second);
    await expect.poll(() => h.published.find((e) => e.kind === "state" && e.jobId === second.id && e.state === "unschedulable")).toMatchObject({
      reason: 'worker a, which ran the previous job of sticky key `k`, is unhealthy (health check timed out): a job with sticky "hard" waits for it',
    });
    h.pool.report("a", true);
    expect((await h.result(second.id)).outcome.status).toBe("completed");
    expect(h.started.map((s) => s.workerId)).toEqual(["a", "a"]);
  });

  it("keeps sticky keys in the job store, so another dispatcher of the store follows them", async () => {
    const store = new MemoryJobStore();
    const queue = new MemoryQueue();
    const one = await harness({ store }, queue);
    one.addWorker("a");
    one.addWorker("b");
    await one.dispatcher.start();
    const first = envelope({ affinity: { stickyKey: "k" } });
    await queue.enqueue(first);
    await one.result(first.id);
    const ranOn = one.started[0]?.workerId as string;
    await one.dispatcher.close();
    await expect.poll(() => store.stickyWorker("k")).toBe(ranOn);
    const two = await harness({ store }, queue);
    // Added in the other order: without the store, "b" would be leased first.
    two.addWorker("b");
    two.addWorker("a");
    await two.dispatcher.start();
    const second = envelope({ affinity: { stickyKey: "k", sticky: "hard" } });
    await queue.enqueue(second);
    await two.result(second.id);
    expect(two.started).toMatchObject([{ jobId: second.id, workerId: ranOn }]);
  });
});

/**
 * Checks the token bucket's bound on `starts` (epoch ms, in start order): the n-th start (from 0)
 * comes no sooner than (n - burst) tokens' time after the first. One token more than the bucket
 * allows, because a start follows its token by the dispatch's own latency, which the first start
 * may have paid more of than a later one.
 */
function expectWithinLimit(starts: number[], limit: { max: number; intervalMs: number; burst: number }): void {
  const tokenMs = limit.intervalMs / limit.max;
  const first = starts[0] as number;
  starts.forEach((at, n) => {
    if (n <= limit.burst) return;
    // 2 ms of slack: Date.now() is whole milliseconds, and waits are rounded up to them.
    expect(at - first, `start #${n}`).toBeGreaterThanOrEqual((n - limit.burst) * tokenMs - 2);
  });
}

describe("Dispatcher rate limits", () => {
  it("starts jobs of a limited type no faster than its bucket allows", async () => {
    const limit = { max: 4, intervalMs: 200, burst: 2 };
    const h = await harness({ rateLimits: { types: { work: limit } } });
    h.addWorker("a", {}, 8);
    await h.dispatcher.start();
    const jobs = Array.from({ length: 8 }, () => envelope());
    for (const job of jobs) await h.queue.enqueue(job);
    for (const job of jobs) await h.result(job.id);
    expect(h.started).toHaveLength(8);
    expectWithinLimit(h.started.map((s) => s.at), limit);
  });

  it("holds back a job without a worker slot or (past maxHoldMs) a prefetch slot: another type's job runs meanwhile", async () => {
    const h = await harness({ rateLimits: { types: { work: { max: 1, intervalMs: 400 } }, maxHoldMs: 0 } });
    h.addWorker("a", {}, 2);
    await h.dispatcher.start();
    const running = envelope();
    const held = envelope();
    const other = envelope({ type: "other" });
    h.work.hold(running.id);
    await h.queue.enqueue(running);
    await h.queue.enqueue(held);
    await h.queue.enqueue(other);
    await h.result(other.id);
    h.work.release(running.id);
    await h.result(held.id);
    expect(h.started.map((s) => s.jobId)).toEqual([running.id, other.id, held.id]);
  });

  it("sends a job back to the queue, unschedulable with the reason, when its token is due later than maxHoldMs", async () => {
    const h = await harness({ rateLimits: { keys: { "tenant:*": { max: 1, intervalMs: 300 } }, maxHoldMs: 0 } });
    h.addWorker("a", {}, 4);
    await h.dispatcher.start();
    const first = envelope({ rateLimit: { key: "tenant:acme" } });
    const second = envelope({ rateLimit: { key: "tenant:acme" } });
    const otherTenant = envelope({ rateLimit: { key: "tenant:zeta" } });
    const deferred = next(h.dispatcher, "jobDeferred");
    for (const job of [first, second, otherTenant]) await h.queue.enqueue(job);
    expect(await deferred).toMatchObject({ job: { id: second.id }, reason: "rate_limited" });
    const reason = h.published.find((e) => e.kind === "state" && e.jobId === second.id && e.state === "unschedulable");
    expect(reason).toMatchObject({ reason: expect.stringMatching(/^rate limit `key:tenant:acme` \(1 per 300 ms\): next start in \d+ ms$/) });
    for (const job of [first, second, otherTenant]) expect((await h.result(job.id)).outcome.status).toBe("completed");
    const at = new Map(h.started.map((s) => [s.jobId, s.at]));
    expect(h.started.map((s) => s.jobId).indexOf(otherTenant.id)).toBeLessThan(h.started.map((s) => s.jobId).indexOf(second.id));
    expect((at.get(second.id) as number) - (at.get(first.id) as number)).toBeGreaterThanOrEqual(298);
  });

  it("takes a job's rateLimit.units from its key's bucket, and fails a job asking for more than the bucket holds", async () => {
    const limit = { max: 4, intervalMs: 400 };
    const h = await harness({ rateLimits: { keys: { exports: limit } } });
    h.addWorker("a", {}, 4);
    await h.dispatcher.start();
    const big = envelope({ rateLimit: { key: "exports", units: 4 } });
    const small = envelope({ rateLimit: { key: "exports" } });
    const huge = envelope({ rateLimit: { key: "exports", units: 5 } });
    for (const job of [big, small, huge]) await h.queue.enqueue(job);
    const failed = await h.result(huge.id);
    expect(failed.outcome).toMatchObject({ status: "failed", error: { code: "invalid_argument", details: { field: "rateLimit.units" } } });
    expect(failed.outcome.status === "failed" && failed.outcome.error.message).toContain("holds at most 4 tokens, and the job takes 5");
    await h.result(small.id);
    const at = new Map(h.started.map((s) => [s.jobId, s.at]));
    // The big job emptied the bucket: the small one waited for one token (100 ms). The two start
    // times are read a little after each take, so allow a few ms (seen in CI: 97).
    expect(h.started.map((s) => s.jobId)).toEqual([big.id, small.id]);
    expect((at.get(small.id) as number) - (at.get(big.id) as number)).toBeGreaterThanOrEqual(90);
  });

  it("shares a bucket between two dispatchers through their job store", async () => {
    const store = new MemoryJobStore();
    const queue = new MemoryQueue();
    const limit = { max: 5, intervalMs: 250, burst: 1 };
    const rateLimits = { types: { work: { ...limit, shared: true } } };
    const one = await harness({ store, rateLimits }, queue);
    const two = await harness({ store, rateLimits }, queue);
    one.addWorker("a", {}, 4);
    two.addWorker("b", {}, 4);
    await one.dispatcher.start();
    await two.dispatcher.start();
    const jobs = Array.from({ length: 10 }, () => envelope());
    for (const job of jobs) await queue.enqueue(job);
    for (const job of jobs) await one.result(job.id);
    const starts = [...one.started, ...two.started].map((s) => s.at).sort((x, y) => x - y);
    expect(starts).toHaveLength(10);
    expect(one.started.length).toBeGreaterThan(0);
    expect(two.started.length).toBeGreaterThan(0);
    expectWithinLimit(starts, limit);
  });

  it("holds a job back, saying so, while the shared bucket's store fails, and starts it once the store answers", async () => {
    const store = new MemoryJobStore();
    const takeTokens = store.takeTokens.bind(store);
    let failing = true;
    store.takeTokens = (...args) => (failing ? Promise.reject(new OrchestratorError("unavailable", "connection refused")) : takeTokens(...args));
    const h = await harness({ store, rateLimits: { types: { work: { max: 10, intervalMs: 1000, shared: true } }, maxHoldMs: 0 } });
    const errors: string[] = [];
    h.dispatcher.on("error", ({ error }) => errors.push(error.message));
    h.addWorker("a");
    await h.dispatcher.start();
    const job = envelope();
    const deferred = next(h.dispatcher, "jobDeferred");
    await h.queue.enqueue(job);
    expect(await deferred).toMatchObject({ reason: "rate_limited", delayMs: expect.any(Number) });
    expect(h.published.find((e) => e.kind === "state" && e.jobId === job.id && e.state === "unschedulable")).toMatchObject({
      reason: expect.stringContaining("rate limit `type:work` (10 per 1000 ms, shared): its shared bucket cannot be read (job store unavailable)"),
    });
    expect(errors.some((message) => message.includes("taking a token of the shared rate limit type:work"))).toBe(true);
    expect(h.started).toEqual([]);
    failing = false;
    expect((await h.result(job.id)).outcome.status).toBe("completed");
  });

  it("refuses a shared limit without a store that keeps buckets, and a malformed limit", () => {
    const queue = new MemoryQueue();
    const pool = new WorkerPool();
    expect(() => new Dispatcher({ queue, events: queue, pool, rateLimits: { types: { work: { max: 1, intervalMs: 10, shared: true } } } })).toThrow(/rateLimits\.types\.work\.shared/);
    expect(() => new Dispatcher({ queue, events: queue, pool, rateLimits: { keys: { k: { max: 0, intervalMs: 10 } } } })).toThrow(/rateLimits\.keys\.k\.max/);
    expect(() => new Dispatcher({ queue, events: queue, pool, rateLimits: { maxHoldMs: -1 } })).toThrow(/rateLimits\.maxHoldMs/);
  });
});

describe("JobClient affinity and rateLimit fields", () => {
  it("refuses misspelt or incomplete affinity and rateLimit with invalid_argument naming the field", async () => {
    const { JobClient } = await import("../../src/client/job-client.ts");
    const queue = new MemoryQueue();
    cleanups.push(() => queue.close());
    const client = new JobClient({ queue, events: queue });
    cleanups.push(() => client.close());
    const refused = (spec: Record<string, unknown>) => client.submit({ type: "work", payload: null, ...spec } as never).then(() => undefined, (error: unknown) => error);
    expect(await refused({ affinity: { stickKey: "k" } })).toMatchObject({ code: "invalid_argument", details: { field: "affinity.stickKey", suggestion: "affinity.stickyKey" } });
    expect(await refused({ affinity: { sticky: "hard" } })).toMatchObject({ code: "invalid_argument", details: { field: "affinity.stickyKey" } });
    expect(await refused({ affinity: { preferred: { cache: { value: "warm", wieght: 3 } } } })).toMatchObject({ details: { field: "affinity.preferred.cache.wieght" } });
    expect(await refused({ affinity: { preferred: { cache: { value: "warm", weight: 1000 } } } })).toMatchObject({ details: { field: "affinity.preferred.cache.weight" } });
    expect(await refused({ rateLimit: { key: "" } })).toMatchObject({ code: "invalid_argument", details: { field: "rateLimit.key" } });
    expect(await refused({ rateLimit: "tenant:acme" })).toMatchObject({ code: "invalid_argument", details: { field: "rateLimit" } });
    expect(await refused({ rateLimit: { key: "k", units: 0 } })).toMatchObject({ code: "invalid_argument", details: { field: "rateLimit.units" } });
  });
});

describe("RateLimiter local buckets", () => {
  it("forgets only refilled buckets when keys by pattern pile up: a drained key stays limited", async () => {
    const { RateLimiter, resolveRateLimits } = await import("../../src/dispatcher/rate-limiter.ts");
    const limits = resolveRateLimits({ keys: { "slow:*": { max: 1, intervalMs: 3_600_000 }, "fast:*": { max: 1000, intervalMs: 1 } }, maxHoldMs: 0 }, undefined);
    const limiter = new RateLimiter(limits as NonNullable<typeof limits>, undefined, 1000, () => {}, undefined);
    const signal = new AbortController().signal;
    const admit = (key: string) => limiter.admit(limiter.bucketsOf(envelope({ rateLimit: { key } })) ?? [], signal, key);
    expect(await admit("slow:drained")).toBeUndefined();
    // 12,000 keys whose buckets refill at once: sweeps run, and drop only full buckets.
    for (let i = 0; i < 12_000; i++) expect(await admit(`fast:${i}`)).toBeUndefined();
    expect(await admit("slow:drained")).toMatchObject({ reason: expect.stringContaining("rate limit `key:slow:drained` (1 per 3600000 ms)") });
  });
});
