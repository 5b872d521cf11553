import { EventEmitter } from "eventemitter3";
import { OrchestratorError } from "../errors.ts";
import type { Consumer, Delivery, KeyHooks, Subscription, WaitOptions } from "../queue/types.ts";
import type { JobEnvelope } from "../job/envelope.ts";
import { cancelError, raceSignal, waitSignal } from "../signals.ts";
import { MAX_TIMER_MS } from "../timers.ts";
import { checkInteger, checkObject, checkSignal, optional } from "../validate.ts";
import { emitSafely, reportListenerError } from "../events.ts";
import type { WorkerPoolEvents } from "../worker-pool/types.ts";
import { CancelRouter } from "./cancel-router.ts";
import { JobRecorder } from "./job-recorder.ts";
import { Placement, stickyGone } from "./placement.ts";
import { RateLimiter } from "./rate-limiter.ts";
import type { DispatcherContext } from "./context.ts";
import { resolveDispatcherOptions, type ResolvedDispatcherOptions } from "./options.ts";
import { Run, RunRegistry, type Stop } from "./run.ts";
import { RunFlow } from "./run-flow.ts";
import { SettlePolicy } from "./settle-policy.ts";
import type { DispatcherEvents, DispatcherOptions } from "./types.ts";
import { DispatchTelemetry } from "../telemetry/dispatch-telemetry.ts";
import { destinationOf } from "../telemetry/destination.ts";

const ignore = (): void => {};

