import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { propagation, trace } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import type { MetricReader, ResourceMetrics } from "@opentelemetry/sdk-metrics";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { afterEach, describe, expect, it } from "vitest";
import { OrchestratorError } from "../../src/errors.ts";
import { resolveLogger } from "../../src/telemetry/logger.ts";
import { METRIC } from "../../src/telemetry/names.ts";
import { observePool, recordHealthCheck } from "../../src/telemetry/pool-telemetry.ts";
import { PrometheusRegistry, prometheusName } from "../../src/telemetry/prometheus.ts";
import { resolveTelemetry } from "../../src/telemetry/telemetry.ts";
import { metering } from "../helpers/metric-reader.ts";

/** Points of every metric by name, as `[attributes, value]` (histograms: `{ count, sum }`). */
async function read(reader: MetricReader): Promise<Map<string, Array<[Record<string, unknown>, unknown]>>> {
  const { resourceMetrics } = await reader.collect();
  const byName = new Map<string, Array<[Record<string, unknown>, unknown]>>();
  for (const scope of (resourceMetrics as ResourceMetrics).scopeMetrics) {
    for (const metric of scope.metrics) {
      byName.set(
        metric.descriptor.name,
        metric.dataPoints.map((p) => [p.attributes, typeof p.value === "number" ? p.value : { count: (p.value as { count: number }).count, sum: (p.value as { sum: number }).sum }]),
      );
    }
  }
  return byName;
}

