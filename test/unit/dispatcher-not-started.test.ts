import { randomUUID } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import type { DispatcherEvents } from "../../src/dispatcher/types.ts";
import { OrchestratorError } from "../../src/errors.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import type { ExecuteOptions, ExecuteRequest } from "../../src/transport/types.ts";
import { markNotStarted } from "../../src/wire/never-started.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { FakeTransport } from "../helpers/fake-transport.ts";

/** A worker that refuses its first `refusals` jobs before starting them (as a worker whose session cannot open, or with no free slot), then runs them. */
class RefusingTransport extends FakeTransport {
  readonly attempts: number[] = [];
  #refusals: number;
  readonly #error: OrchestratorError;

  constructor(refusals: number, error: OrchestratorError) {
    super();
    this.#refusals = refusals;
    this.#error = error;
  }

  override execute(request: ExecuteRequest, _options: ExecuteOptions): Promise<unknown> {
    this.attempts.push(request.attempt);
    if (this.#refusals-- > 0) return Promise.reject(this.#error);
    return Promise.resolve({ ranAttempt: request.attempt });
  }
}

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

async function run(transport: RefusingTransport) {
  const queue = new MemoryQueue();
  const pool = new WorkerPool();
  pool.add({ id: "w1", transport, admission: "trust" });
  const dispatcher = new Dispatcher({ queue, events: queue, pool, retry: { baseDelayMs: 1, maxDelayMs: 5, jitter: 0 } });
  cleanups.push(() => dispatcher.close({ signal: AbortSignal.abort() }), () => pool.close(), () => queue.close());
  const seen: Array<[string, unknown]> = [];
  for (const event of ["jobDeferred", "jobRetrying", "jobCompleted", "jobFailed"] as const) {
    dispatcher.on(event, (payload: DispatcherEvents[typeof event][0]) => seen.push([event, "reason" in payload ? payload.reason : payload.attempt]));
  }
  const completed = new Promise<DispatcherEvents["jobCompleted"][0]>((resolve) => dispatcher.once("jobCompleted", resolve));
  await dispatcher.start();
  await queue.enqueue({ v: 1, id: randomUUID(), type: "work", payload: {}, attempt: 1, maxAttempts: 2, timeoutMs: 60_000, createdAt: new Date().toISOString() });
  return { completed: await completed, seen };
}

describe("Dispatcher and jobs that never started", () => {
  it.each([
    ["no session could be opened", new OrchestratorError("unavailable", "nothing listens on 127.0.0.1:9 (connection refused)", { details: { connectFailure: "refused" } })],
    ["the worker had no free slot", new OrchestratorError("resource_exhausted", "all 2 slots of this worker are busy")],
  ])("puts a job back without spending an attempt when %s, however often", async (_name, error) => {
    // Three refusals with maxAttempts 2: had they counted, the job would have been dead-lettered.
    const transport = new RefusingTransport(3, markNotStarted(error));
    const { completed, seen } = await run(transport);
    expect(completed).toMatchObject({ attempt: 1, result: { ranAttempt: 1 } });
    expect(transport.attempts).toEqual([1, 1, 1, 1]);
    expect(seen).toEqual([["jobDeferred", "not_started"], ["jobDeferred", "not_started"], ["jobDeferred", "not_started"], ["jobCompleted", 1]]);
  });

  it("still spends an attempt on a failure that may have come after the job started", async () => {
    const transport = new RefusingTransport(1, new OrchestratorError("worker_lost", "lost the worker mid-job"));
    const { completed, seen } = await run(transport);
    expect(completed.attempt).toBe(2);
    expect(seen.map(([event]) => event)).toEqual(["jobRetrying", "jobCompleted"]);
  });
});
