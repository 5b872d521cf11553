import type { Context, Link, Span } from "@opentelemetry/api";
import { OrchestratorError } from "../errors.ts";
import type { JobEnvelope } from "../job/envelope.ts";
import { type Logger, logSafely } from "./logger.ts";
import { ATTR, EVENT, OPERATION, SPAN } from "./names.ts";
import type { Destination } from "./destination.ts";
import type { Telemetry } from "./telemetry.ts";

/** SpanKind and SpanStatusCode values (numbers fixed by the API; kept here so the API stays optional). */
const CONSUMER = 4 as const;
const CLIENT = 2 as const;
const ERROR = 2 as const;

/** One delivery's telemetry, from receipt to settle. */
interface Scope {
  readonly process: Span | undefined;
  readonly context: Context | undefined;
  readonly receivedAt: number;
  readonly attempt: number;
  execute: Span | undefined;
  executeStartedAt: number;
  workerId: string | undefined;
  outcome: string | undefined;
  error: OrchestratorError | undefined;
  stoppedAt: number | undefined;
}

/** Why a dispatcher stopped a run (see `Stop` in dispatcher/run.ts), as a span event. */
const STOP_EVENTS: Readonly<Record<string, string | undefined>> = {
  cancel: EVENT.cancel,
  timeout: EVENT.timeout,
  lost: EVENT.evict,
  revoked: EVENT.abandon,
};

/** Outcome recorded for each dispatcher event that ends an attempt. */
const OUTCOMES: Readonly<Record<string, string | undefined>> = {
  jobCompleted: "completed",
  jobFailed: "failed",
  jobRetrying: "retried",
  jobCancelled: "cancelled",
  jobDeferred: "deferred",
  jobAbandoned: "abandoned",
};

/**
 * A dispatcher's spans, figures and log records, fed by a few one-line calls from `Dispatcher`:
 * `process {queue}` (CONSUMER) per delivery, its parent the creation context carried in the
 * envelope when no span is active, else the active span with a link to it; `execute {type}`
 * (CLIENT) per trip to a worker, whose context travels in the assign message; retries, cancels,
 * timeouts, evictions, deferrals and dead letters as span events. Keyed by the delivery's
 * envelope object (each delivery decodes its own).
 * @internal
 */
export class DispatchTelemetry {
  readonly #t: Telemetry;
  readonly #logger: Logger | undefined;
  readonly #destination: Destination;
  readonly #scopes = new WeakMap<JobEnvelope, Scope>();
  /** False when nothing records (no API, no registry, no logger): every call returns at once. */
  readonly #on: boolean;

  constructor(telemetry: Telemetry, logger: Logger | undefined, destination: Destination) {
    this.#t = telemetry;
    this.#logger = logger;
    this.#destination = destination;
    this.#on = telemetry.api !== undefined || telemetry.registry !== undefined || logger !== undefined;
  }

