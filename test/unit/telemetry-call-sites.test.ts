import { SpanKind, trace } from "@opentelemetry/api";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { describe, expect, it, vi } from "vitest";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { HandleTelemetry } from "../../src/telemetry/handle-telemetry.ts";
import { type Logger, withFields } from "../../src/telemetry/logger.ts";
import { resolveTelemetry } from "../../src/telemetry/telemetry.ts";
import type { ExecuteRequest, WorkerTransport } from "../../src/transport/types.ts";
import { JobRunner } from "../../src/worker/job-runner.ts";
import { JobClient } from "../../src/client/job-client.ts";
import type { JobEnvelope } from "../../src/job/envelope.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import { PrometheusRegistry } from "../../src/telemetry/prometheus.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";

/** Registers an AsyncLocalStorage context manager, as a host does; returns the undo. */
async function useContextManager(): Promise<() => void> {
  const { AsyncLocalStorageContextManager } = await import("@opentelemetry/context-async-hooks");
  const { context } = await import("@opentelemetry/api");
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  return () => context.disable();
}

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

describe("Dispatcher telemetry", () => {
  /** A worker whose calls the test ends by hand. */
  function manualWorker() {
    const calls: Array<{ request: ExecuteRequest; resolve: (v: unknown) => void; signal: AbortSignal }> = [];
    const transport: WorkerTransport = {
      execute: (request, { signal }) =>
        new Promise((resolve, reject) => {
          calls.push({ request, resolve, signal });
          signal.addEventListener("abort", () => reject(signal.reason), { once: true });
        }),
      check: async () => "serving",
      describe: async () => ({ slots: 1, labels: {}, jobTypes: [], version: "test" }),
      close: async () => {},
    };
    return { transport, calls };
  }

  it("records process and execute spans, an eviction and the retry, the worker's carrier, and job records", async () => {
    const { exporter, tracerProvider } = tracing();
    const registry = new PrometheusRegistry();
    const records: Array<{ level: string; fields: Record<string, unknown>; message: string | undefined }> = [];
    const logger = Object.fromEntries(
      (["debug", "info", "warn", "error"] as const).map((level) => [level, (fields: Record<string, unknown>, message?: string) => records.push({ level, fields, message })]),
    ) as unknown as Logger;
    const queue = new MemoryQueue();
    const pool = new WorkerPool();
    const worker = manualWorker();
    pool.add({ admission: "trust", id: "w1", transport: worker.transport });
    const telemetry = { tracerProvider, registry };
    const dispatcher = new Dispatcher({ queue, events: queue, pool, telemetry, logger, retry: { baseDelayMs: 0, maxDelayMs: 0 } });
    await dispatcher.start();
    const client = new JobClient({ queue, events: queue, telemetry: { tracerProvider } });
    const handle = await client.submit({ type: "build", payload: 1 });
    await waitFor(() => worker.calls.length === 1);
    const carrier = worker.calls[0]?.request.traceCarrier as Record<string, string>;
    pool.report("w1", false, "test: unhealthy");
    await waitFor(() => exporter.getFinishedSpans().filter((s) => s.name === "process jobs").length === 1);
    pool.report("w1", true);
    await waitFor(() => worker.calls.length === 2);
    worker.calls[1]?.resolve({ ok: true });
    await handle.result({ timeoutMs: 5000 });
    await dispatcher.onIdle();

    const spans = exporter.getFinishedSpans();
    const send = spans.find((s) => s.name === "send jobs");
    const processes = spans.filter((s) => s.name === "process jobs");
    const executes = spans.filter((s) => s.name === "execute build");
    expect(processes.map((s) => s.attributes["blacktree.job.outcome"])).toEqual(["retried", "completed"]);
    for (const span of processes) {
      expect(span.kind).toBe(SpanKind.CONSUMER);
      expect(span.parentSpanContext?.spanId).toBe(send?.spanContext().spanId);
    }
    expect(processes[0]?.events.map((e) => e.name)).toEqual(["blacktree.worker.evicted", "blacktree.job.retry"]);
    expect(executes[0]?.events.map((e) => e.name)).toEqual(["blacktree.worker.evicted"]);
    expect(executes[0]?.attributes["blacktree.job.outcome"]).toBe("worker_lost");
    expect(executes.map((s) => s.parentSpanContext?.spanId)).toEqual(processes.map((s) => s.spanContext().spanId));
    expect(carrier.traceparent).toBe(`00-${executes[0]?.spanContext().traceId}-${executes[0]?.spanContext().spanId}-01`);

    const started = records.filter((r) => r.message === "job started");
    expect(started.map((r) => r.fields)).toEqual([
      expect.objectContaining({ jobId: handle.id, jobType: "build", attempt: 1, workerId: "w1", traceId: send?.spanContext().traceId }),
      expect.objectContaining({ jobId: handle.id, attempt: 2, workerId: "w1" }),
    ]);
    expect(records.find((r) => r.level === "warn" && /retrying/.test(r.message ?? ""))?.fields).toMatchObject({ jobId: handle.id, attempt: 1 });
    const text = registry.metrics();
    expect(text).toContain('blacktree_job_retries_total{blacktree_job_type="build",error_type="worker_lost"} 1');
    expect(text).toContain('blacktree_jobs_active{blacktree_job_type="build"} 0');
    // The settles: the retry of the evicted attempt, then the ack of the second.
    for (const how of ["retry", "ack"]) {
      expect(text).toContain(
        `messaging_client_operation_duration_seconds_count{messaging_destination_name="jobs",messaging_operation_name="${how}",messaging_operation_type="settle",messaging_system_name="memory"} 1`,
      );
    }
    await dispatcher.close();
    await client.close();
    await pool.close();
    await queue.close();
  });

  it("writes what it reports to the logger instead of the one-time console warning", async () => {
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    try {
      const errors: Array<[Record<string, unknown>, string | undefined]> = [];
      const logger = { debug() {}, info() {}, warn() {}, error: (fields: Record<string, unknown>, message?: string) => errors.push([fields, message]) };
      const queue = new MemoryQueue();
      const pool = new WorkerPool();
      const dispatcher = new Dispatcher({ queue, events: queue, pool, logger });
      dispatcher.on("jobDeferred", () => {
        throw new Error("listener bug");
      });
      pool.add({ admission: "trust", id: "w1", transport: manualWorker().transport, jobTypes: ["other"] });
      await dispatcher.start();
      await queue.enqueue({ v: 1, id: "j1", type: "build", payload: null, attempt: 1, maxAttempts: 1, timeoutMs: 1000, createdAt: new Date().toISOString() });
      await waitFor(() => errors.length > 0);
      expect(errors[0]?.[0]).toMatchObject({ code: "internal" });
      expect(errors[0]?.[1]).toMatch(/"jobDeferred" listener threw: listener bug/);
      expect(warn).not.toHaveBeenCalled();
      await dispatcher.close();
      await queue.close();
    } finally {
      warn.mockRestore();
    }
  });

  it("with no tracer provider registered still carries a traced job's context to the worker, and records spans once one is", async () => {
    const { exporter, tracerProvider } = tracing();
    const queue = new MemoryQueue();
    const pool = new WorkerPool();
    const worker = manualWorker();
    pool.add({ admission: "trust", id: "w1", transport: worker.transport });
    // The global tracer: no provider behind it yet, so the dispatcher's spans would record nothing.
    const dispatcher = new Dispatcher({ queue, events: queue, pool });
    await dispatcher.start();
    const traced = new JobClient({ queue, events: queue, telemetry: { tracerProvider } });
    const plain = new JobClient({ queue, events: queue });
    try {
      const first = await traced.submit({ type: "build", payload: 1 });
      await waitFor(() => worker.calls.length === 1);
      const send = exporter.getFinishedSpans().find((s) => s.name === "send jobs");
      expect(worker.calls[0]?.request.traceCarrier?.traceparent).toMatch(new RegExp(`^00-${send?.spanContext().traceId}-`));
      worker.calls[0]?.resolve({ ok: true });
      await first.result({ timeoutMs: 5000 });

      const second = await plain.submit({ type: "build", payload: 2 });
      await waitFor(() => worker.calls.length === 2);
      expect(worker.calls[1]?.request.traceCarrier).toBeUndefined();
      worker.calls[1]?.resolve({ ok: true });
      await second.result({ timeoutMs: 5000 });
      expect(exporter.getFinishedSpans().map((s) => s.name)).toEqual(["send jobs"]);

      trace.setGlobalTracerProvider(tracerProvider);
      const third = await plain.submit({ type: "build", payload: 3 });
      await waitFor(() => worker.calls.length === 3);
      expect(worker.calls[2]?.request.traceCarrier?.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      worker.calls[2]?.resolve({ ok: true });
      await third.result({ timeoutMs: 5000 });
      await dispatcher.onIdle();
      expect(exporter.getFinishedSpans().map((s) => s.name)).toEqual(["send jobs", "send jobs", "execute build", "process jobs"]);
    } finally {
      trace.disable();
      await dispatcher.close();
      await traced.close();
      await plain.close();
      await pool.close();
      await queue.close();
    }
  });
});

describe("JobRunner telemetry (the worker side)", () => {
  it("runs the handler inside `handle {type}`, a child of the carrier's context, and writes ctx.log lines to the logger", async () => {
    const { exporter, tracerProvider } = tracing();
    const disable = await useContextManager();
    try {
      const lines: Array<[Record<string, unknown>, string | undefined]> = [];
      const logger = { debug() {}, info: (f: Record<string, unknown>, m?: string) => lines.push([f, m]), warn() {}, error() {} };
      const telemetry = new HandleTelemetry(resolveTelemetry({ tracerProvider }), withFields(logger, { workerId: "w9" }), true);
      const runner = new JobRunner({ handlers: {
        build: async (_p: never, ctx) => {
          ctx.log("step 1", "stdout");
          return tracerProvider.getTracer("user").startActiveSpan("user work", (span) => (span.end(), "done"));
        },
        stuck: (_p: never, ctx) => new Promise((_r, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason))),
      }, slots: 2, defaultTimeoutMs: 10_000, telemetry });
      const parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
      const outcomes: unknown[] = [];
      const sink = { event() {}, done: (o: unknown) => outcomes.push(o) };
      const base = { payload: null, attempt: 1, timeoutMs: 10_000, deadline: undefined, idempotencyKey: undefined, trace: undefined, traceCarrier: { traceparent: parent } };
      runner.start({ ...base, jobId: "j1", type: "build" }, sink);
      runner.start({ ...base, jobId: "j2", type: "stuck" }, sink);
      runner.cancel("j2", 1, "requested");
      await waitFor(() => outcomes.length === 2);
      const spans = exporter.getFinishedSpans();
      const handle = spans.find((s) => s.name === "handle build");
      expect(handle?.kind).toBe(SpanKind.SERVER);
      expect(handle?.parentSpanContext?.spanId).toBe("b7ad6b7169203331");
      expect(spans.find((s) => s.name === "user work")?.parentSpanContext?.spanId).toBe(handle?.spanContext().spanId);
      const stuck = spans.find((s) => s.name === "handle stuck");
      expect(stuck?.events.map((e) => [e.name, e.attributes?.["blacktree.cancel.reason"]])).toEqual([["blacktree.job.cancel", "requested"]]);
      expect(stuck?.status.code).toBe(2);
      expect(lines[0]).toEqual([{ workerId: "w9", jobId: "j1", jobType: "build", attempt: 1, traceId: "0af7651916cd43dd8448eb211c80319c", spanId: handle?.spanContext().spanId, stream: "stdout" }, "step 1"]);
    } finally {
      disable();
    }
  });
});

