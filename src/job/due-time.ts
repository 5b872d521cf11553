import { invalidArgument } from "../errors.ts";
import { checkInteger } from "../validate.ts";

/**
 * The longest a job may be delayed: 90 days, in milliseconds. A `delayMs` above it, or a `runAt`
 * further ahead, is refused with `invalid_argument`: a job scheduled further out is better kept
 * as a recurring schedule or in the caller's own database than in a queue.
 */
export const MAX_DELAY_MS = 90 * 24 * 3_600_000;

/** An ISO 8601 date-time with seconds optional, fractions optional, and a zone (`Z` or `±hh:mm`) required. */
const ISO_DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$/i;

/**
 * The due time (epoch ms) of a job from its spec's `runAt` (a `Date`, epoch milliseconds, or an
 * ISO 8601 date-time with a zone) or `delayMs` (at most one of them), or undefined when the job
 * is due at once (neither given, a delay of 0, or a `runAt` not after `now`).
 * @throws {OrchestratorError} `invalid_argument` naming `runAt` or `delayMs`: both given, a bad
 * value, or a due time more than {@link MAX_DELAY_MS} ahead.
 */
export function dueTimeOf(runAt: unknown, delayMs: unknown, now: number): number | undefined {
  if (runAt !== undefined && delayMs !== undefined) {
    throw invalidArgument("runAt", "given without `delayMs` (they are two ways to say when a job is due: give one)", runAt);
  }
  if (delayMs !== undefined) {
    const ms = checkInteger("delayMs", delayMs, 0, MAX_DELAY_MS);
    return ms === 0 ? undefined : now + ms;
  }
  if (runAt === undefined) return undefined;
  const at = epochOf(runAt);
  if (at - now > MAX_DELAY_MS) {
    throw invalidArgument("runAt", `at most ${MAX_DELAY_MS} ms (90 days) ahead (${new Date(now + MAX_DELAY_MS).toISOString()})`, runAt);
  }
  return at > now ? at : undefined;
}

function epochOf(runAt: unknown): number {
  const expected = "a Date, epoch milliseconds or an ISO 8601 date-time with a zone (2026-12-24T18:00:00Z)";
  if (runAt instanceof Date) {
    const ms = runAt.getTime();
    if (!Number.isFinite(ms)) throw invalidArgument("runAt", `${expected}, and a valid one`, "Invalid Date");
    return ms;
  }
  if (typeof runAt === "number") {
    if (!Number.isInteger(runAt) || runAt < 0) throw invalidArgument("runAt", `${expected}; as a number, an integer >= 0`, runAt);
    return runAt;
  }
  if (typeof runAt === "string" && ISO_DATE_TIME.test(runAt)) {
    const ms = Date.parse(runAt);
    if (Number.isFinite(ms)) return ms;
  }
  throw invalidArgument("runAt", expected, runAt);
}

/**
 * Milliseconds until `job` is due (0 when it has no `runAt` or it has passed): how long a queue
 * holds it back.
 * @throws {OrchestratorError} `invalid_argument` for a `runAt` more than {@link MAX_DELAY_MS} ahead
 * (an envelope made without `submit()`).
 */
export function dueInMs(job: { runAt?: number | undefined }, now = Date.now()): number {
  if (job.runAt === undefined || job.runAt <= now) return 0;
  const ms = job.runAt - now;
  if (ms > MAX_DELAY_MS) throw invalidArgument("runAt", `at most ${MAX_DELAY_MS} ms (90 days) ahead`, job.runAt);
  return ms;
}
