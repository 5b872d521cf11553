import { EventEmitter } from "eventemitter3";
import { OrchestratorError } from "../errors.ts";
import type { CancelCommand, JobEvent, JobOutcome } from "../job/types.ts";
import type { Consumer, Delivery, PublishOptions, Subscription, WaitOptions } from "../queue/types.ts";
import { abortReason, cancelError, raceSignal, waitSignal } from "../signals.ts";
import { backoffDelay, MAX_TIMER_MS } from "../timers.ts";
import type { WorkerJobEvent } from "../job/types.ts";
import { neverStarted } from "../wire/never-started.ts";
import { checkInteger, checkObject, checkSignal, optional } from "../validate.ts";
import { emitSafely, reportListenerError } from "../worker-pool/emit-safely.ts";
import type { Lease, WorkerPoolEvents } from "../worker-pool/types.ts";
import { Run, RunRegistry, type Stop } from "./run.ts";
import { CancelMemory } from "./cancel-memory.ts";
import { resolveDispatcherOptions, type ResolvedDispatcherOptions } from "./options.ts";
import type { DispatcherEvents, DispatcherOptions } from "./types.ts";

const CONFIRMED: PublishOptions = Object.freeze({ confirm: true });
const UNCONFIRMED: PublishOptions = Object.freeze({ confirm: false });
const ignore = (): void => {};

/**
 * The loop that takes jobs from a {@link JobQueue}, leases a worker slot from the pool, runs the
 * job through the worker's transport and settles it: publish the outcome event (confirmed), then
 * settle the delivery (ack, retry or dead-letter), then release the slot. A crash anywhere before
 * the settle leaves the delivery to be redelivered (at-least-once). A delivery is never left held
 * unsettled while this dispatcher runs (it would keep a prefetch slot until the consumer stops):
 * when the outcome cannot be published, the job cannot be put back, or something unexpected
 * throws, the delivery goes back to the queue with `retry` after the retry backoff, as a crash
 * before the ack would send it back (the attempt rises).
 *
 * - Prefetch follows `pool.capacity` (slots of healthy workers), so jobs it cannot run stay in
 *   the queue for other dispatchers. When the capacity drops below the jobs held (workers went
 *   unhealthy or drain), jobs still waiting for a slot beyond it go back to the queue at once,
 *   their attempt unchanged (`jobDeferred`, reason `no_worker`).
 * - Retries: a retryable failure or a timeout with attempts left goes back with exponential
 *   backoff; a lost worker goes back at once (`workerLostDelayMs`); a non-retryable failure or
 *   the last attempt's failure publishes result `failed` and dead-letters the delivery.
 * - Cancellation: cancel commands are subscribed before consuming and remembered
 *   (`cancelRetentionMs`), so a job cancelled while queued never starts, even when this
 *   dispatcher started after the cancel; a running job's transport call is aborted.
 * - A job that no worker of the pool can run goes back to the queue after `noWorkerDelayMs`
 *   without using an attempt.
 * - A delivery the queue takes away (`Delivery.signal` fires) stops its job at once, whether it
 *   waits for a slot or runs: the transport call is aborted (the handler's signal fires). For
 *   `delivery_lost` (the job is back in the queue) nothing is published or settled and
 *   `jobAbandoned` is emitted; for `consumer_timeout` (the queue dead-lettered the job) a
 *   `failed` outcome carrying that error is published and `jobFailed` emitted. The slot is
 *   released once the transport call has ended.
 * - This dispatcher never runs two attempts of one job id at the same time: a copy that arrives
 *   while an older one is held here (a redelivery whose lost predecessor is still winding down,
 *   or a duplicate) waits until the older run has ended (transport call over, slot released).
 *   Across dispatchers nothing waits: once the broker takes a delivery back, another dispatcher
 *   may start the job while this one's attempt still runs, until the abort reaches the handler.
 *   That window is the time this dispatcher takes to learn of the loss (at once when the broker
 *   closes the channel or the socket drops; on a silent link each side detects missed
 *   heartbeats on its own clock, RabbitMQ after about one heartbeat timeout and amqplib after
 *   two to three, so up to about two heartbeat timeouts), plus the cancel's trip to the worker
 *   (milliseconds on a live worker connection), plus the time the handler takes to honour its
 *   signal.
 * - Throwing listeners are reported as `error` events and never stop it.
 *
 * @example
 * ```ts
 * const dispatcher = new Dispatcher({ queue, events: queue, pool });
 * dispatcher.on("jobFailed", ({ job, error }) => log.warn(job.id, error.message));
 * await dispatcher.start();
 * // …
 * await dispatcher.close({ signal: AbortSignal.timeout(30_000) });
 * ```
 */
