/** How a live job event changes what the page shows of a job: one home for the lists and the job page. */
import type { ConsoleJobEvent, ConsoleJobSummary } from "./api-types.ts";

/**
 * Applies `event` to `job` in place; returns whether anything shown changed. Events of an older
 * attempt than the one shown are ignored (they arrive late after a retry).
 */
export function applyJobEvent(job: ConsoleJobSummary, event: ConsoleJobEvent): boolean {
  if (event.jobId !== job.id) return false;
  if (typeof event.attempt === "number" && event.attempt < job.attempt && event.kind !== "result") return false;
  switch (event.kind) {
    case "state":
      if (!event.state) return false;
      job.state = event.state;
      if (typeof event.attempt === "number") job.attempt = event.attempt;
      if (event.workerId) job.workerId = event.workerId;
      if (event.state === "queued" || event.state === "retrying") job.progress = undefined;
      return true;
    case "progress":
      if (typeof event.progress !== "number") return false;
      job.progress = { progress: event.progress, message: event.message };
      return true;
    case "result": {
      const status = event.outcome?.status;
      if (!status) return false;
      job.state = status;
      job.finishedAt = event.at;
      if (status === "completed") job.progress = { progress: 1, message: job.progress?.message };
      if (event.outcome?.error) job.error = event.outcome.error;
      return true;
    }
    default:
      return false;
  }
}

/** States a job does not leave (except by a redrive). */
export const FINAL_STATES: ReadonlySet<string> = new Set(["completed", "failed", "cancelled"]);
