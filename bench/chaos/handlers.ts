/**
 * The chaos run's job handler, hosted by worker processes started with
 * `test/helpers/worker-process.ts` (`handlersModule` = this file, `handlersExport` = `chaosHandlers`).
 *
 * `chaos({ ms })` waits `ms` (a few to tens of milliseconds), honouring its signal, and returns
 * `{ pid, attempt }`. It records in `$CHAOS_LOG_DIR/worker-<pid>.log`, before doing anything
 * else and before returning:
 * - `S <epoch ms> <jobId> <attempt> <fencing token>` when it starts;
 * - `C <epoch ms> <jobId> <attempt>` when it completes (just before it returns its result);
 * - `A <epoch ms> <jobId> <attempt> <reason code>` when its signal aborted it.
 * So "this job ran more than once" can be computed afterwards even for a worker killed mid-job.
 */
import { join } from "node:path";
import { delay } from "../../src/signals.ts";
import type { OrchestratorError } from "../../src/errors.ts";
import type { JobContext, JobHandlers } from "../../src/worker/types.ts";
import { AppendLog, workerLogName } from "./log.ts";

const dir = process.env.CHAOS_LOG_DIR;
if (!dir) throw new Error("bench/chaos/handlers.ts needs CHAOS_LOG_DIR (the chaos run sets it for its worker processes)");
const log = new AppendLog(join(dir, workerLogName(process.pid)));

async function chaos(payload: { ms: number }, ctx: JobContext): Promise<{ pid: number; attempt: number }> {
  log.write("S", Date.now(), ctx.jobId, ctx.attempt, ctx.fencingToken);
  try {
    await delay(payload.ms, { signal: ctx.signal });
  } catch (error) {
    log.write("A", Date.now(), ctx.jobId, ctx.attempt, (error as OrchestratorError).code ?? "unknown");
    throw error;
  }
  log.write("C", Date.now(), ctx.jobId, ctx.attempt);
  return { pid: process.pid, attempt: ctx.attempt };
}

/** Handlers of the chaos worker processes. */
export const chaosHandlers: JobHandlers = {
  chaos: chaos as (payload: never, ctx: JobContext) => Promise<unknown>,
};