export class Dispatcher extends EventEmitter<DispatcherEvents> {
  readonly #options: ResolvedDispatcherOptions;
  readonly #cancels: CancelMemory;
  readonly #runs = new RunRegistry();
  /** Runs waiting for a free slot. */
  readonly #waiting = new Set<Run>();
  #active = 0;
  #running = 0;
  readonly #idleWaiters = new Set<() => void>();
  #accepting = false;
  #prefetch = 0;
  #consumer: Consumer | undefined;
  #cancelSubscription: Subscription | undefined;
  #started: Promise<void> | undefined;
  #closed: Promise<void> | undefined;

  /**
   * Checks the options; does no I/O (see {@link Dispatcher.start}).
   * @throws {OrchestratorError} `invalid_argument` naming the first bad option.
   */
  constructor(options: DispatcherOptions) {
    super();
    this.#options = resolveDispatcherOptions(options);
    this.#cancels = new CancelMemory(this.#options.cancelRetentionMs, this.#options.maxRetainedCancels);
  }

  /** Attempts in flight on workers right now. */
  get running(): number {
    return this.#running;
  }

  /**
   * Subscribes to cancel commands, then starts consuming with prefetch = `pool.capacity`.
   * Idempotent: a second call returns the first call's promise.
   * @throws {OrchestratorError} `queue_closed` after `close()`; whatever the queue's `consume`
   * or the events' `subscribeCancels` rejects with.
   */
  start(): Promise<void> {
    this.#started ??= this.#start();
    return this.#started;
  }

