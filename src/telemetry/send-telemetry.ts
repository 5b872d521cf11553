import type { Context, Span } from "@opentelemetry/api";
import { OrchestratorError } from "../errors.ts";
import type { JobEnvelope } from "../job/envelope.ts";
import type { Destination } from "./destination.ts";
import { type Logger, logSafely } from "./logger.ts";
import { ATTR, OPERATION, SPAN } from "./names.ts";
import type { Telemetry } from "./telemetry.ts";

const PRODUCER = 3 as const;
const ERROR = 2 as const;

/** A submit in flight. @internal */
export interface SendScope {
  readonly span: Span | undefined;
  readonly context: Context | undefined;
  readonly startedAt: number;
}

/**
 * Starts `send {queue}` (PRODUCER) for a submit and writes its context into the envelope's
 * `trace` (the queue copies it into the AMQP headers). Its parent is the active span; without
 * one, a `trace` the caller put in the spec by hand. Undefined when nothing records.
 * @internal
 */
export function beginSend(t: Telemetry, envelope: JobEnvelope, destination: Destination): SendScope | undefined {
  if (t.api === undefined && t.registry === undefined) return undefined;
  let span: Span | undefined;
  let context: Context | undefined;
  if (t.api !== undefined) {
    const active = t.active();
    const ambient = active !== undefined && t.api.trace.getSpanContext(active) !== undefined;
    const parent = ambient ? active : t.extract(envelope.trace as Record<string, string> | undefined);
    // With no tracer registered and no context to carry, the span would be empty: skip it.
    if (parent !== undefined || t.tracing) {
      span = t.start(SPAN.send(destination.name), PRODUCER, parent ?? t.api.ROOT_CONTEXT, {
        [ATTR.messagingSystem]: destination.system,
        [ATTR.messagingOperationName]: OPERATION.send,
        [ATTR.messagingOperationType]: OPERATION.send,
        [ATTR.messagingDestination]: destination.name,
        [ATTR.messagingMessageId]: envelope.id,
        [ATTR.jobType]: envelope.type,
        // Published to the default exchange: the routing key is the queue's name.
        ...(destination.system === "rabbitmq" ? { [ATTR.rabbitmqRoutingKey]: destination.name } : {}),
      });
      if (span !== undefined) context = t.withSpan(parent, span);
      const carrier = t.inject(span, parent);
      if (carrier?.traceparent !== undefined) {
        envelope.trace = carrier.tracestate === undefined ? { traceparent: carrier.traceparent } : { traceparent: carrier.traceparent, tracestate: carrier.tracestate };
      }
    }
  }
  // Nothing records (no span, no figures): no scope, so endSend does nothing.
  if (span === undefined && !t.metrics.on) return undefined;
  return { span, context, startedAt: performance.now() };
}

/** Runs the enqueue with `send` active, so an AMQP instrumentation's publish span nests under it. @internal */
export function runInSend<T>(t: Telemetry, scope: SendScope | undefined, fn: () => T): T {
  if (scope?.context === undefined || t.api === undefined) return fn();
  return t.api.context.with(scope.context, fn);
}

/** The client's debug record of a submitted job. @internal */
export function logSubmitted(logger: Logger, t: Telemetry, envelope: JobEnvelope, scope: SendScope | undefined): void {
  logSafely(logger, "debug", { jobId: envelope.id, jobType: envelope.type, attempt: envelope.attempt, ...t.logIds(scope?.span) }, "job submitted");
}

/** Ends a submit's span and counts it. @internal */
export function endSend(t: Telemetry, scope: SendScope | undefined, destination: Destination, error?: unknown): void {
  if (scope === undefined) return;
  const labels: Record<string, string> = {
    [ATTR.messagingSystem]: destination.system,
    [ATTR.messagingDestination]: destination.name,
    [ATTR.messagingOperationName]: OPERATION.send,
  };
  const code = error === undefined ? undefined : OrchestratorError.from(error).code;
  if (code !== undefined) labels[ATTR.errorType] = code;
  const m = t.metrics.instruments;
  m.sentMessages.record(1, labels);
  m.operationDuration.record((performance.now() - scope.startedAt) / 1000, labels);
  const span = scope.span;
  if (span === undefined) return;
  if (code !== undefined) {
    span.setAttribute(ATTR.errorType, code);
    span.setStatus({ code: ERROR, message: OrchestratorError.from(error).rawMessage });
  }
  span.end();
}
