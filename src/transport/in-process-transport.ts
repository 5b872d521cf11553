import { invalidArgument, OrchestratorError } from "../errors.ts";
import { abortReason, cancelError, raceSignal, throwIfAborted, waitSignal } from "../signals.ts";
import { MAX_TIMER_MS } from "../timers.ts";
import { checkFunction, checkInteger, checkLabels, checkNumber, checkObject, checkSignal, checkString, optional } from "../validate.ts";
import { containHandlerFaults } from "../worker/handler-safety.ts";
import { JobRunner } from "../worker/job-runner.ts";
import type { RunOutcome } from "../worker/job-runner.ts";
import type { JobHandler, JobHandlers } from "../worker/types.ts";
import type { CancelReason } from "../job/types.ts";
import type {
  ExecuteOptions, ExecuteRequest, HealthStatus, TransportState, WorkerDescription, WorkerTransport,
} from "./types.ts";
import type { WorkerJobEvent } from "../job/types.ts";
import { type HandleTelemetry, resolveHandleTelemetry } from "../telemetry/handle-telemetry.ts";
import type { Logger } from "../telemetry/logger.ts";
import type { TelemetryOptions } from "../telemetry/telemetry.ts";

/** Options of {@link InProcessTransport}. */
export interface InProcessTransportOptions {
  /** Handlers by job type, as a worker process would host them. */
  handlers: JobHandlers;
  /**
   * Jobs run at once; one more is refused with `resource_exhausted`. An aborted call gives its
   * slot back at once, but its handler keeps running until it returns: a call accepted meanwhile
   * waits for it (as with `serveWorker()`), so no more than `slots` handlers ever run at once.
   * @default 1
   */
  slots?: number;
  /**
   * Labels the worker reports in `describe()`.
   * @default {}
   */
  labels?: Record<string, string>;
  /**
   * Version the worker reports in `describe()`.
   * @default "in-process"
   */
  version?: string;
  /**
   * The worker side's spans (`handle {type}`, a child of the dispatcher's `execute {type}`, active
   * while the handler runs), as `serveWorker()` makes them.
   * @default the global OpenTelemetry providers when `@opentelemetry/api` is installed; else nothing
   */
  telemetry?: TelemetryOptions;
  /**
   * Where the worker side's records go (pino-shaped), as with `serveWorker()`.
   * @default none
   */
  logger?: Logger;
  /**
   * Also write each `ctx.log()` line to `logger`.
   * @default false
   */
  logJobOutput?: boolean;
}

interface ResolvedOptions {
  telemetry: HandleTelemetry | undefined;
  handlers: ReadonlyMap<string, JobHandler<never, unknown>>;
  slots: number;
  labels: Record<string, string>;
  version: string;
}

function resolveOptions(options: unknown): ResolvedOptions {
  const o = checkObject("options", options);
  const handlers = new Map<string, JobHandler<never, unknown>>();
  for (const [type, handler] of Object.entries(checkObject("handlers", o.handlers))) {
    handlers.set(checkString("handlers key", type, 256), checkFunction(`handlers.${type}`, handler));
  }
  return {
    telemetry: resolveHandleTelemetry(o),
    handlers,
    slots: optional(o.slots, 1, (v) => checkInteger("slots", v, 1)),
    labels: optional(o.labels, {}, (v) => checkLabels("labels", v)),
    version: optional(o.version, "in-process", (v) => checkString("version", v, 256)),
  };
}

const CANCEL_REASONS: ReadonlySet<string> = new Set<CancelReason>(["requested", "timeout", "shutdown", "worker_lost"]);

/** The cancel reason an abort carries to the handler's runner (`requested` unless it names one). */
function cancelReasonOf(error: OrchestratorError): CancelReason {
  const reason = error.details.reason;
  return typeof reason === "string" && CANCEL_REASONS.has(reason) ? (reason as CancelReason) : "requested";
}

/** A result as it would arrive over a wire: a JSON copy (the runner already refused what JSON cannot carry). */
function overTheWire(value: unknown): unknown {
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
}

