import { writeFileSync } from "node:fs";
import { contractHandlers } from "../../src/testing/contract-handlers.ts";
import { delay } from "../../src/signals.ts";
import type { JobContext, JobHandlers } from "../../src/worker/types.ts";

/** Handlers running in this process right now, and the most ever seen at once. */
const concurrency = { current: 0, max: 0 };

/**
 * The contract handlers plus a few for the gRPC integration tests, hosted by worker processes
 * (`startWorkerProcess({ handlersExport: "grpcTestHandlers", handlersModule: grpcTestHandlersModule })`).
 *
 * - `stubborn({ ms })`: reports progress 0 ("running") as it starts, then runs `ms` milliseconds
 *   ignoring its signal (a handler slow to wind down), counted in the concurrency statistics;
 *   returns `{ ran: ms }`.
 * - `concurrency()`: returns `{ current, max }` handlers running at once (itself excluded).
 * - `firstAttemptHangs()`: attempt 1 reports progress 0 ("hanging") and waits for its signal;
 *   later attempts return `{ attempt, pid }` at once.
 * - `markStart({ marker })`: before anything else, synchronously, writes `{ jobId, attempt, pid }`
 *   to the file `marker` (so a handler aborted right after it started still leaves it), then
 *   waits for its signal and throws its reason.
 */
export const grpcTestHandlers = {
  ...contractHandlers,
  stubborn: async (payload: { ms: number }, ctx: JobContext) => {
    ctx.progress(0, "running");
    concurrency.current++;
    concurrency.max = Math.max(concurrency.max, concurrency.current);
    try {
      await delay(payload.ms);
      return { ran: payload.ms };
    } finally {
      concurrency.current--;
    }
  },
  concurrency: async (_payload: unknown, _ctx: JobContext) => ({ ...concurrency }),
  firstAttemptHangs: async (_payload: unknown, ctx: JobContext) => {
    if (ctx.attempt > 1) return { attempt: ctx.attempt, pid: process.pid };
    ctx.progress(0, "hanging");
    await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
    throw ctx.signal.reason;
  },
  markStart: async (payload: { marker: string }, ctx: JobContext) => {
    writeFileSync(payload.marker, JSON.stringify({ jobId: ctx.jobId, attempt: ctx.attempt, pid: process.pid }));
    await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
    throw ctx.signal.reason;
  },
} satisfies JobHandlers;

export const grpcTestHandlersModule = new URL(import.meta.url).pathname;
