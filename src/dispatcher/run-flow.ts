import { OrchestratorError } from "../errors.ts";
import { abortReason, cancelError, raceSignal } from "../signals.ts";
import { MAX_TIMER_MS } from "../timers.ts";
import { startDeadlineOf } from "../job/start-deadline.ts";
import { startTimeoutError } from "../store/record-rules.ts";
import type { Lease } from "../worker-pool/types.ts";
import type { CancelRouter } from "./cancel-router.ts";
import type { DispatcherContext } from "./context.ts";
import type { Run } from "./run.ts";
import type { AttemptEnd, SettlePolicy } from "./settle-policy.ts";
import { unschedulableReason } from "./unschedulable.ts";
import { stickyGone, type Needs } from "./placement.ts";
import type { Bucket } from "./rate-limiter.ts";

const ignore = (): void => {};

/**
 * The per-job state machine: drives one delivery from receipt to its end.
 *
 *     received ─▶ prechecked ─▶ waiting for a slot ─▶ executing on a worker ─▶ settled ─▶ ended
 *         │            │                 │                      │
 *         └────────────┴─────────────────┴──── stopped ─────────┘
 *
 * - Precheck settles at once what must not reach a worker: a job type this dispatcher does not
 *   run, an attempt past `maxAttempts`, a job cancelled before it arrived, a dispatcher closing.
 * - Waiting: an older run of the same job id held here ends first (never two attempts of one
 *   job at once from one dispatcher); then a slot of a worker that can run the job is leased.
 * - Executing: the transport call runs under the run's controller, which a cancel, the job's
 *   timeout, a lost lease, a forced close or the queue revoking the delivery aborts (`Run.halt`,
 *   the first stop wins).
 * - Settling: the {@link SettlePolicy} decides and keeps the settle order; the slot is released
 *   last, then the run ends (a later copy of the same job may start).
 * @internal
 */
export class RunFlow {
  readonly #context: DispatcherContext;
  readonly #settle: SettlePolicy;
  readonly #cancels: CancelRouter;
  readonly #ended: () => void;
  #running = 0;

  /** `ended` is called once per run, after it released its slot. */
  constructor(context: DispatcherContext, settle: SettlePolicy, cancels: CancelRouter, ended: () => void) {
    this.#context = context;
    this.#settle = settle;
    this.#cancels = cancels;
    this.#ended = ended;
  }

  /** Attempts in flight on workers right now. */
  get running(): number {
    return this.#running;
  }

  /** Drives `run` (already in the registry) to its end; never rejects. */
  async run(run: Run): Promise<void> {
    const { report, runs } = this.#context;
    // One listener per delivery, and only when the queue can take deliveries away.
    const revocation = run.delivery.signal;
    let onRevoked: (() => void) | undefined;
    if (revocation !== undefined) {
      onRevoked = () => this.#revoke(run, revocation);
      if (revocation.aborted) onRevoked();
      else revocation.addEventListener("abort", onRevoked, { once: true });
    }
    try {
      if (run.revoked !== undefined) return await this.#settle.revoked(run, run.revoked, undefined);
      const early = this.#precheck(run);
      if (early !== undefined) return await early;
      if (run.job.runAt !== undefined && run.attempt === 1) {
        if (await this.#cameDue(run)) return;
        if (run.stop !== undefined) return await this.#settle.unstarted(run);
      }
      const { options, placement, limiter } = this.#context;
      const pending = placement.needsOf(run.job);
      const needs = (run.needs = pending instanceof Promise ? await pending : pending);
      if (run.stop !== undefined) return await this.#settle.unstarted(run);
      const buckets = limiter?.bucketsOf(run.job);
      const never = buckets === undefined ? undefined : limiter?.never(buckets);
      if (never !== undefined) {
        run.halt("unplaceable", new OrchestratorError("invalid_argument", never, { retryable: false, details: { reason: "rate_limited", field: "rateLimit.units" } }));
        return await this.#settle.unstarted(run);
      }
      // An older run of the same job id held here goes first (see #waitForLease); a rate-limited
      // job takes its tokens there, once a slot is free.
      let lease = run.older === undefined && buckets === undefined ? options.pool.acquire(needs.requirements) : undefined;
      if (lease === undefined) lease = await this.#waitForLease(run, needs, buckets);
      run.lease = lease;
      if (lease === undefined || run.stop !== undefined) return await this.#settle.unstarted(run);
      if (needs.sticky !== undefined) placement.remember(needs.sticky, lease.workerId, run.job.id);
      await this.#execute(run, lease);
    } catch (error) {
      report(error, "running the job (it goes back to the queue)", run.job.id);
      await this.#settle.giveBack(run, `${OrchestratorError.from(error).code}: dispatching failed`);
    } finally {
      if (onRevoked !== undefined) revocation?.removeEventListener("abort", onRevoked);
      runs.remove(run);
      // Release last: the outcome is published and the delivery settled by now.
      try {
        run.lease?.release();
      } catch (error) {
        report(error, "releasing the worker slot", run.job.id);
      }
      // A later copy of the same job waiting for this run may start now.
      run.end();
      this.#context.telemetry.ended(run.job);
      this.#ended();
    }
  }

  /** The queue took the run's delivery away (its signal fired): stop the wait or the transport call. */
  #revoke(run: Run, signal: AbortSignal): void {
    if (run.revoked !== undefined) return;
    const reason = abortReason(signal);
    run.revoked = reason;
    run.halt("revoked", reason);
  }

