import type { Attributes, Counter, Histogram, Meter, UpDownCounter } from "@opentelemetry/api";
import { METRIC } from "./names.ts";
import { DEFAULT_BUCKETS_S, type Labels, type PrometheusRegistry } from "./prometheus.ts";

/**
 * The instruments of the SDK, each recorded into the OpenTelemetry meter (when the API is
 * installed) and into the host's {@link PrometheusRegistry} (when given) with the same name, unit
 * and attributes. Attributes stay low-cardinality: job type, outcome, queue, states; never ids.
 * @internal
 */

type Kind = "counter" | "updown" | "histogram";

const SPECS = {
  sentMessages: { name: METRIC.sentMessages, kind: "counter", unit: "{message}", help: "Messages the producer sent (JobClient.submit)." },
  operationDuration: { name: METRIC.operationDuration, kind: "histogram", unit: "s", help: "Duration of a send (submit to the broker's confirm) or of a settle (ack, retry, dead letter)." },
  consumedMessages: { name: METRIC.consumedMessages, kind: "counter", unit: "{message}", help: "Messages delivered to a dispatcher." },
  processDuration: { name: METRIC.processDuration, kind: "histogram", unit: "s", help: "Duration of processing one delivery, from receipt to settle." },
  jobDuration: { name: METRIC.jobDuration, kind: "histogram", unit: "s", help: "One attempt on a worker, from hand-over to its end, by job type and outcome." },
  queueWait: { name: METRIC.queueWait, kind: "histogram", unit: "s", help: "Time from the first submit of a job to the start of its first attempt." },
  jobsActive: { name: METRIC.jobsActive, kind: "updown", unit: "{job}", help: "Attempts running on workers now." },
  retries: { name: METRIC.retries, kind: "counter", unit: "{retry}", help: "Attempts that failed and went back to the queue for another." },
  deadLetters: { name: METRIC.deadLetters, kind: "counter", unit: "{job}", help: "Jobs a dispatcher moved to the dead-letter queue." },
  cancelLatency: { name: METRIC.cancelLatency, kind: "histogram", unit: "s", help: "Time from a cancel command to the job's cancelled outcome." },
  healthCheckDuration: { name: METRIC.healthCheckDuration, kind: "histogram", unit: "s", help: "One health check of a worker, by outcome." },
  handlerDuration: { name: METRIC.handlerDuration, kind: "histogram", unit: "s", help: "Worker side: one handler run, from its start to the attempt's outcome, by job type and outcome." },
  handlersActive: { name: METRIC.handlersActive, kind: "updown", unit: "{job}", help: "Worker side: handlers running now, by job type." },
  connectionsOpen: { name: METRIC.connectionsOpen, kind: "updown", unit: "{connection}", help: "Connections open now: broker connections (rabbitmq) and worker sessions (grpc)." },
  reconnects: { name: METRIC.reconnects, kind: "counter", unit: "{reconnect}", help: "Lost connections that came back, by kind." },
  downtime: { name: METRIC.downtime, kind: "histogram", unit: "s", help: "Time from a connection's loss to its return, by kind." },
  pingDuration: { name: METRIC.pingDuration, kind: "histogram", unit: "s", help: "Round trip of a liveness ping on a worker's job stream." },
} as const satisfies Record<string, { name: string; kind: Kind; unit: string; help: string }>;

const GAUGES = {
  workerSlots: { name: METRIC.workerSlots, unit: "{slot}", help: "Slots of the pool's workers by state: free, busy, unavailable (unhealthy or draining workers)." },
  workers: { name: METRIC.workers, unit: "{worker}", help: "Workers of the pool by state." },
  handlerSlots: { name: METRIC.handlerSlots, unit: "{slot}", help: "Worker side: the worker's slots by state: free, busy, stuck (aborted handlers still running)." },
} as const;

/** One instrument: `record` adds to a counter or observes a histogram. */
export interface Instrument {
  record(value: number, labels: Labels): void;
}

const NOOP: Instrument = { record() {} };

/** The instruments by role. */
export type Instruments = { readonly [K in keyof typeof SPECS]: Instrument };

/** A gauge's reading: one value per attribute set. */
export type GaugeCollector = () => Iterable<readonly [Labels, number]>;

/** The instrument set of one telemetry configuration; created on first use. */
export class Metrics {
  readonly instruments: Instruments;
  /** False when no instrument records anything (no meter, no registry): callers skip building labels. */
  readonly on: boolean;
  readonly #meter: Meter | undefined;
  readonly #registry: PrometheusRegistry | undefined;

  constructor(meter: Meter | undefined, registry: PrometheusRegistry | undefined) {
    this.#meter = meter;
    this.#registry = registry;
    this.on = meter !== undefined || registry !== undefined;
    const buckets = registry?.buckets ?? DEFAULT_BUCKETS_S;
    const instruments: Partial<Record<keyof typeof SPECS, Instrument>> = {};
    for (const [role, spec] of Object.entries(SPECS) as Array<[keyof typeof SPECS, (typeof SPECS)[keyof typeof SPECS]]>) {
      instruments[role] = this.on ? instrument(spec, meter, registry, buckets) : NOOP;
    }
    this.instruments = instruments as Instruments;
  }

  /** Registers a gauge read on every collection; returns its unregister function. */
  gauge(role: keyof typeof GAUGES, collector: GaugeCollector): () => void {
    const { name, unit, help } = GAUGES[role];
    const disposers: Array<() => void> = [];
    if (this.#registry !== undefined) disposers.push(this.#registry.collect(name, unit, help, collector));
    if (this.#meter !== undefined) {
      const gauge = this.#meter.createObservableGauge(name, { unit, description: help });
      const callback = (result: { observe(value: number, attributes?: Attributes): void }): void => {
        for (const [labels, value] of collector()) result.observe(value, labels as Attributes);
      };
      gauge.addCallback(callback);
      disposers.push(() => gauge.removeCallback(callback));
    }
    return () => {
      for (const dispose of disposers) dispose();
    };
  }
}

function instrument(
  spec: { name: string; kind: Kind; unit: string; help: string },
  meter: Meter | undefined,
  registry: PrometheusRegistry | undefined,
  buckets: readonly number[],
): Instrument {
  const { name, kind, unit, help } = spec;
  let otel: Counter | UpDownCounter | Histogram | undefined;
  if (meter !== undefined) {
    const options = { unit, description: help };
    if (kind === "counter") otel = meter.createCounter(name, options);
    else if (kind === "updown") otel = meter.createUpDownCounter(name, options);
    else otel = meter.createHistogram(name, { ...options, advice: { explicitBucketBoundaries: [...buckets] } });
  }
  const recordOtel =
    otel === undefined
      ? undefined
      : kind === "histogram"
        ? (value: number, labels: Labels) => (otel as Histogram).record(value, labels as Attributes)
        : (value: number, labels: Labels) => (otel as Counter).add(value, labels as Attributes);
  const recordRegistry =
    registry === undefined
      ? undefined
      : kind === "histogram"
        ? (value: number, labels: Labels) => registry.observe(name, unit, help, value, labels)
        : (value: number, labels: Labels) => registry.add(kind === "counter" ? "counter" : "gauge", name, unit, help, value, labels);
  return {
    record(value, labels) {
      recordOtel?.(value, labels);
      recordRegistry?.(value, labels);
    },
  };
}