/**
 * A worker that is a function in this process. Its handlers run through the same runtime as
 * `serveWorker()`'s (the worker's `JobRunner`): the same context, slots, deadlines, error codes
 * (an `OrchestratorError` a handler throws keeps its code; anything else is `handler_failed`
 * with a readable message), progress clamping, log streams and result checks. Payloads and
 * results are copied through JSON as a wire would. Only the fault simulation below is its own.
 *
 * For tests and demos it simulates a worker's faults: {@link InProcessTransport.setHealthy},
 * {@link InProcessTransport.freeze} / {@link InProcessTransport.thaw} (a hung process with its
 * connection open), {@link InProcessTransport.crash} and {@link InProcessTransport.restart}.
 *
 * @example
 * ```ts
 * pool.add({ id: "w1", transport: new InProcessTransport({ handlers: { resize: async (p, ctx) => … }, slots: 2 }) });
 * ```
 */
export class InProcessTransport implements WorkerTransport {
  readonly #options: ResolvedOptions;
  /** Abort functions of the `execute` calls not yet ended. */
  readonly #calls = new Set<(reason: OrchestratorError) => void>();
  /** The worker's runtime; a crash replaces it (the dead process's handlers and slots go with it). */
  #runner: JobRunner;
  /** Undoes containHandlerFaults(), installed at the first execute, until close. */
  #releaseFaults: (() => void) | undefined;
  readonly #watchers = new Set<(state: TransportState) => void>();
  /** Set while frozen: resolved by thaw, crash, restart or close. */
  #frozen: { promise: Promise<void>; resolve: () => void } | undefined;
  /** Events and results a frozen worker has not sent yet, in order. */
  #held: (() => void)[] = [];
  #healthy = true;
  #crashed = false;
  /** Raised by every crash: a wait that began in an earlier life of the worker fails. */
  #incarnation = 0;
  #closed = false;
  /** Unregisters the worker's slots gauge (read from whichever runner is current). */
  readonly #unobserveSlots: () => void;

  /** @throws {OrchestratorError} `invalid_argument` for bad options. */
  constructor(options: InProcessTransportOptions) {
    this.#options = resolveOptions(options);
    this.#runner = this.#newRunner();
    this.#unobserveSlots = this.#options.telemetry?.observeSlots(this.#options.slots, () => this.#runner) ?? (() => {});
  }

