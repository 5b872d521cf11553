import type { IncomingMessage, ServerResponse } from "node:http";
import { checkObject, optional } from "../validate.ts";
import { invalidArgument } from "../errors.ts";

/** Attribute values of one series. @internal */
export type Labels = Readonly<Record<string, string | number | boolean | undefined>>;

/** Options of {@link PrometheusRegistry}. */
export interface PrometheusRegistryOptions {
  /**
   * Upper bounds (seconds) of the buckets of every duration histogram.
   * @default [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600]
   */
  buckets?: readonly number[];
  /**
   * Labels added to every series (for example `{ instance: "orchestrator-1" }`).
   * @default {}
   */
  labels?: Record<string, string>;
}

/** Default duration buckets (seconds): dispatch overheads up to hour-long builds. */
export const DEFAULT_BUCKETS_S: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];

type Kind = "counter" | "gauge" | "histogram";

interface Family {
  readonly kind: Kind;
  readonly name: string;
  readonly help: string;
  /** Counters and up-down counters: value by label key. */
  readonly values: Map<string, { labels: string; value: number }>;
  /** Histograms: bucket counts (not cumulative), sum and count by label key. */
  readonly histograms: Map<string, { labels: string; counts: number[]; sum: number; count: number }>;
  /** Gauges: callbacks asked at each exposition, summed by label key. */
  readonly collectors: Set<() => Iterable<readonly [Labels, number]>>;
}

/**
 * The same figures as the OpenTelemetry metrics, kept in this process without any dependency and
 * written in the Prometheus text exposition format (version 0.0.4), like BullMQ's
 * `exportPrometheusMetrics()`. Pass one registry to every class through `telemetry.registry`,
 * then serve {@link PrometheusRegistry.metrics} on the host's own HTTP server (or mount
 * {@link PrometheusRegistry.handler}). Names follow the OpenTelemetry-to-Prometheus rules, so they
 * match what `@opentelemetry/exporter-prometheus` would show: `blacktree.job.duration` (unit `s`)
 * is `blacktree_job_duration_seconds`, counters end in `_total`.
 *
 * @example
 * ```ts
 * const registry = new PrometheusRegistry();
 * const dispatcher = new Dispatcher({ queue, events: queue, pool, telemetry: { registry } });
 * http.createServer((req, res) => (req.url === "/metrics" ? registry.handler(req, res) : app(req, res))).listen(9464);
 * ```
 */
export class PrometheusRegistry {
  /** The Content-Type of {@link PrometheusRegistry.metrics}. */
  static readonly contentType = "text/plain; version=0.0.4; charset=utf-8";
  readonly #families = new Map<string, Family>();
  readonly #buckets: readonly number[];
  readonly #labels: string;

