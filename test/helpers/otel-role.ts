/**
 * Entry script of one process of the telemetry integration test: `node otel-role.ts '<json>'`
 * with `role` "worker", "orchestrator" or "producer". Each process registers an OpenTelemetry
 * SDK as a host would (global tracer provider with an in-memory-style exporter that appends every
 * finished span as a JSON line to `spansFile`, W3C propagator, AsyncLocalStorage context manager,
 * a meter provider read on demand), optionally the amqplib and gRPC auto-instrumentations, and
 * only then loads the SDK under test.
 */
import { appendFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { context, metrics, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { ExportResultCode, W3CTraceContextPropagator } from "@opentelemetry/core";
import { AggregationTemporality, MeterProvider, MetricReader } from "@opentelemetry/sdk-metrics";
import { BasicTracerProvider, SimpleSpanProcessor, type ReadableSpan, type SpanExporter } from "@opentelemetry/sdk-trace-base";

export interface RoleConfig {
  role: "worker" | "orchestrator" | "producer";
  spansFile: string;
  instrument: boolean;
  url?: string;
  queueName?: string;
  workerAddress?: string;
}

/** A finished span as the test reads it back. */
export interface SpanRecord {
  role: string;
  scope: string;
  name: string;
  kind: number;
  traceId: string;
  spanId: string;
  parentSpanId: string | undefined;
  links: Array<{ traceId: string; spanId: string }>;
  attributes: Record<string, unknown>;
  events: Array<{ name: string; attributes: Record<string, unknown> }>;
  status: number;
}

const config = JSON.parse(process.argv[2] ?? "{}") as RoleConfig;

class FileExporter implements SpanExporter {
  export(spans: ReadableSpan[], done: (result: { code: ExportResultCode }) => void): void {
    const lines = spans.map((s) => {
      const record: SpanRecord = {
        role: config.role,
        scope: s.instrumentationScope.name,
        name: s.name,
        kind: s.kind,
        traceId: s.spanContext().traceId,
        spanId: s.spanContext().spanId,
        parentSpanId: s.parentSpanContext?.spanId,
        links: s.links.map((l) => ({ traceId: l.context.traceId, spanId: l.context.spanId })),
        attributes: { ...s.attributes },
        events: s.events.map((e) => ({ name: e.name, attributes: { ...e.attributes } })),
        status: s.status.code,
      };
      return `${JSON.stringify(record)}\n`;
    });
    appendFileSync(config.spansFile, lines.join(""));
    done({ code: ExportResultCode.SUCCESS });
  }
  async shutdown(): Promise<void> {}
}

class Reader extends MetricReader {
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(new FileExporter())] });
trace.setGlobalTracerProvider(tracerProvider);
propagation.setGlobalPropagator(new W3CTraceContextPropagator());
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
const reader = new Reader({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE });
metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }));

if (config.instrument) {
  const { registerInstrumentations } = await import("@opentelemetry/instrumentation");
  const { AmqplibInstrumentation } = await import("@opentelemetry/instrumentation-amqplib");
  const { GrpcInstrumentation } = await import("@opentelemetry/instrumentation-grpc");
  registerInstrumentations({
    tracerProvider,
    // The session stream carries every job of a worker and the health checks run on a timer:
    // spans of theirs would be noise (README "Observability").
    instrumentations: [new AmqplibInstrumentation(), new GrpcInstrumentation({ ignoreGrpcMethods: ["Session", "Check", "Watch", "Describe"] })],
  });
}

const say = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

if (config.role === "worker") {
  const { serveWorker } = await import("../../src/worker/index.ts");
  const worker = await serveWorker({
    id: "otel-worker",
    host: "127.0.0.1",
    port: 0,
    slots: 4,
    handlers: {
      // A handler with a span of its own, which must nest under `handle traced`.
      traced: async (payload: { n: number }) =>
        trace.getTracer("user-code").startActiveSpan("user work", async (span) => {
          await new Promise((resolve) => setTimeout(resolve, 5));
          span.end();
          return { doubled: payload.n * 2 };
        }),
      flaky: async (_payload: unknown, ctx) => {
        if (ctx.attempt === 1) throw new Error("first attempt fails");
        return "second attempt";
      },
      slow: (_payload: unknown, ctx) =>
        new Promise((_resolve, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true })),
    },
  });
  say(`ready ${worker.port}`);
  process.once("SIGTERM", () => void worker.close().then(() => process.exit(0)));
}