  #newRunner(): JobRunner {
    return new JobRunner({ handlers: Object.fromEntries(this.#options.handlers) as JobHandlers, slots: this.#options.slots, defaultTimeoutMs: 1, telemetry: this.#options.telemetry });
  }

  /** Handlers running now, aborted ones included until they return (never more than `slots`). */
  get running(): number {
    return this.#runner.running;
  }

  /** Whether `close()` was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** {@inheritDoc WorkerTransport.execute} */
  async execute(request: ExecuteRequest, options: ExecuteOptions): Promise<unknown> {
    const r = checkObject("request", request);
    checkString("request.jobId", r.jobId, 256);
    checkString("request.type", r.type, 256);
    checkInteger("request.attempt", r.attempt, 1);
    if (r.fencingToken !== undefined) checkInteger("request.fencingToken", r.fencingToken, 1);
    checkNumber("request.deadline", r.deadline, 0);
    const o = checkObject("options", options);
    const signal = checkSignal("options.signal", o.signal);
    if (!signal) throw invalidArgument("options.signal", "an AbortSignal", o.signal);
    const onEvent = checkFunction<(event: WorkerJobEvent) => void>("options.onEvent", o.onEvent);
    throwIfAborted(signal);
    this.#assertReachable(`run job ${request.jobId}`);
    let payload: unknown;
    try {
      payload = request.payload === undefined ? undefined : JSON.parse(JSON.stringify(request.payload));
    } catch (cause) {
      throw new OrchestratorError("invalid_argument", `Expected \`request.payload\` to be JSON-serialisable: ${(cause as Error).message}`, {
        cause,
        details: { field: "request.payload" },
      });
    }
    this.#releaseFaults ??= containHandlerFaults();
    return new Promise<unknown>((resolve, reject) => {
      let done = false;
      let started: JobRunner | undefined;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const finish = (error: OrchestratorError | undefined, value?: unknown) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        this.#calls.delete(abort);
        if (error) reject(error);
        else resolve(value);
      };
      // Aborts end the call at once, as a client-side cancel or deadline ends an RPC, and reach
      // the handler as a cancel does over a wire.
      const abort = (reason: OrchestratorError) => {
        if (done) return;
        finish(reason);
        started?.cancel(request.jobId, request.attempt, cancelReasonOf(reason), reason.rawMessage, reason);
      };
      const onAbort = () => abort(abortReason(signal));
      signal.addEventListener("abort", onAbort, { once: true });
      this.#calls.add(abort);
      const passedDeadline = () => abort(cancelError("timeout", `job ${request.jobId} exceeded its deadline`));
      const armDeadline = () => {
        const remaining = request.deadline - Date.now();
        timer = setTimeout(() => (remaining > MAX_TIMER_MS ? armDeadline() : passedDeadline()), Math.max(0, Math.min(remaining, MAX_TIMER_MS)));
      };
      armDeadline();
      const start = () => {
        if (done) return;
        if (Date.now() >= request.deadline) return passedDeadline();
        started = this.#runner;
        started.start(
          {
            jobId: request.jobId,
            type: request.type,
            payload,
            attempt: request.attempt,
            fencingToken: request.fencingToken,
            timeoutMs: Math.max(1, request.deadline - Date.now()),
            deadline: request.deadline,
            idempotencyKey: request.idempotencyKey,
            trace: request.trace === undefined ? undefined : { ...request.trace },
            traceCarrier: request.traceCarrier,
          },
          {
            event: (event: WorkerJobEvent) => {
              if (done) return;
              this.#send(() => {
                if (done) return;
                try {
                  onEvent(event);
                } catch {
                  // onEvent must not throw; a broken observer cannot fail the job.
                }
              });
            },
            done: (outcome: RunOutcome) => {
              if (done) return;
              this.#send(() => {
                if (!outcome.ok) return finish(outcome.error);
                try {
                  finish(undefined, overTheWire(outcome.value));
                } catch (cause) {
                  finish(OrchestratorError.from(cause));
                }
              });
            },
          },
        );
      };
      void (this.#frozen?.promise ?? Promise.resolve()).then(start);
    });
  }

  /**
   * `serving`, or `not_serving` after `setHealthy(false)` or once close began. Hangs while
   * frozen (until thawed, the signal or `timeoutMs`).
   * @throws {OrchestratorError} `unavailable` after `crash()`; `deadline_exceeded` after
   * `timeoutMs`; the signal's reason.
   */
  async check(options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<HealthStatus> {
    await this.#answer(options, "health check");
    return this.#closed || !this.#healthy ? "not_serving" : "serving";
  }

  /**
   * Slots, labels, job types and version from the options. Hangs while frozen.
   * @throws {OrchestratorError} `unavailable` after `crash()` or `close()`.
   */
  async describe(options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<WorkerDescription> {
    await this.#answer(options, "describe");
    this.#assertReachable("describe the worker");
    return {
      slots: this.#options.slots,
      labels: { ...this.#options.labels },
      jobTypes: [...this.#options.handlers.keys()],
      version: this.#options.version,
    };
  }

  /** Reports `lost` on `crash()` and `ready` on `restart()`. Returns the unsubscribe function. */
  watch(listener: (state: TransportState) => void): () => void {
    checkFunction("listener", listener);
    this.#watchers.add(listener);
    return () => this.#watchers.delete(listener);
  }

  /**
   * Fires `ctx.shuttingDown`, aborts every running handler's signal and rejects every running
   * `execute` with `worker_lost`; later `execute` and `describe` reject `unavailable`, `check`
   * answers `not_serving`. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#runner.beginShutdown();
    this.#loseCalls("in-process worker closed");
    this.#runner.abortAll("worker_lost", "in-process worker closed");
    this.#release();
    this.#releaseFaults?.();
    this.#unobserveSlots();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Test aid: makes `check()` answer `not_serving` (false) or `serving` (true); jobs still run. */
  setHealthy(healthy: boolean): void {
    this.#healthy = healthy === true;
  }

  /**
   * Test aid: the worker hangs as a frozen process with its connection open would: `check`,
   * `describe` and new `execute` calls wait, running handlers' progress, logs and results are
   * held back; callers' signals and deadlines still end their calls. Idempotent.
   */
  freeze(): void {
    if (this.#frozen || this.#crashed || this.#closed) return;
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    this.#frozen = { promise, resolve };
  }

  /** Test aid: ends `freeze()`: what was held back is sent in order, waiting calls go on. */
  thaw(): void {
    if (!this.#frozen) return;
    const held = this.#held;
    this.#held = [];
    const frozen = this.#frozen;
    this.#frozen = undefined;
    for (const send of held) send();
    frozen.resolve();
  }

  /**
   * Test aid: the worker process dies: running `execute` calls reject `worker_lost` (their
   * handlers' signals fire with it), later calls reject `unavailable`, `watch` listeners get
   * `lost`. Undone by {@link InProcessTransport.restart}.
   */
  crash(): void {
    if (this.#crashed || this.#closed) return;
    this.#crashed = true;
    this.#incarnation++;
    this.#loseCalls("in-process worker crashed");
    // The dead process's handlers hear worker_lost; its slots are gone with it.
    this.#runner.abortAll("worker_lost", "in-process worker crashed");
    this.#runner = this.#newRunner();
    this.#release();
    this.#notify("lost");
  }

  /**
   * Test aid: the worker process is killed (if it was not dead already) and started again:
   * healthy, not frozen, all slots free; `watch` listeners get `ready`.
   * @throws {OrchestratorError} `precondition_failed` after `close()`.
   */
  restart(): void {
    if (this.#closed) throw new OrchestratorError("precondition_failed", "cannot restart a closed in-process worker");
    this.crash();
    this.#crashed = false;
    this.#healthy = true;
    this.#notify("ready");
  }

  /** Waits like a remote answer would: not while frozen, never from a dead process. */
  async #answer(options: { signal?: AbortSignal; timeoutMs?: number }, what: string): Promise<void> {
    const o = checkObject("options", options);
    const wait = waitSignal({ signal: checkSignal("options.signal", o.signal), timeoutMs: optional(o.timeoutMs, undefined, (v) => checkNumber("options.timeoutMs", v, 0)) }, what);
    const incarnation = this.#incarnation;
    try {
      throwIfAborted(wait.signal);
      if (this.#frozen) await raceSignal(this.#frozen.promise, wait.signal);
      if (this.#crashed || this.#incarnation !== incarnation) {
        throw new OrchestratorError("unavailable", `${what} failed: the in-process worker crashed`);
      }
    } finally {
      wait.dispose();
    }
  }

  #assertReachable(what: string): void {
    if (this.#crashed) throw new OrchestratorError("unavailable", `cannot ${what}: the in-process worker crashed`);
    if (this.#closed) throw new OrchestratorError("unavailable", `cannot ${what}: the in-process transport is closed`);
  }

  /** Sends an event or result now, or holds it back while frozen. */
  #send(send: () => void): void {
    if (this.#frozen) this.#held.push(send);
    else send();
  }

  #loseCalls(message: string): void {
    for (const abort of [...this.#calls]) abort(cancelError("worker_lost", message));
  }

  /** Drops what a frozen worker held back and lets waiting calls see the new state. */
  #release(): void {
    this.#held = [];
    const frozen = this.#frozen;
    this.#frozen = undefined;
    frozen?.resolve();
  }

  #notify(state: TransportState): void {
    for (const listener of [...this.#watchers]) {
      try {
        listener(state);
      } catch {
        // A throwing watcher must not stop the others from hearing about the fault.
      }
    }
  }
}
