import { OrchestratorError } from "../errors.ts";
import type { TraceContext } from "../job/envelope.ts";
import type { CancelReason } from "../job/types.ts";
import { MAX_TIMER_MS } from "../timers.ts";
import { cancelError } from "../signals.ts";
import type { WorkerJobEvent } from "../job/types.ts";
import { markNotStarted } from "../wire/never-started.ts";
import { createJobContext } from "./job-context.ts";
import type { JobContext, JobHandler, JobHandlers } from "./types.ts";
import { checkResult, runInHandlerScope, thrownMessage } from "./handler-safety.ts";
import type { HandleScope, HandleTelemetry } from "../telemetry/handle-telemetry.ts";

/**
 * Runs handlers on a worker, whatever wire brought the job: slots, deadlines, cancellation,
 * graceful shutdown, and exactly one outcome per attempt.
 * @internal
 */

/** One attempt as received from the wire. */
export interface RunRequest {
  jobId: string;
  type: string;
  /** The decoded JSON payload. */
  payload: unknown;
  attempt: number;
  /** The attempt's fencing token; absent (an older orchestrator): `attempt`. */
  fencingToken?: number | undefined;
  /** Milliseconds from now the attempt may run; 0 applies the runner's default. */
  timeoutMs: number;
  /** The deadline the handler sees as `ctx.deadline`; undefined: now + the timeout. */
  deadline: number | undefined;
  idempotencyKey: string | undefined;
  trace: TraceContext | undefined;
  /** The orchestrator's `execute` span context (propagator fields), parent of the `handle` span. */
  traceCarrier?: Readonly<Record<string, string>> | undefined;
}

/** The single outcome of an attempt: the handler's JSON value, or why it failed. */
export type RunOutcome = { ok: true; value: unknown } | { ok: false; error: OrchestratorError };

/** Where a job's events and its outcome go; called in order, never after `done`. */
export interface JobSink {
  event(event: WorkerJobEvent): void;
  done(outcome: RunOutcome): void;
}

/** Options of {@link JobRunner}. */
export interface JobRunnerOptions {
  handlers: JobHandlers;
  slots: number;
  /** Deadline of a job that carries none. */
  defaultTimeoutMs: number;
  /** Called with {@link JobRunner.stuck} whenever it changes. Must not throw. */
  onStuckChange?: (stuck: number) => void;
  /** Spans (`handle {type}`, active while the handler runs) and log records; none when undefined. */
  telemetry?: HandleTelemetry;
}

interface Job {
  readonly key: string;
  readonly request: RunRequest;
  readonly sink: JobSink;
  readonly origin: object | undefined;
  readonly handler: JobHandler<never, unknown>;
  readonly controller: AbortController;
  readonly deadline: number;
  timer: NodeJS.Timeout | undefined;
  state: "waiting" | "running" | "settled";
  /** Whether the job still counts against the slots the orchestrator sees (false once aborted). */
  holdsSlot: boolean;
  /** Its `handle` span, while the handler runs. */
  scope?: HandleScope | undefined;
}

const keyOf = (jobId: string, attempt: number): string => `${attempt}:${jobId}`;

/**
 * Slot accounting has two sides. An accepted job holds one of the `slots` the orchestrator sees
 * until it settles or is aborted (the orchestrator frees its lease when it cancels). A handler
 * keeps running until it returns, so a job accepted while an aborted handler still winds down
 * waits for it: no more than `slots` handlers ever run at once, and a cancel followed at once by
 * a new assignment is not refused.
 */
export class JobRunner {
  readonly #options: JobRunnerOptions;
  readonly #jobs = new Map<string, Job>();
  readonly #waiting: Job[] = [];
  readonly #shuttingDown = new AbortController();
  readonly #idleWaiters = new Set<() => void>();
  #held = 0;
  #running = 0;
  #stuck = 0;

  constructor(options: JobRunnerOptions) {
    this.#options = options;
  }

  /** Handlers running now. */
  get running(): number {
    return this.#running;
  }

  /**
   * Handlers still running although their attempt was aborted (cancelled, timed out, session
   * lost): each keeps a handler slot busy that no orchestrator holds a lease for. When it equals
   * the slots, the worker is saturated: a job it accepts waits and never starts.
   */
  get stuck(): number {
    return this.#stuck;
  }

  /** Jobs accepted and not yet settled (running, winding down after an abort, or waiting for a handler to finish). */
  get size(): number {
    return this.#jobs.size;
  }

  /** Whether {@link beginShutdown} was called. */
  get shuttingDown(): boolean {
    return this.#shuttingDown.signal.aborted;
  }