describe("loggers of the queue and the transport", () => {
  const collect = () => {
    const records: Array<{ level: string; fields: Record<string, unknown>; message: string | undefined }> = [];
    const logger = Object.fromEntries(
      (["debug", "info", "warn", "error"] as const).map((level) => [level, (fields: Record<string, unknown>, message?: string) => records.push({ level, fields, message })]),
    ) as unknown as Logger;
    return { records, logger };
  };

  it("MemoryQueue writes a throwing consumer handler to its logger", async () => {
    const { records, logger } = collect();
    const queue = new MemoryQueue({ logger, handlerErrorDelayMs: 60_000 });
    await queue.consume(() => {
      throw new Error("handler bug");
    }, { prefetch: 1 });
    await queue.enqueue({ v: 1, id: "j1", type: "t", payload: null, attempt: 1, maxAttempts: 1, timeoutMs: 1000, createdAt: new Date().toISOString() });
    await waitFor(() => records.length > 0);
    expect(records[0]).toMatchObject({ level: "error", fields: { source: "consumer" } });
    expect(records[0]?.message).toMatch(/^MemoryQueue: .*handler bug/);
    await queue.close();
  });

  it("GrpcTransport records a worker it cannot reach as lost", async () => {
    const { records, logger } = collect();
    const { GrpcTransport } = await import("../../src/transport/grpc/grpc-transport.ts");
    const transport = new GrpcTransport({ address: "127.0.0.1:1", logger, connectTimeoutMs: 200 });
    transport.watch(() => {});
    await transport.check({ timeoutMs: 300 }).catch(() => undefined);
    await waitFor(() => records.some((r) => r.level === "warn"), { timeoutMs: 5000 });
    expect(records.find((r) => r.level === "warn")).toMatchObject({ fields: { address: "127.0.0.1:1", state: "lost" } });
    await transport.close();
  });
});

