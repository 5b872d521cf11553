import { describe, expect, it } from "vitest";
import type { WorkerJobEvent } from "../../src/job/types.ts";
import { createJobContext } from "../../src/worker/job-context.ts";

const request = { jobId: "j1", type: "build", attempt: 2, deadline: 1_000, idempotencyKey: "k", trace: { traceparent: "00-a-b-01" } };

describe("createJobContext", () => {
  it("carries the attempt's fields and the signals, with a shuttingDown that never fires by default", () => {
    const controller = new AbortController();
    const ctx = createJobContext({ request, signal: controller.signal, onEvent: () => {} });
    expect(ctx).toMatchObject({ jobId: "j1", type: "build", attempt: 2, deadline: 1_000, idempotencyKey: "k", trace: { traceparent: "00-a-b-01" } });
    expect(ctx.trace).not.toBe(request.trace);
    expect(ctx.signal).toBe(controller.signal);
    expect(ctx.shuttingDown.aborted).toBe(false);
    expect(ctx.fencingToken).toBe(2); // no token sent: the attempt
    expect(createJobContext({ request: { ...request, fencingToken: 7 }, signal: controller.signal, onEvent: () => {} }).fencingToken).toBe(7);
  });

  it("clamps progress to 0..1, drops NaN and non-numbers, makes log lines strings, keeps only stdout/stderr streams", () => {
    const events: WorkerJobEvent[] = [];
    const ctx = createJobContext({ request, signal: new AbortController().signal, onEvent: (e) => events.push(e) });
    ctx.progress(Number.NaN);
    ctx.progress("half" as unknown as number);
    ctx.progress(-1, "below");
    ctx.progress(Number.POSITIVE_INFINITY);
    ctx.progress(0.5, 7 as unknown as string);
    ctx.log(42 as unknown as string, "stderr");
    ctx.log("x", "other" as "stdout");
    expect(events).toEqual([
      { kind: "progress", progress: 0, message: "below" },
      { kind: "progress", progress: 1 },
      { kind: "progress", progress: 0.5, message: "7" },
      { kind: "log", line: "42", stream: "stderr" },
      { kind: "log", line: "x" },
    ]);
  });

  it("drops events once the attempt has ended and never throws into the handler", () => {
    let open = true;
    const events: WorkerJobEvent[] = [];
    const ctx = createJobContext({ request, signal: new AbortController().signal, isOpen: () => open, onEvent: (e) => events.push(e) });
    ctx.log("during");
    open = false;
    ctx.log("after");
    ctx.progress(1);
    expect(events).toEqual([{ kind: "log", line: "during" }]);
    const throwing = createJobContext({
      request,
      signal: new AbortController().signal,
      onEvent: () => {
        throw new Error("observer bug");
      },
    });
    expect(() => throwing.progress(0.5)).not.toThrow();
    expect(() => throwing.log("line")).not.toThrow();
  });
});