if (config.role === "orchestrator") {
  const { Dispatcher } = await import("../../src/dispatcher/dispatcher.ts");
  const { AmqpConnection } = await import("../../src/queue/amqp/amqp-connection.ts");
  const { AmqpEvents } = await import("../../src/queue/amqp/amqp-events.ts");
  const { AmqpQueue } = await import("../../src/queue/amqp/amqp-queue.ts");
  const { GrpcTransport } = await import("../../src/transport/grpc/grpc-transport.ts");
  const { WorkerPool } = await import("../../src/worker-pool/worker-pool.ts");
  const { HealthMonitor } = await import("../../src/health/health-monitor.ts");
  const { PrometheusRegistry } = await import("../../src/telemetry/prometheus.ts");
  const registry = new PrometheusRegistry();
  const telemetry = { registry };
  const connection = new AmqpConnection({ url: config.url as string, connectionName: `test-telemetry-orchestrator-${process.pid}` });
  const queue = new AmqpQueue({ connection, queueName: config.queueName as string });
  const events = new AmqpEvents({ connection, queueName: config.queueName as string, subscriberExpiresMs: 10_000 });
  const pool = new WorkerPool({ telemetry });
  pool.add({ id: "otel-worker", transport: new GrpcTransport({ address: config.workerAddress as string }), slots: 4 });
  const health = new HealthMonitor({ target: pool, intervalMs: 200, telemetry });
  const dispatcher = new Dispatcher({ queue, events, pool, telemetry, retry: { baseDelayMs: 50, maxDelayMs: 100 } });
  dispatcher.on("error", ({ error }) => process.stderr.write(`error ${error.message}\n`));
  health.start();
  await dispatcher.start();
  say("ready");
  for await (const line of createInterface({ input: process.stdin })) {
    if (line === "metrics") {
      const { resourceMetrics } = await reader.collect();
      const points: Array<{ name: string; attributes: Record<string, unknown>; value: unknown }> = [];
      for (const scope of resourceMetrics.scopeMetrics) {
        for (const metric of scope.metrics) {
          for (const p of metric.dataPoints) points.push({ name: metric.descriptor.name, attributes: { ...p.attributes }, value: p.value });
        }
      }
      say(`metrics ${JSON.stringify({ points, prometheus: registry.metrics() })}`);
    }
    if (line === "close") break;
  }
  await dispatcher.close({ signal: AbortSignal.timeout(2000) });
  await health.close();
  await Promise.allSettled([queue.close(), events.close(), pool.close()]);
  await connection.close();
  process.exit(0);
}

if (config.role === "producer") {
  const { JobClient } = await import("../../src/client/job-client.ts");
  const { AmqpConnection } = await import("../../src/queue/amqp/amqp-connection.ts");
  const { AmqpEvents } = await import("../../src/queue/amqp/amqp-events.ts");
  const { AmqpQueue } = await import("../../src/queue/amqp/amqp-queue.ts");
  const connection = new AmqpConnection({ url: config.url as string, connectionName: `test-telemetry-producer-${process.pid}` });
  const queue = new AmqpQueue({ connection, queueName: config.queueName as string });
  const events = new AmqpEvents({ connection, queueName: config.queueName as string, subscriberExpiresMs: 10_000 });
  const client = new JobClient({ queue, events, defaults: { timeoutMs: 30_000, maxAttempts: 3 } });
  const tracer = trace.getTracer("user-code");
  const ids: Record<string, string> = {};
  // As an API handler would: the submit runs inside the request's span.
  await tracer.startActiveSpan("POST /builds", async (request) => {
    const handle = await client.submit({ type: "traced", payload: { n: 21 } });
    ids.ok = handle.id;
    request.end();
    await handle.result({ timeoutMs: 20_000 });
  });
  const flaky = await client.submit({ type: "flaky", payload: null });
  ids.retry = flaky.id;
  await flaky.result({ timeoutMs: 20_000 });
  const slow = await client.submit({ type: "slow", payload: null });
  ids.cancel = slow.id;
  await new Promise<void>((resolve) => slow.on("state", (event) => event.state === "running" && resolve()));
  await slow.cancel("requested");
  await slow.result({ timeoutMs: 20_000 }).catch(() => {});
  say(`ids ${JSON.stringify(ids)}`);
  await client.close();
  await Promise.allSettled([queue.close(), events.close()]);
  await connection.close();
  process.exit(0);
}
