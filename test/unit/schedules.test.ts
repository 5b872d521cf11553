import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { JobClient } from "../../src/client/job-client.ts";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { OrchestratorError } from "../../src/errors.ts";
import type { JobEnvelope } from "../../src/job/envelope.ts";
import type { CancelCommand } from "../../src/job/types.ts";
import { MemoryLeadership } from "../../src/queue/leadership.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import { MemoryScheduleStore } from "../../src/schedule/memory-schedule-store.ts";
import { nextTickAfter, planTicks } from "../../src/schedule/schedule-rules.ts";
import { Scheduler } from "../../src/schedule/scheduler.ts";
import { MemoryJobStore } from "../../src/store/memory-job-store.ts";
import type { WorkerTransport } from "../../src/transport/types.ts";
import { rejectionOf } from "../../src/testing/rejection-of.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import { markNotStarted } from "../../src/wire/never-started.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";

const T0 = Date.parse("2026-06-01T00:00:00.000Z");
const closers: Array<() => Promise<unknown>> = [];

beforeEach(() => {
  vi.useFakeTimers({ now: T0, toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
});
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  vi.useRealTimers();
});

/** One deployment in memory: queue, job store, schedule store, election; jobs taken off the queue are collected (never acked). */
async function setup() {
  const queue = new MemoryQueue();
  const store = new MemoryJobStore();
  const schedules = new MemoryScheduleStore();
  const leadership = new MemoryLeadership();
  const client = new JobClient({ queue, events: queue, store, schedules });
  const jobs: JobEnvelope[] = [];
  await queue.consume((delivery) => jobs.push(delivery.job), { prefetch: 100_000 });
  const cancels: CancelCommand[] = [];
  await queue.subscribeCancels((command) => cancels.push(command));
  const scheduler = (name?: string) => {
    const s = new Scheduler({ queue, events: queue, store, schedules, leadership, refreshIntervalMs: 200 });
    s.on("error", ({ error }) => {
      throw new Error(`scheduler ${name ?? ""} reported: ${error.message}`);
    });
    closers.push(() => s.close());
    return s;
  };
  closers.push(() => queue.close(), () => client.close());
  return { queue, store, schedules, leadership, client, jobs, cancels, scheduler };
}

const ticksOf = (jobs: JobEnvelope[]) => jobs.map((j) => j.schedule?.tick);

describe("schedule definitions", () => {
  it("refuses bad definitions with invalid_argument naming the field", async () => {
    const { client } = await setup();
    const job = { type: "build", payload: {} };
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ id: "a", cron: "61 * * * *", job }, "cron"],
      [{ id: "a", cron: "0 2 * * *", timezone: "Mars/Olympus", job }, "timezone"],
      [{ id: "a", cron: "0 2 * * *", everyMs: 1000, job }, "everyMs"],
      [{ id: "a", job }, "cron"],
      [{ id: "a", everyMs: 10, job }, "everyMs"],
      [{ id: "a", everyMs: 1000, timezone: "UTC", job }, "timezone"],
      [{ id: "a", everyMs: 1000, startAt: "2026-06-02", endAt: "2026-06-01", job }, "endAt"],
      [{ id: "a", everyMs: 1000, startAt: "not a date", job }, "startAt"],
      [{ id: "", everyMs: 1000, job }, "id"],
      [{ id: "a", everyMs: 1000 }, "job"],
      [{ id: "a", everyMs: 1000, job: { type: "build" } }, "job.payload"],
      [{ id: "a", everyMs: 1000, job: { ...job, id: "fixed" } }, "job.id"],
      [{ id: "a", everyMs: 1000, job: { ...job, idempotencyKey: "k" } }, "job.idempotencyKey"],
      [{ id: "a", everyMs: 1000, job: { ...job, maxAttempts: 0 } }, "job.maxAttempts"],
      [{ id: "a", everyMs: 1000, job, overlap: "queue" }, "overlap"],
      [{ id: "a", everyMs: 1000, job, missedTicks: "all" }, "missedTicks"],
      [{ id: "a", everyMs: 1000, job, catchupWindowMs: 5 }, "catchupWindowMs"],
      [{ id: "a", everyMs: 1000, job, crons: "* * * * *" }, "crons"],
    ];
    for (const [options, field] of cases) {
      const error = await rejectionOf(client.schedules.create(options as never));
      expect({ field: error.details.field, code: error.code }, JSON.stringify(options)).toEqual({ field, code: "invalid_argument" });
    }
    expect(await client.schedules.list()).toEqual({ schedules: [] });
  });

  it("refuses a taken id on create, replaces it on upsert, and says what is missing without a store", async () => {
    const { client, queue } = await setup();
    await client.schedules.create({ id: "nightly", cron: "0 2 * * *", job: { type: "build", payload: 1 } });
    expect(await rejectionOf(client.schedules.create({ id: "nightly", everyMs: 1000, job: { type: "build", payload: 1 } }))).toMatchObject({
      code: "precondition_failed", details: { reason: "already_exists" },
    });
    const handle = await client.schedules.upsert({ id: "nightly", everyMs: 60_000, job: { type: "build", payload: 2 } });
    expect(await handle.describe()).toMatchObject({ timing: { everyMs: 60_000 }, job: { payload: 2 }, nextTick: T0 + 60_000 });
    const bare = new JobClient({ queue, events: queue });
    expect(await rejectionOf(bare.schedules.create({ id: "x", everyMs: 1000, job: { type: "build", payload: 1 } }))).toMatchObject({ code: "precondition_failed" });
    await bare.close();
  });
});

