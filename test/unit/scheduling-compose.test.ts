import { afterEach, describe, expect, it } from "vitest";
import { JobClient } from "../../src/client/job-client.ts";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import type { RateLimitsOptions } from "../../src/dispatcher/types.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import { MemoryScheduleStore } from "../../src/schedule/memory-schedule-store.ts";
import { MemoryJobStore } from "../../src/store/memory-job-store.ts";
import { rejectionOf } from "../../src/testing/rejection-of.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import type { JobContext } from "../../src/worker/types.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";

// How the scheduling features compose on the in-memory path: priority × concurrency key ×
// retry × redrive × schedules × the strict spec, judged by the order of starts, never by time.

type Step = { name: string; hold?: boolean; failFirst?: boolean };
type Jobs = { step: { payload: Step; result: string } };

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

async function setup(options: { slots?: number; rateLimits?: RateLimitsOptions } = {}) {
  const queue = new MemoryQueue();
  const store = new MemoryJobStore();
  const schedules = new MemoryScheduleStore();
  const log: string[] = [];
  const gates = new Map<string, () => void>();
  const failed = new Set<string>();
  const handlers = {
    step: async (payload: Step, ctx: JobContext): Promise<string> => {
      log.push(`start ${payload.name} ${ctx.attempt}`);
      try {
        if (payload.failFirst === true && !failed.has(payload.name)) {
          failed.add(payload.name);
          throw new Error(`${payload.name} fails once`);
        }
        if (payload.hold === true && ctx.attempt === 1) {
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
  const slots = options.slots ?? 1;
  const pool = new WorkerPool();
  pool.add({ id: "w", transport: new InProcessTransport({ handlers, slots }), slots });
  const dispatcher = new Dispatcher({
    queue, events: queue, pool, store, retry: { baseDelayMs: 20, maxDelayMs: 50, jitter: 0 }, ...(options.rateLimits === undefined ? {} : { rateLimits: options.rateLimits }),
  });
  const client = new JobClient<Jobs>({ queue, events: queue, store, schedules, defaults: { maxAttempts: 3 } });
  cleanups.push(() => queue.close(), () => pool.close(), () => dispatcher.close({ signal: AbortSignal.timeout(2000) }), () => client.close());
  return {
    queue, store, client, dispatcher, log,
    started: (name: string) => waitFor(() => log.some((line) => line.startsWith(`start ${name} `)), { timeoutMs: 5000, what: `${name} started` }),
    release: (name: string) => gates.get(name)?.(),
    starts: () => log.filter((line) => line.startsWith("start ")).map((line) => line.split(" ").slice(1).join(" ")),
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

describe("priority × concurrency key × redrive (MemoryQueue)", () => {
  it("redrives a dead-lettered prioritized, keyed job: it keeps its priority and waits for its key", async () => {
    const { client, dispatcher, log, release, started, starts, store } = await setup({ slots: 2 });
    await dispatcher.start();
    const dead = await client.submit({ type: "step", payload: { name: "dead", failFirst: true }, priority: 2, concurrency: { key: "k" }, maxAttempts: 1 });
    expect((await rejectionOf(dead.result({ timeoutMs: 5000 }))).code).toBe("handler_failed");
    await waitFor(async () => (await client.deadLetters()).records.some((j) => j.id === dead.id), { timeoutMs: 5000, what: "the job is dead-lettered" });
    const holder = await client.submit({ type: "step", payload: { name: "holder", hold: true }, concurrency: { key: "k" } });
    await started("holder");
    await client.redrive(dead.id);
    const again = await client.get(dead.id);
    await waitFor(() => again?.reason?.includes('concurrency key "k"'), { timeoutMs: 5000, what: "the redriven job waits for its key" });
    expect(starts()).not.toContain("dead 2");
    release("holder");
    await holder.result({ timeoutMs: 5000 });
    await waitFor(async () => (await store.get(dead.id))?.state === "completed", { timeoutMs: 5000, what: "the redriven job completed" });
    expect(peak(log, ["dead", "holder"])).toBe(1);
    expect((await store.get(dead.id))?.priority).toBe(2);
  });
});

describe("a schedule's job template (MemoryQueue)", () => {
  it("fires a job with the template's priority and concurrency key, shown on its record", async () => {
    const { client, dispatcher, release, started, store } = await setup({ slots: 2 });
    await dispatcher.start();
    const holder = await client.submit({ type: "step", payload: { name: "holder", hold: true }, concurrency: { key: "nightly" } });
    await started("holder");
    const schedule = await client.schedules.create({
      id: "review-nightly", cron: "0 2 * * *", timezone: "Europe/Berlin", paused: true,
      job: { type: "step", payload: { name: "tick" }, priority: 1, concurrency: { key: "nightly" } },
    });
    const jobId = await schedule.trigger();
    const tick = await client.get(jobId);
    await waitFor(() => tick?.reason?.includes('concurrency key "nightly"'), { timeoutMs: 5000, what: "the tick's job waits for its key" });
    expect(tick?.priority).toBe(1);
    expect((await store.get(jobId))?.priority).toBe(1);
    release("holder");
    await holder.result({ timeoutMs: 5000 });
    expect(await tick?.result({ timeoutMs: 5000 })).toBe("tick");
  });

  it("refuses a template with a delay, or a misspelled nested field, naming it", async () => {
    const { client } = await setup();
    const create = (job: unknown) => client.schedules.create({ id: "review-bad", everyMs: 60_000, job } as never);
    expect((await rejectionOf(create({ type: "step", payload: null, delayMs: 1000 }))).details).toMatchObject({ field: "job.delayMs" });
    expect((await rejectionOf(create({ type: "step", payload: null, concurrency: { key: "k", limt: 2 } }))).details).toMatchObject({ field: "job.concurrency.limt" });
    expect((await rejectionOf(create({ type: "step", payload: null, priorty: 1 }))).details).toMatchObject({ field: "job.priorty", suggestion: "job.priority" });
  });
});

describe("the strict spec", () => {
  it("accepts every documented field at once", async () => {
    const queue = new MemoryQueue();
    const client = new JobClient({ queue, events: queue, store: new MemoryJobStore() });
    cleanups.push(() => queue.close(), () => client.close());
    const handle = await client.submit({
      type: "step", payload: { name: "all" }, id: "review-all", idempotencyKey: "review-all", labels: { arch: "arm64" }, maxAttempts: 2,
      metadata: { who: "review" }, priority: 2, signal: new AbortController().signal, startTimeoutMs: 60_000, timeoutMs: 30_000,
      trace: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
      concurrency: { key: "env:prod", limit: 2, strategy: "cancel_running" }, rateLimit: { key: "tenant:acme", units: 2 },
      affinity: { preferred: { cache: { value: "warm", weight: 10 } }, stickyKey: "repo:x", sticky: "soft" },
    });
    expect(handle.priority).toBe(2);
  });

  it.each([
    [{ concurrency: { key: "k", limt: 2 } }, "concurrency.limt", "concurrency.limit"],
    [{ concurrency: { key: "k", stratgy: "wait" } }, "concurrency.stratgy", "concurrency.strategy"],
    [{ rateLimit: { key: "k", unit: 2 } }, "rateLimit.unit", "rateLimit.units"],
    [{ affinity: { prefered: {} } }, "affinity.prefered", "affinity.preferred"],
    [{ affinity: { preferred: { cache: { value: "warm", wieght: 2 } } } }, "affinity.preferred.cache.wieght", "affinity.preferred.cache.weight"],
    [{ affinity: { stickyKey: "x", stiky: "hard" } }, "affinity.stiky", "affinity.sticky"],
    [{ priorty: 1 }, "priorty", "priority"],
  ])("refuses the misspelling in %j, naming %s", async (extra, field, suggestion) => {
    const queue = new MemoryQueue();
    const client = new JobClient({ queue, events: queue });
    cleanups.push(() => queue.close(), () => client.close());
    const error = await rejectionOf(client.submit({ type: "step", payload: null, ...extra } as never));
    expect(error.code).toBe("invalid_argument");
    expect(error.details).toMatchObject({ field, suggestion });
  });
});

describe("delayed × priority × concurrency key (MemoryQueue)", () => {
  it("a delayed priority-1 job shows scheduled, then comes due into its lane ahead of the priority-5 jobs waiting", async () => {
    const { queue, client, dispatcher, started, release, starts, store } = await setup({ slots: 1 });
    await dispatcher.start();
    const blocker = await client.submit({ type: "step", payload: { name: "blocker", hold: true } });
    await started("blocker");
    const late = await client.submit({ type: "step", payload: { name: "late" }, priority: 1, delayMs: 200 });
    expect(late.state).toBe("scheduled");
    expect((await store.get(late.id))?.state).toBe("scheduled");
    expect((await client.list({ state: "scheduled" })).records.map((r) => r.id)).toEqual([late.id]);
    const low = [];
    for (let i = 0; i < 2; i++) low.push(await client.submit({ type: "step", payload: { name: `low${i}` }, priority: 5 }));
    await waitFor(() => queue.info().delayed === 0 && queue.info().ready === 3, { timeoutMs: 5000, what: "the delayed job came due" });
    release("blocker");
    await late.result({ timeoutMs: 5000 });
    await Promise.all([blocker, ...low].map((h) => h.result({ timeoutMs: 5000 })));
    expect(starts()).toEqual(["blocker 1", "late 1", "low0 1", "low1 1"]);
    expect(await store.get(late.id)).toMatchObject({ state: "completed", priority: 1 });
  });

  it("a delayed keyed job holds no key while scheduled, then waits for it when due", async () => {
    const { queue, client, dispatcher, log, started, release, starts } = await setup({ slots: 2 });
    await dispatcher.start();
    const later = await client.submit({ type: "step", payload: { name: "later" }, priority: 2, delayMs: 200, concurrency: { key: "k" } });
    const now = await client.submit({ type: "step", payload: { name: "now", hold: true }, concurrency: { key: "k" } });
    await started("now");
    await waitFor(() => queue.info().delayed === 0, { timeoutMs: 5000, what: "the delayed job came due" });
    await waitFor(() => later.reason?.includes('concurrency key "k"'), { timeoutMs: 5000, what: "the due job waits for its key" });
    expect(later.state).toBe("queued");
    release("now");
    await now.result({ timeoutMs: 5000 });
    await later.result({ timeoutMs: 5000 });
    expect(starts()).toEqual(["now 1", "later 1"]);
    expect(peak(log, ["now", "later"])).toBe(1);
  });

  it("a delayed keyed job cancelled while scheduled never runs and never holds its key", async () => {
    const { client, dispatcher, starts, store } = await setup({ slots: 2 });
    await dispatcher.start();
    const cancelled = await client.submit({ type: "step", payload: { name: "cancelled" }, delayMs: 100, concurrency: { key: "k" } });
    await cancelled.cancel();
    expect((await rejectionOf(cancelled.result({ timeoutMs: 5000 }))).code).toBe("canceled");
    // Due after the cancelled one: it runs only if the cancelled job left the key free.
    const next = await client.submit({ type: "step", payload: { name: "next" }, delayMs: 300, concurrency: { key: "k" } });
    expect(await next.result({ timeoutMs: 5000 })).toBe("next");
    expect(starts()).toEqual(["next 1"]);
    expect((await store.get(cancelled.id))?.state).toBe("cancelled");
    expect((await client.list({ state: "cancelled" })).records.map((r) => r.id)).toEqual([cancelled.id]);
  });
});

describe("rate limit × concurrency key × priority (MemoryQueue)", () => {
  it("a rate-limited keyed job deferred for its tokens says why, leaves its key free and keeps its priority", async () => {
    const { client, dispatcher, starts, store } = await setup({ slots: 2, rateLimits: { keys: { "tenant:a": { max: 1, intervalMs: 3_600_000 } }, maxHoldMs: 0 } });
    await dispatcher.start();
    expect(await (await client.submit({ type: "step", payload: { name: "first" }, rateLimit: { key: "tenant:a" } })).result({ timeoutMs: 5000 })).toBe("first");
    const limited = await client.submit({ type: "step", payload: { name: "limited" }, priority: 1, rateLimit: { key: "tenant:a" }, concurrency: { key: "k" } });
    await waitFor(() => limited.reason?.includes("rate limit `key:tenant:a`"), { timeoutMs: 5000, what: "the limited job says why it waits" });
    expect(limited.state).toBe("unschedulable");
    // Its concurrency key is free while it waits for tokens.
    expect(await (await client.submit({ type: "step", payload: { name: "other" }, concurrency: { key: "k" } })).result({ timeoutMs: 5000 })).toBe("other");
    expect((await store.get(limited.id))?.priority).toBe(1);
    expect(starts()).toEqual(["first 1", "other 1"]);
  });
});
