import { existsSync, writeFileSync } from "node:fs";
import { nonRetryable } from "../../src/errors.ts";
import { delay } from "../../src/signals.ts";
import type { JobContext, JobHandlers } from "../../src/worker/types.ts";
import { grpcTestHandlers } from "./grpc-test-handlers.ts";

/**
 * The gRPC test handlers plus two for the console's browser tests, hosted by worker processes:
 *
 * - `steps({ steps, stepMs })`: for each step i logs `step i of n` and reports progress i/n, then
 *   waits `stepMs` (ending early with the abort reason when its signal fires); returns `{ steps }`.
 * - `failOnce({ marker })`: the first run (no file `marker` yet) creates the file and fails for
 *   good (`nonRetryable`, so the job is dead-lettered at once); any later run (a redrive) returns
 *   `{ ranAgain: true, attempt }`.
 */
export const consoleUiHandlers = {
  ...grpcTestHandlers,
  steps: async (payload: { steps: number; stepMs: number }, ctx: JobContext) => {
    for (let i = 1; i <= payload.steps; i++) {
      ctx.log(`step ${i} of ${payload.steps}`);
      ctx.progress(i / payload.steps, `step ${i} of ${payload.steps}`);
      await delay(payload.stepMs, { signal: ctx.signal });
    }
    return { steps: payload.steps };
  },
  failOnce: async (payload: { marker: string }, ctx: JobContext) => {
    if (!existsSync(payload.marker)) {
      writeFileSync(payload.marker, String(ctx.attempt));
      throw nonRetryable("the first run fails for good");
    }
    return { ranAgain: true, attempt: ctx.attempt };
  },
} satisfies JobHandlers;

export const consoleUiHandlersModule = new URL(import.meta.url).pathname;
