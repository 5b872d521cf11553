import { SpanKind, trace } from "@opentelemetry/api";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { describe, expect, it } from "vitest";
import { JobClient } from "../../src/client/job-client.ts";
import type { JobEnvelope } from "../../src/job/envelope.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import { PrometheusRegistry } from "../../src/telemetry/prometheus.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";

function tracing() {
  const exporter = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  return { exporter, tracerProvider };
}

describe("JobClient telemetry", () => {
  it("wraps submit() in a PRODUCER span `send {queue}` whose context the envelope carries, and counts it", async () => {
    const { exporter, tracerProvider } = tracing();
    const registry = new PrometheusRegistry();
    const queue = new MemoryQueue();
    const seen: JobEnvelope[] = [];
    const enqueue = queue.enqueue.bind(queue);
    queue.enqueue = (job, options) => (seen.push(job), enqueue(job, options));
    const records: Array<[object, string | undefined]> = [];
    const logger = { debug: (o: object, m?: string) => records.push([o, m]), info() {}, warn() {}, error() {} };
    const client = new JobClient({ queue, events: queue, telemetry: { tracerProvider, registry }, logger });
    const handle = await client.submit({ type: "build", payload: { tag: "a" } });
    const [span] = exporter.getFinishedSpans();
    expect(span?.name).toBe("send jobs");
    expect(span?.kind).toBe(SpanKind.PRODUCER);
    expect(span?.attributes).toMatchObject({
      "messaging.system.name": "memory",
      "messaging.operation.type": "send",
      "messaging.destination.name": "jobs",
      "messaging.message.id": handle.id,
      "blacktree.job.type": "build",
    });
    const { traceId, spanId } = span!.spanContext();
    expect(seen[0]?.trace).toEqual({ traceparent: `00-${traceId}-${spanId}-01` });
    expect(records).toEqual([[{ jobId: handle.id, jobType: "build", attempt: 1, traceId, spanId }, "job submitted"]]);
    expect(registry.metrics()).toContain(
      'messaging_client_sent_messages_total{messaging_destination_name="jobs",messaging_operation_name="send",messaging_system_name="memory"} 1',
    );
    await client.close();
    await queue.close();
  });

  it("parents `send` on a trace given by hand when no span is active, and marks a failed enqueue", async () => {
    const { exporter, tracerProvider } = tracing();
    const queue = new MemoryQueue();
    const client = new JobClient({ queue, events: queue, telemetry: { tracerProvider } });
    await client.submit({ type: "build", payload: 1, trace: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" } });
    const [send] = exporter.getFinishedSpans();
    expect(send?.spanContext().traceId).toBe("0af7651916cd43dd8448eb211c80319c");
    expect(send?.parentSpanContext?.spanId).toBe("b7ad6b7169203331");
    await queue.close();
    await expect(client.submit({ type: "build", payload: 2 })).rejects.toMatchObject({ code: "queue_closed" });
    const failed = exporter.getFinishedSpans()[1];
    expect(failed?.attributes["error.type"]).toBe("queue_closed");
    expect(failed?.status.code).toBe(2);
    await client.close();
  });

  it("nests `send` under the span active at submit()", async () => {
    const { exporter, tracerProvider } = tracing();
    const queue = new MemoryQueue();
    const client = new JobClient({ queue, events: queue, telemetry: { tracerProvider } });
    const parent = tracerProvider.getTracer("test").startSpan("request");
    const { context } = await import("@opentelemetry/api");
    const { AsyncLocalStorageContextManager } = await import("@opentelemetry/context-async-hooks");
    const manager = new AsyncLocalStorageContextManager().enable();
    context.setGlobalContextManager(manager);
    try {
      await context.with(trace.setSpan(context.active(), parent), () => client.submit({ type: "build", payload: 1 }));
    } finally {
      context.disable();
    }
    expect(exporter.getFinishedSpans()[0]?.parentSpanContext?.spanId).toBe(parent.spanContext().spanId);
    await client.close();
    await queue.close();
  });
});

describe("WorkerPool telemetry", () => {
  it("shows workers and slots by state until closed", async () => {
    const registry = new PrometheusRegistry();
    const pool = new WorkerPool({ telemetry: { registry } });
    pool.add({ admission: "trust", id: "w1", transport: new InProcessTransport({ handlers: {} }), slots: 3 });
    pool.add({ admission: "trust", id: "w2", transport: new InProcessTransport({ handlers: {} }), slots: 2 });
    pool.report("w2", false);
    pool.acquire({ type: "x" });
    const text = registry.metrics();
    expect(text).toContain('blacktree_workers{blacktree_worker_state="busy"} 1');
    expect(text).toContain('blacktree_workers{blacktree_worker_state="unhealthy"} 1');
    expect(text).toContain('blacktree_worker_slots{blacktree_slot_state="free"} 2');
    expect(text).toContain('blacktree_worker_slots{blacktree_slot_state="busy"} 1');
    expect(text).toContain('blacktree_worker_slots{blacktree_slot_state="unavailable"} 2');
    await pool.close();
    expect(registry.metrics()).toBe("");
  });

  it("rejects a bad logger naming the field", () => {
    expect(() => new WorkerPool({ logger: { debug() {} } as never })).toThrow(/logger\.info/);
  });
});
