import { contractHandlers } from "../../src/testing/contract-handlers.ts";
import type { JobContext, JobHandlers } from "../../src/worker/types.ts";

const untilAborted = (ctx: JobContext) =>
  new Promise<never>((_resolve, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true }));

/**
 * The contract handlers plus handlers whose code faults outside their own promise, hosted by a
 * worker process (`startWorkerProcess({ handlersModule: faultyHandlersModule, handlersExport: "faultyHandlers" })`):
 *
 * - `floatingRejection()`: leaves a rejected promise nobody handles, then waits for its signal.
 * - `timerThrow()`: throws inside a timer callback, then waits for its signal.
 * - `lateRejection()`: returns "done" at once, and 20 ms later rejects a promise nobody handles.
 */
export const faultyHandlers = {
  ...contractHandlers,
  floatingRejection: async (_payload: unknown, ctx: JobContext) => {
    void Promise.reject(new Error("floating promise rejected"));
    return untilAborted(ctx);
  },
  timerThrow: async (_payload: unknown, ctx: JobContext) => {
    setTimeout(() => {
      throw new Error("thrown in a timer");
    }, 5);
    return untilAborted(ctx);
  },
  lateRejection: async () => {
    setTimeout(() => void Promise.reject(new Error("after the end")), 20);
    return "done";
  },
} satisfies JobHandlers;

export const faultyHandlersModule = new URL(import.meta.url).pathname;