  /** Starts an attempt, or settles it at once through `sink` when it cannot run. Never throws. */
  start(request: RunRequest, sink: JobSink, origin?: object): void {
    const refuse = (error: OrchestratorError) => safeDone(sink, { ok: false, error: markNotStarted(error) });
    if (this.shuttingDown) return refuse(new OrchestratorError("unavailable", "worker is shutting down"));
    const key = keyOf(request.jobId, request.attempt);
    if (this.#jobs.has(key)) {
      return refuse(new OrchestratorError("precondition_failed", `job ${request.jobId} attempt ${request.attempt} is already running on this worker`));
    }
    const handler = Object.hasOwn(this.#options.handlers, request.type) ? this.#options.handlers[request.type] : undefined;
    if (typeof handler !== "function") {
      return refuse(new OrchestratorError("not_found", `no handler for job type ${JSON.stringify(request.type)}`, { details: { type: request.type } }));
    }
    if (this.#held >= this.#options.slots) {
      return refuse(new OrchestratorError("resource_exhausted", `all ${this.#options.slots} slots of this worker are busy`));
    }
    const timeoutMs = request.timeoutMs > 0 ? request.timeoutMs : this.#options.defaultTimeoutMs;
    const job: Job = {
      key,
      request,
      sink,
      origin,
      handler,
      controller: new AbortController(),
      deadline: request.deadline ?? Date.now() + timeoutMs,
      timer: undefined,
      state: "waiting",
      holdsSlot: true,
    };
    this.#held++;
    this.#jobs.set(key, job);
    // setTimeout fires at once past 2^31-1 ms; a job that long gets the longest timer there is.
    job.timer = setTimeout(() => this.#abort(job, "timeout", `job ${request.jobId} ran past its deadline of ${timeoutMs} ms`), Math.min(timeoutMs, MAX_TIMER_MS));
    if (this.#running < this.#options.slots) this.#run(job);
    else this.#waiting.push(job);
  }

  /**
   * Aborts an attempt (`attempt` 0: every attempt of the job); returns whether one was running or
   * waiting. The handler's signal fires with `error` when given (an in-process caller's own
   * abort reason), else with a `cancelError(reason, message)`.
   */
  cancel(jobId: string, attempt: number, reason: CancelReason, message?: string, error?: OrchestratorError): boolean {
    const jobs = attempt > 0 ? [this.#jobs.get(keyOf(jobId, attempt))] : [...this.#jobs.values()].filter((job) => job.request.jobId === jobId);
    let found = false;
    for (const job of jobs) {
      if (!job || job.state === "settled") continue;
      this.#abort(job, reason, message, error);
      found = true;
    }
    return found;
  }

  /** Aborts every job started with `origin` (a session whose orchestrator went away). */
  abortOrigin(origin: object, reason: CancelReason, message?: string): void {
    for (const job of [...this.#jobs.values()]) if (job.origin === origin) this.#abort(job, reason, message);
  }

  /** Refuses new jobs from now on and fires every context's `shuttingDown` signal. Idempotent. */
  beginShutdown(): void {
    if (!this.shuttingDown) this.#shuttingDown.abort(new OrchestratorError("canceled", "worker is shutting down", { details: { reason: "shutdown" } }));
  }

  /** Aborts every job with `reason`. */
  abortAll(reason: CancelReason, message?: string): void {
    for (const job of [...this.#jobs.values()]) this.#abort(job, reason, message);
  }

  /** Resolves when no job is left; at once when none is. */
  onIdle(): Promise<void> {
    if (this.#jobs.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.add(resolve));
  }

  #abort(job: Job, reason: CancelReason, message?: string, error?: OrchestratorError): void {
    if (job.state === "settled" || job.controller.signal.aborted) return;
    job.controller.abort(error ?? cancelError(reason, message));
    this.#options.telemetry?.aborted(job.scope, job.request, reason, message);
    this.#releaseSlot(job);
    if (job.state === "running") this.#setStuck(this.#stuck + 1);
    // A job still waiting for a handler to finish never starts.
    if (job.state === "waiting") {
      const index = this.#waiting.indexOf(job);
      if (index >= 0) this.#waiting.splice(index, 1);
      this.#finish(job, undefined, undefined);
    }
  }

  #setStuck(stuck: number): void {
    this.#stuck = stuck;
    try {
      this.#options.onStuckChange?.(stuck);
    } catch {
      // A report about slots must never break the runner.
    }
  }

  #releaseSlot(job: Job): void {
    if (!job.holdsSlot) return;
    job.holdsSlot = false;
    this.#held--;
  }

  #run(job: Job): void {
    job.state = "running";
    this.#running++;
    const ctx = this.#context(job);
    const telemetry = this.#options.telemetry;
    // Faults the handler's code raises outside its promise (an unhandled rejection, a throw in a
    // timer) reach this job through the scope when the process contains them (containHandlerFaults).
    const scope = {
      fault: (error: OrchestratorError) => {
        if (job.state !== "running" || job.controller.signal.aborted) return;
        this.#finish(job, undefined, error);
        // The handler may still be running: tell it to stop.
        job.controller.abort(error);
      },
    };
    let result: unknown;
    try {
      const call = () => job.handler(job.request.payload as never, ctx);
      result = runInHandlerScope(scope, () => (telemetry === undefined ? call() : telemetry.run((job.scope = telemetry.start(job.request)), call)));
    } catch (error) {
      this.#finish(job, undefined, failure(error));
      return;
    }
    if (isThenable(result)) {
      try {
        result.then(
          (value) => this.#finish(job, value, undefined),
          (error: unknown) => this.#finish(job, undefined, failure(error)),
        );
      } catch (error) {
        this.#finish(job, undefined, failure(error));
      }
    } else {
      this.#finish(job, result, undefined);
    }
  }

  /** The context a handler gets; `createJobContext` keeps the progress and log rules. */
  #context(job: Job): JobContext {
    const { request, sink } = job;
    const telemetry = this.#options.telemetry;
    return createJobContext({
      request: { ...request, deadline: job.deadline },
      signal: job.controller.signal,
      shuttingDown: this.#shuttingDown.signal,
      isOpen: () => job.state !== "settled",
      onEvent: (event) => {
        if (event.kind === "log") telemetry?.line(job.scope, request, event.line, event.stream);
        sink.event(event);
      },
    });
  }

  #finish(job: Job, value: unknown, error: unknown): void {
    if (job.state === "settled") return;
    const wasRunning = job.state === "running";
    job.state = "settled";
    clearTimeout(job.timer);
    this.#releaseSlot(job);
    this.#jobs.delete(job.key);
    if (wasRunning) this.#running--;
    if (wasRunning && job.controller.signal.aborted) this.#setStuck(this.#stuck - 1);
    const outcome = outcomeOf(job, value, error);
    this.#options.telemetry?.end(job.scope, job.request, outcome.ok ? undefined : outcome.error);
    safeDone(job.sink, outcome);
    while (this.#running < this.#options.slots && this.#waiting.length > 0) this.#run(this.#waiting.shift() as Job);
    if (this.#jobs.size === 0) {
      for (const resolve of this.#idleWaiters) resolve();
      this.#idleWaiters.clear();
    }
  }
}

/** What an attempt reports: an abort wins over whatever the handler did after it. */
function outcomeOf(job: Job, value: unknown, error: unknown): RunOutcome {
  const signal = job.controller.signal;
  if (signal.aborted) {
    const reason = signal.reason as OrchestratorError;
    // The orchestrator must retry a job its worker gave up on while shutting down, not treat it as cancelled.
    if (reason.details.reason === "shutdown") {
      return {
        ok: false,
        error: new OrchestratorError("worker_lost", `worker shut down before job ${job.request.jobId} finished`, {
          retryable: true,
          details: { reason: "worker_lost", workerReason: "shutdown" },
        }),
      };
    }
    return { ok: false, error: reason };
  }
  if (error !== undefined) return { ok: false, error: error as OrchestratorError };
  try {
    checkResult(value);
  } catch (refused) {
    return { ok: false, error: refused as OrchestratorError };
  }
  return { ok: true, value };
}

/**
 * What a handler's throw or rejection fails its attempt with: an `OrchestratorError` as it is
 * (its code reaches the orchestrator: `invalid_argument` stays `invalid_argument`), anything
 * else as `handler_failed` with a readable message (see `thrownMessage`).
 */
function failure(thrown: unknown): OrchestratorError {
  if (thrown instanceof OrchestratorError) return thrown;
  return new OrchestratorError("handler_failed", thrownMessage(thrown), { cause: thrown, retryable: true });
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  try {
    return typeof (value as PromiseLike<unknown> | undefined)?.then === "function";
  } catch {
    return false;
  }
}

function safeDone(sink: JobSink, outcome: RunOutcome): void {
  try {
    sink.done(outcome);
  } catch {
    // A sink belongs to a wire that may have closed; the outcome has nowhere else to go.
  }
}
