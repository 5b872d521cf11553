import type { JobEnvelope } from "./envelope.ts";

/**
 * When the job's first attempt of its current life must have started (epoch ms), or undefined
 * without a `startTimeoutMs`: from its latest redrive, else from its creation.
 */
export function startDeadlineOf(job: Pick<JobEnvelope, "startTimeoutMs" | "createdAt" | "redrives">): number | undefined {
  if (job.startTimeoutMs === undefined) return undefined;
  const since = Date.parse(job.redrives?.at(-1)?.redrivenAt ?? job.createdAt);
  return Number.isFinite(since) ? since + job.startTimeoutMs : undefined;
}
