import { OrchestratorError } from "../errors.ts";
import type { JobEvent, JobOutcome, WorkerJobEvent } from "../job/types.ts";
import type { PublishOptions } from "../queue/types.ts";
import { abortReason } from "../signals.ts";
import { backoffDelay } from "../timers.ts";
import { neverStarted } from "../wire/never-started.ts";
import type { SerializedError } from "../errors.ts";
import { startDeadlineOf } from "../job/start-deadline.ts";
import { outcomeOf } from "../store/record-rules.ts";
import type { JobRecord, TransitionResult } from "../store/types.ts";
import type { DispatcherContext } from "./context.ts";
import { unschedulableReason } from "./unschedulable.ts";
import type { Run } from "./run.ts";
import type { DeferReason } from "./types.ts";

const CONFIRMED: PublishOptions = Object.freeze({ confirm: true });
const UNCONFIRMED: PublishOptions = Object.freeze({ confirm: false });
const ignore = (): void => {};

/** How a transport call ended. @internal */
export type AttemptEnd = { ok: true; value: unknown; durationMs: number } | { ok: false; failure: unknown };

/**
 * How a run ends: what it publishes, how its delivery is settled and what the dispatcher emits.
 *
 * **The settle order**, the same for every ending:
 * 1. record the outcome in the job store, when there is one (a final outcome must be recorded;
 *    a retry is recorded best effort): a store that fails or is slower than `storeTimeoutMs`
 *    counts as an outcome that cannot be published (step 2 fails);
 * 2. publish the outcome, confirmed (the `result` event; for a retry the `retrying` state event,
 *    best effort, since the next attempt announces itself anyway);
 * 3. settle the delivery (ack, retry or dead-letter), only once the outcome is durable: a crash
 *    between the two runs the job again rather than losing its outcome (at-least-once; the
 *    redelivery finds the record final and publishes and settles it without running the job);
 * 4. emit the dispatcher event (`jobCompleted`, `jobFailed`, …);
 * 5. release the worker slot ({@link RunFlow} does it last, in its `finally`), so no other job
 *    takes the slot before the queue knows this one is done.
 *
 * When the store answers that the record is already final (`finished`), the recorded outcome is
 * published and the delivery settled as recorded (dead-lettered when the record says so), so
 * every record ends matching the published outcome; when it answers `stale`, a newer attempt
 * owns the job: this copy is acked and nothing published.
 *
 * A delivery is never left held unsettled while the dispatcher runs (it would keep a prefetch
 * slot until the consumer stops): when the outcome cannot be published or the job cannot be put
 * back, the delivery goes back with `retry` after the backoff (`giveBack`), as a crash before the
 * ack would send it back (the attempt rises).
 * @internal
 */
export class SettlePolicy {
  readonly #context: DispatcherContext;

  constructor(context: DispatcherContext) {
    this.#context = context;
  }

  /**
   * Ends a run whose transport call ended. Retry policy: a retryable failure or a timeout with
   * attempts left goes back after the backoff; a lost worker goes back after
   * `workerLostDelayMs`; a non-retryable failure, or the last attempt's, fails the job.
   */
  afterAttempt(run: Run, end: AttemptEnd, workerId: string): Promise<void> {
    // A revoked delivery overrides whatever else ended the call: the queue has the job now.
    if (run.revoked !== undefined) return this.revoked(run, run.revoked, workerId);
    if (end.ok) return this.#complete(run, end.value, workerId, end.durationMs);
    const stop = run.stop;
    // Forced close: leave the delivery unsettled; the queue delivers it again once we stop consuming.
    if (stop === "forced_close") return Promise.resolve();
    if (stop === "cancel") return this.cancelled(run, workerId);
    const error = stop === undefined ? OrchestratorError.from(end.failure) : abortReason(run.controller.signal);
    const { job, attempt } = run;
    const { options } = this.#context;
    // Refused before it started (no session, no free slot there): not an attempt, the job goes back as it was.
    if (stop === undefined && neverStarted(error)) {
      return this.defer(run, "not_started", error.code === "resource_exhausted" ? backoffDelay(1, options.backoff) : options.workerLostDelayMs);
    }
    const lost = stop === "lost" || error.code === "worker_lost";
    if (attempt < job.maxAttempts && (lost || error.retryable)) {
      const delayMs = lost ? options.workerLostDelayMs : backoffDelay(attempt, options.backoff);
      return this.#retry(run, error, delayMs, workerId, lost);
    }
    return this.fail(run, error, workerId);
  }

