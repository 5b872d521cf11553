import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { nonRetryable, OrchestratorError } from "../../src/errors.ts";
import { cancelError } from "../../src/signals.ts";
import { deferred } from "../../src/testing/deferred.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import type { ExecuteRequest } from "../../src/transport/types.ts";
import type { WorkerJobEvent } from "../../src/job/types.ts";
import type { JobContext } from "../../src/worker/types.ts";
import { rejectionOf } from "../../src/testing/rejection-of.ts";

const request = (type: string, payload: unknown = null, extra: Partial<ExecuteRequest> = {}): ExecuteRequest => ({
  jobId: "job-1",
  type,
  payload,
  attempt: 1,
  deadline: Date.now() + 60_000,
  ...extra,
});

/** Settles (true) or stays pending (false) after the microtasks and timers due now ran. */
async function isSettled(promise: Promise<unknown>): Promise<boolean> {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  await vi.advanceTimersByTimeAsync(0);
  return settled;
}

/** A handler that runs until released or aborted, exposing its context. */
function held() {
  const started = deferred<JobContext>();
  const release = deferred<unknown>();
  const handler = async (_payload: unknown, ctx: JobContext) => {
    started.resolve(ctx);
    return release.promise;
  };
  return { handler, started: started.promise, release: release.resolve };
}