  async #start(): Promise<void> {
    if (this.#closed !== undefined) throw new OrchestratorError("queue_closed", "the dispatcher is closed");
    const { events, queue, pool } = this.#options;
    const subscription = await events.subscribeCancels(this.#onCancel);
    if (this.#closed !== undefined) {
      await subscription.close();
      throw new OrchestratorError("queue_closed", "the dispatcher was closed while starting");
    }
    this.#cancelSubscription = subscription;
    pool.on("capacityChanged", this.#onCapacityChanged);
    pool.on("workerStateChanged", this.#onWorkerStateChanged);
    pool.on("workerRemoved", this.#onWorkerRemoved);
    this.#accepting = true;
    this.#prefetch = pool.capacity;
    try {
      this.#consumer = await queue.consume(this.#onDelivery, { prefetch: this.#prefetch });
    } catch (error) {
      this.#accepting = false;
      this.#unlistenPool();
      await subscription.close().catch(ignore);
      throw error;
    }
    // Capacity may have changed while consume() was on its way.
    this.#onCapacityChanged({ capacity: pool.capacity });
  }

  /**
   * Resolves when no job is held: none running, waiting for a slot or being settled. Resolves
   * at once when already idle.
   * @throws {OrchestratorError} `canceled` / `deadline_exceeded` from the options;
   * `invalid_argument` for a bad option.
   */
  onIdle(options: WaitOptions = {}): Promise<void> {
    let checked: WaitOptions;
    try {
      const o = checkObject("options", options);
      checked = {
        signal: checkSignal("signal", o.signal),
        timeoutMs: optional(o.timeoutMs, undefined, (v) => checkInteger("timeoutMs", v, 0, MAX_TIMER_MS)),
      };
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.#active === 0) return Promise.resolve();
    const { signal, dispose } = waitSignal(checked, "onIdle");
    let waiter!: () => void;
    const idle = new Promise<void>((resolve) => this.#idleWaiters.add((waiter = resolve)));
    // A wait given up (signal, timeout) leaves nothing behind for the next idle moment.
    return raceSignal(idle, signal).finally(() => {
      this.#idleWaiters.delete(waiter);
      dispose();
    });
  }

  /**
   * Stops taking jobs and lets the running ones finish; jobs held but not started go back to the
   * queue at once (their attempt unchanged). When `signal` fires (or `closeTimeoutMs` passes),
   * running jobs are aborted with reason `shutdown` and their deliveries left unsettled, so the
   * queue delivers them again (a forced shutdown is not a failure of the job). Then the consumer
   * and the cancel subscription are closed. Idempotent. Does not close the queue, the events or
   * the pool: they belong to the caller.
   * @throws {OrchestratorError} `invalid_argument` for a bad option (before anything closes).
   */
  close(options: { signal?: AbortSignal } = {}): Promise<void> {
    const signal = checkSignal("signal", checkObject("options", options).signal);
    this.#closed ??= this.#close(signal);
    return this.#closed;
  }

  /** Same as `close()` without a signal, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #close(signal: AbortSignal | undefined): Promise<void> {
    this.#accepting = false;
    await this.#started?.catch(ignore);
    const consumer = this.#consumer;
    if (consumer !== undefined) {
      await consumer.setPrefetch(0).catch((error: unknown) => this.#report(error, "pausing the consumer"));
    }
    for (const run of this.#waiting) this.#stop(run, "release", cancelError("shutdown"));
    const { signal: force, dispose } = waitSignal({ signal, timeoutMs: this.#options.closeTimeoutMs }, "close");
    try {
      await this.onIdle({ signal: force });
    } catch {
      const reason = cancelError("shutdown", "the dispatcher is closing");
      this.#runs.forEach((run) => this.#stop(run, "shutdown", reason));
      await this.onIdle();
    } finally {
      dispose();
    }
    await consumer?.cancel().catch((error: unknown) => this.#report(error, "cancelling the consumer"));
    await this.#cancelSubscription?.close().catch((error: unknown) => this.#report(error, "closing the cancel subscription"));
    this.#unlistenPool();
  }

  #unlistenPool(): void {
    const { pool } = this.#options;
    pool.off("capacityChanged", this.#onCapacityChanged);
    pool.off("workerStateChanged", this.#onWorkerStateChanged);
    pool.off("workerRemoved", this.#onWorkerRemoved);
  }

  readonly #onCapacityChanged = ({ capacity }: { capacity: number }): void => {
    const consumer = this.#consumer;
    if (!this.#accepting || consumer === undefined || capacity === this.#prefetch) return;
    const dropped = capacity < this.#prefetch;
    this.#prefetch = capacity;
    consumer.setPrefetch(capacity).catch((error: unknown) => this.#report(error, "changing the prefetch"));
    if (dropped) this.#shed(capacity);
  };

  /**
   * Lowering the prefetch settles nothing: jobs held beyond the new capacity that still wait for a
   * slot would stay here, out of reach of dispatchers that could run them. They go back, newest
   * first. Held means delivered and neither settled nor taken back by the queue.
   */
  #shed(capacity: number): void {
    if (this.#waiting.size === 0) return;
    let held = 0;
    this.#runs.forEach((run) => {
      if (!run.delivery.settled && run.revoked === undefined) held++;
    });
    for (const run of [...this.#waiting].reverse()) {
      if (held <= capacity) return;
      if (run.stop !== undefined || run.revoked !== undefined) continue;
      this.#stop(run, "shed", cancelError("shutdown", "the pool's healthy capacity dropped below the jobs held"));
      held--;
    }
  }

  readonly #onWorkerStateChanged = (change: WorkerPoolEvents["workerStateChanged"][0]): void => {
    this.#emit("workerStateChanged", change);
  };

  /** A removed worker may have been the only one able to run a waiting job. */
  readonly #onWorkerRemoved = (): void => {
    for (const run of this.#waiting) {
      if (!this.#options.pool.canRun(run.job)) this.#stop(run, "no_worker", cancelError("shutdown", "no worker can run the job"));
    }
  };

  readonly #onCancel = (command: CancelCommand): void => {
    if (typeof command?.jobId !== "string") return;
    this.#cancels.add(command);
    this.#runs.forJob(command.jobId, (run) => {
      if (run.stop === undefined) run.cancel = command;
      this.#stop(run, "cancel", cancelError(command.reason, command.message));
    });
  };

  readonly #onDelivery = (delivery: Delivery): void => {
    const run = new Run(delivery);
    this.#runs.add(run);
    this.#active++;
    void this.#run(run);
  };

