import type { JobEnvelope } from "./envelope.ts";

/**
 * What a job's envelope says about its life across attempts and redrives, in one home.
 */

/**
 * The fencing token of an attempt: `priorAttempts + attempt`, which only grows over a job's whole
 * history (its attempts, and its redrives, which restart `attempt` at 1 but add the dead life's
 * attempts to `priorAttempts`). A job store refuses a transition with a lower token than the one
 * recorded, so a stale attempt never overwrites a newer one.
 */
export function fencingTokenOf(job: Pick<JobEnvelope, "priorAttempts">, attempt: number): number {
  return (job.priorAttempts ?? 0) + attempt;
}

/**
 * When the job's first attempt of its current life must have started (epoch ms), or undefined
 * without a `startTimeoutMs`: from its latest redrive, else from its creation.
 */
export function startDeadlineOf(job: Pick<JobEnvelope, "startTimeoutMs" | "createdAt" | "redrives">): number | undefined {
  if (job.startTimeoutMs === undefined) return undefined;
  const since = Date.parse(job.redrives?.at(-1)?.redrivenAt ?? job.createdAt);
  return Number.isFinite(since) ? since + job.startTimeoutMs : undefined;
}