describe("InProcessTransport telemetry", () => {
  it("gives the in-process worker the same `handle` span under `execute` as a gRPC worker", async () => {
    const { exporter, tracerProvider } = tracing();
    const disable = await useContextManager();
    try {
      const telemetry = { tracerProvider };
      const queue = new MemoryQueue();
      const pool = new WorkerPool();
      const handlers = { build: async () => tracerProvider.getTracer("user").startActiveSpan("user work", (span) => (span.end(), 1)) };
      pool.add({ admission: "trust", id: "w1", transport: new InProcessTransport({ handlers, telemetry }) });
      const dispatcher = new Dispatcher({ queue, events: queue, pool, telemetry });
      await dispatcher.start();
      const client = new JobClient({ queue, events: queue, telemetry });
      await (await client.submit({ type: "build", payload: null })).result({ timeoutMs: 5000 });
      await dispatcher.onIdle();
      const spans = exporter.getFinishedSpans();
      const byName = (name: string) => spans.find((s) => s.name === name);
      expect(byName("handle build")?.parentSpanContext?.spanId).toBe(byName("execute build")?.spanContext().spanId);
      expect(byName("user work")?.parentSpanContext?.spanId).toBe(byName("handle build")?.spanContext().spanId);
      expect(new Set(spans.map((s) => s.spanContext().traceId)).size).toBe(1);
      await dispatcher.close();
      await client.close();
      await pool.close();
      await queue.close();
    } finally {
      disable();
    }
  });
});