describe("InProcessTransport", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  const run = (transport: InProcessTransport, req: ExecuteRequest, signal = new AbortController().signal) => {
    const events: WorkerJobEvent[] = [];
    const result = transport.execute(req, { signal, onEvent: (event) => events.push(event) });
    result.catch(() => {});
    return { result, events };
  };

  describe("options", () => {
    it.each([
      [{ handlers: {}, slots: 0 }, "`slots`", "0"],
      [{ handlers: { a: "not a function" } }, "`handlers.a`", "a function"],
      [{ handlers: {}, labels: { zone: 1 } }, "`labels.zone`", "a string"],
      [{ handlers: null }, "`handlers`", "an object"],
      [{ handlers: {}, version: "" }, "`version`", "non-empty"],
    ])("rejects %j with invalid_argument naming %s", (options, field, expectation) => {
      const error = (() => {
        try {
          new InProcessTransport(options as never);
        } catch (e) {
          return e as OrchestratorError;
        }
        throw new Error("constructor accepted bad options");
      })();
      expect(error.code).toBe("invalid_argument");
      expect(error.message).toContain(field);
      expect(error.message).toContain(expectation);
    });

    it("describes itself from its options, with defaults of 1 slot, no labels and version 'in-process'", async () => {
      const noop = async () => null;
      expect(await new InProcessTransport({ handlers: { build: noop, test: noop } }).describe()).toEqual({
        slots: 1,
        labels: {},
        jobTypes: ["build", "test"],
        version: "in-process",
      });
      const custom = new InProcessTransport({ handlers: {}, slots: 3, labels: { gpu: "a100" }, version: "2.0.0" });
      expect(await custom.describe()).toEqual({ slots: 3, labels: { gpu: "a100" }, jobTypes: [], version: "2.0.0" });
    });
  });

  describe("execute", () => {
    it("hands the handler a JSON copy of the payload and returns a JSON copy of its result", async () => {
      const payload = { list: [1, 2], when: new Date(0) };
      const transport = new InProcessTransport({
        handlers: {
          mutate: async (p: { list: number[]; when: unknown }) => {
            p.list.push(3);
            return { seen: p, at: new Date(1000), dropped: undefined };
          },
        },
      });
      const result = await run(transport, request("mutate", payload)).result;
      expect(payload.list).toEqual([1, 2]);
      expect(result).toEqual({ seen: { list: [1, 2, 3], when: "1970-01-01T00:00:00.000Z" }, at: "1970-01-01T00:00:01.000Z" });
    });

    it("resolves with undefined when the handler returns nothing, as over gRPC (empty result bytes)", async () => {
      const transport = new InProcessTransport({ handlers: { nothing: async () => undefined } });
      expect(await run(transport, request("nothing")).result).toBeUndefined();
    });

    it.each<[string, () => unknown, string]>([
      ["a cycle", () => { const c: Record<string, unknown> = {}; c.self = c; return c; }, "`result.self` is a reference back to itself"],
      ["a function", () => () => 1, "`result` is a function"],
      ["a Map inside", () => ({ items: [1, new Map([[1, 2]])] }), "`result.items[1]` is a Map"],
      ["a Set", () => new Set([1]), "`result` is a Set"],
      ["a class instance with state", () => ({ user: new (class Account { balance = 3; })() }), "`result.user` is an instance of Account"],
      ["a bigint", () => ({ "odd key": 1n }), '`result["odd key"]` is a bigint'],
      ["NaN", () => [Number.NaN], "`result[0]` is NaN"],
    ])("rejects a result holding %s with non-retryable invalid_argument naming the path", async (_what, make, message) => {
      const transport = new InProcessTransport({ handlers: { bad: async () => make() } });
      const error = await rejectionOf(run(transport, request("bad")).result);
      expect(error.code).toBe("invalid_argument");
      expect(error.retryable).toBe(false);
      expect(error.message).toContain(message);
    });

    it.each<[string, () => unknown, boolean, string]>([
      ["an Error", () => new Error("disk full"), true, "disk full"],
      ["a string", () => "plain string", true, "plain string"],
      ["nonRetryable()", () => nonRetryable("bad payload"), false, "bad payload"],
      ["an Error with an empty message", () => new Error(), true, "Error thrown without a message"],
      ["a plain object", () => ({ code: 42, why: "quota" }), true, 'handler threw {"code":42,"why":"quota"}'],
      ["an object with a null prototype", () => Object.create(null), true, "handler threw an Object with nothing to show"],
      ["undefined", () => undefined, true, "handler threw undefined"],
    ])("turns a thrown %s into handler_failed with a useful message (retryable: %s)", async (_what, make, retryable, message) => {
      const transport = new InProcessTransport({
        handlers: {
          throwsLater: async () => {
            throw make();
          },
          throwsAtOnce: (() => {
            throw make();
          }) as never,
        },
      });
      for (const type of ["throwsLater", "throwsAtOnce"]) {
        const error = await rejectionOf(run(transport, request(type)).result);
        expect(error.code).toBe("handler_failed");
        expect(error.rawMessage).toBe(message);
        expect(error.retryable).toBe(retryable);
      }
    });

    it("rejects an unknown type with not_found and a request without a signal with invalid_argument", async () => {
      const transport = new InProcessTransport({ handlers: {} });
      expect((await rejectionOf(run(transport, request("nope")).result)).code).toBe("not_found");
      const noSignal = transport.execute(request("nope"), { onEvent: () => {} } as never);
      expect((await rejectionOf(noSignal)).code).toBe("invalid_argument");
      const badAttempt = transport.execute(request("nope", null, { attempt: 0 }), { signal: new AbortController().signal, onEvent: () => {} });
      expect((await rejectionOf(badAttempt)).message).toContain("`request.attempt`");
    });

    it("gives the handler its job id, attempt, type, idempotency key, trace and deadline", async () => {
      let seen: JobContext | undefined;
      const transport = new InProcessTransport({ handlers: { ctx: async (_p: unknown, ctx: JobContext) => void (seen = ctx) } });
      const req = request("ctx", null, { attempt: 2, idempotencyKey: "k", trace: { traceparent: "00-a-b-01" } });
      await run(transport, req).result;
      expect(seen).toMatchObject({ jobId: "job-1", attempt: 2, type: "ctx", idempotencyKey: "k", trace: { traceparent: "00-a-b-01" }, deadline: req.deadline });
      expect(seen?.signal.aborted).toBe(false);
      expect(seen?.shuttingDown.aborted).toBe(false);
    });

    it("forwards progress clamped to 0..1 (NaN dropped, as serveWorker does) and log lines in order, ignores them after the call ended, and survives a throwing onEvent", async () => {
      let late: JobContext | undefined;
      const transport = new InProcessTransport({
        handlers: {
          report: async (_p: unknown, ctx: JobContext) => {
            ctx.progress(Number.NaN);
            ctx.progress(-3, "below");
            ctx.log("hello", "stderr");
            ctx.progress(7, "above");
            ctx.log("bye");
            ctx.progress(Number.POSITIVE_INFINITY, Object.create(null));
            ctx.log({ toString: () => { throw new Error("no text"); } } as never, "stdnowhere" as never);
            late = ctx;
            return "ok";
          },
        },
      });
      const { result, events } = run(transport, request("report"));
      expect(await result).toBe("ok");
      late?.progress(0.5, "too late");
      late?.log("too late");
      expect(events).toEqual([
        { kind: "progress", progress: 0, message: "below" },
        { kind: "log", line: "hello", stream: "stderr" },
        { kind: "progress", progress: 1, message: "above" },
        { kind: "log", line: "bye" },
        { kind: "progress", progress: 1, message: "{}" },
        { kind: "log", line: "{}" },
      ]);
      const throwing = transport.execute(request("report"), {
        signal: new AbortController().signal,
        onEvent: () => {
          throw new Error("observer bug");
        },
      });
      expect(await throwing).toBe("ok");
    });

    it.each([
      ["the caller's OrchestratorError", cancelError("requested", "user pressed stop")],
      ["a canceled OrchestratorError for a plain abort()", undefined],
    ])("on abort rejects at once and fires the handler's signal, both with %s", async (_what, reason) => {
      const h = held();
      const transport = new InProcessTransport({ handlers: { wait: h.handler } });
      const controller = new AbortController();
      const { result } = run(transport, request("wait"), controller.signal);
      const ctx = await h.started;
      controller.abort(reason);
      const error = await rejectionOf(result);
      expect(error.code).toBe("canceled");
      if (reason) expect(error).toBe(reason);
      expect(ctx.signal.aborted).toBe(true);
      expect(ctx.signal.reason).toBe(error);
    });

    it("rejects with deadline_exceeded at the deadline and fires the handler's signal with reason timeout", async () => {
      const h = held();
      const transport = new InProcessTransport({ handlers: { wait: h.handler } });
      const { result } = run(transport, request("wait", null, { deadline: Date.now() + 1000 }));
      const ctx = await h.started;
      await vi.advanceTimersByTimeAsync(999);
      expect(ctx.signal.aborted).toBe(false);
      await vi.advanceTimersByTimeAsync(1);
      const error = await rejectionOf(result);
      expect(error.code).toBe("deadline_exceeded");
      expect(error.details.reason).toBe("timeout");
      expect(ctx.signal.reason).toBe(error);
    });

    it("does not start a handler whose deadline already passed", async () => {
      const handler = vi.fn(async () => "ran");
      const transport = new InProcessTransport({ handlers: { late: handler } });
      expect((await rejectionOf(run(transport, request("late", null, { deadline: Date.now() - 1 })).result)).code).toBe("deadline_exceeded");
      expect(handler).not.toHaveBeenCalled();
    });

    it("keeps a deadline beyond setTimeout's 24.8-day range instead of firing it early", async () => {
      const h = held();
      const transport = new InProcessTransport({ handlers: { wait: h.handler } });
      const { result } = run(transport, request("wait", null, { deadline: Date.now() + 3_000_000_000 }));
      await h.started;
      await vi.advanceTimersByTimeAsync(2_999_999_000);
      expect(await isSettled(result)).toBe(false);
      await vi.advanceTimersByTimeAsync(1000);
      expect((await rejectionOf(result)).code).toBe("deadline_exceeded");
    });

    it("refuses a call beyond its slots with resource_exhausted; a call accepted while an aborted handler winds down waits for it", async () => {
      const a = held();
      let concurrent = 0;
      let most = 0;
      const echo = async (p: unknown) => {
        most = Math.max(most, ++concurrent);
        await Promise.resolve();
        concurrent--;
        return p;
      };
      const transport = new InProcessTransport({ handlers: { wait: a.handler, echo } });
      const controller = new AbortController();
      run(transport, request("wait"), controller.signal);
      await a.started;
      expect((await rejectionOf(run(transport, request("echo", 1, { jobId: "job-1b" })).result)).code).toBe("resource_exhausted");
      controller.abort(cancelError("requested"));
      await vi.advanceTimersByTimeAsync(0);
      expect(transport.running).toBe(1);
      // The aborted call gave its slot back: the next one is accepted, not refused, and starts
      // once the aborted handler has returned, so the handlers never outnumber the slots.
      const second = run(transport, request("echo", 2, { jobId: "job-2" })).result;
      expect(await isSettled(second)).toBe(false);
      expect((await rejectionOf(run(transport, request("echo", 3, { jobId: "job-3" })).result)).code).toBe("resource_exhausted");
      a.release("ignored");
      expect(await second).toBe(2);
      expect(transport.running).toBe(0);
      expect(most).toBe(1);
      expect(await run(transport, request("echo", 4)).result).toBe(4);
    });

    it("never starts a call that was aborted while it waited for an aborted handler to return", async () => {
      const a = held();
      const echo = vi.fn(async (p: unknown) => p);
      const transport = new InProcessTransport({ handlers: { wait: a.handler, echo } });
      const first = new AbortController();
      run(transport, request("wait"), first.signal);
      await a.started;
      first.abort(cancelError("requested"));
      const second = new AbortController();
      const waiting = run(transport, request("echo", 2, { jobId: "job-2" }), second.signal).result;
      expect(await isSettled(waiting)).toBe(false);
      second.abort(cancelError("requested"));
      expect((await rejectionOf(waiting)).code).toBe("canceled");
      a.release("ignored");
      await vi.advanceTimersByTimeAsync(0);
      expect(echo).not.toHaveBeenCalled();
      expect(await run(transport, request("echo", 3)).result).toBe(3);
    });
  });

  describe("health and lifecycle", () => {
    it("answers serving, and not_serving while setHealthy(false), still running jobs", async () => {
      const transport = new InProcessTransport({ handlers: { echo: async (p: unknown) => p } });
      expect(await transport.check()).toBe("serving");
      transport.setHealthy(false);
      expect(await transport.check()).toBe("not_serving");
      expect(await run(transport, request("echo", "still")).result).toBe("still");
      transport.setHealthy(true);
      expect(await transport.check()).toBe("serving");
    });

    it("close fires shuttingDown, rejects running calls with worker_lost and answers not_serving after", async () => {
      const h = held();
      const transport = new InProcessTransport({ handlers: { wait: h.handler } });
      const { result } = run(transport, request("wait"));
      const ctx = await h.started;
      await transport.close();
      await transport.close();
      const error = await rejectionOf(result);
      expect(error.code).toBe("worker_lost");
      expect(ctx.shuttingDown.aborted).toBe(true);
      expect((ctx.signal.reason as OrchestratorError).code).toBe("worker_lost");
      expect(transport.closed).toBe(true);
      expect(await transport.check()).toBe("not_serving");
      expect((await rejectionOf(run(transport, request("wait")).result)).code).toBe("unavailable");
      expect((await rejectionOf(transport.describe())).code).toBe("unavailable");
      expect(() => transport.restart()).toThrow(expect.objectContaining({ code: "precondition_failed" }));
    });
  });

  describe("fault simulation", () => {
    it("freeze makes check, describe and new calls hang until thaw; a check's timeout still fires", async () => {
      const handler = vi.fn(async () => "ran");
      const transport = new InProcessTransport({ handlers: { job: handler } });
      transport.freeze();
      const check = transport.check();
      const describeCall = transport.describe();
      const { result } = run(transport, request("job"));
      await vi.advanceTimersByTimeAsync(10_000);
      expect(await isSettled(check)).toBe(false);
      expect(await isSettled(describeCall)).toBe(false);
      expect(await isSettled(result)).toBe(false);
      expect(handler).not.toHaveBeenCalled();
      const bounded = transport.check({ timeoutMs: 2000 });
      bounded.catch(() => {});
      await vi.advanceTimersByTimeAsync(2000);
      expect((await rejectionOf(bounded)).code).toBe("deadline_exceeded");
      transport.thaw();
      expect(await check).toBe("serving");
      expect((await describeCall).slots).toBe(1);
      expect(await result).toBe("ran");
    });

    it("freeze holds back a running handler's events and result and sends them in order on thaw; aborts still end calls", async () => {
      const h = held();
      const transport = new InProcessTransport({ handlers: { wait: h.handler }, slots: 2 });
      const { result, events } = run(transport, request("wait"));
      const ctx = await h.started;
      transport.freeze();
      ctx.progress(0.5, "half");
      ctx.log("working");
      h.release({ done: true });
      await vi.advanceTimersByTimeAsync(0);
      expect(events).toEqual([]);
      expect(await isSettled(result)).toBe(false);

      const other = held();
      const controller = new AbortController();
      const aborted = run(new InProcessTransport({ handlers: { wait: other.handler } }), request("wait"), controller.signal);
      const frozenCall = run(transport, request("wait"), controller.signal);
      controller.abort(cancelError("requested"));
      expect((await rejectionOf(frozenCall.result)).code).toBe("canceled");
      expect((await rejectionOf(aborted.result)).code).toBe("canceled");

      transport.thaw();
      expect(await result).toEqual({ done: true });
      expect(events).toEqual([
        { kind: "progress", progress: 0.5, message: "half" },
        { kind: "log", line: "working" },
      ]);
    });

    it("crash rejects running calls with worker_lost, reports lost to watchers and makes later calls unavailable until restart", async () => {
      const zombie = held();
      const transport = new InProcessTransport({ handlers: { wait: zombie.handler, echo: async (p: unknown) => p } });
      const states: string[] = [];
      transport.watch(() => {
        throw new Error("a broken watcher");
      });
      const unwatch = transport.watch((state) => states.push(state));
      const { result } = run(transport, request("wait"));
      const ctx = await zombie.started;

      transport.crash();
      const error = await rejectionOf(result);
      expect(error.code).toBe("worker_lost");
      expect((ctx.signal.reason as OrchestratorError).code).toBe("worker_lost");
      expect(states).toEqual(["lost"]);
      expect((await rejectionOf(transport.check())).code).toBe("unavailable");
      expect((await rejectionOf(transport.describe())).code).toBe("unavailable");
      expect((await rejectionOf(run(transport, request("echo", 1)).result)).code).toBe("unavailable");

      transport.restart();
      expect(states).toEqual(["lost", "ready"]);
      expect(await transport.check()).toBe("serving");
      expect(transport.running).toBe(0); // the dead process's handler no longer holds a slot
      expect(await run(transport, request("echo", 2)).result).toBe(2);
      zombie.release("from the dead");
      await vi.advanceTimersByTimeAsync(0);
      expect(transport.running).toBe(0);

      unwatch();
      transport.crash();
      expect(states).toEqual(["lost", "ready"]);
    });

    it("restart of a frozen worker ends its hanging calls with worker_lost and serves again", async () => {
      const transport = new InProcessTransport({ handlers: { echo: async (p: unknown) => p } });
      transport.freeze();
      const { result } = run(transport, request("echo", 1));
      const check = transport.check();
      check.catch(() => {});
      transport.restart();
      expect((await rejectionOf(result)).code).toBe("worker_lost");
      expect((await rejectionOf(check)).code).toBe("unavailable");
      expect(await transport.check()).toBe("serving");
      expect(await run(transport, request("echo", 2)).result).toBe(2);
    });
  });
});