describe("cron ticks in a time zone", () => {
  const daily = (cron: string, timezone: string, from: string, n: number) => {
    const ticks: string[] = [];
    let at = Date.parse(from);
    for (let i = 0; i < n; i++) {
      at = nextTickAfter({ cron, timezone }, at) as number;
      ticks.push(new Date(at).toISOString());
    }
    return ticks;
  };

  it("reads the expression in its zone", () => {
    expect(daily("0 2 * * *", "Europe/Berlin", "2026-05-31T12:00:00Z", 2)).toEqual(["2026-06-01T00:00:00.000Z", "2026-06-02T00:00:00.000Z"]);
    expect(daily("0 9 * * 1-5", "Asia/Tokyo", "2026-06-05T00:00:00Z", 2)).toEqual(["2026-06-08T00:00:00.000Z", "2026-06-09T00:00:00.000Z"]);
  });

  it("fires a time that daylight saving skips once, after the gap, and a repeated time once", () => {
    // Europe/Berlin springs forward on 2026-03-29 (02:00 → 03:00) and falls back on 2026-10-25 (03:00 → 02:00).
    expect(daily("30 2 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z", 3)).toEqual([
      "2026-03-28T01:30:00.000Z", "2026-03-29T01:00:00.000Z", "2026-03-30T00:30:00.000Z",
    ]);
    expect(daily("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2)).toEqual(["2026-10-25T00:30:00.000Z", "2026-10-26T01:30:00.000Z"]);
    // Hourly across the New York fall-back: 01:00 happens twice, and fires twice (two distinct instants an hour apart).
    expect(daily("0 * * * *", "America/New_York", "2026-11-01T04:30:00Z", 3)).toEqual([
      "2026-11-01T05:00:00.000Z", "2026-11-01T06:00:00.000Z", "2026-11-01T07:00:00.000Z",
    ]);
  });

  it("keeps interval ticks on the epoch grid, or on startAt, and none past endAt", () => {
    expect(nextTickAfter({ everyMs: 60_000 }, T0 + 1)).toBe(T0 + 60_000);
    expect(nextTickAfter({ everyMs: 60_000, startAt: T0 + 15_000 }, T0)).toBe(T0 + 15_000);
    expect(nextTickAfter({ everyMs: 60_000, startAt: T0 + 15_000 }, T0 + 15_000)).toBe(T0 + 75_000);
    expect(nextTickAfter({ everyMs: 60_000, endAt: T0 + 60_000 }, T0 + 60_000)).toBeUndefined();
  });

  it("plans missed ticks by policy, ticks within the catch-up window always", () => {
    const base = { timing: { everyMs: 60_000 }, cursor: T0, paused: false, catchupWindowMs: 120_000 };
    const now = T0 + 10 * 60_000 + 5; // ticks 1..10 due; 9 and 10 within the window
    expect(planTicks({ ...base, missedTicks: "skip" }, now)).toMatchObject({ fire: [T0 + 540_000, T0 + 600_000], skipped: 8, nextTick: T0 + 660_000 });
    expect(planTicks({ ...base, missedTicks: "run_once" }, now)).toMatchObject({ fire: [T0 + 480_000, T0 + 540_000, T0 + 600_000], skipped: 7 });
    expect(planTicks({ ...base, missedTicks: "run_all" }, now).fire).toHaveLength(10);
    expect(planTicks({ ...base, missedTicks: "run_all", paused: true }, now)).toMatchObject({ fire: [], skipped: 0, cursor: T0 });
  });
});

describe("Scheduler (in memory, fake time)", () => {
  it("fires each tick once as a job with a deterministic id and its schedule link, listed by schedule", async () => {
    const { client, jobs, scheduler } = await setup();
    await scheduler().start();
    await client.schedules.create({ id: "every-s", everyMs: 1000, overlap: "allow", job: { type: "build", payload: { ref: "main" }, metadata: { team: "ci" }, priority: 1 } });
    await vi.advanceTimersByTimeAsync(5_050);
    expect(ticksOf(jobs)).toEqual([1, 2, 3, 4, 5].map((s) => T0 + s * 1000));
    expect(jobs[0]).toMatchObject({ id: `schedule:every-s:${T0 + 1000}`, type: "build", payload: { ref: "main" }, schedule: { id: "every-s", tick: T0 + 1000 } });
    const page = await client.list({ schedule: "every-s" });
    expect(page.records).toHaveLength(5);
    expect(page.records[0]).toMatchObject({ metadata: { team: "ci" }, schedule: { id: "every-s" }, priority: 1 });
    expect(jobs[0]?.priority).toBe(1);
    expect(await client.schedules.getHandle("every-s").describe()).toMatchObject({ fired: 5, skipped: 0, lastTick: T0 + 5000, nextTick: T0 + 6000, pending: [] });
  });

  it("overlap skip: a tick while the previous job is unfinished fires nothing; the next after it finished fires", async () => {
    const { client, jobs, store, scheduler } = await setup();
    await scheduler().start();
    const handle = await client.schedules.create({ id: "o", everyMs: 1000, job: { type: "build", payload: 1 } });
    await vi.advanceTimersByTimeAsync(3_050);
    expect(ticksOf(jobs)).toEqual([T0 + 1000]);
    expect(await handle.describe()).toMatchObject({ fired: 1, skipped: 2 });
    const first = jobs[0] as JobEnvelope;
    await store.record({ kind: "finished", jobId: first.id, attempt: 1, fencingToken: 1, started: false, at: Date.now(), outcome: { status: "completed", result: null } });
    await vi.advanceTimersByTimeAsync(1_000);
    expect(ticksOf(jobs)).toEqual([T0 + 1000, T0 + 4000]);
  });

  it("overlap cancel_previous: cancels the unfinished job, then fires; allow fires beside it", async () => {
    const { client, jobs, cancels, scheduler } = await setup();
    await scheduler().start();
    await client.schedules.create({ id: "c", everyMs: 1000, overlap: "cancel_previous", job: { type: "build", payload: 1 } });
    await client.schedules.create({ id: "a", everyMs: 1000, overlap: "allow", job: { type: "build", payload: 1 } });
    await vi.advanceTimersByTimeAsync(3_050);
    expect(jobs.filter((j) => j.schedule?.id === "c").map((j) => j.schedule?.tick)).toEqual([T0 + 1000, T0 + 2000, T0 + 3000]);
    expect(jobs.filter((j) => j.schedule?.id === "a")).toHaveLength(3);
    expect(cancels.map((c) => c.jobId)).toEqual([`schedule:c:${T0 + 1000}`, `schedule:c:${T0 + 2000}`]);
    expect(cancels[0]?.reason).toBe("requested");
  });

  it("missed ticks: skip drops them, run_once fires the latest, run_all fires each; a late tick within the window fires anyway", async () => {
    const { client, jobs, scheduler } = await setup();
    const job = { type: "build", payload: 1 };
    for (const missedTicks of ["skip", "run_once", "run_all"] as const) {
      await client.schedules.create({ id: missedTicks, everyMs: 60_000, overlap: "allow", missedTicks, catchupWindowMs: 60_000, job });
    }
    // No scheduler runs for ten minutes and a half.
    await vi.advanceTimersByTimeAsync(10 * 60_000 + 30_000);
    const s = scheduler();
    const skipped: Array<{ scheduleId: string; count: number; reason: string }> = [];
    s.on("ticksSkipped", (e) => skipped.push(e));
    await s.start();
    await vi.advanceTimersByTimeAsync(10);
    const ticks = (id: string) => jobs.filter((j) => j.schedule?.id === id).map((j) => ((j.schedule?.tick as number) - T0) / 60_000);
    // Tick 10 (30 s late) is within the 60 s window: on time for every policy.
    expect(ticks("skip")).toEqual([10]);
    expect(ticks("run_once")).toEqual([9, 10]);
    expect(ticks("run_all")).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(skipped).toEqual(expect.arrayContaining([{ scheduleId: "skip", count: 9, reason: "missed" }, { scheduleId: "run_once", count: 8, reason: "missed" }]));
    await vi.advanceTimersByTimeAsync(60_000);
    expect(ticks("skip")).toEqual([10, 11]);
  });

  it("a paused schedule fires nothing and does not catch up on resume; an update recomputes the next tick; a deleted one stops", async () => {
    const { client, jobs, scheduler } = await setup();
    await scheduler().start();
    const handle = await client.schedules.create({ id: "p", everyMs: 1000, overlap: "allow", missedTicks: "run_all", job: { type: "build", payload: 1 } });
    await vi.advanceTimersByTimeAsync(1_050);
    await handle.pause();
    await vi.advanceTimersByTimeAsync(3_000);
    expect(ticksOf(jobs)).toEqual([T0 + 1000]);
    await handle.resume();
    await vi.advanceTimersByTimeAsync(1_000);
    expect(ticksOf(jobs)).toEqual([T0 + 1000, T0 + 5000]);
    const updated = await handle.update({ everyMs: 10_000 });
    expect(updated.nextTick).toBe(T0 + 10_000);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(ticksOf(jobs)).toEqual([T0 + 1000, T0 + 5000, T0 + 10_000]);
    await handle.delete();
    await vi.advanceTimersByTimeAsync(20_000);
    expect(jobs).toHaveLength(3);
    expect(await rejectionOf(handle.describe())).toMatchObject({ code: "not_found" });
  });

  it("trigger() fires one job now, also while paused", async () => {
    const { client, jobs, scheduler } = await setup();
    await scheduler().start();
    const handle = await client.schedules.create({ id: "t", cron: "0 2 * * *", timezone: "Europe/Berlin", paused: true, job: { type: "build", payload: 1 } });
    await vi.advanceTimersByTimeAsync(500);
    const jobId = await handle.trigger();
    expect(jobId).toBe(`schedule:t:${T0 + 500}`);
    await vi.advanceTimersByTimeAsync(300);
    expect(jobs.map((j) => j.id)).toEqual([jobId]);
    expect((await handle.describe()).pending).toEqual([]);
  });

  it("hands over between two schedulers: every tick once, none lost or doubled", async () => {
    const { client, jobs, leadership, scheduler } = await setup();
    const [a, b] = [scheduler("a"), scheduler("b")];
    await a.start();
    await b.start();
    await client.schedules.create({ id: "h", everyMs: 1000, overlap: "allow", job: { type: "build", payload: 1 } });
    await vi.advanceTimersByTimeAsync(2_500);
    expect([a.leading, b.leading]).toEqual([true, false]);
    leadership.handOver("schedules");
    await vi.advanceTimersByTimeAsync(2_600);
    expect([a.leading, b.leading]).toEqual([false, true]);
    await a.close();
    await vi.advanceTimersByTimeAsync(1_000);
    expect(ticksOf(jobs)).toEqual([1, 2, 3, 4, 5, 6].map((s) => T0 + s * 1000));
  });

  it("queues a tick decided by a leader that could not queue it (outbox), once", async () => {
    const { client, jobs, queue, store, schedules, leadership } = await setup();
    let failing = true;
    const flaky = Object.assign(Object.create(queue) as MemoryQueue, {
      enqueue: (job: JobEnvelope) => (failing ? Promise.reject(new Error("broker gone")) : queue.enqueue(job)),
    });
    const broken = new Scheduler({ queue: flaky, events: queue, store, schedules, leadership, refreshIntervalMs: 200 });
    const errors: string[] = [];
    broken.on("error", ({ error }) => errors.push(error.message));
    closers.push(() => broken.close());
    await broken.start();
    await client.schedules.create({ id: "x", everyMs: 60_000, job: { type: "build", payload: 1 } });
    await vi.advanceTimersByTimeAsync(60_050);
    expect(errors.length).toBeGreaterThan(0);
    expect((await client.schedules.getHandle("x").describe()).pending).toEqual([{ tick: T0 + 60_000 }]);
    expect((await store.get(`schedule:x:${T0 + 60_000}`))?.state).toBe("queued");
    await broken.close();
    failing = false;
    const next = new Scheduler({ queue, events: queue, store, schedules, leadership, refreshIntervalMs: 200 });
    closers.push(() => next.close());
    await next.start();
    await vi.advanceTimersByTimeAsync(300);
    expect(jobs.map((j) => j.id)).toEqual([`schedule:x:${T0 + 60_000}`]);
    expect((await client.schedules.getHandle("x").describe()).pending).toEqual([]);
  });
});

describe("a schedule's job queued twice (a new leader re-queueing a pending tick)", () => {
  it("runs once across two dispatchers: the second copy's exclusive start is refused", async () => {
    vi.useRealTimers();
    const queue = new MemoryQueue();
    const store = new MemoryJobStore();
    let release: () => void = () => {};
    const released = new Promise<void>((resolve) => (release = resolve));
    const runs: string[] = [];
    const abandoned: string[] = [];
    const handlers = {
      build: async (_payload: unknown, ctx: { jobId: string }) => {
        runs.push(ctx.jobId);
        await released;
        return "built";
      },
    };
    for (const id of ["d1", "d2"]) {
      const pool = new WorkerPool();
      pool.add({ id: `w-${id}`, transport: new InProcessTransport({ handlers, slots: 1 }), slots: 1, admission: "trust" });
      const dispatcher = new Dispatcher({ queue, events: queue, pool, store, dispatcherId: id });
      dispatcher.on("jobAbandoned", ({ job, reason }) => abandoned.push(`${job.id}:${reason}`));
      closers.push(() => pool.close(), () => dispatcher.close({ signal: AbortSignal.abort() }));
      await dispatcher.start();
    }
    closers.push(() => queue.close());
    const jobId = "schedule:twice:1000";
    await store.create({ id: jobId, type: "build", payload: null, maxAttempts: 3, timeoutMs: 60_000, startTimeoutMs: 60_000, schedule: { id: "twice", tick: 1000 } });
    const envelope = (copy: string): JobEnvelope => ({
      v: 1, id: jobId, type: "build", payload: null, attempt: 1, maxAttempts: 3, timeoutMs: 60_000, createdAt: new Date().toISOString(), schedule: { id: "twice", tick: 1000, copy },
    });
    await queue.enqueue(envelope("first-firing"));
    await queue.enqueue(envelope("second-firing"));
    await waitFor(() => abandoned.length === 1 && runs.length === 1).catch((e: unknown) => {
      throw new Error(`runs ${JSON.stringify(runs)} abandoned ${JSON.stringify(abandoned)} ${JSON.stringify(queue.info())}`, { cause: e });
    });
    release();
    await waitFor(async () => (await store.get(jobId))?.state === "completed" && queue.info().ready === 0 && queue.info().unsettled === 0);
    expect(runs).toEqual([jobId]);
    expect(abandoned).toEqual([`${jobId}:superseded`]);
    expect((await store.get(jobId))?.attempts).toHaveLength(1);
  });
});

describe("a schedule's job put back unstarted", () => {
  it("runs when its copy comes back: a start refused by the worker does not lock the copy out", async () => {
    vi.useRealTimers();
    const queue = new MemoryQueue();
    const store = new MemoryJobStore();
    const runs: number[] = [];
    const inner = new InProcessTransport({ handlers: { build: async (_p: unknown, ctx: { attempt: number }) => runs.push(ctx.attempt) }, slots: 1 });
    let refusals = 1;
    const transport: WorkerTransport = {
      execute: (request, options) =>
        refusals-- > 0 ? Promise.reject(markNotStarted(new OrchestratorError("unavailable", "the worker has no session yet"))) : inner.execute(request, options),
      check: (options) => inner.check(options),
      describe: (options) => inner.describe(options),
      close: () => inner.close(),
    };
    const pool = new WorkerPool();
    pool.add({ id: "w1", transport, slots: 1, admission: "trust" });
    const dispatcher = new Dispatcher({ queue, events: queue, pool, store, workerLostDelayMs: 10 });
    closers.push(() => queue.close(), () => pool.close(), () => dispatcher.close({ signal: AbortSignal.abort() }));
    await dispatcher.start();
    const jobId = "schedule:back:1000";
    await store.create({ id: jobId, type: "build", payload: null, maxAttempts: 3, timeoutMs: 60_000, startTimeoutMs: 60_000, schedule: { id: "back", tick: 1000 } });
    await queue.enqueue({
      v: 1, id: jobId, type: "build", payload: null, attempt: 1, maxAttempts: 3, timeoutMs: 60_000, createdAt: new Date().toISOString(), schedule: { id: "back", tick: 1000, copy: "c1" },
    });
    await waitFor(async () => (await store.get(jobId))?.state === "completed");
    expect(runs).toEqual([1]);
    expect(refusals).toBe(-1);
  });
});
