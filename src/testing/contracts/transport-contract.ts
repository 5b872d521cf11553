import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrchestratorError } from "../../errors.ts";
import { cancelError, delay } from "../../signals.ts";
import type { ExecuteRequest, WorkerTransport } from "../../transport/types.ts";
import type { WorkerJobEvent } from "../../job/types.ts";
import type { JobHandlers } from "../../worker/types.ts";
import { contractHandlerNames, contractHandlers } from "../contract-handlers.ts";
import type { AbortMarker, ContractHandlerName } from "../contract-handlers.ts";
import { deferred } from "../deferred.ts";
import { waitFor } from "../wait-for.ts";

/** The worker {@link describeTransportContract} asks its factory for. */
export interface TransportContractWorker {
  /** The handlers to host: always {@link contractHandlers}. */
  handlers: JobHandlers;
  /**
   * Their names, for a worker process that imports `contractHandlers` from
   * `@blacktree/orchestrator/testing` itself and hosts these.
   */
  handlerNames: readonly ContractHandlerName[];
  /** Jobs the worker runs at once. */
  slots: number;
  /** Labels the worker must report in `describe()`. */
  labels: Record<string, string>;
}

/** A transport to a running worker, and how to tear both down. */
export interface TransportContractSubject {
  transport: WorkerTransport;
  /** Stops the worker and releases the transport; tolerates a transport the test already closed. */
  dispose(): Promise<void>;
}

/** Starts a worker hosting the contract handlers and returns a transport to it. */
export type TransportContractFactory = (worker: TransportContractWorker) => Promise<TransportContractSubject>;

/** Options of {@link describeTransportContract}. */
export interface TransportContractOptions {
  /** Longest wait for something that must happen. @default 5000 */
  timeoutMs?: number;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: OrchestratorError };

async function outcomeOf(promise: Promise<unknown>): Promise<Outcome> {
  try {
    return { ok: true, value: await promise };
  } catch (error) {
    return { ok: false, error: OrchestratorError.from(error) };
  }
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  const outcome = await outcomeOf(promise);
  return outcome.ok ? "resolved" : outcome.error.code;
}

/**
 * A vitest suite that checks a {@link WorkerTransport} implementation end to end against a
 * worker hosting the {@link contractHandlers}: result round trip, context fields, ordered progress
 * and log events, abort and deadline (the handler's signal fires), failure codes and the
 * retryable flag, unknown types, slots, health check, describe and close. Real time, bounded waits.
 *
 * @example
 * ```ts
 * describeTransportContract("InProcessTransport", async ({ handlers, slots, labels }) => {
 *   const transport = new InProcessTransport({ handlers, slots, labels });
 *   return { transport, dispose: () => transport.close() };
 * });
 * ```
 */
