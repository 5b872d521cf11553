import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { JobClient } from "../../src/client/job-client.ts";
import type { JobHandleStateEvent } from "../../src/client/types.ts";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { MAX_DELAY_MS } from "../../src/job/due-time.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import { MemoryJobStore } from "../../src/store/memory-job-store.ts";
import { rejectionOf } from "../../src/testing/rejection-of.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

const cleanups: Array<() => Promise<unknown>> = [];
beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
  vi.useRealTimers();
});

/** Lets deliveries, events and timers due now run. */
const settle = () => vi.advanceTimersByTimeAsync(0);

/** A queue, a client (with a store when asked) and, unless `dispatcher: false`, a dispatcher whose worker counts its runs. */
async function setup(options: { store?: boolean; cancelRetentionMs?: number; dispatcher?: boolean } = {}) {
  const cancelRetentionMs = options.cancelRetentionMs ?? DAY;
  const queue = new MemoryQueue({ cancelRetentionMs });
  const store = options.store === true ? new MemoryJobStore() : undefined;
  const ran: string[] = [];
  const client = new JobClient({ queue, events: queue, ...(store === undefined ? {} : { store, storePollIntervalMs: HOUR }) });
  cleanups.push(() => queue.close(), () => client.close());
  const startDispatcher = async () => {
    const pool = new WorkerPool();
    const handlers = {
      build: async (payload: { tag: string }, ctx: { jobId: string }) => {
        ran.push(ctx.jobId);
        return { image: payload.tag };
      },
    };
    pool.add({ id: "w1", transport: new InProcessTransport({ handlers, slots: 4 }), slots: 4, admission: "trust" });
    const dispatcher = new Dispatcher({ queue, events: queue, pool, cancelRetentionMs, ...(store === undefined ? {} : { store }) });
    dispatcher.on("error", () => {});
    cleanups.push(() => pool.close(), () => dispatcher.close({ signal: AbortSignal.abort() }));
    await dispatcher.start();
    return dispatcher;
  };
  if (options.dispatcher !== false) await startDispatcher();
  return { queue, client, store, ran, startDispatcher };
}

describe("submit({ runAt | delayMs })", () => {
  it("refuses what is not a due time, naming the field, as a rejected promise", async () => {
    const { client } = await setup({ dispatcher: false });
    const now = Date.now();
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ delayMs: -1 }, /`delayMs` to be an integer from 0 to 7776000000/],
      [{ delayMs: 1.5 }, /`delayMs`/],
      [{ delayMs: MAX_DELAY_MS + 1 }, /`delayMs`/],
      [{ runAt: now + MAX_DELAY_MS + 1 }, /`runAt` to be at most 7776000000 ms \(90 days\) ahead/],
      [{ runAt: "tomorrow" }, /`runAt` to be a Date, epoch milliseconds or an ISO 8601 date-time with a zone/],
      [{ runAt: "2026-12-24T18:00:00" }, /`runAt`.*with a zone/],
      [{ runAt: new Date(Number.NaN) }, /`runAt`/],
      [{ runAt: 1.5 }, /`runAt`/],
      [{ runAt: { at: now } }, /`runAt`/],
      [{ runAt: now + 1000, delayMs: 1000 }, /`runAt` to be given without `delayMs`/],
    ];
    for (const [fields, message] of cases) {
      const submitted = client.submit({ type: "build", payload: { tag: "a" }, ...fields } as never);
      const error = await rejectionOf(submitted);
      expect(error.code, JSON.stringify(fields)).toBe("invalid_argument");
      expect(error.message).toMatch(message);
    }
  });

  it("takes a Date, epoch milliseconds, an ISO 8601 string with a zone, or a delay, to the millisecond", async () => {
    const { client } = await setup({ dispatcher: false });
    const now = Date.now();
    const iso = new Date(now + 5 * DAY + 123).toISOString().replace("Z", "+00:00");
    const handles = await Promise.all([
      client.submit({ type: "build", payload: { tag: "a" }, runAt: new Date(now + HOUR) }),
      client.submit({ type: "build", payload: { tag: "b" }, runAt: now + 2 * HOUR + 7 }),
      client.submit({ type: "build", payload: { tag: "c" }, runAt: iso }),
      client.submit({ type: "build", payload: { tag: "d" }, delayMs: 3 * DAY + 1 }),
      client.submit({ type: "build", payload: { tag: "e" }, runAt: now - DAY }),
      client.submit({ type: "build", payload: { tag: "f" }, delayMs: 0 }),
    ]);
    expect(handles.map((h) => h.runAt)).toEqual([now + HOUR, now + 2 * HOUR + 7, now + 5 * DAY + 123, now + 3 * DAY + 1, undefined, undefined]);
    expect(handles.map((h) => h.state)).toEqual(["scheduled", "scheduled", "scheduled", "scheduled", "queued", "queued"]);
  });
});

