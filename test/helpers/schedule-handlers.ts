/**
 * Handlers of the schedule integration tests' worker process: `tick` appends its job id and
 * attempt to the file named in its payload, so the test counts runs on the worker side.
 */
import { appendFileSync } from "node:fs";
import type { JobContext } from "../../src/worker/types.ts";

export const scheduleHandlers = {
  tick: async (payload: { file: string }, ctx: JobContext): Promise<null> => {
    appendFileSync(payload.file, `${ctx.jobId} ${ctx.attempt}\n`);
    return null;
  },
};