  async #run(run: Run): Promise<void> {
    // One listener per delivery, and only when the queue can take deliveries away.
    const revocation = run.delivery.signal;
    let onRevoked: (() => void) | undefined;
    if (revocation !== undefined) {
      onRevoked = () => this.#revoke(run, revocation);
      if (revocation.aborted) onRevoked();
      else revocation.addEventListener("abort", onRevoked, { once: true });
    }
    try {
      if (run.revoked !== undefined) return await this.#revoked(run, run.revoked, undefined);
      const early = this.#precheck(run);
      if (early !== undefined) return await early;
      const { pool } = this.#options;
      // An older run of the same job id held here goes first (see #waitForLease).
      let lease = run.next === undefined ? pool.acquire(run.job) : undefined;
      if (lease === undefined) lease = await this.#waitForLease(run);
      run.lease = lease;
      if (lease === undefined || run.stop !== undefined) return await this.#settleUnstarted(run);
      await this.#execute(run, lease);
    } catch (error) {
      this.#report(error, "running the job (it goes back to the queue)", run.job.id);
      await this.#giveBack(run, `${OrchestratorError.from(error).code}: dispatching failed`);
    } finally {
      if (onRevoked !== undefined) revocation?.removeEventListener("abort", onRevoked);
      this.#runs.remove(run);
      // Release last: the outcome is published and the delivery settled by now.
      try {
        run.lease?.release();
      } catch (error) {
        this.#report(error, "releasing the worker slot", run.job.id);
      }
      // A later copy of the same job waiting for this run may start now.
      run.end();
      if (--this.#active === 0) this.#notifyIdle();
    }
  }