/**
 * The loop that takes jobs from a {@link JobQueue}, leases a worker slot from the pool, runs the
 * job through the worker's transport and settles it: publish the outcome event (confirmed), then
 * settle the delivery (ack, retry or dead-letter), then release the slot (the settle order,
 * stated once in `settle-policy.ts`). A crash anywhere before the settle leaves the delivery to
 * be redelivered (at-least-once). A delivery is never left held unsettled while this dispatcher
 * runs: when the outcome cannot be published, the job cannot be put back, or something
 * unexpected throws, the delivery goes back to the queue with `retry` after the retry backoff.
 *
 * This file holds the lifecycle (start, close, idle) and follows the pool's capacity. The parts:
 * `run-flow.ts` (one job from receipt to end), `settle-policy.ts` (how it ends, the retry
 * policy), `cancel-router.ts` (cancel commands to the runs of their job).
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
 *   closes the channel or the socket drops; on a silent link, the gap between the broker's and
 *   the connection's heartbeat checks: docs/rabbitmq.md, "A delivery lost while its job runs"),
 *   plus the cancel's trip to the worker, plus the time the handler takes to honour its signal.
 * - Placement: each job's required and preferred labels and its sticky worker go to
 *   `pool.acquire()` (`placement.ts`); a hard-sticky job whose worker drains or leaves fails with
 *   `precondition_failed`. Rate limits (`rateLimits`, `rate-limiter.ts`): a job takes its tokens
 *   once a slot fit for it is free, waits for them at most `maxHoldMs`, else goes back to the
 *   queue until they are due (`jobDeferred`, reason `rate_limited`).
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
  readonly #telemetry: DispatchTelemetry;
  readonly #runs = new RunRegistry();
  /** Runs waiting for a free slot. */
  readonly #waiting = new Set<Run>();
  readonly #cancels: CancelRouter;
  readonly #flow: RunFlow;
  readonly #recorder: JobRecorder;
  /** Runs held: delivered and not yet ended. */
  #active = 0;
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
    this.#telemetry = new DispatchTelemetry(this.#options.telemetry, this.#options.logger, destinationOf(this.#options.queue));
    const report = (cause: unknown, doing: string, jobId?: string): void => this.#report(cause, doing, jobId);
    const { store, storeTimeoutMs, rateLimits, logger } = this.#options;
    const context: DispatcherContext = {
      options: this.#options,
      runs: this.#runs,
      waiting: this.#waiting,
      emit: (event, ...args) => this.#emit(event, ...args),
      report: (cause, doing, jobId) => this.#report(cause, doing, jobId),
      telemetry: this.#telemetry,
      accepting: () => this.#accepting,
      recorder: new JobRecorder(this.#options, report),
      placement: new Placement(store, storeTimeoutMs, report),
      limiter: rateLimits === undefined ? undefined : new RateLimiter(rateLimits, store, storeTimeoutMs, report, logger),
    };
    this.#recorder = context.recorder;
    this.#cancels = new CancelRouter(this.#runs, this.#options.cancelRetentionMs, this.#options.maxRetainedCancels);
    this.#flow = new RunFlow(context, new SettlePolicy(context), this.#cancels, () => {
      if (--this.#active === 0) this.#notifyIdle();
    });
  }

  /** Attempts in flight on workers right now. */
  get running(): number {
    return this.#flow.running;
  }

  /**
   * Subscribes to cancel commands, then starts consuming with prefetch = `pool.capacity`.
   * Idempotent: a second call returns the first call's promise.
   * @throws {OrchestratorError} `queue_closed` after `close()`; whatever the queue's `consume`
   * or the events' `subscribeCancels` rejects with.
   */
  start(): Promise<void> {
    if (this.#closed !== undefined) return Promise.reject(new OrchestratorError("queue_closed", "cannot start: the dispatcher is closed (create a new one)"));
    this.#started ??= this.#start();
    return this.#started;
  }

  async #start(): Promise<void> {
    if (this.#closed !== undefined) throw new OrchestratorError("queue_closed", "the dispatcher is closed");
    const { events, queue, pool } = this.#options;
    const subscription = await events.subscribeCancels(this.#cancels.onCancel);
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
      this.#consumer = await queue.consume(this.#onDelivery, { prefetch: this.#prefetch, keys: this.#keyHooks });
    } catch (error) {
      this.#accepting = false;
      this.#unlistenPool();
      await subscription.close().catch(ignore);
      throw error;
    }
    this.#recorder.startMaintenance(events);
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
    for (const run of this.#waiting) run.halt("closing", cancelError("shutdown"));
    const { signal: force, dispose } = waitSignal({ signal, timeoutMs: this.#options.closeTimeoutMs }, "close");
    try {
      await this.onIdle({ signal: force });
    } catch {
      const reason = cancelError("shutdown", "the dispatcher is closing");
      this.#runs.forEach((run) => run.halt("forced_close", reason));
      await this.onIdle();
    } finally {
      dispose();
    }
    await consumer?.cancel().catch((error: unknown) => this.#report(error, "cancelling the consumer"));
    await this.#cancelSubscription?.close().catch((error: unknown) => this.#report(error, "closing the cancel subscription"));
    await this.#recorder.stopMaintenance();
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
      run.halt("shed", cancelError("shutdown", "the pool's healthy capacity dropped below the jobs held"));
      held--;
    }
  }

  readonly #onWorkerStateChanged = (change: WorkerPoolEvents["workerStateChanged"][0]): void => {
    if (change.to === "draining") this.#dropStuckSticky(change.workerId);
    this.#emit("workerStateChanged", change);
  };

  /** A removed worker may have been the only one able to run a waiting job, or a hard-sticky job's own. */
  readonly #onWorkerRemoved = ({ worker }: WorkerPoolEvents["workerRemoved"][0]): void => {
    this.#dropStuckSticky(worker.id);
    for (const run of this.#waiting) {
      if (run.stop === undefined && !this.#options.pool.canRun(run.needs?.requirements ?? run.job)) {
        run.halt("no_worker", cancelError("shutdown", "no worker can run the job"));
      }
    }
  };

  /** Fails the waiting hard-sticky jobs of a worker that drains or left: they can run nowhere else. */
  #dropStuckSticky(workerId: string): void {
    const { pool } = this.#options;
    for (const run of this.#waiting) {
      const needs = run.needs;
      const sticky = needs?.sticky;
      if (needs === undefined || sticky?.hard !== true || sticky.workerId !== workerId || run.stop !== undefined) continue;
      const gone = stickyGone(sticky, pool.get?.(workerId), pool.canRun(needs.requirements));
      if (gone !== undefined) run.halt("unplaceable", gone);
    }
  }

  readonly #onDelivery = (delivery: Delivery): void => {
    const run = new Run(delivery, this.#onHalt);
    this.#telemetry.received(run.job, run.attempt);
    this.#runs.add(run);
    this.#active++;
    void this.#flow.run(run);
  };

  /** Concurrency keys: a job waiting for its key says why; a newer job of a full key stops the oldest holder here. */
  readonly #keyHooks: KeyHooks = {
    waiting: (job: JobEnvelope, reason: string) => {
      const { events } = this.#options;
      try {
        events.publish({ kind: "state", state: "queued", jobId: job.id, attempt: job.attempt, at: Date.now(), reason }, { confirm: false }).catch(ignore);
      } catch {
        // informational, like every state event but the result
      }
      void this.#recorder.waiting(job, reason);
    },
    supersede: (holderJobId: string, _newer: JobEnvelope, message: string) => {
      this.#cancels.stop({ jobId: holderJobId, reason: "requested", message, at: Date.now() });
    },
  };

  #notifyIdle(): void {
    const waiters = [...this.#idleWaiters];
    this.#idleWaiters.clear();
    for (const resolve of waiters) resolve();
  }

  get #untyped(): EventEmitter {
    return this as unknown as EventEmitter;
  }

  readonly #onHalt = (run: Run, stop: Stop, reason: OrchestratorError): void => this.#telemetry.stopped(run.job, stop, reason);

  #emit<K extends keyof DispatcherEvents & string>(event: K, ...args: EventEmitter.EventArgs<DispatcherEvents, K>): void {
    this.#telemetry.observe(event, args[0]);
    emitSafely(this.#untyped, this.#onListenerError, event, ...args);
  }

  readonly #onListenerError = (error: OrchestratorError): void => reportListenerError(this.#untyped, error, this.#options.logger);

  /** Reports what went wrong without stopping: to the logger, an `error` event, or one console warning without either. */
  #report(cause: unknown, doing: string, jobId?: string): void {
    const original = OrchestratorError.from(cause);
    const message = `${doing}${jobId === undefined ? "" : ` (job ${jobId})`}: ${original.rawMessage}`;
    const details = jobId === undefined ? original.details : { ...original.details, jobId };
    reportListenerError(this.#untyped, new OrchestratorError(original.code, message, { cause, retryable: original.retryable, details }), this.#options.logger);
  }
}
