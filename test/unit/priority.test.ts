import { afterEach, describe, expect, it } from "vitest";
import { JobClient } from "../../src/client/job-client.ts";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { delay } from "../../src/signals.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import { LanePicker } from "../../src/queue/lanes.ts";
import { MemoryJobStore } from "../../src/store/memory-job-store.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe("LanePicker", () => {
  it("picks the highest lane waiting, and a lower one once it was passed over agingPicks times", () => {
    const picker = new LanePicker(3);
    const all = () => true;
    expect(Array.from({ length: 8 }, () => picker.pick(all))).toEqual([0, 0, 0, 1, 2, 3, 4, 0]);
    expect(picker.pick(() => false)).toBe(-1);
    expect(new LanePicker(3).pick((lane) => lane === 4)).toBe(4);
  });

  it("does not age a lane that had nothing waiting", () => {
    const picker = new LanePicker(2);
    for (let i = 0; i < 5; i++) expect(picker.pick((lane) => lane === 0)).toBe(0);
    expect(picker.pick((lane) => lane === 0 || lane === 4)).toBe(0);
    expect(picker.pick((lane) => lane === 0 || lane === 4)).toBe(0);
    expect(picker.pick((lane) => lane === 0 || lane === 4)).toBe(4);
  });
});

describe("priority on the in-memory path", () => {
  async function setup(slots: number) {
    const queue = new MemoryQueue();
    const store = new MemoryJobStore();
    const pool = new WorkerPool();
    const started: Array<{ n: number; priority: number }> = [];
    const handlers = {
      work: async (payload: { n: number; ms: number }) => {
        await delay(payload.ms);
        return payload.n;
      },
    };
    pool.add({ id: "w1", transport: new InProcessTransport({ handlers, slots }), slots });
    const dispatcher = new Dispatcher({ queue, events: queue, pool });
    dispatcher.on("jobStarted", ({ job }) => started.push({ n: (job.payload as { n: number }).n, priority: job.priority ?? 3 }));
    const client = new JobClient({ queue, events: queue, store });
    cleanups.push(() => queue.close(), () => pool.close(), () => dispatcher.close({ signal: AbortSignal.abort() }), () => client.close());
    return { client, dispatcher, started, store };
  }

  it.each([[0], [6], [1.5], ["high"], [Number.NaN]])("refuses priority %s with invalid_argument naming it", async (priority) => {
    const queue = new MemoryQueue();
    const client = new JobClient({ queue, events: queue });
    cleanups.push(() => queue.close(), () => client.close());
    await expect(client.submit({ type: "work", payload: null, priority } as never)).rejects.toMatchObject({
      code: "invalid_argument",
      details: { field: "priority" },
    });
  });

  it("starts a high-priority job in the next free slot behind 1,000 low ones, and records its priority", async () => {
    const { client, dispatcher, started, store } = await setup(2);
    for (let n = 0; n < 1000; n++) await client.submit({ type: "work", payload: { n, ms: 5 }, priority: 5 });
    await dispatcher.start();
    await waitFor(() => started.length >= 4, { timeoutMs: 5000, what: "low jobs running" });
    const high = await client.submit({ type: "work", payload: { n: -1, ms: 1 }, priority: 1 });
    const before = started.length;
    await high.result({ timeoutMs: 5000 });
    expect(started.findIndex((s) => s.n === -1)).toBe(before);
    expect(high.priority).toBe(1);
    expect((await store.get(high.id))?.priority).toBe(1);
    expect((await client.get(high.id))?.priority).toBe(1);
  });

  it("defaults to priority 3, written nowhere", async () => {
    const { client, store } = await setup(1);
    const handle = await client.submit({ type: "work", payload: { n: 1, ms: 1 } });
    expect(handle.priority).toBe(3);
    expect((await store.get(handle.id))?.priority).toBeUndefined();
  });
});
