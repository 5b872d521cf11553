import { OrchestratorError, type SerializedError } from "../errors.ts";
import type { JobOutcome } from "../job/types.ts";
import type { JobEvents } from "../queue/types.ts";
import { expireAndPublish } from "../store/expire-and-publish.ts";
import type { JobLogLine, JobStore, JobTransition, TransitionResult } from "../store/types.ts";
import type { DispatcherReport } from "./context.ts";
import type { Run } from "./run.ts";
import type { JobEnvelope } from "../job/envelope.ts";
import { fencingToken } from "../job/fencing.ts";

/** Start timeout recorded for a job whose producer did not create its record (no store there). */
const DEFAULT_RECORD_START_TIMEOUT_MS = 3_600_000;

/** Resolved store options of a dispatcher. @internal */
export interface RecorderOptions {
  readonly store: JobStore | undefined;
  readonly dispatcherId: string;
  readonly storeTimeoutMs: number;
  readonly maintenanceIntervalMs: number;
  /** Write the handlers' log lines to the store (when it keeps logs). */
  readonly keepLogs: boolean;
}

/** Progress writes of one run: at most one in flight, the latest waiting behind it. */
interface ProgressLane {
  writing: boolean;
  next: JobTransition | undefined;
}

/** A run's log lines on their way to the store: the next `seq`, and those waiting for the write in flight. */
interface LogLane {
  seq: number;
  writing: boolean;
  pending: JobLogLine[];
}

/** Most log lines of one run waiting for the store. */
const MAX_PENDING_LOG_LINES = 1000;

/**
 * Writes a dispatcher's runs into its {@link JobStore}: every transition, fenced with the
 * attempt's token (`Run.fencingToken`). One home for what the dispatcher records and for
 * what a store failure means:
 * - `finished` is part of the settle order (recorded, then published, then settled): when it
 *   cannot be recorded (store down or slower than `storeTimeoutMs`) the caller treats the outcome
 *   as unpublishable and gives the delivery back; nothing is acked, nothing lost.
 * - `started`, `retrying`, `unschedulable` and progress are best effort: a failure is reported
 *   and the job goes on (the final record lists the attempt anyway).
 * - A job whose record does not exist (its producer has no store) gets one, made from its
 *   envelope, on its first transition.
 * Without a store every method resolves at once and records nothing. @internal
 */
export class JobRecorder {
  readonly #store: JobStore | undefined;
  readonly #dispatcherId: string;
  readonly #timeoutMs: number;
  readonly #report: DispatcherReport;
  readonly #progress = new WeakMap<Run, ProgressLane>();
  readonly #logs = new WeakMap<Run, LogLane>();
  readonly #keepLogs: boolean;
  readonly #maintenanceIntervalMs: number;
  #maintenance: NodeJS.Timeout | undefined;
  #maintaining: Promise<void> | undefined;

  constructor(options: RecorderOptions, report: DispatcherReport) {
    this.#store = options.store;
    this.#maintenanceIntervalMs = options.maintenanceIntervalMs;
    this.#keepLogs = options.keepLogs;
    this.#dispatcherId = options.dispatcherId;
    this.#timeoutMs = options.storeTimeoutMs;
    this.#report = report;
  }

  /** Whether a store is configured. */
  get enabled(): boolean {
    return this.#store !== undefined;
  }

  /** The run's fencing token. */
  tokenOf(run: Run): number {
    return run.fencingToken;
  }

