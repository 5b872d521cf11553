import type { ServerResponse } from "node:http";
import type { JobEvent } from "../job/types.ts";
import { nearestRank } from "../store/record-rules.ts";
import { safeJson } from "./http.ts";
import type { ConsoleLogLine, ConsoleOverview } from "./api-types.ts";

/** Width of a throughput bar. */
export const BUCKET_MS = 10_000;
/** The throughput chart's span. */
export const THROUGHPUT_WINDOW_MS = 15 * 60_000;
/** The run-time figure's span. */
export const LATENCY_WINDOW_MS = 5 * 60_000;

type Counts = { completed: number; failed: number; cancelled: number };

/** Every bar of the chart ending at `now`, oldest first, from the buckets that have any (by start). */
export function throughputBars(counts: ReadonlyMap<number, Counts>, now: number): ConsoleOverview["throughput"] {
  const last = Math.floor(now / BUCKET_MS) * BUCKET_MS;
  const buckets = [];
  for (let t = last - THROUGHPUT_WINDOW_MS + BUCKET_MS; t <= last; t += BUCKET_MS) {
    const c = counts.get(t);
    buckets.push({ t, completed: c?.completed ?? 0, failed: c?.failed ?? 0, cancelled: c?.cancelled ?? 0 });
  }
  return { bucketMs: BUCKET_MS, buckets };
}

/** Where the bars of the chart start for `now`. */
export function throughputSince(now: number): number {
  return Math.floor(now / BUCKET_MS) * BUCKET_MS - THROUGHPUT_WINDOW_MS + BUCKET_MS;
}
/** Jobs whose log lines are kept, and lines per job. */
const LOG_JOBS = 1000;
const LOG_LINES = 500;
/** Running jobs whose start is remembered for the run-time figure. */
const STARTS = 20_000;
/** Bytes a slow SSE client may have buffered before it is dropped. */
const MAX_BUFFERED = 1 << 20;

/**
 * What the console learns from the job events it sees: throughput per 10 s, run times (from a
 * job's `running` event to its result), and the latest log lines of recent jobs. Everything is
 * bounded; nothing here is the record of truth (the store is). @internal
 */
export class LiveStats {
  readonly #buckets = new Map<number, { completed: number; failed: number; cancelled: number }>();
  readonly #starts = new Map<string, number>();
  readonly #runs: Array<{ at: number; ms: number }> = [];
  readonly #logs = new Map<string, ConsoleLogLine[]>();

  observe(event: JobEvent): void {
    if (event.kind === "state" && event.state === "running") {
      this.#starts.set(`${event.jobId}\u0000${event.attempt}`, event.at);
      if (this.#starts.size > STARTS) this.#starts.delete(this.#starts.keys().next().value as string);
    } else if (event.kind === "result") {
      const t = Math.floor(event.at / BUCKET_MS) * BUCKET_MS;
      const bucket = this.#buckets.get(t) ?? { completed: 0, failed: 0, cancelled: 0 };
      bucket[event.outcome.status] += 1;
      this.#buckets.set(t, bucket);
      const key = `${event.jobId}\u0000${event.attempt}`;
      const started = this.#starts.get(key);
      if (started !== undefined) {
        this.#starts.delete(key);
        this.#runs.push({ at: event.at, ms: Math.max(0, event.at - started) });
      }
      this.#prune(event.at);
    } else if (event.kind === "log") {
      let lines = this.#logs.get(event.jobId);
      if (lines === undefined) {
        lines = [];
        this.#logs.set(event.jobId, lines);
        if (this.#logs.size > LOG_JOBS) this.#logs.delete(this.#logs.keys().next().value as string);
      }
      lines.push({ at: event.at, attempt: event.attempt, line: event.line, ...(event.stream === undefined ? {} : { stream: event.stream }) });
      if (lines.length > LOG_LINES) lines.splice(0, lines.length - LOG_LINES);
    }
  }

  /** The log lines seen for a job, oldest first. */
  logs(jobId: string): ConsoleLogLine[] {
    return [...(this.#logs.get(jobId) ?? [])];
  }

  /** Results per 10 s over the last 15 minutes (empty buckets included), oldest first. */
  throughput(now: number): ConsoleOverview["throughput"] {
    this.#prune(now);
    return throughputBars(this.#buckets, now);
  }

  /** Run-time percentiles of the attempts that ended in the last 5 minutes. */
  latency(now: number): ConsoleOverview["latency"] {
    this.#prune(now);
    const runs = this.#runs.filter((r) => r.at > now - LATENCY_WINDOW_MS).map((r) => r.ms).sort((a, b) => a - b);
    return { p50Ms: nearestRank(runs, 0.5), p95Ms: nearestRank(runs, 0.95), count: runs.length };
  }

  #prune(now: number): void {
    for (const t of this.#buckets.keys()) if (t < now - THROUGHPUT_WINDOW_MS - BUCKET_MS) this.#buckets.delete(t);
    let drop = 0;
    while (drop < this.#runs.length && (this.#runs[drop] as { at: number }).at <= now - LATENCY_WINDOW_MS) drop += 1;
    if (drop > 0) this.#runs.splice(0, drop);
  }
}

interface Client {
  res: ServerResponse;
  jobId: string | undefined;
}

/**
 * The console's Server-Sent Events clients: each gets `job`, `worker`, `overview` and `audit`
 * events (a `?job=` client only that job's `job` events), a comment ping every 15 s, and is
 * dropped when it stops reading. @internal
 */
export class SseHub {
  readonly #clients = new Set<Client>();
  readonly #ping: ReturnType<typeof setInterval>;

  constructor() {
    this.#ping = setInterval(() => {
      for (const client of this.#clients) this.#write(client, ": ping\n\n");
    }, 15_000);
    this.#ping.unref();
  }

  get size(): number {
    return this.#clients.size;
  }

  /** Starts the stream on `res`; `first` events are sent at once. */
  add(res: ServerResponse, jobId: string | undefined, first: Array<{ event: string; data: unknown }>): void {
    res.statusCode = 200;
    res.setHeader("content-type", "text/event-stream; charset=utf-8");
    res.setHeader("cache-control", "no-store");
    res.setHeader("connection", "keep-alive");
    res.setHeader("x-accel-buffering", "no");
    res.flushHeaders();
    const client: Client = { res, jobId };
    this.#clients.add(client);
    res.on("close", () => this.#clients.delete(client));
    this.#write(client, "retry: 2000\n\n");
    for (const { event, data } of first) this.#write(client, frame(event, data));
  }

  /** Sends one event to every client it concerns. */
  send(event: string, data: unknown, jobId?: string): void {
    if (this.#clients.size === 0) return;
    const text = frame(event, data);
    for (const client of this.#clients) {
      if (client.jobId !== undefined && (event !== "job" || jobId !== client.jobId)) continue;
      this.#write(client, text);
    }
  }

  close(): void {
    clearInterval(this.#ping);
    for (const client of this.#clients) client.res.end();
    this.#clients.clear();
  }

  #write(client: Client, text: string): void {
    if (client.res.writableLength > MAX_BUFFERED) {
      this.#clients.delete(client);
      client.res.destroy();
      return;
    }
    client.res.write(text);
  }
}

function frame(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${safeJson(data)}\n\n`;
}