describe("PrometheusRegistry", () => {
  it("writes counters, histograms and gauges in the text format with OpenTelemetry-style names", () => {
    const registry = new PrometheusRegistry({ buckets: [0.1, 1], labels: { instance: "a" } });
    registry.add("counter", "blacktree.job.retries", "{retry}", "Retries.", 1, { "blacktree.job.type": "build" });
    registry.add("counter", "blacktree.job.retries", "{retry}", "Retries.", 2, { "blacktree.job.type": "build" });
    registry.observe("blacktree.job.duration", "s", "Duration.", 0.05, { "blacktree.job.type": "build" });
    registry.observe("blacktree.job.duration", "s", "Duration.", 0.5, { "blacktree.job.type": "build" });
    registry.observe("blacktree.job.duration", "s", "Duration.", 7, { "blacktree.job.type": "build" });
    registry.collect("blacktree.workers", "{worker}", "Workers.", () => [[{ "blacktree.worker.state": "idle" }, 2]]);
    registry.collect("blacktree.workers", "{worker}", "Workers.", () => [[{ "blacktree.worker.state": "idle" }, 1]]);
    expect(registry.metrics()).toBe(
      [
        "# HELP blacktree_job_duration_seconds Duration.",
        "# TYPE blacktree_job_duration_seconds histogram",
        'blacktree_job_duration_seconds_bucket{instance="a",blacktree_job_type="build",le="0.1"} 1',
        'blacktree_job_duration_seconds_bucket{instance="a",blacktree_job_type="build",le="1"} 2',
        'blacktree_job_duration_seconds_bucket{instance="a",blacktree_job_type="build",le="+Inf"} 3',
        'blacktree_job_duration_seconds_sum{instance="a",blacktree_job_type="build"} 7.55',
        'blacktree_job_duration_seconds_count{instance="a",blacktree_job_type="build"} 3',
        "# HELP blacktree_job_retries_total Retries.",
        "# TYPE blacktree_job_retries_total counter",
        'blacktree_job_retries_total{instance="a",blacktree_job_type="build"} 3',
        "# HELP blacktree_workers Workers.",
        "# TYPE blacktree_workers gauge",
        'blacktree_workers{instance="a",blacktree_worker_state="idle"} 3',
        "",
      ].join("\n"),
    );
  });

  it("escapes label values and names units like the OpenTelemetry Prometheus exporter", () => {
    const registry = new PrometheusRegistry();
    registry.add("counter", "x", "", "X.", 1, { reason: 'a "b"\\\nc' });
    expect(registry.metrics()).toContain('x_total{reason="a \\"b\\"\\\\\\nc"} 1');
    expect(prometheusName("messaging.client.operation.duration", "s", "histogram")).toBe("messaging_client_operation_duration_seconds");
    expect(prometheusName("messaging.client.sent.messages", "{message}", "counter")).toBe("messaging_client_sent_messages_total");
  });

  it("rejects bad buckets and labels with invalid_argument", () => {
    expect(() => new PrometheusRegistry({ buckets: [1, 1] })).toThrow(expect.objectContaining({ code: "invalid_argument" }));
    expect(() => new PrometheusRegistry({ labels: { a: 1 as unknown as string } })).toThrow(/labels\.a/);
  });

  it("serves the exposition over node:http and refuses other methods", async () => {
    const registry = new PrometheusRegistry();
    recordHealthCheck(resolveTelemetry({ registry }), 0.002, "serving");
    const server = createServer(registry.handler).listen(0);
    await new Promise((resolve) => server.once("listening", resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`;
      const response = await fetch(url);
      expect(response.headers.get("content-type")).toBe(PrometheusRegistry.contentType);
      expect(await response.text()).toContain('blacktree_health_check_duration_seconds_count{blacktree_health_outcome="serving"} 1');
      expect((await fetch(url, { method: "POST" })).status).toBe(405);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe("metrics through the OpenTelemetry meter and the registry", () => {
  it("records the same figures in both, and reads pool gauges at collection", async () => {
    const { reader, meterProvider } = metering();
    const registry = new PrometheusRegistry();
    const t = resolveTelemetry({ meterProvider, registry });
    const workers = [
      { state: "busy", slots: 4, busySlots: 3 },
      { state: "unhealthy", slots: 2, busySlots: 1 },
    ];
    const unobserve = observePool(t, () => workers);
    t.metrics.instruments.retries.record(1, { "blacktree.job.type": "build", "error.type": "handler_failed" });
    recordHealthCheck(t, 0.25, "serving");
    const points = await read(reader);
    expect(points.get(METRIC.retries)).toEqual([[{ "blacktree.job.type": "build", "error.type": "handler_failed" }, 1]]);
    expect(points.get(METRIC.healthCheckDuration)).toEqual([[{ "blacktree.health.outcome": "serving" }, { count: 1, sum: 0.25 }]]);
    expect(new Map(points.get(METRIC.workerSlots)?.map(([a, v]) => [a["blacktree.slot.state"], v]))).toEqual(new Map([["free", 1], ["busy", 4], ["unavailable", 1]]));
    expect(points.get(METRIC.workers)?.find(([a]) => a["blacktree.worker.state"] === "busy")?.[1]).toBe(1);
    const text = registry.metrics();
    expect(text).toContain('blacktree_worker_slots{blacktree_slot_state="busy"} 4');
    expect(text).toContain('blacktree_job_retries_total{blacktree_job_type="build",error_type="handler_failed"} 1');
    unobserve();
    expect(registry.metrics()).not.toContain("blacktree_worker_slots");
    await meterProvider.shutdown();
  });
});

describe("trace context propagation", () => {
  afterEach(() => propagation.disable());

  it("writes a W3C traceparent even with no propagator registered, and reads it back", () => {
    const exporter = new InMemorySpanExporter();
    const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    const t = resolveTelemetry({ tracerProvider });
    const span = t.start("x", 0, undefined, {});
    const carrier = t.inject(span) as Record<string, string>;
    expect(carrier.traceparent).toBe(`00-${span?.spanContext().traceId}-${span?.spanContext().spanId}-01`);
    const context = t.extract(carrier);
    expect(trace.getSpanContext(context as never)).toMatchObject({ traceId: span?.spanContext().traceId, spanId: span?.spanContext().spanId, isRemote: true });
    expect(t.extract({ traceparent: "garbage" })).toBeUndefined();
    expect(t.extract({})).toBeUndefined();
  });

  it("uses the given propagator's fields (tracestate kept)", () => {
    const tracerProvider = new BasicTracerProvider();
    const t = resolveTelemetry({ tracerProvider, propagator: new W3CTraceContextPropagator() });
    const parent = t.extract({ traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", tracestate: "vendor=x" });
    const span = t.start("child", 0, parent, {});
    const carrier = t.inject(span) as Record<string, string>;
    expect(carrier.traceparent).toMatch(/^00-0af7651916cd43dd8448eb211c80319c-[0-9a-f]{16}-01$/);
    expect(carrier.tracestate).toBe("vendor=x");
  });

  it("rejects a telemetry option of the wrong shape, naming the field", () => {
    expect(() => resolveTelemetry({ tracerProvider: {} })).toThrow(/telemetry\.tracerProvider/);
    expect(() => resolveTelemetry({ registry: {} })).toThrow(/telemetry\.registry/);
    expect(() => resolveTelemetry(5)).toThrow(OrchestratorError);
  });
});

describe("logger", () => {
  it("accepts a pino-shaped logger and rejects anything else, naming the method", () => {
    const logger = { debug() {}, info() {}, warn() {}, error() {} };
    expect(resolveLogger(logger)).toBe(logger);
    expect(resolveLogger(undefined)).toBeUndefined();
    expect(() => resolveLogger({ ...logger, warn: 1 })).toThrow(/logger\.warn/);
  });

});

describe("the optional peer", () => {
  it("is never imported for its values by the sources: only otel-api.ts loads it, lazily", async () => {
    const { readdirSync, readFileSync } = await import("node:fs");
    const { join } = await import("node:path");
    const src = new URL("../../src/", import.meta.url).pathname;
    const files = (readdirSync(src, { recursive: true }) as string[]).filter((f) => f.endsWith(".ts"));
    const offenders = files.filter((file) => {
      const text = readFileSync(join(src, file), "utf8");
      return /^import\s+(?!type\b)[^;]*from\s+"@opentelemetry\//m.test(text) || /import\("@opentelemetry\//.test(text) || /require\("@opentelemetry\//.test(text);
    });
    expect(offenders).toEqual([]);
    expect(readFileSync(join(src, "telemetry/otel-api.ts"), "utf8")).toContain('createRequire(base)("@opentelemetry/api")');
  });
});
