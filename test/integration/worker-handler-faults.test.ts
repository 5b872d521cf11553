import { describe, expect, it } from "vitest";
import { OrchestratorError } from "../../src/errors.ts";
import { GrpcTransport } from "../../src/transport/grpc/grpc-transport.ts";
import type { WorkerJobEvent } from "../../src/job/types.ts";
import { faultyHandlersModule } from "../helpers/faulty-handlers.ts";
import { startWorkerProcess } from "../helpers/worker-process.ts";

/**
 * Issue 8: a handler whose code faults outside its own promise (an unhandled rejection, a throw
 * in a timer) fails its own job with a readable error; the worker process lives on and runs the
 * next jobs. Before, such a rejection killed the worker process (and every job on it).
 */
describe("a worker process whose handler code faults outside the handler's promise", () => {
  it("fails only that job with handler_failed naming the fault, and keeps serving", async () => {
    await using worker = await startWorkerProcess({ handlersModule: faultyHandlersModule, handlersExport: "faultyHandlers", slots: 2 });
    await using transport = new GrpcTransport({ address: worker.address });
    const run = async (type: string, payload: unknown = null): Promise<{ ok: boolean; value?: unknown; error?: OrchestratorError }> => {
      const events: WorkerJobEvent[] = [];
      try {
        const value = await transport.execute(
          { jobId: `${type}-${Math.random()}`, type, payload, attempt: 1, deadline: Date.now() + 20_000 },
          { signal: new AbortController().signal, onEvent: (e) => events.push(e) },
        );
        return { ok: true, value };
      } catch (error) {
        return { ok: false, error: OrchestratorError.from(error) };
      }
    };
    const floating = await run("floatingRejection");
    expect(floating.error?.code).toBe("handler_failed");
    expect(floating.error?.message).toContain("unhandled rejection in the handler's code: floating promise rejected");
    const timer = await run("timerThrow");
    expect(timer.error?.code).toBe("handler_failed");
    expect(timer.error?.message).toContain("uncaught exception in the handler's code: thrown in a timer");
    // A fault after the job ended changes nothing for it, and kills nothing.
    expect(await run("lateRejection")).toEqual({ ok: true, value: "done" });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await run("echo", { still: "alive" })).toEqual({ ok: true, value: { still: "alive" } });
    expect(await Promise.race([worker.exited.then(() => "exited"), Promise.resolve("running")])).toBe("running");
  });
});
