import { AggregationTemporality, MeterProvider, MetricReader, type ResourceMetrics } from "@opentelemetry/sdk-metrics";

class TestReader extends MetricReader {
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

/** A meter provider with an in-memory reader (cumulative), as a host's SDK would have. */
export function metering(): { reader: MetricReader; meterProvider: MeterProvider } {
  const reader = new TestReader({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE });
  return { reader, meterProvider: new MeterProvider({ readers: [reader] }) };
}

/** Points of every metric by name, as `[attributes, value]` (histograms: their count). */
export async function readPoints(reader: MetricReader): Promise<Map<string, Array<[Record<string, unknown>, number]>>> {
  const { resourceMetrics } = await reader.collect();
  const byName = new Map<string, Array<[Record<string, unknown>, number]>>();
  for (const scope of (resourceMetrics as ResourceMetrics).scopeMetrics) {
    for (const metric of scope.metrics) {
      byName.set(
        metric.descriptor.name,
        metric.dataPoints.map((p) => [p.attributes, typeof p.value === "number" ? p.value : (p.value as { count: number }).count]),
      );
    }
  }
  return byName;
}

/** The value of the point whose attributes include `match`; undefined when none. */
export function pointValue(points: Array<[Record<string, unknown>, number]> | undefined, match: Record<string, unknown>): number | undefined {
  return points?.find(([attributes]) => Object.entries(match).every(([k, v]) => attributes[k] === v))?.[1];
}
