/**
 * Imported first by every product process of the bench, so the telemetry section can run the
 * same product three ways, chosen by the environment variable `BENCH_TELEMETRY`:
 * - unset or `plain`: as installed here: `@opentelemetry/api` present, nothing registered (the
 *   API's no-op providers): what most users without an SDK run;
 * - `absent`: `@opentelemetry/api` cannot be resolved (a resolve hook refuses it, as if it were
 *   not installed), so every telemetry call is the SDK's own no-op;
 * - `on`: a real OpenTelemetry SDK as a host would register it: a tracer provider with a batch
 *   span processor exporting to a no-op exporter, the W3C propagator, the AsyncLocalStorage
 *   context manager, and a meter provider read every second by a no-op exporter.
 */
import { registerHooks } from "node:module";

const mode = process.env.BENCH_TELEMETRY ?? "plain";

if (mode === "absent") {
  registerHooks({
    resolve(specifier, context, next) {
      if (specifier === "@opentelemetry/api" || specifier.startsWith("@opentelemetry/api/")) {
        throw Object.assign(new Error(`Cannot find module '${specifier}' (hidden by the bench)`), { code: "MODULE_NOT_FOUND" });
      }
      return next(specifier, context);
    },
  });
} else if (mode === "on") {
  const { context, metrics, propagation, trace } = await import("@opentelemetry/api");
  const { AsyncLocalStorageContextManager } = await import("@opentelemetry/context-async-hooks");
  const { ExportResultCode, W3CTraceContextPropagator } = await import("@opentelemetry/core");
  const { MeterProvider, PeriodicExportingMetricReader } = await import("@opentelemetry/sdk-metrics");
  const { BasicTracerProvider, BatchSpanProcessor } = await import("@opentelemetry/sdk-trace-base");
  const done = (callback: (result: { code: number }) => void): void => callback({ code: ExportResultCode.SUCCESS });
  const noop = { export: (_items: unknown, callback: (result: { code: number }) => void) => done(callback), shutdown: async () => {}, forceFlush: async () => {} };
  trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(noop)] }));
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  metrics.setGlobalMeterProvider(new MeterProvider({ readers: [new PeriodicExportingMetricReader({ exporter: noop, exportIntervalMillis: 1000 })] }));
} else if (mode !== "plain") {
  throw new Error(`BENCH_TELEMETRY must be plain, absent or on, got ${JSON.stringify(mode)}`);
}
