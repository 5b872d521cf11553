import type { JobContext } from "../../src/worker/types.ts";

/**
 * Handlers of the affinity and rate-limit integration tests, served by worker processes
 * (`startWorkerProcess({ handlersModule, handlersExport: "placementHandlers" })`). Each start is
 * logged on the worker's own stdout (`start <jobId> <epoch ms>`), so the tests judge placement
 * and rate from what the workers saw, not from what the dispatcher believes.
 */
export const placementHandlers = {
  /** Logs its start, sleeps `ms` (0 by default), answers the worker's pid. */
  stamp: async (payload: { ms?: number } | null, ctx: JobContext): Promise<{ pid: number }> => {
    process.stdout.write(`start ${ctx.jobId} ${Date.now()}\n`);
    const ms = payload?.ms ?? 0;
    if (ms > 0) await new Promise((resolve) => setTimeout(resolve, ms));
    return { pid: process.pid };
  },
};

/** The `start` lines of a worker's output: `[jobId, epoch ms]` in the order it started them. */
export function startsOf(output: string): Array<[string, number]> {
  const starts: Array<[string, number]> = [];
  for (const line of output.split("\n")) {
    const [word, jobId, at] = line.split(" ");
    if (word === "start" && jobId !== undefined && at !== undefined) starts.push([jobId, Number(at)]);
  }
  return starts;
}