export function describeTransportContract(name: string, factory: TransportContractFactory, options: TransportContractOptions = {}): void {
  const { timeoutMs = 5000 } = options;
  const worker = (slots: number): TransportContractWorker => ({
    handlers: contractHandlers,
    handlerNames: contractHandlerNames,
    slots,
    labels: { suite: "transport-contract", slots: String(slots) },
  });

  describe(`WorkerTransport contract: ${name}`, () => {
    let shared: TransportContractSubject;
    let markers: string;

    beforeAll(async () => {
      markers = await mkdtemp(join(tmpdir(), "blacktree-transport-contract-"));
      shared = await factory(worker(4));
    });
    afterAll(async () => {
      await shared?.dispose();
      if (markers) await rm(markers, { recursive: true, force: true });
    });

    const request = (type: string, payload: unknown, extra: Partial<ExecuteRequest> = {}): ExecuteRequest => ({
      jobId: randomUUID(),
      type,
      payload,
      attempt: 1,
      deadline: Date.now() + 30_000,
      ...extra,
    });

    /** Starts a call; `started` resolves on its first event, `events` collects them all. */
    function run(transport: WorkerTransport, req: ExecuteRequest, signal = new AbortController().signal) {
      const events: WorkerJobEvent[] = [];
      const started = deferred<void>();
      const result = transport.execute(req, {
        signal,
        onEvent: (event) => {
          events.push(event);
          started.resolve();
        },
      });
      result.catch(() => {}); // observed by the test through outcomeOf
      return { result, events, started: started.promise };
    }

    function markerPath(): string {
      return join(markers, `${randomUUID()}.json`);
    }

    async function readMarker(path: string): Promise<AbortMarker> {
      return waitFor(async () => JSON.parse(await readFile(path, "utf8")) as AbortMarker, { timeoutMs, what: `abort marker ${path}` });
    }

    it("resolves with the handler's result as it survives JSON", async () => {
      const payload = { text: "héllo ✓", n: 42, f: 1.5, nested: { list: [1, "two", null, true] }, empty: {} };
      expect(await shared.transport.execute(request("echo", payload), { signal: new AbortController().signal, onEvent: () => {} })).toEqual(payload);
    });

    it("gives the handler the job id, attempt, fencing token, type, idempotency key, trace and deadline", async () => {
      const req = request("context", null, { attempt: 3, fencingToken: 7, idempotencyKey: "idem-1", trace: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" } });
      const { result } = run(shared.transport, req);
      expect(await result).toEqual({
        jobId: req.jobId,
        attempt: 3,
        fencingToken: 7,
        type: "context",
        idempotencyKey: "idem-1",
        trace: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
        deadline: req.deadline,
      });
    });

    it("gives the handler the attempt as its fencing token when the request carries none", async () => {
      const { result } = run(shared.transport, request("context", null, { attempt: 2 }));
      expect(await result).toMatchObject({ attempt: 2, fencingToken: 2 });
    });

    it("reports progress and log events in order before the result, with progress clamped to 0..1", async () => {
      const { result, events } = run(shared.transport, request("progress", { steps: 4 }));
      expect(await result).toEqual({ steps: 4 });
      expect(events).toEqual([
        { kind: "progress", progress: 0, message: "start" },
        { kind: "log", line: "step 1", stream: "stdout" },
        { kind: "progress", progress: 0.25, message: "step 1" },
        { kind: "log", line: "step 2", stream: "stderr" },
        { kind: "progress", progress: 0.5, message: "step 2" },
        { kind: "log", line: "step 3", stream: "stdout" },
        { kind: "progress", progress: 0.75, message: "step 3" },
        { kind: "log", line: "step 4", stream: "stderr" },
        { kind: "progress", progress: 1, message: "step 4" },
        { kind: "progress", progress: 1, message: "done" },
      ]);
    });

    it("keeps the events of concurrent calls apart", async () => {
      const two = run(shared.transport, request("progress", { steps: 2 }));
      const four = run(shared.transport, request("progress", { steps: 4 }));
      expect(await Promise.all([two.result, four.result])).toEqual([{ steps: 2 }, { steps: 4 }]);
      expect(two.events.filter((e) => e.kind === "log").map((e) => (e.kind === "log" ? e.line : ""))).toEqual(["step 1", "step 2"]);
      expect(four.events.filter((e) => e.kind === "log")).toHaveLength(4);
      expect(four.events.at(-1)).toEqual({ kind: "progress", progress: 1, message: "done" });
    });

    it("on abort rejects with the signal's reason and fires the handler's signal", async () => {
      const marker = markerPath();
      const controller = new AbortController();
      const call = run(shared.transport, request("waitForAbort", { marker }), controller.signal);
      await call.started;
      const abortedAt = Date.now();
      controller.abort(cancelError("requested", "stop it"));
      const outcome = await outcomeOf(call.result);
      expect(outcome.ok).toBe(false);
      if (!outcome.ok) expect(outcome.error.code).toBe("canceled");
      expect(Date.now() - abortedAt).toBeLessThan(timeoutMs);
      const fired = await readMarker(marker);
      expect(fired.code).toBe("canceled");
      expect(fired.at).toBeGreaterThanOrEqual(abortedAt - 5);
    });

    it("rejects with the reason of a signal aborted before the call, without running the handler", async () => {
      const marker = markerPath();
      const call = run(shared.transport, request("waitForAbort", { marker }), AbortSignal.abort(cancelError("requested")));
      expect(await codeOf(call.result)).toBe("canceled");
      await delay(100);
      expect(call.events).toEqual([]);
      expect(await codeOf(readFile(marker, "utf8"))).not.toBe("resolved");
    });

    it("rejects with deadline_exceeded at the deadline and fires the handler's signal", async () => {
      const marker = markerPath();
      const start = Date.now();
      const call = run(shared.transport, request("waitForAbort", { marker }, { deadline: start + 300 }));
      expect(await codeOf(call.result)).toBe("deadline_exceeded");
      expect(Date.now() - start).toBeGreaterThanOrEqual(250);
      expect((await readMarker(marker)).code).toBe("deadline_exceeded");
    });

    async function expectHandlerFailed(type: ContractHandlerName, message: string, retryable: boolean): Promise<void> {
      const outcome = await outcomeOf(run(shared.transport, request(type, { message })).result);
      expect(outcome.ok ? "resolved" : outcome.error.code).toBe("handler_failed");
      if (outcome.ok) return;
      expect(outcome.error.message).toContain(message);
      expect(outcome.error.retryable).toBe(retryable);
    }

    it("rejects with handler_failed, the handler's message and retryable when the handler throws", async () => {
      await expectHandlerFailed("fail", "disk full on /var", true);
    });

    it("keeps retryable false when the handler threw nonRetryable()", async () => {
      await expectHandlerFailed("failNonRetryable", "payload.image is required", false);
    });

    it("rejects with non-retryable invalid_argument naming the path when the result cannot be carried as JSON", async () => {
      const outcome = await outcomeOf(run(shared.transport, request("badResult", null)).result);
      if (outcome.ok) throw new Error("expected a rejection");
      expect(outcome.error.code).toBe("invalid_argument");
      expect(outcome.error.retryable).toBe(false);
      expect(outcome.error.message).toContain("`result.big` is a bigint");
    });

    it.each([
      ["an OrchestratorError keeps its code", { kind: "orchestrator:invalid_argument" }, "invalid_argument", "thrown by the handler"],
      ["an OrchestratorError keeps its code (permission_denied)", { kind: "orchestrator:permission_denied" }, "permission_denied", "thrown by the handler"],
      ["an empty Error names itself", { kind: "empty" }, "handler_failed", "Error thrown without a message"],
      ["a plain object reads as JSON", { kind: "object" }, "handler_failed", 'handler threw {"code":"E_QUOTA","left":0}'],
      ["undefined says so", { kind: "undefined" }, "handler_failed", "handler threw undefined"],
    ])("rejects a handler's throw with a useful code and message: %s", async (_what, payload, code, message) => {
      const outcome = await outcomeOf(run(shared.transport, request("throwValue", payload)).result);
      if (outcome.ok) throw new Error("expected a rejection");
      expect(outcome.error.code).toBe(code);
      expect(outcome.error.message).toContain(message);
    });

    it("clamps progress edge values alike: NaN dropped, negatives and -Infinity to 0, above 1 and Infinity to 1", async () => {
      const values = [0.25, "NaN", -0.5, "-Infinity", 1.5, "Infinity", 0];
      const { result, events } = run(shared.transport, request("progressValues", { values }));
      await result;
      expect(events).toEqual([
        { kind: "progress", progress: 0.25, message: "0.25" },
        { kind: "progress", progress: 0, message: "-0.5" },
        { kind: "progress", progress: 0, message: "-Infinity" },
        { kind: "progress", progress: 1, message: "1.5" },
        { kind: "progress", progress: 1, message: "Infinity" },
        { kind: "progress", progress: 0, message: "0" },
      ]);
    });

    it("keeps a log line's stdout/stderr stream and drops any other stream, keeping the line", async () => {
      const { result, events } = run(shared.transport, request("logStreams", { streams: ["stdout", "stderr", null, "stdnowhere"] }));
      await result;
      expect(events).toEqual([
        { kind: "log", line: "line 0", stream: "stdout" },
        { kind: "log", line: "line 1", stream: "stderr" },
        { kind: "log", line: "line 2" },
        { kind: "log", line: "line 3" },
      ]);
    });

    it("rejects with not_found for a job type the worker has no handler for", async () => {
      expect(await codeOf(run(shared.transport, request("no-such-handler", null)).result)).toBe("not_found");
    });

    it("answers the health check with serving", async () => {
      expect(await shared.transport.check({ timeoutMs })).toBe("serving");
    });

    it("describes the worker's slots, labels, job types and version", async () => {
      const description = await shared.transport.describe({ timeoutMs });
      expect(description.slots).toBe(4);
      expect(description.labels).toEqual({ suite: "transport-contract", slots: "4" });
      expect([...description.jobTypes].sort()).toEqual([...contractHandlerNames].sort());
      expect(typeof description.version).toBe("string");
      expect(description.version.length).toBeGreaterThan(0);
    });

    it("refuses a call beyond its slots with resource_exhausted and accepts again once a slot frees", async () => {
      const own = await factory(worker(2));
      try {
        const controllers = [new AbortController(), new AbortController()];
        const calls = controllers.map((c) => run(own.transport, request("waitForAbort", {}), c.signal));
        await Promise.all(calls.map((c) => c.started));
        expect(await codeOf(run(own.transport, request("echo", 1)).result)).toBe("resource_exhausted");
        controllers[0]?.abort(cancelError("requested"));
        expect(await codeOf(calls[0]?.result as Promise<unknown>)).toBe("canceled");
        // The slot frees when the handler returns, which may lag the rejection a little.
        const value = await waitFor(
          async () => {
            const outcome = await outcomeOf(run(own.transport, request("echo", "again")).result);
            if (!outcome.ok && outcome.error.code !== "resource_exhausted") throw outcome.error;
            return outcome.ok && outcome;
          },
          { timeoutMs, what: "a free slot" },
        );
        expect(value.value).toBe("again");
        controllers[1]?.abort(cancelError("requested"));
        expect(await codeOf(calls[1]?.result as Promise<unknown>)).toBe("canceled");
      } finally {
        await own.dispose();
      }
    });

    it("on close rejects running calls with worker_lost", async () => {
      const own = await factory(worker(1));
      try {
        const call = run(own.transport, request("waitForAbort", {}));
        await call.started;
        await own.transport.close();
        expect(await codeOf(call.result)).toBe("worker_lost");
        await own.transport.close(); // idempotent
      } finally {
        await own.dispose();
      }
    });
  });
}
