/** How a live job event changes what the page shows of a job: one home for the lists and the job page. */
import type { ConsoleJobEvent, ConsoleJobSummary } from "../api-types.ts";

/** States a job does not leave (except by a redrive). */
export const FINAL_STATES: ReadonlySet<string> = new Set(["completed", "failed", "cancelled"]);

/**
 * Brings a job fetched from the server up to the events the stream brought since it was written
 * (see `Live.recentJobEvents`).
 */
export function catchUp<J extends ConsoleJobSummary>(job: J, events: readonly ConsoleJobEvent[]): J {
  for (const event of events) applyJobEvent(job, event);
  return job;
}

/**
 * Applies `event` to `job` in place; returns whether anything shown changed. The stream brings a
 * job's events in the order they happened, so the latest one wins (attempt numbers cannot order
 * them: a redrive starts again at 1).
 */
export function applyJobEvent(job: ConsoleJobSummary, event: ConsoleJobEvent): boolean {
  if (event.jobId !== job.id) return false;
  switch (event.kind) {
    case "state":
      if (!event.state) return false;
      job.state = event.state;
      if (typeof event.attempt === "number") job.attempt = event.attempt;
      if (event.workerId) job.workerId = event.workerId;
      if (event.state === "queued" || event.state === "retrying") job.progress = undefined;
      return true;
    case "progress":
      if (typeof event.progress !== "number" || FINAL_STATES.has(job.state)) return false;
      // Progress comes from a running attempt, even when its `running` event went by unseen.
      job.state = "running";
      job.progress = { progress: event.progress, message: event.message };
      return true;
    case "result": {
      const { outcome } = event;
      job.state = outcome.status;
      job.finishedAt = event.at;
      if (outcome.status === "completed") job.progress = { progress: 1, message: job.progress?.message };
      if (outcome.status === "failed") job.error = outcome.error;
      return true;
    }
    default:
      return false;
  }
}