  /** A delivery arrived. */
  received(job: JobEnvelope, attempt: number): void {
    if (!this.#on) return;
    const t = this.#t;
    const { system, name } = this.#destination;
    let process: Span | undefined;
    let context: Context | undefined;
    if (t.api !== undefined) {
      const creation = t.extract(job.trace as Record<string, string> | undefined);
      const active = t.active();
      const ambient = active !== undefined && t.api.trace.getSpanContext(active) !== undefined;
      // With no tracer registered and no context to carry, the spans would be empty: skip them.
      if (ambient || creation !== undefined || t.tracing) {
        const links: Link[] | undefined = ambient && creation !== undefined ? [{ context: t.api.trace.getSpanContext(creation) as NonNullable<ReturnType<typeof t.api.trace.getSpanContext>> }] : undefined;
        process = t.start(SPAN.process(name), CONSUMER, ambient ? active : (creation ?? t.api.ROOT_CONTEXT), {
          [ATTR.messagingSystem]: system,
          [ATTR.messagingOperationName]: OPERATION.process,
          [ATTR.messagingOperationType]: OPERATION.process,
          [ATTR.messagingDestination]: name,
          [ATTR.messagingMessageId]: job.id,
          [ATTR.jobType]: job.type,
          [ATTR.jobAttempt]: attempt,
        }, links);
        context = process === undefined ? undefined : t.withSpan(ambient ? active : (creation ?? t.api.ROOT_CONTEXT), process);
      }
    }
    // Nothing to record for this delivery (no span, no figures, no logger): keep no scope either.
    if (process === undefined && this.#logger === undefined && !t.metrics.on) return;
    this.#scopes.set(job, { process, context, receivedAt: performance.now(), attempt, execute: undefined, executeStartedAt: 0, workerId: undefined, outcome: undefined, error: undefined, stoppedAt: undefined });
    if (t.metrics.on) {
      t.metrics.instruments.consumedMessages.record(1, { [ATTR.messagingSystem]: system, [ATTR.messagingDestination]: name, [ATTR.messagingOperationName]: OPERATION.process });
    }
    this.#log("debug", job, attempt, undefined, process, "job received");
  }

  /**
   * The attempt is handed to worker `workerId`: starts `execute {type}` and returns the carrier of
   * its context for the assign message (undefined when nothing records).
   */
  executing(job: JobEnvelope, attempt: number, workerId: string): Record<string, string> | undefined {
    const scope = this.#scopes.get(job);
    if (scope === undefined) return undefined;
    const t = this.#t;
    scope.workerId = workerId;
    scope.executeStartedAt = performance.now();
    scope.process?.setAttribute(ATTR.workerId, workerId);
    if (scope.process !== undefined || t.tracing) {
      scope.execute = t.start(SPAN.execute(job.type), CLIENT, scope.context, { [ATTR.jobType]: job.type, [ATTR.jobAttempt]: attempt, [ATTR.workerId]: workerId, [ATTR.messagingMessageId]: job.id });
    }
    if (t.metrics.on) {
      const m = t.metrics.instruments;
      m.jobsActive.record(1, { [ATTR.jobType]: job.type });
      if (attempt === 1) {
        const createdAt = Date.parse(job.createdAt);
        if (Number.isFinite(createdAt)) m.queueWait.record(Math.max(0, Date.now() - createdAt) / 1000, { [ATTR.jobType]: job.type, [ATTR.messagingDestination]: this.#destination.name });
      }
    }
    this.#log("debug", job, attempt, workerId, scope.execute ?? scope.process, "job started");
    return t.inject(scope.execute, scope.context);
  }

  /** The worker call ended (`error` undefined: it returned a result). */
  executed(job: JobEnvelope, error: OrchestratorError | undefined): void {
    const scope = this.#scopes.get(job);
    if (scope === undefined || scope.executeStartedAt === 0) return;
    const metrics = this.#t.metrics;
    const outcome = error === undefined ? "completed" : error.code;
    if (metrics.on) {
      metrics.instruments.jobsActive.record(-1, { [ATTR.jobType]: job.type });
      metrics.instruments.jobDuration.record((performance.now() - scope.executeStartedAt) / 1000, { [ATTR.jobType]: job.type, [ATTR.jobOutcome]: outcome });
    }
    const span = scope.execute;
    if (span !== undefined) {
      span.setAttribute(ATTR.jobOutcome, outcome);
      if (error !== undefined) {
        span.setAttribute(ATTR.errorType, error.code);
        span.setStatus({ code: ERROR, message: error.rawMessage });
      }
      span.end();
    }
  }

  /** The dispatcher stopped the run (`stop` as in dispatcher/run.ts) with `reason`. */
  stopped(job: JobEnvelope, stop: string, reason: OrchestratorError): void {
    const scope = this.#scopes.get(job);
    if (scope === undefined) return;
    scope.stoppedAt ??= performance.now();
    const name = STOP_EVENTS[stop];
    if (name === undefined) return;
    const attributes = { [ATTR.cancelReason]: String(reason.details.reason ?? stop), [ATTR.errorType]: reason.code };
    scope.process?.addEvent(name, attributes);
    scope.execute?.addEvent(name, attributes);
    this.#log(stop === "cancel" ? "info" : "warn", job, scope.attempt, scope.workerId, scope.process, `job stopped (${stop}): ${reason.rawMessage}`);
  }

  /** A dispatcher event about the job (jobCompleted, jobRetrying, …). */
  observe(event: string, payload: unknown): void {
    const info = payload as { job?: JobEnvelope; attempt?: number; error?: OrchestratorError; delayMs?: number; reason?: string; workerId?: string };
    const job = info?.job;
    if (job === undefined) return;
    const scope = this.#scopes.get(job);
    if (scope === undefined) return;
    const m = this.#t.metrics.instruments;
    const type = { [ATTR.jobType]: job.type };
    const span = scope.process;
    const outcome = OUTCOMES[event];
    if (outcome !== undefined) scope.outcome = outcome;
    if (info.error !== undefined) scope.error = info.error;
    switch (event) {
      case "jobRetrying":
        m.retries.record(1, { ...type, [ATTR.errorType]: info.error?.code ?? "unknown" });
        span?.addEvent(EVENT.retry, { [ATTR.errorType]: info.error?.code ?? "unknown", [ATTR.retryDelayMs]: info.delayMs ?? 0, [ATTR.jobAttempt]: scope.attempt });
        this.#log("warn", job, scope.attempt, info.workerId, span, `attempt failed, retrying in ${info.delayMs} ms: ${info.error?.message}`);
        break;
      case "jobCancelled":
        if (scope.stoppedAt !== undefined) m.cancelLatency.record((performance.now() - scope.stoppedAt) / 1000, type);
        if (scope.stoppedAt === undefined) span?.addEvent(EVENT.cancel, { [ATTR.cancelReason]: info.reason ?? "requested" });
        this.#log("info", job, scope.attempt, info.workerId, span, `job cancelled (${info.reason})`);
        break;
      case "jobDeferred":
        span?.addEvent(EVENT.defer, { [ATTR.deferReason]: info.reason ?? "unknown", [ATTR.retryDelayMs]: info.delayMs ?? 0 });
        this.#log("debug", job, scope.attempt, undefined, span, `job deferred (${info.reason})`);
        break;
      case "jobDeadLettered":
        m.deadLetters.record(1, { ...type, [ATTR.messagingDestination]: this.#destination.name });
        span?.addEvent(EVENT.deadLetter, { "blacktree.dead_letter.reason": info.reason ?? "" });
        this.#log("warn", job, scope.attempt, undefined, span, `job dead-lettered: ${info.reason}`);
        break;
      case "jobFailed":
        this.#log("warn", job, scope.attempt, info.workerId, span, `job failed: ${info.error?.message}`);
        break;
      case "jobCompleted":
        this.#log("debug", job, scope.attempt, info.workerId, span, "job completed");
        break;
      case "jobAbandoned":
        this.#log("warn", job, scope.attempt, info.workerId, span, `delivery lost, job abandoned here: ${info.error?.message}`);
        break;
    }
  }

  /**
   * A settle call returned (`error` undefined) or failed: `messaging.client.operation.duration`
   * with operation type `settle` and name `ack`, `retry` or `dead_letter`.
   */
  settled(how: "ack" | "retry" | "deadLetter", startedAt: number, error?: unknown): void {
    if (!this.#on || !this.#t.metrics.on) return;
    const { system, name } = this.#destination;
    const labels: Record<string, string> = {
      [ATTR.messagingSystem]: system,
      [ATTR.messagingDestination]: name,
      [ATTR.messagingOperationType]: OPERATION.settle,
      [ATTR.messagingOperationName]: how === "deadLetter" ? "dead_letter" : how,
    };
    if (error !== undefined) labels[ATTR.errorType] = OrchestratorError.from(error).code;
    this.#t.metrics.instruments.operationDuration.record((performance.now() - startedAt) / 1000, labels);
  }

  /** The run is over (settled, or left to the queue): ends `process {queue}`. */
  ended(job: JobEnvelope): void {
    const scope = this.#scopes.get(job);
    if (scope === undefined) return;
    this.#scopes.delete(job);
    const outcome = scope.outcome ?? "unsettled";
    if (this.#t.metrics.on) {
      const { system, name } = this.#destination;
      const labels: Record<string, string> = { [ATTR.messagingSystem]: system, [ATTR.messagingDestination]: name, [ATTR.messagingOperationName]: OPERATION.process, [ATTR.jobType]: job.type, [ATTR.jobOutcome]: outcome };
      if (outcome === "failed" && scope.error !== undefined) labels[ATTR.errorType] = scope.error.code;
      this.#t.metrics.instruments.processDuration.record((performance.now() - scope.receivedAt) / 1000, labels);
    }
    const span = scope.process;
    if (span === undefined) return;
    span.setAttribute(ATTR.jobOutcome, outcome);
    if (outcome === "failed") {
      span.setAttribute(ATTR.errorType, scope.error?.code ?? "unknown");
      span.setStatus({ code: ERROR, message: scope.error?.rawMessage ?? "failed" });
    }
    span.end();
  }

  #log(level: keyof Logger, job: JobEnvelope, attempt: number, workerId: string | undefined, span: Span | undefined, message: string): void {
    if (this.#logger === undefined) return;
    const fields: Record<string, unknown> = { jobId: job.id, jobType: job.type, attempt, ...this.#t.logIds(span) };
    if (workerId !== undefined) fields.workerId = workerId;
    logSafely(this.#logger, level, fields, message);
  }
}
