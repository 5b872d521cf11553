/**
 * Observability in one process: an OpenTelemetry SDK registered as a host would, a producer, a
 * dispatcher and a gRPC worker, one job, and its span tree printed in the terminal, followed by
 * the same figures as Prometheus text.
 *
 *   node examples/observability.ts
 *
 * In production the three roles are separate processes; the trace crosses them the same way
 * (the envelope and AMQP headers, then the worker's assign message). See README "Observability".
 *
 * It imports the package by name, as an app does: copy it into a project that depends on
 * @blacktree/orchestrator and run it with `node` (22.18+, which runs TypeScript). In this
 * repository, add `--import ./scripts/source-imports.mjs` to run it against the sources.
 */
import { context, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { Dispatcher, JobClient, MemoryQueue, PrometheusRegistry, WorkerPool } from "@blacktree/orchestrator";
import { GrpcTransport } from "@blacktree/orchestrator/grpc";
import { serveWorker } from "@blacktree/orchestrator/worker";
import type { JobContext } from "@blacktree/orchestrator/worker";

// 1. The host registers an SDK (NodeSDK does all three in production).
const exporter = new InMemorySpanExporter();
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
propagation.setGlobalPropagator(new W3CTraceContextPropagator());
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
const registry = new PrometheusRegistry();

// 2. A worker whose handler makes a span of its own: it nests under the SDK's `handle build`.
const worker = await serveWorker({
  id: "worker-1",
  host: "127.0.0.1",
  port: 0,
  handleSignals: false,
  handlers: {
    build: async (payload: { tag: string }, ctx: JobContext) =>
      trace.getTracer("my-build").startActiveSpan("docker build", async (span) => {
        ctx.log(`building ${payload.tag}`);
        await new Promise((resolve) => setTimeout(resolve, 20));
        span.end();
        return { image: `${payload.tag}@sha256:…` };
      }),
  },
});

// 3. The orchestrator and the producer (in-process queue here; AmqpQueue in production).
const queue = new MemoryQueue();
const pool = new WorkerPool({ telemetry: { registry } });
pool.add({ id: "worker-1", transport: new GrpcTransport({ address: worker.address }), slots: 2 });
const dispatcher = new Dispatcher({ queue, events: queue, pool, telemetry: { registry } });
await dispatcher.start();
const client = new JobClient({ queue, events: queue, telemetry: { registry } });

// 4. One job, submitted inside the API request's span.
await trace.getTracer("my-api").startActiveSpan("POST /builds", async (request) => {
  const handle = await client.submit({ type: "build", payload: { tag: "app:1" } });
  await handle.result({ timeoutMs: 10_000 });
  request.end();
});
await dispatcher.onIdle();

// 5. The span tree, parents before children.
const spans = exporter.getFinishedSpans();
const children = new Map<string | undefined, ReadableSpan[]>();
const ids = new Set(spans.map((s) => s.spanContext().spanId));
for (const span of spans) {
  const parent = span.parentSpanContext?.spanId;
  const key = parent !== undefined && ids.has(parent) ? parent : undefined;
  children.set(key, [...(children.get(key) ?? []), span]);
}
const KINDS = ["internal", "server", "client", "producer", "consumer"];
const print = (span: ReadableSpan, depth: number): void => {
  const ms = (span.duration[0] * 1e3 + span.duration[1] / 1e6).toFixed(1);
  const where = span.attributes["blacktree.worker.id"] ?? span.attributes["messaging.destination.name"] ?? "";
  console.log(`${"  ".repeat(depth)}${depth === 0 ? "" : "└─ "}${span.name} [${KINDS[span.kind]}] ${ms} ms ${where}`.trimEnd());
  const kids = (children.get(span.spanContext().spanId) ?? []).sort((a, b) => a.startTime[0] - b.startTime[0] || a.startTime[1] - b.startTime[1]);
  for (const child of kids) print(child, depth + 1);
};
console.log(`trace ${spans[0]?.spanContext().traceId}`);
for (const root of children.get(undefined) ?? []) print(root, 0);

console.log("\n# Prometheus text (registry.metrics()), without the buckets:");
console.log(registry.metrics().split("\n").filter((line) => line !== "" && !line.startsWith("#") && !line.includes("_bucket{")).join("\n"));

await dispatcher.close();
await client.close();
await pool.close();
await queue.close();
await worker.close();
