import type { JobEnvelope } from "./envelope.ts";

/**
 * When the job's first attempt of its current life must have started (epoch ms), or undefined
 * without a `startTimeoutMs`: from its latest redrive, else from its creation or its due time
 * (`runAt`), whichever is later.
 */
export function startDeadlineOf(job: Pick<JobEnvelope, "startTimeoutMs" | "createdAt" | "redrives" | "runAt">): number | undefined {
  if (job.startTimeoutMs === undefined) return undefined;
  const since = Math.max(Date.parse(job.redrives?.at(-1)?.redrivenAt ?? job.createdAt), job.runAt ?? 0);
  return Number.isFinite(since) ? since + job.startTimeoutMs : undefined;
}
