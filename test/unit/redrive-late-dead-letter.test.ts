import { describe, expect, it } from "vitest";
import { redriveDeadLetters } from "../../src/client/redrive.ts";
import { MemoryJobStore } from "../../src/store/memory-job-store.ts";
import type { JobQueue, RedriveOptions, RedriveResult } from "../../src/queue/types.ts";
import type { JobEnvelope } from "../../src/job/envelope.ts";
import { contractRecord } from "../../src/testing/contracts/job-store-contract.ts";

/**
 * The dispatcher records a job dead-lettered, then the broker moves its message to the dead-letter
 * queue: a redrive between the two must not strand the job (record queued, message not moved).
 */
describe("redriving a dead letter still on its way to the queue", () => {
  async function deadLetteredRecord(store: MemoryJobStore): Promise<string> {
    const { record } = await store.create(contractRecord());
    await store.record({ kind: "started", jobId: record.id, attempt: 1, fencingToken: 1, workerId: "w1", dispatcherId: "d1", at: Date.now() });
    await store.record({
      kind: "finished", jobId: record.id, attempt: 1, fencingToken: 1, started: true, at: Date.now(), deadLetter: "handler_failed: boom",
      outcome: { status: "failed", error: { code: "handler_failed", message: "boom", retryable: false } },
    });
    return record.id;
  }

  /** A queue whose dead letter of `id` arrives only after `missesBeforeArrival` redrive calls. */
  function lateQueue(id: string, missesBeforeArrival: number): { queue: JobQueue; calls: Array<readonly string[] | undefined> } {
    const calls: Array<readonly string[] | undefined> = [];
    const queue = {
      async redrive(options?: RedriveOptions): Promise<RedriveResult> {
        calls.push(options?.jobIds);
        if (calls.length <= missesBeforeArrival || !options?.jobIds?.includes(id)) return { redriven: [] };
        return { redriven: [{ id } as JobEnvelope] };
      },
    } as unknown as JobQueue;
    return { queue, calls };
  }

  it("looks again and moves it once it has arrived", async () => {
    const store = new MemoryJobStore();
    const id = await deadLetteredRecord(store);
    const { queue, calls } = lateQueue(id, 2);
    expect(await redriveDeadLetters(queue, store, id)).toEqual({ redriven: [id], missing: [] });
    expect(calls).toEqual([[id], [id], [id]]);
    expect((await store.get(id))?.state).toBe("queued");
  });

  it("reports it missing when it never arrives, after a bounded number of looks", async () => {
    const store = new MemoryJobStore();
    const id = await deadLetteredRecord(store);
    const { queue, calls } = lateQueue(id, Number.POSITIVE_INFINITY);
    expect(await redriveDeadLetters(queue, store, id)).toEqual({ redriven: [], missing: [id] });
    expect(calls.length).toBe(6);
  });
});