  /**
   * Records that the run's attempt starts on `workerId`. Resolves with the store's answer, or
   * undefined (no store, or it failed: reported, and the job runs all the same). `finished`:
   * the job already ended (recorded before a crash, or failed at its start timeout): it must
   * not run again. `stale`: a newer attempt of it runs elsewhere, or (with `copy`) it already
   * started from another copy of the job.
   */
  async started(run: Run, workerId: string, copy?: string): Promise<TransitionResult | undefined> {
    return this.#best(run.job, "recording the start", {
      kind: "started", jobId: run.job.id, attempt: run.attempt, fencingToken: this.tokenOf(run), workerId, dispatcherId: this.#dispatcherId, at: Date.now(),
      ...(copy === undefined ? {} : { copy }),
    });
  }

  /**
   * Records that a job which waited for its due time reached this dispatcher (`queued`), fenced
   * with the run's token. Resolves with the store's answer, or undefined (no store, or it
   * failed: reported, and the job goes on). `finished`: the job ended while it waited (its
   * producer cancelled it): it must not run.
   */
  async cameDue(run: Run): Promise<TransitionResult | undefined> {
    return this.#best(run.job, "recording that the job came due", { kind: "queued", jobId: run.job.id, fencingToken: this.tokenOf(run), at: Date.now() });
  }

  /** Records the run's progress, best effort: one write in flight per run, the latest kept. */
  progress(run: Run, progress: number, message: string | undefined): void {
    if (this.#store === undefined) return;
    const transition: JobTransition = {
      kind: "progress", jobId: run.job.id, attempt: run.attempt, fencingToken: this.tokenOf(run), progress, at: Date.now(),
      ...(message === undefined ? {} : { message }),
    };
    let lane = this.#progress.get(run);
    if (lane === undefined) this.#progress.set(run, (lane = { writing: false, next: undefined }));
    lane.next = transition;
    if (!lane.writing) void this.#drainProgress(run, lane);
  }

  async #drainProgress(run: Run, lane: ProgressLane): Promise<void> {
    lane.writing = true;
    while (lane.next !== undefined) {
      const transition = lane.next;
      lane.next = undefined;
      await this.#best(run.job, "recording progress", transition);
    }
    lane.writing = false;
  }

  /**
   * Keeps a line the run's handler logged, best effort, when the store keeps logs
   * (`JobStore.appendLogs`): one write in flight per run, the lines that came meanwhile written
   * together next (at most {@link MAX_PENDING_LOG_LINES} wait; the oldest beyond are dropped).
   * Nothing with `keepLogs: false`.
   */
  log(run: Run, line: string, stream: "stdout" | "stderr" | undefined): void {
    if (!this.#keepLogs || this.#store?.appendLogs === undefined) return;
    let lane = this.#logs.get(run);
    if (lane === undefined) this.#logs.set(run, (lane = { seq: 0, writing: false, pending: [] }));
    lane.pending.push({ at: Date.now(), attempt: run.attempt, fencingToken: this.tokenOf(run), seq: lane.seq++, line, ...(stream === undefined ? {} : { stream }) });
    if (lane.pending.length > MAX_PENDING_LOG_LINES) lane.pending.splice(0, lane.pending.length - MAX_PENDING_LOG_LINES);
    if (!lane.writing) void this.#drainLogs(run, lane);
  }

  async #drainLogs(run: Run, lane: LogLane): Promise<void> {
    lane.writing = true;
    while (lane.pending.length > 0) {
      const lines = lane.pending.splice(0);
      try {
        await this.#store?.appendLogs?.(run.job.id, lines, { timeoutMs: this.#timeoutMs });
      } catch (error) {
        this.#report(error, "keeping log lines in the job store (the job goes on)", run.job.id);
      }
    }
    lane.writing = false;
  }

  /** Records a failed attempt that another follows, best effort. */
  async retrying(run: Run, error: SerializedError, lost: boolean, workerId: string | undefined): Promise<void> {
    await this.#best(run.job, "recording the retry", {
      kind: "retrying", jobId: run.job.id, attempt: run.attempt, fencingToken: this.tokenOf(run), error, at: Date.now(), dispatcherId: this.#dispatcherId,
      ...(lost ? { lost } : {}), ...(workerId === undefined ? {} : { workerId }),
    });
  }

  /** Records that no healthy worker can run the job, with why; best effort. */
  async unschedulable(run: Run, reason: string): Promise<void> {
    await this.#best(run.job, "recording that no worker can run the job", {
      kind: "unschedulable", jobId: run.job.id, fencingToken: this.tokenOf(run), reason, at: Date.now(),
    });
  }

  /** Records that a job waits in the queue for `reason` (its concurrency key); best effort. */
  async waiting(job: JobEnvelope, reason: string): Promise<void> {
    await this.#best(job, "recording why the job waits", {
      kind: "queued", jobId: job.id, fencingToken: fencingToken(job, job.attempt), reason, at: Date.now(),
    });
  }

  /**
   * Records how the job ended: step 1 of the settle order. Resolves with the store's answer
   * (`applied`, or `finished` / `stale` with the record that won), or undefined without a store.
   * @throws {OrchestratorError} when the store failed or did not answer within `storeTimeoutMs`:
   * the outcome must then be treated as unpublished.
   */
  async finished(run: Run, outcome: JobOutcome, workerId: string | undefined, deadLetter: string | undefined): Promise<TransitionResult | undefined> {
    return this.#record(run.job, {
      kind: "finished", jobId: run.job.id, attempt: run.attempt, fencingToken: this.tokenOf(run), outcome, started: workerId !== undefined, at: Date.now(),
      dispatcherId: this.#dispatcherId, ...(workerId === undefined ? {} : { workerId }), ...(deadLetter === undefined ? {} : { deadLetter }),
    });
  }

  /** Runs {@link JobRecorder.maintain} every `maintenanceIntervalMs` until `stopMaintenance()`; the timer never holds the process open. */
  startMaintenance(events: JobEvents): void {
    if (this.#store === undefined || this.#maintenance !== undefined) return;
    this.#maintenance = setInterval(() => {
      this.#maintaining ??= this.maintain(events).finally(() => (this.#maintaining = undefined));
    }, this.#maintenanceIntervalMs);
    this.#maintenance.unref();
  }

  /** Stops the maintenance timer and waits for a round in progress. */
  async stopMaintenance(): Promise<void> {
    clearInterval(this.#maintenance);
    this.#maintenance = undefined;
    await this.#maintaining;
  }

  /**
   * Housekeeping, run on the dispatcher's `maintenanceIntervalMs`: fails the jobs past their
   * start timeout (publishing their outcome) and removes records past the store's retention.
   */
  async maintain(events: JobEvents): Promise<void> {
    const store = this.#store;
    if (store === undefined) return;
    try {
      await expireAndPublish(store, events, (error) => this.#report(error, "publishing the outcome of a job past its start timeout"));
      await store.cleanup();
    } catch (error) {
      this.#report(error, "maintaining the job store (start timeouts, retention)");
    }
  }

  async #best(job: JobEnvelope, doing: string, transition: JobTransition): Promise<TransitionResult | undefined> {
    try {
      return await this.#record(job, transition);
    } catch (error) {
      this.#report(error, `${doing} in the job store (the job goes on)`, job.id);
      return undefined;
    }
  }

  async #record(job: JobEnvelope, transition: JobTransition): Promise<TransitionResult | undefined> {
    const store = this.#store;
    if (store === undefined) return undefined;
    const options = { timeoutMs: this.#timeoutMs };
    const result = await store.record(transition, options);
    if (result.status !== "not_found") return result;
    // Submitted by a producer without a store: the job's record starts here.
    await store.create(
      {
        id: job.id, type: job.type, payload: job.payload, maxAttempts: job.maxAttempts, timeoutMs: job.timeoutMs,
        startTimeoutMs: job.startTimeoutMs ?? DEFAULT_RECORD_START_TIMEOUT_MS, createdAt: Number.isFinite(Date.parse(job.createdAt)) ? Date.parse(job.createdAt) : Date.now(),
        ...(job.labels === undefined ? {} : { labels: job.labels }),
        ...(job.runAt === undefined ? {} : { runAt: job.runAt }),
        ...(job.schedule === undefined ? {} : { schedule: { id: job.schedule.id, tick: job.schedule.tick } }),
        ...(job.priority === undefined ? {} : { priority: job.priority }),
      },
      options,
    );
    const retried = await store.record(transition, options);
    if (retried.status === "not_found") throw new OrchestratorError("internal", `job ${job.id} has no record even after creating it`);
    return retried;
  }
}