  /** @throws {OrchestratorError} `invalid_argument` for bad buckets or labels. */
  constructor(options: PrometheusRegistryOptions = {}) {
    const o = checkObject("options", options);
    this.#buckets = optional(o.buckets, DEFAULT_BUCKETS_S, (v) => {
      if (!Array.isArray(v) || v.length === 0 || v.some((b, i) => typeof b !== "number" || !Number.isFinite(b) || (i > 0 && b <= (v[i - 1] as number)))) {
        throw invalidArgument("buckets", "a non-empty array of increasing finite numbers", v);
      }
      return [...(v as number[])];
    });
    const labels = checkObject("labels", o.labels ?? {});
    for (const [key, value] of Object.entries(labels)) if (typeof value !== "string") throw invalidArgument(`labels.${key}`, "a string", value);
    this.#labels = Object.entries(labels as Record<string, string>).map(([k, v]) => `${labelName(k)}="${escapeValue(v)}"`).join(",");
  }

  /** Adds `value` to a counter (or an up-down counter: `kind` gauge). @internal */
  add(kind: "counter" | "gauge", name: string, unit: string, help: string, value: number, labels: Labels): void {
    const family = this.#family(kind, name, unit, help);
    const key = this.#labelText(labels);
    const entry = family.values.get(key);
    if (entry === undefined) family.values.set(key, { labels: key, value });
    else entry.value += value;
  }

  /** Records one observation of a histogram. @internal */
  observe(name: string, unit: string, help: string, value: number, labels: Labels): void {
    const family = this.#family("histogram", name, unit, help);
    const key = this.#labelText(labels);
    let entry = family.histograms.get(key);
    if (entry === undefined) family.histograms.set(key, (entry = { labels: key, counts: new Array<number>(this.#buckets.length + 1).fill(0), sum: 0, count: 0 }));
    let i = 0;
    while (i < this.#buckets.length && value > (this.#buckets[i] as number)) i++;
    (entry.counts[i] as number)++;
    entry.sum += value;
    entry.count++;
  }

  /** Registers a gauge read at each exposition; returns its unregister function. @internal */
  collect(name: string, unit: string, help: string, collector: () => Iterable<readonly [Labels, number]>): () => void {
    const family = this.#family("gauge", name, unit, help);
    family.collectors.add(collector);
    return () => family.collectors.delete(collector);
  }

  /** The duration buckets in use (seconds). */
  get buckets(): readonly number[] {
    return this.#buckets;
  }

  /** Every figure in the Prometheus text exposition format, families sorted by name. */
  metrics(): string {
    const lines: string[] = [];
    for (const family of [...this.#families.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const { name, kind } = family;
      const series: string[] = [];
      if (kind === "histogram") {
        for (const h of family.histograms.values()) {
          let cumulative = 0;
          this.#buckets.forEach((bound, i) => {
            cumulative += h.counts[i] as number;
            series.push(`${name}_bucket{${join(h.labels, `le="${formatNumber(bound)}"`)}} ${cumulative}`);
          });
          series.push(`${name}_bucket{${join(h.labels, `le="+Inf"`)}} ${h.count}`);
          series.push(`${name}_sum${braces(h.labels)} ${formatNumber(h.sum)}`);
          series.push(`${name}_count${braces(h.labels)} ${h.count}`);
        }
      } else {
        const values = new Map<string, number>();
        for (const entry of family.values.values()) values.set(entry.labels, entry.value);
        for (const collector of family.collectors) {
          try {
            for (const [labels, value] of collector()) {
              const key = this.#labelText(labels);
              values.set(key, (values.get(key) ?? 0) + value);
            }
          } catch {
            // A collector of a closed component: its figures are simply not shown.
          }
        }
        for (const [labels, value] of values) series.push(`${name}${braces(labels)} ${formatNumber(value)}`);
      }
      if (series.length === 0) continue;
      lines.push(`# HELP ${name} ${family.help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}`, `# TYPE ${name} ${kind}`, ...series);
    }
    return lines.length === 0 ? "" : `${lines.join("\n")}\n`;
  }

  /**
   * A `node:http` request listener answering with {@link PrometheusRegistry.metrics} (GET and
   * HEAD; 405 otherwise), to mount at the host's `/metrics`.
   */
  readonly handler = (req: IncomingMessage, res: ServerResponse): void => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    const body = this.metrics();
    res.writeHead(200, { "content-type": PrometheusRegistry.contentType, "content-length": Buffer.byteLength(body) });
    res.end(req.method === "HEAD" ? undefined : body);
  };

  #family(kind: Kind, otelName: string, unit: string, help: string): Family {
    const name = prometheusName(otelName, unit, kind);
    let family = this.#families.get(name);
    if (family === undefined) {
      family = { kind, name, help, values: new Map(), histograms: new Map(), collectors: new Set() };
      this.#families.set(name, family);
    }
    return family;
  }

  #labelText(labels: Labels): string {
    let text = this.#labels;
    for (const key of Object.keys(labels).sort()) {
      const value = labels[key];
      if (value === undefined) continue;
      text = join(text, `${labelName(key)}="${escapeValue(String(value))}"`);
    }
    return text;
  }
}

const UNIT_SUFFIX: Readonly<Record<string, string>> = { s: "seconds", ms: "milliseconds", By: "bytes" };

/** The Prometheus name of an OpenTelemetry metric: `.` to `_`, the unit as a suffix, counters `_total`. @internal */
export function prometheusName(name: string, unit: string, kind: Kind): string {
  let result = name.replace(/[^a-zA-Z0-9_:]/g, "_");
  const suffix = UNIT_SUFFIX[unit];
  if (suffix !== undefined && !result.endsWith(`_${suffix}`)) result += `_${suffix}`;
  if (kind === "counter" && !result.endsWith("_total")) result += "_total";
  return result;
}

function labelName(key: string): string {
  const name = key.replace(/[^a-zA-Z0-9_]/g, "_");
  return /^[0-9]/.test(name) ? `_${name}` : name;
}

function escapeValue(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function join(a: string, b: string): string {
  return a === "" ? b : b === "" ? a : `${a},${b}`;
}

function braces(labels: string): string {
  return labels === "" ? "" : `{${labels}}`;
}

function formatNumber(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}
