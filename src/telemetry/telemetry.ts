import type { Context, Link, Meter, ProxyTracerProvider, Span, SpanContext, SpanKind, TextMapPropagator, Tracer, TracerProvider } from "@opentelemetry/api";
import { invalidArgument } from "../errors.ts";
import type { TraceContext } from "../job/envelope.ts";
import { checkObject } from "../validate.ts";
import { Metrics } from "./metrics.ts";
import { SCOPE_NAME } from "./names.ts";
import { otelApi, type Api } from "./otel-api.ts";
import { PrometheusRegistry } from "./prometheus.ts";

/** What the SDK needs of a `TracerProvider` (an OpenTelemetry one fits). */
export interface TracerProviderLike {
  getTracer(name: string, version?: string): unknown;
}

/** What the SDK needs of a `MeterProvider` (an OpenTelemetry one fits). */
export interface MeterProviderLike {
  getMeter(name: string, version?: string): unknown;
}

/** What the SDK needs of a `TextMapPropagator` (an OpenTelemetry one fits). */
export interface PropagatorLike {
  inject(context: unknown, carrier: unknown, setter: unknown): void;
  extract(context: unknown, carrier: unknown, getter: unknown): unknown;
  fields(): string[];
}

/**
 * The `telemetry` option of every class that does I/O. Spans and OpenTelemetry metrics go
 * through `@opentelemetry/api`, an optional peer dependency loaded on first use: without it
 * installed they are no-ops and cost nothing. Figures also go to `registry` when one is given,
 * with or without OpenTelemetry.
 */
export interface TelemetryOptions {
  /**
   * Where spans go.
   * @default the global tracer provider (`trace.setGlobalTracerProvider`, which `NodeSDK.start()` sets)
   */
  tracerProvider?: TracerProviderLike;
  /**
   * Where OpenTelemetry metrics go. The global one is read when the first figure is recorded,
   * so register it before the first job.
   * @default the global meter provider
   */
  meterProvider?: MeterProviderLike;
  /**
   * How a trace context is written into AMQP headers, the job envelope and the worker's assign
   * message, and read back. Whatever it is, a W3C `traceparent` is always written too, and read
   * when the propagator finds nothing, so a trace crosses processes even with no propagator set.
   * @default the global propagator
   */
  propagator?: PropagatorLike;
  /** Dependency-free Prometheus figures of this process, shared by every class given it. */
  registry?: PrometheusRegistry;
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

const setter = {
  set(carrier: Record<string, string>, key: string, value: string): void {
    carrier[key] = value;
  },
};
const getter = {
  get(carrier: Record<string, string>, key: string): string | undefined {
    const value = carrier[key];
    return typeof value === "string" ? value : undefined;
  },
  keys(carrier: Record<string, string>): string[] {
    return Object.keys(carrier);
  },
};

/**
 * One resolved telemetry configuration. When the API is absent `api` and `tracer` are undefined
 * and every helper returns at once.
 * @internal
 */
export class Telemetry {
  readonly api: Api | undefined;
  readonly tracer: Tracer | undefined;
  readonly registry: PrometheusRegistry | undefined;
  readonly #meterProvider: MeterProviderLike | undefined;
  readonly #propagator: PropagatorLike | undefined;
  #metrics: Metrics | undefined;
  /** The global tracer provider while no provider is registered behind it; undefined once one is (or when one was given). */
  #unregistered: ProxyTracerProvider | undefined;
  /** What that provider hands out while none is registered: the API's no-op provider. */
  readonly #noopProvider: TracerProvider | undefined;

  constructor(options: TelemetryOptions, api: Api | undefined) {
    this.api = api;
    this.registry = options.registry;
    this.#meterProvider = options.meterProvider;
    this.#propagator = options.propagator;
    const provider = api === undefined ? undefined : (options.tracerProvider ?? api.trace.getTracerProvider());
    this.tracer = provider?.getTracer(SCOPE_NAME) as Tracer | undefined;
    // A host with its own copy of the API has its own classes: then spans are always started.
    if (api !== undefined && options.tracerProvider === undefined && provider instanceof api.ProxyTracerProvider) {
      this.#unregistered = provider;
      this.#noopProvider = new api.ProxyTracerProvider().getDelegate();
    }
  }

