import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { nonRetryable, OrchestratorError } from "../../src/errors.ts";
import type { WorkerJobEvent } from "../../src/job/types.ts";
import { JobRunner } from "../../src/worker/job-runner.ts";
import type { RunOutcome, RunRequest } from "../../src/worker/job-runner.ts";
import type { JobContext, JobHandlers } from "../../src/worker/types.ts";

/** A handler the test finishes by hand. */
function manual() {
  const calls: Array<{ payload: unknown; ctx: JobContext; resolve: (v: unknown) => void; reject: (e: unknown) => void }> = [];
  const handler = (payload: unknown, ctx: JobContext) => new Promise((resolve, reject) => calls.push({ payload, ctx, resolve, reject }));
  return { handler, calls };
}

function request(jobId: string, extra: Partial<RunRequest> = {}): RunRequest {
  return { jobId, type: "job", payload: { n: 1 }, attempt: 1, timeoutMs: 10_000, deadline: undefined, idempotencyKey: undefined, trace: undefined, ...extra };
}

function sink() {
  const events: WorkerJobEvent[] = [];
  const outcomes: RunOutcome[] = [];
  return { events, outcomes, event: (e: WorkerJobEvent) => events.push(e), done: (o: RunOutcome) => outcomes.push(o) };
}

const settle = () => vi.advanceTimersByTimeAsync(0);