  /** Settles at once what must not reach a worker; undefined when the job may run. */
  #precheck(run: Run): Promise<void> | undefined {
    const { job } = run;
    const { jobTypes } = this.#context.options;
    if (jobTypes !== undefined && !jobTypes.has(job.type)) {
      const error = new OrchestratorError("not_found", `this dispatcher runs no jobs of type "${job.type}"`, {
        details: { type: job.type },
        retryable: false,
      });
      return this.#settle.fail(run, error, undefined);
    }
    if (run.attempt > job.maxAttempts) {
      const error = new OrchestratorError(
        "worker_lost",
        `attempt ${run.attempt} exceeds maxAttempts ${job.maxAttempts}: earlier attempts ended without an outcome`,
        { retryable: false },
      );
      return this.#settle.fail(run, error, undefined);
    }
    const dropped = run.delivery.dropped;
    if (dropped !== undefined) {
      // drop_newest: its concurrency key was at its limit when its turn came.
      run.stop = "cancel";
      run.cancel = { jobId: job.id, reason: "requested", message: dropped, at: Date.now() };
      return this.#settle.cancelled(run, undefined);
    }
    const cancel = this.#cancels.cancelFor(job.id);
    if (cancel !== undefined) {
      run.stop = "cancel";
      run.cancel = cancel;
      return this.#settle.cancelled(run, undefined);
    }
    if (this.#startDeadline(run) <= Date.now()) return this.#settle.fail(run, this.#startTimeoutError(run), undefined);
    if (!this.#context.accepting()) {
      run.stop = "closing";
      return this.#settle.defer(run, "shutdown", 0);
    }
    return undefined;
  }