  /** Ends a run that never reached a worker. */
  unstarted(run: Run): Promise<void> {
    if (run.revoked !== undefined) return this.revoked(run, run.revoked, undefined);
    if (run.stop === "cancel") return this.cancelled(run, undefined);
    if (run.stop === "start_timeout") return this.fail(run, abortReason(run.controller.signal), undefined);
    if (run.stop === "no_worker") return this.#unschedulable(run);
    if (run.stop === "unplaceable") return this.fail(run, abortReason(run.controller.signal), undefined);
    if (run.stop === "rate_limited") return this.#rateLimited(run);
    // The prefetch already fell with the capacity, so the copy goes to whoever has a slot.
    if (run.stop === "shed") return this.defer(run, "no_worker", 0);
    return this.defer(run, "shutdown", 0);
  }

  async cancelled(run: Run, workerId: string | undefined): Promise<void> {
    const { job, attempt } = run;
    const reason = run.cancel?.reason ?? "requested";
    if ((await this.#conclude(run, { status: "cancelled", reason, message: run.cancel?.message }, "ack", "", workerId)) === undefined) return;
    this.#context.emit("jobCancelled", { job, attempt, workerId, reason, started: workerId !== undefined });
  }

  async fail(run: Run, error: OrchestratorError, workerId: string | undefined): Promise<void> {
    const { job, attempt } = run;
    const reason = `${error.code}: ${error.rawMessage} (attempt ${attempt} of ${job.maxAttempts})`;
    const settled = await this.#conclude(run, { status: "failed", error: error.toJSON() }, "deadLetter", reason, workerId);
    if (settled === undefined) return;
    this.#context.emit("jobFailed", { job, attempt, workerId, error });
    if (settled) this.#context.emit("jobDeadLettered", { job, attempt, reason });
  }

  /**
   * Ends a run whose delivery the queue took away, settling nothing. `consumer_timeout`: the
   * queue dead-lettered the job, which fails with that error. Otherwise (`delivery_lost`) the job
   * is back in the queue: nothing is published, the redelivery will publish the outcome.
   */
  async revoked(run: Run, error: OrchestratorError, workerId: string | undefined): Promise<void> {
    const { job, attempt } = run;
    if (error.details.reason === "consumer_timeout") {
      const outcome: JobOutcome = { status: "failed", error: error.toJSON() };
      // The queue dead-lettered it already: recorded best effort, published all the same.
      if (this.#context.recorder.enabled) {
        await this.#context.recorder.finished(run, outcome, workerId, `${error.code}: ${error.rawMessage}`).catch((cause: unknown) => {
          this.#context.report(cause, "recording the outcome of a job the queue dead-lettered", job.id);
        });
      }
      if (await this.#publishOutcome(run, outcome, "the queue dead-lettered the job")) this.#context.emit("jobFailed", { job, attempt, workerId, error });
      return;
    }
    this.#context.emit("jobAbandoned", { job, attempt, workerId, reason: "delivery_lost", error });
  }

  /**
   * No worker of the pool can run the job: recorded and announced as `unschedulable` with the
   * reason, then put back after `noWorkerDelayMs`, or sooner when its start timeout comes first
   * (the next delivery then fails it).
   */
  async #unschedulable(run: Run): Promise<void> {
    const { job, attempt } = run;
    const { options, recorder } = this.#context;
    const workers = options.pool.list?.();
    const reason = (workers === undefined ? undefined : unschedulableReason(workers, run.needs?.requirements ?? job, run.needs?.sticky)) ?? `no worker of the pool can run job type \`${job.type}\``;
    this.publishQuietly({ kind: "state", state: "unschedulable", jobId: job.id, attempt, at: Date.now(), reason });
    if (recorder.enabled) await recorder.unschedulable(run, reason);
    const deadline = startDeadlineOf(job);
    const delayMs = deadline === undefined ? options.noWorkerDelayMs : Math.max(0, Math.min(options.noWorkerDelayMs, deadline - Date.now()));
    return this.defer(run, "no_worker", delayMs);
  }

