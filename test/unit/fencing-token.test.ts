import { randomUUID } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import type { JobEnvelope } from "../../src/job/envelope.ts";
import { redrivenEnvelope } from "../../src/job/envelope.ts";
import { fencingToken } from "../../src/job/fencing.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";

const job = (partial: Partial<JobEnvelope> = {}): JobEnvelope => ({
  v: 1, id: randomUUID(), type: "work", payload: {}, attempt: 1, maxAttempts: 2, timeoutMs: 60_000, createdAt: new Date().toISOString(), ...partial,
});

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

describe("fencingToken()", () => {
  it("grows with the attempt, and a redriven job's first attempt outranks its last dead one", () => {
    const first = job({ maxAttempts: 3 });
    expect([1, 2, 3].map((attempt) => fencingToken(first, attempt))).toEqual([1, 2, 3]);
    const redriven = redrivenEnvelope(first, { attempts: 3, reason: "handler_failed", deadLetteredAt: new Date().toISOString() });
    expect(fencingToken(redriven, 1)).toBe(4);
    const twice = redrivenEnvelope(redriven, { attempts: 2, reason: "handler_failed", deadLetteredAt: new Date().toISOString() });
    expect(fencingToken(twice, 1)).toBe(6);
  });
});

describe("Dispatcher and ctx.fencingToken", () => {
  it("hands every attempt a larger token than the one before, across retries and a redrive", async () => {
    const queue = new MemoryQueue();
    const pool = new WorkerPool();
    const dispatcher = new Dispatcher({ queue, events: queue, pool, retry: { baseDelayMs: 1, maxDelayMs: 5, jitter: 0 } });
    cleanups.push(() => dispatcher.close({ signal: AbortSignal.abort() }), () => pool.close(), () => queue.close());
    const seen: Array<{ attempt: number; fencingToken: number }> = [];
    let failuresLeft = 2;
    const transport = new InProcessTransport({
      handlers: {
        work: async (_payload: unknown, ctx) => {
          seen.push({ attempt: ctx.attempt, fencingToken: ctx.fencingToken });
          if (failuresLeft-- > 0) throw new Error("not yet");
          return "done";
        },
      },
      slots: 1,
    });
    pool.add({ admission: "trust", id: "w1", transport, slots: 1 });
    await dispatcher.start();
    const j = job({ maxAttempts: 2 });
    await queue.enqueue(j);
    await waitFor(() => queue.deadLetters().length === 1, { timeoutMs: 5000, what: "the job dead-lettered after 2 attempts" });
    const completed = new Promise((resolve) => dispatcher.once("jobCompleted", resolve));
    await queue.redrive();
    await completed;
    expect(seen).toEqual([
      { attempt: 1, fencingToken: 1 },
      { attempt: 2, fencingToken: 2 },
      { attempt: 1, fencingToken: 3 },
    ]);
  });
});