  /**
   * A job that waited for its due time (`runAt`) reached us: its handles learn it is `queued`,
   * and with a store its record too, awaited and fenced, because the record is what says whether
   * it was cancelled while it waited (a cancel command may be older than its retention by now).
   * True when it settled a job the record shows ended; false when the job may go on.
   */
  async #cameDue(run: Run): Promise<boolean> {
    const { job, attempt } = run;
    this.#settle.publishQuietly({ kind: "state", state: "queued", jobId: job.id, attempt, at: Date.now() });
    const { recorder } = this.#context;
    if (!recorder.enabled) return false;
    const recorded = await recorder.cameDue(run);
    if (recorded === undefined || recorded.status === "applied") return false;
    await this.#settle.ended(run, recorded);
    return true;
  }

  /** When the run must have started, or +Infinity: only the first attempt of a life waits against the job's start timeout. */
  #startDeadline(run: Run): number {
    return run.attempt === 1 ? (startDeadlineOf(run.job) ?? Infinity) : Infinity;
  }

  #startTimeoutError(run: Run, reason?: string): OrchestratorError {
    const { job } = run;
    const { pool } = this.#context.options;
    const workers = pool.list?.();
    const why = reason ?? (workers === undefined ? undefined : unschedulableReason(workers, run.needs?.requirements ?? job, run.needs?.sticky));
    return startTimeoutError({ id: job.id, startTimeoutMs: job.startTimeoutMs ?? 0, ...(why === undefined ? {} : { reason: why }) });
  }

  /**
   * Announces and records, once per run, that no healthy worker can run its job while it waits
   * (workers that could are unhealthy or draining); the wait goes on until one is back or the
   * start timeout passes.
   */
  #noteUnschedulable(run: Run): void {
    const workers = this.#context.options.pool.list?.();
    const reason = workers === undefined ? undefined : unschedulableReason(workers, run.needs?.requirements ?? run.job, run.needs?.sticky);
    if (reason === undefined) return;
    const { job, attempt } = run;
    this.#settle.publishQuietly({ kind: "state", state: "unschedulable", jobId: job.id, attempt, at: Date.now(), reason });
    void this.#context.recorder.unschedulable(run, reason);
  }

  /**
   * Waits until a slot fit for the job is free, then (for a rate-limited job) takes its tokens,
   * then leases the slot; undefined when the run was stopped meanwhile (`run.stop` says why).
   */
  async #waitForLease(run: Run, needs: Needs, buckets: readonly Bucket[] | undefined): Promise<Lease | undefined> {
    const { pool } = this.#context.options;
    const { waiting, limiter } = this.#context;
    const { controller } = run;
    const job = needs.requirements;
    let admitted = buckets === undefined;
    waiting.add(run);
    const deadline = this.#startDeadline(run);
    const startTimer = deadline === Infinity ? undefined : setTimeout(
      () => run.halt("start_timeout", this.#startTimeoutError(run)),
      Math.min(Math.max(0, deadline - Date.now()), MAX_TIMER_MS),
    );
    let noted = false;
    try {
      // Never two attempts of one job id at once from here: an older run of it (a lost delivery
      // still winding down, or a duplicate) ends first. run.older follows as older runs end.
      for (let older = run.older; older !== undefined && run.stop === undefined; older = run.older) {
        await raceSignal(older.ended(), controller.signal).catch(ignore);
      }
      if (run.stop !== undefined) return undefined;
      for (;;) {
        const gone = needs.sticky === undefined ? undefined : this.#stickyGone(needs);
        if (gone !== undefined) {
          run.halt("unplaceable", gone);
          return undefined;
        }
        if (!pool.canRun(job)) {
          run.halt("no_worker", cancelError("shutdown", "no worker can run the job"));
          return undefined;
        }
        if (!noted) {
          noted = true;
          this.#noteUnschedulable(run);
        }
        try {
          await pool.onAvailable(job, { signal: controller.signal });
        } catch (error) {
          if (controller.signal.aborted) return undefined;
          throw error;
        }
        if (run.stop !== undefined) return undefined;
        if (!admitted) {
          let refusal;
          try {
            refusal = await (limiter as NonNullable<typeof limiter>).admit(buckets as readonly Bucket[], controller.signal, run.job.id);
          } catch (error) {
            if (controller.signal.aborted) return undefined;
            throw error;
          }
          if (refusal !== undefined) {
            run.refusal = refusal;
            run.halt("rate_limited", new OrchestratorError("resource_exhausted", refusal.reason, { details: { reason: "rate_limited", delayMs: refusal.waitMs } }));
            return undefined;
          }
          admitted = true;
          if (run.stop !== undefined) return undefined;
        }
        const lease = pool.acquire(job);
        if (lease !== undefined) return lease;
      }
    } finally {
      clearTimeout(startTimer);
      waiting.delete(run);
    }
  }

  /** Why a hard-sticky job can never get its worker here (draining, gone, no longer fit), or undefined. */
  #stickyGone(needs: Needs): OrchestratorError | undefined {
    const sticky = needs.sticky;
    if (sticky?.hard !== true || sticky.workerId === undefined) return undefined;
    const { pool } = this.#context.options;
    const id = sticky.workerId;
    const worker = pool.get !== undefined ? pool.get(id) : pool.list?.().find((w) => w.id === id);
    if (worker === undefined && pool.get === undefined && pool.list === undefined) return undefined;
    return stickyGone(sticky, worker, pool.canRun(needs.requirements));
  }

  async #execute(run: Run, lease: Lease): Promise<void> {
    const { job, attempt, controller } = run;
    const workerId = lease.workerId;
    // With a store: a job whose record is final already (its outcome recorded before a crash lost
    // the ack, or failed at its start timeout) or that a newer attempt owns does not run again.
    // Only a job that ran before (a redelivery, or an attempt after the first) can find its
    // record final or owned by a newer attempt, so only those wait for the store before they
    // start; a first attempt's start is recorded on the way (its outcome is recorded in the
    // settle order all the same), which keeps a store round trip off the common path.
    // A schedule's job may sit on the queue twice (a new leader queues again a tick whose
    // enqueue it cannot confirm): it starts only through an exclusive start naming its copy, so
    // one copy runs.
    const { recorder } = this.#context;
    if (recorder.enabled) {
      if (run.delivery.redelivered || run.attempt > 1 || job.schedule !== undefined) {
        const recorded = await recorder.started(run, workerId, job.schedule?.copy);
        if (recorded !== undefined && recorded.status !== "applied") return this.#settle.ended(run, recorded);
        if (run.revoked !== undefined) return this.#settle.revoked(run, run.revoked, undefined);
        if (run.stop !== undefined) return this.#settle.unstarted(run);
      } else {
        void recorder.started(run, workerId);
      }
    }
    // Linked by hand rather than with AbortSignal.any(), which costs a dependent signal and weak
    // references per job on the hot path.
    const leaseSignal = lease.signal;
    const onLost = (): void => run.halt("lost", OrchestratorError.from(leaseSignal.reason, "worker_lost"));
    if (leaseSignal.aborted) onLost();
    else leaseSignal.addEventListener("abort", onLost, { once: true });
    const startedAt = Date.now();
    // The worker sees the deadline too; this timer makes sure the call ends even if it does not.
    const timer = setTimeout(
      () => run.halt("timeout", cancelError("timeout", `job ${job.id} ran past its timeout of ${job.timeoutMs} ms`)),
      Math.min(job.timeoutMs, MAX_TIMER_MS),
    );
    run.executing = true;
    this.#running++;
    this.#settle.publishQuietly({ kind: "state", state: "running", jobId: job.id, attempt, at: startedAt, workerId });
    this.#context.emit("jobStarted", { job, attempt, workerId });
    let end: AttemptEnd;
    try {
      const value = await lease.transport.execute(
        {
          jobId: job.id,
          type: job.type,
          payload: job.payload,
          attempt,
          fencingToken: run.fencingToken,
          deadline: startedAt + job.timeoutMs,
          idempotencyKey: job.idempotencyKey,
          trace: job.trace,
          traceCarrier: this.#context.telemetry.executing(job, attempt, workerId),
        },
        { signal: controller.signal, onEvent: (event) => this.#settle.forward(run, event) },
      );
      end = { ok: true, value, durationMs: 0 };
    } catch (failure) {
      end = { ok: false, failure };
    } finally {
      clearTimeout(timer);
      leaseSignal.removeEventListener("abort", onLost);
      run.executing = false;
      this.#running--;
    }
    this.#context.telemetry.executed(job, end.ok ? undefined : OrchestratorError.from(controller.signal.aborted ? controller.signal.reason : end.failure));
    if (end.ok) end.durationMs = Date.now() - startedAt;
    await this.#settle.afterAttempt(run, end, workerId);
  }
}