  /**
   * A rate limit holds the job back past `rateLimits.maxHoldMs`: recorded and announced as
   * `unschedulable` with the limit and when its token is due, then put back until about then
   * (spread by up to one token's time, so jobs held together do not all come back at once), or
   * sooner when its start timeout comes first.
   */
  async #rateLimited(run: Run): Promise<void> {
    const { job, attempt } = run;
    const refusal = run.refusal ?? { waitMs: 0, reason: "rate limited" };
    const deadline = startDeadlineOf(job);
    const spread = Math.floor(Math.random() * refusal.waitMs * 0.25);
    const delayMs = Math.min(refusal.waitMs + spread, deadline === undefined ? Infinity : Math.max(0, deadline - Date.now()));
    // `delayMs`: the job is away that long, held by no dispatcher, so a client cancelling it
    // meanwhile ends it at once (JobClient), its command kept until the job is back.
    this.publishQuietly({ kind: "state", state: "unschedulable", jobId: job.id, attempt, at: Date.now(), reason: refusal.reason, delayMs });
    const { recorder } = this.#context;
    if (recorder.enabled) await recorder.unschedulable(run, refusal.reason);
    return this.defer(run, "rate_limited", delayMs);
  }

  /**
   * Ends a run whose job the store says must not run (see {@link JobRecorder.started}):
   * `finished` publishes the recorded outcome and settles as recorded; `stale` acks this copy.
   */
  async ended(run: Run, recorded: TransitionResult): Promise<void> {
    const record = recorded.record;
    if (recorded.status !== "finished" || record === undefined) {
      this.#context.emit("jobAbandoned", {
        job: run.job, attempt: run.attempt, reason: "superseded",
        error: new OrchestratorError("precondition_failed", `a newer attempt of job ${run.job.id} is recorded`, { details: { jobId: run.job.id } }),
      });
      await this.#settle(run, "ack");
      return;
    }
    await this.#asRecorded(run, record);
  }

  /** Publishes a final record's outcome and settles the delivery as the record says. */
  async #asRecorded(run: Run, record: JobRecord): Promise<void> {
    const outcome = outcomeOf(record);
    if (outcome === undefined) return this.giveBack(run, "its record is not final");
    if (!(await this.#publishOutcome(run, outcome))) return this.giveBack(run, "its recorded outcome could not be published");
    if (record.deadLetter !== undefined) await this.#settle(run, "deadLetter", 0, record.deadLetter.reason);
    else await this.#settle(run, "ack");
  }

  /** Puts the job back with its attempt unchanged (a copy, confirmed, then the ack). */
  async defer(run: Run, reason: DeferReason, delayMs: number): Promise<void> {
    const { job, attempt } = run;
    try {
      await this.#context.options.queue.enqueue(attempt === job.attempt ? job : { ...job, attempt }, delayMs > 0 ? { delayMs } : undefined);
    } catch (error) {
      this.#context.report(error, "putting the job back (it goes back with a retry instead)", job.id);
      return this.giveBack(run, `${OrchestratorError.from(error).code}: could not put the job back`, delayMs);
    }
    if (await this.#settle(run, "ack")) this.#context.emit("jobDeferred", { job, attempt, reason, delayMs });
  }

  /**
   * Sends a delivery that cannot be settled as planned back to the queue (`retry`, the attempt
   * rises) rather than hold it unsettled; a delivery the queue already took back or that is
   * settled is left alone.
   */
  giveBack(run: Run, why: string, delayMs = backoffDelay(run.attempt, this.#context.options.backoff)): Promise<void> {
    if (run.revoked !== undefined || run.delivery.settled) return Promise.resolve();
    return this.#settle(run, "retry", delayMs, `${why} (attempt ${run.attempt})`).then(ignore);
  }

  /** Publishes a worker's progress or log event for the run's attempt, best effort. */
  forward(run: Run, event: WorkerJobEvent): void {
    if (!run.executing) return;
    const { job, attempt } = run;
    if (event.kind === "progress") this.#context.recorder.progress(run, event.progress, event.message);
    else this.#context.recorder.log(run, event.line, event.stream);
    this.publishQuietly(
      event.kind === "progress"
        ? { kind: "progress", jobId: job.id, attempt, at: Date.now(), progress: event.progress, message: event.message }
        : { kind: "log", jobId: job.id, attempt, at: Date.now(), line: event.line, stream: event.stream },
    );
  }

  /** Publishes an informational event (progress, logs, `running`), unconfirmed; failures are dropped. */
  publishQuietly(event: JobEvent): void {
    // The result event is what counts. A publish that throws instead of rejecting must not
    // unwind the run half-way either.
    try {
      this.#context.options.events.publish(event, UNCONFIRMED).catch(ignore);
    } catch {
      // dropped, like a rejected one
    }
  }

  async #complete(run: Run, result: unknown, workerId: string, durationMs: number): Promise<void> {
    const { job, attempt } = run;
    if ((await this.#conclude(run, { status: "completed", result }, "ack", "", workerId)) === undefined) return;
    this.#context.emit("jobCompleted", { job, attempt, workerId, result, durationMs });
  }

  async #retry(run: Run, error: OrchestratorError, delayMs: number, workerId: string | undefined, lost: boolean): Promise<void> {
    const { job, attempt } = run;
    const event: JobEvent = { kind: "state", state: "retrying", jobId: job.id, attempt, at: Date.now(), error: error.toJSON(), delayMs, workerId };
    if (this.#context.recorder.enabled) await this.#context.recorder.retrying(run, event.error as SerializedError, lost, workerId);
    // Informational: the next attempt announces itself anyway, so the job goes back even unannounced.
    await this.#publish(run, event, "the job goes back to the queue all the same");
    await this.#settle(run, "retry", delayMs, `${error.code}: ${error.rawMessage}`);
    this.#context.emit("jobRetrying", { job, attempt, workerId, error, delayMs });
  }

  /**
   * Steps 1 to 3 of the settle order for a final outcome: record it, publish it confirmed, then
   * settle. Undefined when the outcome could not be recorded or published (the delivery was
   * given back instead) or the store holds another (settled as recorded); else whether the
   * settle succeeded.
   */
  async #conclude(run: Run, outcome: JobOutcome, how: "ack" | "deadLetter", reason: string, workerId: string | undefined): Promise<boolean | undefined> {
    const { recorder } = this.#context;
    if (recorder.enabled) {
      let recorded: TransitionResult | undefined;
      try {
        recorded = await recorder.finished(run, outcome, workerId, how === "deadLetter" ? reason : undefined);
      } catch (error) {
        this.#context.report(error, `recording the outcome of attempt ${run.attempt} (the job goes back to the queue)`, run.job.id);
        await this.giveBack(run, "its outcome could not be recorded");
        return undefined;
      }
      if (recorded !== undefined && recorded.status !== "applied") {
        await this.ended(run, recorded);
        return undefined;
      }
    }
    if (!(await this.#publishOutcome(run, outcome))) {
      await this.giveBack(run, "its outcome could not be published");
      return undefined;
    }
    return this.#settle(run, how, 0, reason);
  }

  #publishOutcome(run: Run, outcome: JobOutcome, unpublished?: string): Promise<boolean> {
    return this.#publish(run, { kind: "result", jobId: run.job.id, attempt: run.attempt, at: Date.now(), outcome }, unpublished);
  }

  /**
   * Publishes an event that settles an attempt; false (reported, with `unpublished` saying what
   * follows) when it could not be confirmed.
   */
  async #publish(run: Run, event: JobEvent, unpublished = "the job goes back to the queue"): Promise<boolean> {
    try {
      await this.#context.options.events.publish(event, CONFIRMED);
      return true;
    } catch (error) {
      this.#context.report(error, `publishing the outcome of attempt ${run.attempt} (${unpublished})`, run.job.id);
      return false;
    }
  }

  /** Settles the delivery; false (reported) when the delivery was lost or already settled. */
  async #settle(run: Run, how: "ack" | "retry" | "deadLetter", delayMs = 0, reason = ""): Promise<boolean> {
    const { delivery } = run;
    const startedAt = performance.now();
    try {
      if (how === "ack") await delivery.ack();
      else if (how === "retry") await delivery.retry(delayMs, reason);
      else await delivery.deadLetter(reason);
      this.#context.telemetry.settled(how, startedAt);
      return true;
    } catch (error) {
      this.#context.telemetry.settled(how, startedAt, error);
      this.#context.report(error, `settling the delivery (${how})`, run.job.id);
      return false;
    }
  }
}