  /**
   * Whether a span started now can record: false when the API is absent, and while the tracer is
   * the global one with no provider registered behind it (the API's no-op tracer, whose spans
   * record nothing and only carry their parent's context, so a caller with no parent context can
   * skip them). Checked at each call until a provider is registered.
   */
  get tracing(): boolean {
    if (this.api === undefined) return false;
    const proxy = this.#unregistered;
    if (proxy === undefined) return true;
    if (proxy.getDelegate() === this.#noopProvider) return false;
    this.#unregistered = undefined;
    return true;
  }

  /**
   * The instruments, created on first use (so a meter provider registered after construction is
   * seen). The API's no-op meter counts as none: `metrics.on` is false when nothing records.
   */
  get metrics(): Metrics {
    if (this.#metrics === undefined) {
      const api = this.api;
      const meter = api === undefined ? undefined : ((this.#meterProvider ?? api.metrics.getMeterProvider()).getMeter(SCOPE_NAME) as Meter);
      this.#metrics = new Metrics(meter === api?.createNoopMeter() ? undefined : meter, this.registry);
    }
    return this.#metrics;
  }

  /** The active context (ROOT when the API is absent or no context manager is registered). */
  active(): Context | undefined {
    return this.api?.context.active();
  }

  /** Starts a span; undefined when the API is absent. */
  start(name: string, kind: SpanKind, parent: Context | undefined, attributes: Record<string, string | number>, links?: Link[]): Span | undefined {
    const { api, tracer } = this;
    if (api === undefined || tracer === undefined) return undefined;
    return tracer.startSpan(name, { kind, attributes, ...(links === undefined ? {} : { links }) }, parent ?? api.context.active());
  }

  /** `parent` with `span` set in it. */
  withSpan(parent: Context | undefined, span: Span): Context | undefined {
    const api = this.api;
    return api === undefined ? undefined : api.trace.setSpan(parent ?? api.context.active(), span);
  }

  /** Writes `span`'s context into a fresh carrier: the propagator's fields plus a W3C traceparent. */
  inject(span: Span | undefined, base?: Context): Record<string, string> | undefined {
    const api = this.api;
    if (api === undefined || span === undefined || !span.spanContext().traceId || !api.trace.isSpanContextValid(span.spanContext())) return undefined;
    const carrier: Record<string, string> = {};
    const context = api.trace.setSpan(base ?? api.context.active(), span);
    try {
      ((this.#propagator ?? api.propagation) as TextMapPropagator).inject(context, carrier, setter);
    } catch {
      // A propagator that throws still leaves the W3C fields below.
    }
    if (carrier.traceparent === undefined) Object.assign(carrier, w3c(span.spanContext()));
    return carrier;
  }

  /** Reads a context from a carrier (the propagator's fields, else a W3C traceparent); undefined when none is there. */
  extract(carrier: Readonly<Record<string, string | undefined>> | undefined): Context | undefined {
    const api = this.api;
    if (api === undefined || carrier === undefined) return undefined;
    const root = api.ROOT_CONTEXT;
    let context: Context = root;
    try {
      context = ((this.#propagator ?? api.propagation) as TextMapPropagator).extract(root, carrier, getter as never);
    } catch {
      context = root;
    }
    if (api.trace.getSpanContext(context) !== undefined) return context;
    const parsed = parseTraceparent(carrier.traceparent, carrier.tracestate, api);
    return parsed === undefined ? undefined : api.trace.setSpanContext(root, parsed);
  }

  /** The W3C trace context of a span, for the envelope's `trace` field. */
  traceContext(span: Span | undefined): TraceContext | undefined {
    if (span === undefined || this.api === undefined || !this.api.trace.isSpanContextValid(span.spanContext())) return undefined;
    return w3c(span.spanContext());
  }

  /** Trace and span ids of a span for a log record; empty without a valid span context. */
  logIds(span: Span | undefined): { traceId?: string; spanId?: string } {
    if (span === undefined || this.api === undefined) return {};
    const spanContext = span.spanContext();
    if (!this.api.trace.isSpanContextValid(spanContext)) return {};
    return { traceId: spanContext.traceId, spanId: spanContext.spanId };
  }
}

function w3c(spanContext: SpanContext): { traceparent: string; tracestate?: string } {
  const traceparent = `00-${spanContext.traceId}-${spanContext.spanId}-0${(spanContext.traceFlags & 1).toString(16)}`;
  const tracestate = spanContext.traceState?.serialize();
  return tracestate ? { traceparent, tracestate } : { traceparent };
}

function parseTraceparent(traceparent: string | undefined, tracestate: string | undefined, api: Api): SpanContext | undefined {
  const match = traceparent === undefined ? null : TRACEPARENT.exec(traceparent.trim());
  if (match === null) return undefined;
  const spanContext: SpanContext = { traceId: match[1] as string, spanId: match[2] as string, traceFlags: Number.parseInt(match[3] as string, 16) & 1, isRemote: true };
  if (tracestate) spanContext.traceState = api.createTraceState(tracestate);
  return api.trace.isSpanContextValid(spanContext) ? spanContext : undefined;
}

const DISABLED = new Telemetry({}, undefined);

/**
 * Checks a `telemetry` option and resolves it, loading the API on first use.
 * @throws {OrchestratorError} `invalid_argument` naming the bad field.
 * @internal
 */
export function resolveTelemetry(value: unknown, field = "telemetry"): Telemetry {
  const o = checkObject(field, value ?? {});
  const check = (name: string, methods: readonly string[]): void => {
    const v = o[name];
    if (v === undefined) return;
    if (typeof v !== "object" || v === null || methods.some((m) => typeof (v as Record<string, unknown>)[m] !== "function")) {
      throw invalidArgument(`${field}.${name}`, `an object with ${methods.join(", ")}`, v);
    }
  };
  check("tracerProvider", ["getTracer"]);
  check("meterProvider", ["getMeter"]);
  check("propagator", ["inject", "extract", "fields"]);
  if (o.registry !== undefined && !(o.registry instanceof PrometheusRegistry)) throw invalidArgument(`${field}.registry`, "a PrometheusRegistry", o.registry);
  const api = otelApi();
  if (api === undefined && o.registry === undefined) return DISABLED;
  return new Telemetry(o as TelemetryOptions, api);
}

/**
 * Calls `fn` outside any trace: for long-lived calls opened on behalf of many jobs (a worker's
 * session stream), which would otherwise join the trace of whichever job happened to open them.
 * @internal
 */
export function outsideAnyTrace<T>(fn: () => T): T {
  const api = otelApi();
  return api === undefined ? fn() : api.context.with(api.ROOT_CONTEXT, fn);
}
