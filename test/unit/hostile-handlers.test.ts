import { describe, expect, it } from "vitest";
import { JobClient } from "../../src/client/job-client.ts";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";

/** Issue 8: one handler cannot stop the others, whatever it throws. */
describe("a handler that throws an error with a huge message", () => {
  it("fails its own job (retried, then dead-lettered with the message cut) while the next job completes", async () => {
    await using queue = new MemoryQueue();
    await using pool = new WorkerPool();
    const huge = "x".repeat(200_000);
    pool.add({
      id: "w1",
      transport: new InProcessTransport({
        handlers: {
          huge: async () => {
            throw new Error(huge);
          },
          fine: async () => "ok",
        },
      }),
    });
    const dispatcher = new Dispatcher({ queue, events: queue, pool, retry: { baseDelayMs: 1, maxDelayMs: 2 } });
    await using _closing = { [Symbol.asyncDispose]: () => dispatcher.close() };
    await dispatcher.start();
    const client = new JobClient({ queue, events: queue });
    const bad = await client.submit({ type: "huge", payload: null, maxAttempts: 2 });
    await expect(bad.result({ timeoutMs: 5000 })).rejects.toMatchObject({ code: "handler_failed" });
    const good = await client.submit({ type: "fine", payload: null });
    expect(await good.result({ timeoutMs: 5000 })).toBe("ok");
    const [letter] = queue.deadLetters();
    expect(letter?.job?.id).toBe(bad.id);
    expect(letter?.reason.length).toBeLessThan(20_000);
    expect(letter?.reason).toMatch(/cut from \d+ characters/);
    await dispatcher.onIdle();
  });
});