describe("a job due later, on fake time", () => {
  it("waits two weeks as scheduled (handle and record), runs at its due time, then moves on", async () => {
    const { client, store, ran } = await setup({ store: true });
    const runAt = Date.now() + 14 * DAY;
    const handle = await client.submit({ type: "build", payload: { tag: "v1" }, runAt, startTimeoutMs: 1000 });
    const states: JobHandleStateEvent["state"][] = [];
    handle.on("state", (event) => states.push(event.state));
    expect(handle).toMatchObject({ state: "scheduled", runAt });
    expect(await store?.get(handle.id)).toMatchObject({ state: "scheduled", runAt, startBy: runAt + 1000 });
    expect((await client.list({ state: "scheduled" })).records.map((r) => r.id)).toEqual([handle.id]);

    await vi.advanceTimersByTimeAsync(14 * DAY - 1);
    expect(ran).toEqual([]);
    expect(handle.state).toBe("scheduled");
    // Its start timeout (1 s) counts from its due time, not from the submit two weeks ago.
    await vi.advanceTimersByTimeAsync(1);
    await settle();
    expect(await handle.result()).toEqual({ image: "v1" });
    expect(ran).toEqual([handle.id]);
    expect(states).toEqual(["queued", "running", "completed"]);
    const record = await store?.get(handle.id);
    expect(record).toMatchObject({ state: "completed", runAt });
    expect(record?.attempts[0]?.startedAt).toBeGreaterThanOrEqual(runAt);
    // A handle got later from the store shows when it was due.
    expect((await client.get(handle.id))?.runAt).toBe(runAt);
  });

  it("never runs a job cancelled while it waits, with a store: the record says cancelled at once, and decides", async () => {
    const { client, store, ran } = await setup({ store: true, cancelRetentionMs: HOUR });
    const submitted = await client.submit({ type: "build", payload: { tag: "v1" }, delayMs: 3 * DAY });
    const kept = await client.submit({ type: "build", payload: { tag: "v2" }, delayMs: 3 * DAY });
    await vi.advanceTimersByTimeAsync(DAY);
    // Cancelled from another process that shares only the store: its cancel command never
    // reaches this dispatcher, so only the record can stop the job.
    const elsewhere = new MemoryQueue();
    const other = new JobClient({ queue: elsewhere, events: elsewhere, store: store as MemoryJobStore });
    cleanups.push(() => elsewhere.close(), () => other.close());
    const handle = await other.get(submitted.id);
    expect(handle).toMatchObject({ state: "scheduled", runAt: submitted.runAt });
    await handle?.cancel("requested", { message: "release postponed" });
    expect(await rejectionOf(handle?.result() as Promise<unknown>)).toMatchObject({ code: "canceled", message: expect.stringContaining("release postponed") });
    expect(handle?.state).toBe("cancelled");
    expect(await store?.get(submitted.id)).toMatchObject({ state: "cancelled", cancel: { reason: "requested", message: "release postponed" } });
    await vi.advanceTimersByTimeAsync(3 * DAY);
    expect(await kept.result()).toEqual({ image: "v2" });
    expect(ran).toEqual([kept.id]);
    expect((await store?.get(submitted.id))?.state).toBe("cancelled");
    // The dispatcher that took it published the recorded outcome: the submitter's handle ends too.
    expect(await rejectionOf(submitted.result())).toMatchObject({ code: "canceled" });
  });

  it("never runs a job cancelled while it waits, without a store, on a dispatcher started after the cancel's retention", async () => {
    const { client, queue, ran, startDispatcher } = await setup({ cancelRetentionMs: HOUR, dispatcher: false });
    const handle = await client.submit({ type: "build", payload: { tag: "v1" }, delayMs: 2 * DAY });
    const kept = await client.submit({ type: "build", payload: { tag: "v2" }, delayMs: 2 * DAY });
    await handle.cancel();
    expect(await rejectionOf(handle.result())).toMatchObject({ code: "canceled" });
    // The dispatcher starts a day after the cancel (its retention is an hour), before the jobs are due.
    await vi.advanceTimersByTimeAsync(DAY);
    await startDispatcher();
    await vi.advanceTimersByTimeAsync(DAY + 1);
    expect(await kept.result()).toEqual({ image: "v2" });
    expect(ran).toEqual([kept.id]);
    expect(queue.info()).toMatchObject({ ready: 0, delayed: 0, unsettled: 0 });
  });
});