describe("JobRunner", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("runs a handler with its context and reports progress (clamped), logs and one outcome in order", async () => {
    const handlers: JobHandlers = {
      job: async (_payload: never, ctx) => {
        ctx.progress(-3, "start");
        ctx.log("line", "stderr");
        ctx.progress(Number.NaN);
        ctx.progress(0.5);
        return { ok: true };
      },
    };
    const runner = new JobRunner({ handlers, slots: 1, defaultTimeoutMs: 1000 });
    const s = sink();
    runner.start(request("a"), s);
    await settle();
    expect(s.events).toEqual([
      { kind: "progress", progress: 0, message: "start" },
      { kind: "log", line: "line", stream: "stderr" },
      { kind: "progress", progress: 0.5 },
    ]);
    expect(s.outcomes).toEqual([{ ok: true, value: { ok: true } }]);
  });

  it("refuses beyond its slots, unknown types, duplicates and anything once shutting down, without running a handler", async () => {
    const { handler, calls } = manual();
    const runner = new JobRunner({ handlers: { job: handler }, slots: 1, defaultTimeoutMs: 1000 });
    const s = sink();
    runner.start(request("a"), s);
    runner.start(request("a"), s);
    runner.start(request("b"), s);
    runner.start(request("c", { type: "toString" }), s);
    runner.beginShutdown();
    runner.start(request("d"), s);
    const codes = s.outcomes.map((o) => (o.ok ? "ok" : o.error.code));
    expect(codes).toEqual(["precondition_failed", "resource_exhausted", "not_found", "unavailable"]);
    expect(calls).toHaveLength(1);
    expect(calls[0]?.ctx.shuttingDown.aborted).toBe(true);
  });

  it("frees the slot the orchestrator sees on cancel, but starts the next handler only when the cancelled one returns", async () => {
    const { handler, calls } = manual();
    const runner = new JobRunner({ handlers: { job: handler }, slots: 1, defaultTimeoutMs: 10_000 });
    const first = sink();
    const second = sink();
    runner.start(request("a"), first);
    expect(runner.cancel("a", 1, "requested", "stop")).toBe(true);
    expect(calls[0]?.ctx.signal.reason).toMatchObject({ code: "canceled", details: { reason: "requested" } });
    runner.start(request("b"), second);
    expect(second.outcomes).toEqual([]);
    expect(calls).toHaveLength(1);
    expect(runner.running).toBe(1);
    calls[0]?.resolve("finished anyway");
    await settle();
    // An abort wins over what the handler did after it.
    expect(first.outcomes).toEqual([{ ok: false, error: expect.objectContaining({ code: "canceled" }) }]);
    expect(calls).toHaveLength(2);
    calls[1]?.resolve(2);
    await settle();
    expect(second.outcomes).toEqual([{ ok: true, value: 2 }]);
  });

  it("settles a job cancelled while it waits for a slot without running it", async () => {
    const { handler, calls } = manual();
    const runner = new JobRunner({ handlers: { job: handler }, slots: 1, defaultTimeoutMs: 10_000 });
    const waiting = sink();
    runner.start(request("a"), sink());
    runner.cancel("a", 1, "requested");
    runner.start(request("b"), waiting);
    expect(runner.cancel("b", 0, "requested")).toBe(true);
    expect(waiting.outcomes).toEqual([{ ok: false, error: expect.objectContaining({ code: "canceled" }) }]);
    calls[0]?.resolve(1);
    await settle();
    expect(calls).toHaveLength(1);
    expect(runner.size).toBe(0);
  });

  it("aborts at the deadline with deadline_exceeded and shows the given deadline in the context", async () => {
    const { handler, calls } = manual();
    const runner = new JobRunner({ handlers: { job: handler }, slots: 1, defaultTimeoutMs: 60_000 });
    const s = sink();
    runner.start(request("a", { timeoutMs: 500, deadline: 1234 }), s);
    expect(calls[0]?.ctx.deadline).toBe(1234);
    await vi.advanceTimersByTimeAsync(499);
    expect(calls[0]?.ctx.signal.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(calls[0]?.ctx.signal.reason).toMatchObject({ code: "deadline_exceeded", details: { reason: "timeout" } });
    calls[0]?.reject(calls[0].ctx.signal.reason);
    await settle();
    expect(s.outcomes).toEqual([{ ok: false, error: expect.objectContaining({ code: "deadline_exceeded", retryable: true }) }]);
  });

  it("applies the default timeout to a job that carries none", async () => {
    const { handler, calls } = manual();
    const runner = new JobRunner({ handlers: { job: handler }, slots: 1, defaultTimeoutMs: 2000 });
    runner.start(request("a", { timeoutMs: 0 }), sink());
    expect(calls[0]?.ctx.deadline).toBe(Date.now() + 2000);
    await vi.advanceTimersByTimeAsync(2000);
    expect(calls[0]?.ctx.signal.aborted).toBe(true);
  });

  it("fails the job, never the runner, when a handler throws, keeping nonRetryable's flag", async () => {
    const handlers: JobHandlers = {
      sync: () => {
        throw new Error("sync boom");
      },
      async: async () => {
        throw nonRetryable("bad input");
      },
      odd: async () => {
        throw "a string";
      },
    };
    const runner = new JobRunner({ handlers, slots: 3, defaultTimeoutMs: 1000 });
    const s = sink();
    runner.start(request("a", { type: "sync" }), s);
    runner.start(request("b", { type: "async" }), s);
    runner.start(request("c", { type: "odd" }), s);
    await settle();
    expect(s.outcomes.map((o) => !o.ok && [o.error.code, o.error.rawMessage, o.error.retryable])).toEqual([
      ["handler_failed", "sync boom", true],
      ["handler_failed", "bad input", false],
      ["handler_failed", "a string", true],
    ]);
  });

  it("reports a job aborted by shutdown as worker_lost so the orchestrator retries it, and resolves onIdle when all settled", async () => {
    const { handler, calls } = manual();
    const runner = new JobRunner({ handlers: { job: handler }, slots: 2, defaultTimeoutMs: 10_000 });
    const s = sink();
    runner.start(request("a"), s);
    const idle = vi.fn();
    void runner.onIdle().then(idle);
    runner.abortAll("shutdown");
    expect(calls[0]?.ctx.signal.reason).toMatchObject({ code: "canceled", details: { reason: "shutdown" } });
    calls[0]?.reject(calls[0].ctx.signal.reason);
    await settle();
    expect(s.outcomes).toEqual([{ ok: false, error: expect.objectContaining({ code: "worker_lost", retryable: true }) }]);
    expect(idle).toHaveBeenCalled();
  });

  it("aborts only the jobs of one origin with worker_lost, and ignores a throwing sink", async () => {
    const { handler, calls } = manual();
    const runner = new JobRunner({ handlers: { job: handler }, slots: 2, defaultTimeoutMs: 10_000 });
    const lostSession = {};
    const throwing = { event: () => {}, done: () => { throw new OrchestratorError("internal", "stream gone"); } };
    runner.start(request("a"), throwing, lostSession);
    runner.start(request("b"), sink(), {});
    runner.abortOrigin(lostSession, "worker_lost", "session broke");
    expect(calls[0]?.ctx.signal.reason).toMatchObject({ code: "worker_lost" });
    expect(calls[1]?.ctx.signal.aborted).toBe(false);
    calls[0]?.reject(new Error("whatever"));
    await settle();
    expect(runner.size).toBe(1);
  });
});
