import { OrchestratorError } from "../errors.ts";
import type { JobQueue, WaitOptions } from "../queue/types.ts";
import type { JobFilter, JobStore } from "../store/types.ts";
import { checkInteger, checkObject, optional } from "../validate.ts";
import { checkJobId } from "../job/event-checks.ts";
import { delay } from "../signals.ts";

/** Which dead letters {@link JobClient.redrive} moves: one job id, every one a filter matches, or all. */
export type RedriveTarget = string | { all: true } | Omit<JobFilter, "deadLettered" | "state">;

/** Options of {@link JobClient.redrive}. */
export interface JobRedriveOptions extends WaitOptions {
  /**
   * Most jobs moved by one call.
   * @default 1000
   */
  limit?: number;
}

/** What {@link JobClient.redrive} did. */
export interface JobRedriveResult {
  /** Ids of the jobs put back on the queue, oldest dead letter first. */
  redriven: string[];
  /**
   * Ids whose record was redriven but whose dead letter the queue did not hold, even after looking
   * again for about 1.5 s (moved by someone else meanwhile, or lost): their record waits as
   * `queued` and fails at its start timeout.
   */
  missing: string[];
}

/**
 * Moves dead letters back to the queue, each with a fresh attempt count and its history kept:
 * the queue's {@link JobQueue.redrive} primitive, with the job store kept in step. With a store,
 * each job's record is redriven first (state `queued`, a new round of attempts, `redrives` + 1,
 * its fencing token kept so the new life's attempts outrank the dead ones), then its dead letter
 * moved; in that order, because a dispatcher that received the job before its record was
 * redriven would find the record final and not run it. @internal
 */
export async function redriveDeadLetters(
  queue: JobQueue,
  store: JobStore | undefined,
  target: RedriveTarget,
  options: JobRedriveOptions = {},
): Promise<JobRedriveResult> {
  const o = checkObject("options", options);
  const limit = optional(o.limit, 1000, (v) => checkInteger("limit", v, 1, 100_000));
  const wait: WaitOptions = { ...(options.signal === undefined ? {} : { signal: options.signal }), ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }) };
  if (queue.redrive === undefined) {
    throw new OrchestratorError("precondition_failed", "this queue cannot redrive dead letters (it has no redrive())");
  }
  const all = typeof target === "object" && target !== null && (target as { all?: unknown }).all === true;
  if (store === undefined) {
    if (typeof target === "string") return moved(await queue.redrive({ ...wait, jobIds: [checkJobId("target", target)], limit }), [target]);
    if (all) return moved(await queue.redrive({ ...wait, limit }), undefined);
    throw new OrchestratorError("precondition_failed", "redriving dead letters by filter needs a job store: pass `store` to the JobClient");
  }
  const ids = typeof target === "string" ? [checkJobId("target", target)] : await deadLetteredIds(store, all ? {} : checkObject("target", target), limit, wait);
  const ready: string[] = [];
  for (const id of ids) {
    const record = await store.get(id, wait);
    if (record?.deadLetter === undefined) continue;
    const { status } = await store.record({ kind: "redriven", jobId: id, fencingToken: record.fencingToken, at: Date.now() }, wait);
    if (status === "applied") ready.push(id);
  }
  if (ready.length === 0) return { redriven: [], missing: [] };
  let result = moved(await queue.redrive({ ...wait, jobIds: ready, limit: ready.length }), ready);
  // A record turns dead-lettered a moment before its message reaches the dead-letter queue (the
  // dispatcher records the outcome, then the broker dead-letters the delivery). A redrive in that
  // window finds no message: look again for a short while before reporting it missing.
  for (const pauseMs of LATE_DEAD_LETTER_PAUSES_MS) {
    if (result.missing.length === 0) break;
    await delay(pauseMs, { signal: options.signal });
    const late = moved(await queue.redrive({ ...wait, jobIds: result.missing, limit: result.missing.length }), result.missing);
    result = { redriven: [...result.redriven, ...late.redriven], missing: late.missing };
  }
  return result;
}

/** Pauses between looks for dead letters still on their way to the queue (1.55 s in all). */
const LATE_DEAD_LETTER_PAUSES_MS = [50, 100, 200, 400, 800];

async function deadLetteredIds(store: JobStore, filter: Record<string, unknown>, limit: number, wait: WaitOptions): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await store.list({ ...(filter as JobFilter), ...wait, deadLettered: true, limit: Math.min(1000, limit - ids.length), ...(cursor === undefined ? {} : { cursor }) });
    for (const record of page.records) ids.push(record.id);
    cursor = page.nextCursor;
  } while (cursor !== undefined && ids.length < limit);
  // Oldest first, as the queue moves them.
  return ids.reverse();
}

function moved(result: { redriven: Array<{ id: string }> }, asked: string[] | undefined): JobRedriveResult {
  const redriven = result.redriven.map((job) => job.id);
  const got = new Set(redriven);
  return { redriven, missing: asked === undefined ? [] : asked.filter((id) => !got.has(id)) };
}
