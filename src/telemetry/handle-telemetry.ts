import type { Context, Span } from "@opentelemetry/api";
import type { OrchestratorError } from "../errors.ts";
import type { TraceContext } from "../job/envelope.ts";
import { checkBoolean, optional } from "../validate.ts";
import { type Logger, logSafely, resolveLogger, withFields } from "./logger.ts";
import { ATTR, EVENT, SPAN } from "./names.ts";
import { resolveTelemetry, type Telemetry } from "./telemetry.ts";

const SERVER = 1 as const;
const ERROR = 2 as const;

/** What the worker side knows of an attempt. @internal */
export interface HandleRequest {
  readonly jobId: string;
  readonly type: string;
  readonly attempt: number;
  readonly trace?: TraceContext | undefined;
  /** The `execute` span's context from the assign message (propagator fields). */
  readonly traceCarrier?: Readonly<Record<string, string>> | undefined;
}

/** One attempt's telemetry on the worker. @internal */
export interface HandleScope {
  readonly span: Span | undefined;
  readonly context: Context | undefined;
  /** When the handler started (`performance.now()`); undefined when no figure records. */
  readonly startedAt: number | undefined;
}

/** What the slots gauge reads of a worker's runner. @internal */
export interface SlotFigures {
  /** Handlers running now (including aborted ones still winding down). */
  readonly running: number;
  /** Aborted handlers still running. */
  readonly stuck: number;
}

/**
 * The worker side: `handle {type}` (SERVER) per attempt, child of the orchestrator's
 * `execute {type}` whose context came in the assign message (else of the envelope's creation
 * context), made the active span while the handler runs so the handler's own spans nest under
 * it. That needs a context manager, which the host registers (`NodeSDK` does; or
 * `context.setGlobalContextManager(new AsyncLocalStorageContextManager())`); without one the
 * handler's spans start new traces. Log lines of `ctx.log()` can go to the worker's logger too.
 * Figures: handler duration by type and outcome, handlers active, and the worker's slots by state.
 * @internal
 */
export class HandleTelemetry {
  readonly #t: Telemetry;
  readonly #logger: Logger | undefined;
  readonly #logJobOutput: boolean;
  /** Whether figures record (an OpenTelemetry API or a Prometheus registry). */
  readonly #measured: boolean;

  constructor(telemetry: Telemetry, logger: Logger | undefined, logJobOutput: boolean) {
    this.#t = telemetry;
    this.#logger = logger;
    this.#logJobOutput = logJobOutput && logger !== undefined;
    this.#measured = telemetry.api !== undefined || telemetry.registry !== undefined;
  }

  /** Starts `handle {type}` and counts the handler as active; undefined when nothing records. */
  start(request: HandleRequest): HandleScope | undefined {
    const t = this.#t;
    if (!this.#measured) return undefined;
    const counted = t.metrics.on;
    if (counted) t.metrics.instruments.handlersActive.record(1, { [ATTR.jobType]: request.type });
    const startedAt = counted ? performance.now() : undefined;
    if (t.api === undefined) return { span: undefined, context: undefined, startedAt };
    const carried = t.extract(request.traceCarrier) ?? t.extract(request.trace as Record<string, string> | undefined);
    // With no tracer registered and no context to carry, the span would be empty: skip it.
    if (carried === undefined && !t.tracing) return counted ? { span: undefined, context: undefined, startedAt } : undefined;
    const parent = carried ?? t.api.ROOT_CONTEXT;
    const span = t.start(SPAN.handle(request.type), SERVER, parent, {
      [ATTR.jobType]: request.type,
      [ATTR.jobAttempt]: request.attempt,
      [ATTR.messagingMessageId]: request.jobId,
    });
    return { span, context: span === undefined ? undefined : t.withSpan(parent, span), startedAt };
  }

  /**
   * Registers the worker's slots gauge (`free`, `busy`, `stuck`), read from `runner()` at each
   * collection. Returns the unregister function (a no-op when no figure records).
   */
  observeSlots(slots: number, runner: () => SlotFigures): () => void {
    if (!this.#measured) return () => {};
    return this.#t.metrics.gauge("handlerSlots", () => {
      const { running, stuck } = runner();
      return [
        [{ [ATTR.slotState]: "free" }, Math.max(0, slots - running)],
        [{ [ATTR.slotState]: "busy" }, running - stuck],
        [{ [ATTR.slotState]: "stuck" }, stuck],
      ];
    });
  }

