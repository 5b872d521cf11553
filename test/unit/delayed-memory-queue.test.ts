import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { MAX_DELAY_MS } from "../../src/job/due-time.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import type { Delivery } from "../../src/queue/types.ts";
import { contractJob as job } from "../../src/testing/contracts/queue-contract.ts";
import { MAX_TIMER_MS } from "../../src/timers.ts";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

describe("MemoryQueue: jobs due later, on fake time", () => {
  let queue: MemoryQueue;
  let deliveries: Delivery[];

  beforeEach(async () => {
    vi.useFakeTimers();
    queue = new MemoryQueue();
    deliveries = [];
    await queue.consume((d) => deliveries.push(d), { prefetch: 10 });
  });
  afterEach(async () => {
    await queue.close();
    vi.useRealTimers();
  });

  it.each([
    ["3 hours", 3 * HOUR + 17],
    ["two weeks (beyond one timer's ceiling)", 14 * DAY + 1],
    ["90 days, the most", MAX_DELAY_MS],
  ])("delivers a job due in %s at its due time, not a millisecond before", async (_, delayMs) => {
    const due = job({ runAt: Date.now() + delayMs });
    await queue.enqueue(due);
    expect(queue.info().delayed).toBe(1);
    await vi.advanceTimersByTimeAsync(delayMs - 1);
    expect(deliveries).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(deliveries.map((d) => d.job.id)).toEqual([due.id]);
    expect(queue.info().delayed).toBe(0);
  });

  it("orders jobs by due time, not by submit order, over days", async () => {
    const now = Date.now();
    const jobs = [job({ runAt: now + 3 * DAY }), job({ runAt: now + DAY }), job({ runAt: now + MAX_TIMER_MS + 5 }), job({ runAt: now + 2 * DAY })];
    for (const j of jobs) await queue.enqueue(j);
    await vi.advanceTimersByTimeAsync(30 * DAY);
    expect(deliveries.map((d) => d.job.id)).toEqual([jobs[1], jobs[3], jobs[0], jobs[2]].map((j) => j?.id));
  });

  it("retries after a backoff longer than one timer can wait", async () => {
    await queue.enqueue(job());
    await vi.advanceTimersByTimeAsync(0);
    await deliveries[0]?.retry(30 * DAY, "come back next month");
    await vi.advanceTimersByTimeAsync(30 * DAY - 1);
    expect(deliveries).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(deliveries[1]?.attempt).toBe(2);
  });

  it("drops what waits on close", async () => {
    await queue.enqueue(job({ runAt: Date.now() + DAY }));
    await queue.close();
    expect(queue.info().delayed).toBe(0);
    await vi.advanceTimersByTimeAsync(2 * DAY);
    expect(deliveries).toHaveLength(0);
  });
});
