import type { SerializedError } from "../errors.ts";

/**
 * The job domain every room shares: a job's states, how it ends, the events it emits and the
 * command that cancels it. Producers, the queue, the dispatcher and workers all speak these;
 * this file imports nothing but the error shape, so any room may depend on it.
 */

/**
 * The life of a job as seen by producers:
 * - `scheduled`: accepted, waiting for its due time (`runAt` / `delayMs` at submit); it becomes
 *   `queued` (or starts) once due, and can be cancelled while it waits;
 * - `queued`: accepted by the queue, not started;
 * - `unschedulable`: a dispatcher holds it but no healthy worker can run it (the state event's
 *   `reason` says why); it waits for one until its start timeout (`startTimeoutMs`);
 * - `running`: an attempt is running on a worker;
 * - `retrying`: an attempt failed; another is scheduled;
 * - `completed` / `failed` / `cancelled`: final.
 */
export type JobState = "scheduled" | "queued" | "unschedulable" | "running" | "retrying" | "completed" | "failed" | "cancelled";

/** Every {@link CancelReason}, in one place: validators and the wire mapping read this list. */
export const CANCEL_REASONS = ["requested", "timeout", "shutdown", "worker_lost"] as const;

/** Why a job was cancelled. */
export type CancelReason = (typeof CANCEL_REASONS)[number];

/** How an attempt or a job ended. */
export type JobOutcome =
  | { status: "completed"; result: unknown }
  | { status: "failed"; error: SerializedError }
  | { status: "cancelled"; reason: CancelReason; message?: string };

interface JobEventBase {
  jobId: string;
  /** The attempt the event belongs to. */
  attempt: number;
  /** Epoch milliseconds when it happened. */
  at: number;
}

/**
 * A state change. `workerId` is set for `running`; `error` and `delayMs` for `retrying`; `reason`
 * for `unschedulable`, and for `queued` when the job waits for something (its concurrency key);
 * `delayMs` for `unschedulable` too when a rate limit sent the job back to the queue: it comes
 * back to a dispatcher that long after `at`, and no dispatcher holds it meanwhile.
 */
export interface JobStateEvent extends JobEventBase {
  kind: "state";
  state: Exclude<JobState, "completed" | "failed" | "cancelled">;
  workerId?: string;
  error?: SerializedError;
  delayMs?: number;
  /** Why no healthy worker can run the job, for `unschedulable`; what it waits for, for `queued`. */
  reason?: string;
}

/** Progress reported by the handler: `progress` from 0 to 1. */
export interface JobProgressEvent extends JobEventBase {
  kind: "progress";
  progress: number;
  message?: string;
}

/** A log line written by the handler. */
export interface JobLogEvent extends JobEventBase {
  kind: "log";
  line: string;
  stream?: "stdout" | "stderr";
}

/** The final outcome of the job; published once per job (at least once on faults). */
export interface JobResultEvent extends JobEventBase {
  kind: "result";
  outcome: JobOutcome;
}

/** Any job event. */
export type JobEvent = JobStateEvent | JobProgressEvent | JobLogEvent | JobResultEvent;

/** What a handler reports while it runs, as a worker sends it (the dispatcher adds job id, attempt and time). */
export type WorkerJobEvent =
  | { kind: "progress"; progress: number; message?: string }
  | { kind: "log"; line: string; stream?: "stdout" | "stderr" };

/** A request to cancel a job, wherever it is. */
export interface CancelCommand {
  jobId: string;
  reason: CancelReason;
  message?: string;
  /** Epoch milliseconds when it was sent. */
  at: number;
  /**
   * The due time (epoch ms) of the job it cancels, when that job waits for one (`runAt`): the
   * command is then kept until that time plus the usual retention, however far ahead it is, so
   * the job never starts when it comes due.
   */
  runAt?: number;
}