  /** Calls `fn` with the attempt's span active. */
  run<T>(scope: HandleScope | undefined, fn: () => T): T {
    const api = this.#t.api;
    if (scope?.context === undefined || api === undefined) return fn();
    return api.context.with(scope.context, fn);
  }

  /** The attempt was aborted (cancel, deadline, shutdown, lost orchestrator). */
  aborted(scope: HandleScope | undefined, request: HandleRequest, reason: string, message: string | undefined): void {
    scope?.span?.addEvent(reason === "timeout" ? EVENT.timeout : EVENT.cancel, { [ATTR.cancelReason]: reason });
    if (this.#logger !== undefined) this.#log("info", scope, request, `job aborted (${reason})${message ? `: ${message}` : ""}`);
  }

  /** The attempt ended; `error` undefined: the handler returned. */
  end(scope: HandleScope | undefined, request: HandleRequest, error: OrchestratorError | undefined): void {
    if (this.#logger !== undefined && error !== undefined) this.#log("warn", scope, request, `job failed: ${error.message}`);
    const outcome = error === undefined ? "completed" : error.code;
    if (scope?.startedAt !== undefined) {
      const m = this.#t.metrics.instruments;
      m.handlersActive.record(-1, { [ATTR.jobType]: request.type });
      m.handlerDuration.record((performance.now() - scope.startedAt) / 1000, { [ATTR.jobType]: request.type, [ATTR.jobOutcome]: outcome });
    }
    const span = scope?.span;
    if (span === undefined) return;
    span.setAttribute(ATTR.jobOutcome, outcome);
    if (error !== undefined) {
      span.setAttribute(ATTR.errorType, error.code);
      span.setStatus({ code: ERROR, message: error.rawMessage });
    }
    span.end();
  }

  /** A `ctx.log()` line, forwarded to the worker's logger when `logJobOutput` is on. */
  line(scope: HandleScope | undefined, request: HandleRequest, line: string, stream: string | undefined): void {
    if (!this.#logJobOutput) return;
    this.#log("info", scope, request, line, stream === undefined ? undefined : { stream });
  }

  #log(level: keyof Logger, scope: HandleScope | undefined, request: HandleRequest, message: string, extra?: object): void {
    const logger = this.#logger;
    if (logger === undefined) return;
    logSafely(logger, level, { jobId: request.jobId, jobType: request.type, attempt: request.attempt, ...this.#t.logIds(scope?.span), ...extra }, message);
  }
}

/**
 * A worker's telemetry from its options (`telemetry`, `logger`, `logJobOutput`, and `id` for the
 * records), or none when there is no OpenTelemetry API, registry or logger: the runner then
 * calls nothing at all.
 * @throws {OrchestratorError} `invalid_argument` naming the bad option.
 * @internal
 */
export function resolveHandleTelemetry(o: Record<string, unknown>): HandleTelemetry | undefined {
  const telemetry = resolveTelemetry(o.telemetry);
  const base = resolveLogger(o.logger);
  const logJobOutput = optional(o.logJobOutput, false, (v) => checkBoolean("logJobOutput", v));
  if (telemetry.api === undefined && telemetry.registry === undefined && base === undefined) return undefined;
  const id = typeof o.id === "string" ? o.id : undefined;
  const logger = base === undefined || id === undefined ? base : withFields(base, { workerId: id });
  return new HandleTelemetry(telemetry, logger, logJobOutput);
}