  /** The queue took the run's delivery away (its signal fired): stop the wait or the transport call. */
  #revoke(run: Run, signal: AbortSignal): void {
    if (run.revoked !== undefined) return;
    const reason = abortReason(signal);
    run.revoked = reason;
    this.#stop(run, "revoked", reason);
  }

  /** Settles at once what must not reach a worker; undefined when the job may run. */
  #precheck(run: Run): Promise<void> | undefined {
    const { job } = run;
    const { jobTypes } = this.#options;
    if (jobTypes !== undefined && !jobTypes.has(job.type)) {
      const error = new OrchestratorError("not_found", `this dispatcher runs no jobs of type "${job.type}"`, {
        details: { type: job.type },
        retryable: false,
      });
      return this.#fail(run, error, undefined);
    }
    if (run.attempt > job.maxAttempts) {
      const error = new OrchestratorError(
        "worker_lost",
        `attempt ${run.attempt} exceeds maxAttempts ${job.maxAttempts}: earlier attempts ended without an outcome`,
        { retryable: false },
      );
      return this.#fail(run, error, undefined);
    }
    const cancel = this.#cancels.get(job.id);
    if (cancel !== undefined) {
      run.stop = "cancel";
      run.cancel = cancel;
      return this.#cancelled(run, undefined);
    }
    if (!this.#accepting) {
      run.stop = "release";
      return this.#defer(run, "shutdown", 0);
    }
    return undefined;
  }

  async #waitForLease(run: Run): Promise<Lease | undefined> {
    const { pool } = this.#options;
    const { job, controller } = run;
    this.#waiting.add(run);
    try {
      // Never two attempts of one job id at once from here: an older run of it (a lost delivery
      // still winding down, or a duplicate) ends first. run.next follows as older runs end.
      for (let earlier = run.next; earlier !== undefined && run.stop === undefined; earlier = run.next) {
        await raceSignal(earlier.ended(), controller.signal).catch(ignore);
      }
      if (run.stop !== undefined) return undefined;
      for (;;) {
        if (!pool.canRun(job)) {
          this.#stop(run, "no_worker", cancelError("shutdown", "no worker can run the job"));
          return undefined;
        }
        try {
          await pool.onAvailable(job, { signal: controller.signal });
        } catch (error) {
          if (controller.signal.aborted) return undefined;
          throw error;
        }
        if (run.stop !== undefined) return undefined;
        const lease = pool.acquire(job);
        if (lease !== undefined) return lease;
      }
    } finally {
      this.#waiting.delete(run);
    }
  }

  #settleUnstarted(run: Run): Promise<void> {
    if (run.revoked !== undefined) return this.#revoked(run, run.revoked, undefined);
    if (run.stop === "cancel") return this.#cancelled(run, undefined);
    if (run.stop === "no_worker") return this.#defer(run, "no_worker", this.#options.noWorkerDelayMs);
    // The prefetch already fell with the capacity, so the copy goes to whoever has a slot.
    if (run.stop === "shed") return this.#defer(run, "no_worker", 0);
    return this.#defer(run, "shutdown", 0);
  }

  async #execute(run: Run, lease: Lease): Promise<void> {
    const { job, attempt, controller } = run;
    const workerId = lease.workerId;
    // Linked by hand rather than with AbortSignal.any(), which costs a dependent signal and weak
    // references per job on the hot path.
    const leaseSignal = lease.signal;
    const onLost = (): void => this.#stop(run, "lost", OrchestratorError.from(leaseSignal.reason, "worker_lost"));
    if (leaseSignal.aborted) onLost();
    else leaseSignal.addEventListener("abort", onLost, { once: true });
    const startedAt = Date.now();
    // The worker sees the deadline too; this timer makes sure the call ends even if it does not.
    const timer = setTimeout(
      () => this.#stop(run, "timeout", cancelError("timeout", `job ${job.id} ran past its timeout of ${job.timeoutMs} ms`)),
      // setTimeout() fires at once past 2^31-1 ms; a longer deadline is cut to ~24.8 days.
      Math.min(job.timeoutMs, MAX_TIMER_MS),
    );
    run.executing = true;
    this.#running++;
    this.#publishQuietly({ kind: "state", state: "running", jobId: job.id, attempt, at: startedAt, workerId });
    this.#emit("jobStarted", { job, attempt, workerId });
    let ok = false;
    let value: unknown;
    let failure: unknown;
    try {
      value = await lease.transport.execute(
        {
          jobId: job.id,
          type: job.type,
          payload: job.payload,
          attempt,
          deadline: startedAt + job.timeoutMs,
          idempotencyKey: job.idempotencyKey,
          trace: job.trace,
        },
        { signal: controller.signal, onEvent: (event) => this.#forward(run, event) },
      );
      ok = true;
    } catch (error) {
      failure = error;
    } finally {
      clearTimeout(timer);
      leaseSignal.removeEventListener("abort", onLost);
      run.executing = false;
      this.#running--;
    }
    // A revoked delivery overrides whatever else ended the call: the queue has the job now.
    if (run.revoked !== undefined) return this.#revoked(run, run.revoked, workerId);
    if (ok) return this.#complete(run, value, workerId, Date.now() - startedAt);
    const stop = run.stop;
    // Forced close: leave the delivery unsettled; the queue delivers it again once we stop consuming.
    if (stop === "shutdown") return;
    if (stop === "cancel") return this.#cancelled(run, workerId);
    const error = stop === undefined ? OrchestratorError.from(failure) : abortReason(controller.signal);
    // Refused before it started (no session, no free slot there): not an attempt, the job goes back as it was.
    if (stop === undefined && neverStarted(error)) {
      return this.#defer(run, "not_started", error.code === "resource_exhausted" ? backoffDelay(1, this.#options.backoff) : this.#options.workerLostDelayMs);
    }
    const lost = stop === "lost" || error.code === "worker_lost";
    if (attempt < job.maxAttempts && (lost || error.retryable)) {
      const delayMs = lost ? this.#options.workerLostDelayMs : backoffDelay(attempt, this.#options.backoff);
      return this.#retry(run, error, delayMs, workerId);
    }
    return this.#fail(run, error, workerId);
  }

  #forward(run: Run, event: WorkerJobEvent): void {
    if (!run.executing) return;
    const { job, attempt } = run;
    this.#publishQuietly(
      event.kind === "progress"
        ? { kind: "progress", jobId: job.id, attempt, at: Date.now(), progress: event.progress, message: event.message }
        : { kind: "log", jobId: job.id, attempt, at: Date.now(), line: event.line, stream: event.stream },
    );
  }

  async #complete(run: Run, result: unknown, workerId: string, durationMs: number): Promise<void> {
    const { job, attempt } = run;
    if (!(await this.#publishOutcome(run, { status: "completed", result }))) return this.#giveBack(run, "its outcome could not be published");
    await this.#settle(run, "ack");
    this.#emit("jobCompleted", { job, attempt, workerId, result, durationMs });
  }

  async #cancelled(run: Run, workerId: string | undefined): Promise<void> {
    const { job, attempt } = run;
    const reason = run.cancel?.reason ?? "requested";
    const outcome: JobOutcome = { status: "cancelled", reason, message: run.cancel?.message };
    if (!(await this.#publishOutcome(run, outcome))) return this.#giveBack(run, "its outcome could not be published");
    await this.#settle(run, "ack");
    this.#emit("jobCancelled", { job, attempt, workerId, reason, started: workerId !== undefined });
  }

  async #retry(run: Run, error: OrchestratorError, delayMs: number, workerId: string | undefined): Promise<void> {
    const { job, attempt } = run;
    const event: JobEvent = { kind: "state", state: "retrying", jobId: job.id, attempt, at: Date.now(), error: error.toJSON(), delayMs, workerId };
    // Informational: the next attempt announces itself anyway, so the job goes back even unannounced.
    await this.#publish(run, event, "the job goes back to the queue all the same");
    await this.#settle(run, "retry", delayMs, `${error.code}: ${error.rawMessage}`);
    this.#emit("jobRetrying", { job, attempt, workerId, error, delayMs });
  }

  async #fail(run: Run, error: OrchestratorError, workerId: string | undefined): Promise<void> {
    const { job, attempt } = run;
    if (!(await this.#publishOutcome(run, { status: "failed", error: error.toJSON() }))) return this.#giveBack(run, "its outcome could not be published");
    const reason = `${error.code}: ${error.rawMessage} (attempt ${attempt} of ${job.maxAttempts})`;
    const settled = await this.#settle(run, "deadLetter", 0, reason);
    this.#emit("jobFailed", { job, attempt, workerId, error });
    if (settled) this.#emit("jobDeadLettered", { job, attempt, reason });
  }

  /**
   * Ends a run whose delivery the queue took away, settling nothing. `consumer_timeout`: the
   * queue dead-lettered the job, which fails with that error. Otherwise (`delivery_lost`) the job
   * is back in the queue: nothing is published, the redelivery will publish the outcome.
   */
  async #revoked(run: Run, error: OrchestratorError, workerId: string | undefined): Promise<void> {
    const { job, attempt } = run;
    if (error.details.reason === "consumer_timeout") {
      const outcome: JobOutcome = { status: "failed", error: error.toJSON() };
      if (await this.#publishOutcome(run, outcome, "the queue dead-lettered the job")) this.#emit("jobFailed", { job, attempt, workerId, error });
      return;
    }
    this.#emit("jobAbandoned", { job, attempt, workerId, reason: "delivery_lost", error });
  }

  /** Puts the job back with its attempt unchanged (a copy, confirmed, then the ack). */
  async #defer(run: Run, reason: "no_worker" | "shutdown" | "not_started", delayMs: number): Promise<void> {
    const { job, attempt } = run;
    try {
      await this.#options.queue.enqueue(attempt === job.attempt ? job : { ...job, attempt }, delayMs > 0 ? { delayMs } : undefined);
    } catch (error) {
      this.#report(error, "putting the job back (it goes back with a retry instead)", job.id);
      return this.#giveBack(run, `${OrchestratorError.from(error).code}: could not put the job back`, delayMs);
    }
    if (await this.#settle(run, "ack")) this.#emit("jobDeferred", { job, attempt, reason, delayMs });
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
      await this.#options.events.publish(event, CONFIRMED);
      return true;
    } catch (error) {
      this.#report(error, `publishing the outcome of attempt ${run.attempt} (${unpublished})`, run.job.id);
      return false;
    }
  }

  #publishQuietly(event: JobEvent): void {
    // Progress, logs and `running` are best-effort: the result event is what counts. A publish
    // that throws instead of rejecting must not unwind the run half-way either.
    try {
      this.#options.events.publish(event, UNCONFIRMED).catch(ignore);
    } catch {
      // dropped, like a rejected one
    }
  }

  /**
   * Sends a delivery that cannot be settled as planned back to the queue (`retry`, the attempt
   * rises) rather than hold it unsettled; a delivery the queue already took back or that is
   * settled is left alone.
   */
  #giveBack(run: Run, why: string, delayMs = backoffDelay(run.attempt, this.#options.backoff)): Promise<void> {
    if (run.revoked !== undefined || run.delivery.settled) return Promise.resolve();
    return this.#settle(run, "retry", delayMs, `${why} (attempt ${run.attempt})`).then(ignore);
  }

  /** Settles the delivery; false (reported) when the delivery was lost or already settled. */
  async #settle(run: Run, how: "ack" | "retry" | "deadLetter", delayMs = 0, reason = ""): Promise<boolean> {
    const { delivery } = run;
    try {
      if (how === "ack") await delivery.ack();
      else if (how === "retry") await delivery.retry(delayMs, reason);
      else await delivery.deadLetter(reason);
      return true;
    } catch (error) {
      this.#report(error, `settling the delivery (${how})`, run.job.id);
      return false;
    }
  }

  /** Aborts a run's wait or transport call once; the first stop wins. */
  #stop(run: Run, stop: Stop, reason: OrchestratorError): void {
    if (run.stop !== undefined) return;
    run.stop = stop;
    run.controller.abort(reason);
  }

  #notifyIdle(): void {
    const waiters = [...this.#idleWaiters];
    this.#idleWaiters.clear();
    for (const resolve of waiters) resolve();
  }

  get #untyped(): EventEmitter {
    return this as unknown as EventEmitter;
  }

  #emit<K extends keyof DispatcherEvents & string>(event: K, ...args: EventEmitter.EventArgs<DispatcherEvents, K>): void {
    emitSafely(this.#untyped, this.#onListenerError, event, ...args);
  }

  readonly #onListenerError = (error: OrchestratorError): void => reportListenerError(this.#untyped, error);

  /** Reports what went wrong without stopping: an `error` event, or one console warning without listeners. */
  #report(cause: unknown, doing: string, jobId?: string): void {
    const original = OrchestratorError.from(cause);
    const message = `${doing}${jobId === undefined ? "" : ` (job ${jobId})`}: ${original.rawMessage}`;
    const details = jobId === undefined ? original.details : { ...original.details, jobId };
    reportListenerError(this.#untyped, new OrchestratorError(original.code, message, { cause, retryable: original.retryable, details }));
  }
}
