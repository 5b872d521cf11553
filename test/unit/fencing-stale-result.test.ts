import { afterEach, describe, expect, it } from "vitest";
import { JobClient } from "../../src/client/job-client.ts";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import type { Consumer, Delivery, JobQueue } from "../../src/queue/types.ts";
import { MemoryJobStore } from "../../src/store/memory-job-store.ts";
import { deferred } from "../../src/testing/deferred.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import type { JobContext } from "../../src/worker/types.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup().catch(() => {});
});

/**
 * `memory` as a dispatcher behind a black-holed link sees it: its deliveries never learn that the
 * queue took them back (no `signal`), and `lose()` hands every delivery it holds to the other
 * consumers, as the broker does when it gives up on a silent connection.
 */
function blackHoledQueue(memory: MemoryQueue): JobQueue & { lose(): Promise<void> } {
  let consumer: Consumer | undefined;
  return {
    enqueue: (job, options) => memory.enqueue(job, options),
    close: async () => {},
    consume: async (handler, options) => {
      consumer = await memory.consume((delivery: Delivery) => {
        handler({
          get job() { return delivery.job; },
          get attempt() { return delivery.attempt; },
          get redelivered() { return delivery.redelivered; },
          get settled() { return delivery.settled; },
          ack: () => delivery.ack(),
          retry: (delayMs, reason) => delivery.retry(delayMs, reason),
          deadLetter: (reason) => delivery.deadLetter(reason),
        });
      }, options);
      return consumer;
    },
    lose: async () => {
      await consumer?.cancel();
    },
  };
}

describe("fencing: a stale attempt's late result", () => {
  it("leaves the record and the handle with the newer attempt's outcome when it arrives after the newer attempt finished", async () => {
    const memory = new MemoryQueue();
    memory.on("error", () => {});
    const store = new MemoryJobStore();
    const tokens: Array<{ who: string; attempt: number; fencingToken: number }> = [];
    const oldRunStarted = deferred<void>();
    const releaseOldRun = deferred<void>();
    // Dispatcher A, behind a black-holed link: its handler does not stop (it never learns of the
    // loss) and ends late, after the newer attempt finished on B.
    const stale = blackHoledQueue(memory);
    const poolA = new WorkerPool();
    const slowHandler = async (_payload: unknown, ctx: JobContext) => {
      tokens.push({ who: "A", attempt: ctx.attempt, fencingToken: ctx.fencingToken });
      oldRunStarted.resolve();
      await releaseOldRun.promise;
      return "old";
    };
    poolA.add({ id: "wa", admission: "trust", slots: 1, transport: new InProcessTransport({ handlers: { deploy: slowHandler }, slots: 1 }) });
    const a = new Dispatcher({ queue: stale, events: memory, pool: poolA, store, dispatcherId: "a" });
    a.on("error", () => {});
    cleanups.push(() => a.close({ signal: AbortSignal.abort() }), () => poolA.close());
    await a.start();
    const client = new JobClient({ queue: memory, events: memory, store });
    cleanups.push(() => client.close(), () => memory.close());
    const handle = await client.submit({ type: "deploy", payload: null, maxAttempts: 5 });
    await oldRunStarted.promise;

    // The broker gives up on A's link: the job goes to B, which runs attempt 2 to the end.
    const poolB = new WorkerPool();
    const fastHandler = async (_payload: unknown, ctx: JobContext) => {
      tokens.push({ who: "B", attempt: ctx.attempt, fencingToken: ctx.fencingToken });
      return "new";
    };
    poolB.add({ id: "wb", admission: "trust", slots: 1, transport: new InProcessTransport({ handlers: { deploy: fastHandler }, slots: 1 }) });
    const b = new Dispatcher({ queue: memory, events: memory, pool: poolB, store, dispatcherId: "b" });
    b.on("error", () => {});
    cleanups.push(() => b.close({ signal: AbortSignal.abort() }), () => poolB.close());
    await b.start();
    const bCompleted = new Promise((resolve) => b.once("jobCompleted", resolve));
    await stale.lose();
    await bCompleted;
    expect(await handle.result()).toBe("new");

    // Now A's attempt 1 ends and tries to record and publish "old", with its smaller token.
    const aEnded = new Promise((resolve) => a.once("jobAbandoned", resolve));
    releaseOldRun.resolve();
    await aEnded;
    await waitFor(async () => (await store.get(handle.id))?.state === "completed");
    expect(tokens).toEqual([
      { who: "A", attempt: 1, fencingToken: 1 },
      { who: "B", attempt: 2, fencingToken: 2 },
    ]);
    expect(await store.get(handle.id)).toMatchObject({ state: "completed", result: "new", fencingToken: 2 });
    expect(handle.state).toBe("completed");
    expect(await handle.result()).toBe("new");
    // A handle made from the record (as another process gets one) has the newer outcome too.
    const reader = new JobClient({ queue: memory, events: memory, store });
    cleanups.push(() => reader.close());
    const read = await reader.get(handle.id);
    expect(read?.state).toBe("completed");
    expect(await read?.result()).toBe("new");
  });
});
