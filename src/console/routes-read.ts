import { OrchestratorError } from "../errors.ts";
import type { QueueDepth } from "../queue/types.ts";
import type { FinishedSummary, JobRecord } from "../store/types.ts";
import { BUCKET_MS, LATENCY_WINDOW_MS, throughputBars, throughputSince } from "./live.ts";
import { checkInteger, checkString, optional } from "../validate.ts";
import type { ConsoleCore, RouteContext } from "./console.ts";
import { HttpError, sendJson } from "./http.ts";
import { findInvalidDeadLetter, listInvalidDeadLetters, type BodyAccess } from "./invalid-dead-letters.ts";
import { filterFromQuery, storeFilter, summarize } from "./job-views.ts";
import { isHealthyState } from "./worker-directory.ts";
import type { ConsoleAuditEntry, ConsoleDeadLetterList, ConsoleJobList, ConsoleLogLine, ConsoleJobPage, ConsoleOverview, ConsoleSavedFilter, ConsoleWorker } from "./api-types.ts";

/** Most running jobs read to tell which worker runs what. */
const RUNNING_SCAN = 1000;

function limitOf(query: URLSearchParams, fallback: number, max: number): number {
  const raw = query.get("limit");
  if (raw === null || raw === "") return fallback;
  if (!/^\d+$/.test(raw)) throw new HttpError(400, "invalid_argument", `Expected \`limit\` to be an integer from 1 to ${max}, got \`${raw.slice(0, 40)}\``);
  return checkInteger("limit", Number(raw), 1, max);
}

function cursorOf(query: URLSearchParams): { cursor?: string } {
  const cursor = query.get("cursor");
  return cursor === null || cursor === "" ? {} : { cursor };
}

/** The console's read-only routes: overview, jobs, workers, dead letters, audit, filters. @internal */
export class ReadRoutes {
  readonly #core: ConsoleCore;

  constructor(core: ConsoleCore) {
    this.#core = core;
  }

  async overview(): Promise<ConsoleOverview> {
    const core = this.#core;
    const now = Date.now();
    const depthOf = core.options.queue.depth;
    type Depths = { queues: QueueDepth[]; error?: string };
    const [byState, queues, finished] = await Promise.all([
      core.store.counts(),
      depthOf === undefined
        ? Promise.resolve<Depths>({ queues: [] })
        : depthOf.call(core.options.queue).then(
            (queues): Depths => ({ queues }),
            (error: unknown): Depths => ({ queues: [], error: OrchestratorError.from(error).rawMessage }),
          ),
      this.#finished(now),
    ]);
    const workers = core.directory?.list() ?? [];
    const byWorkerState: Record<string, number> = {};
    let total = 0;
    let busy = 0;
    for (const worker of workers) {
      byWorkerState[worker.state] = (byWorkerState[worker.state] ?? 0) + 1;
      if (worker.state === "idle" || worker.state === "busy" || worker.state === "saturated") {
        total += worker.slots.total;
        busy += Math.min(worker.slots.busy, worker.slots.total);
      }
    }
    const dead = queues.queues.find((q) => q.role === "dead");
    return {
      at: now,
      queues: queues.queues,
      ...(queues.error === undefined ? {} : { queueError: queues.error }),
      jobs: { byState },
      throughput: finished === undefined ? core.stats.throughput(now) : throughputBars(new Map(finished.buckets.map((b) => [b.t, b])), now),
      latency: finished === undefined ? core.stats.latency(now) : { ...finished.runTime, ...(finished.capped ? { capped: true as const } : {}) },
      ...(finished === undefined ? {} : { wait: { ...finished.waitTime, ...(finished.capped ? { capped: true as const } : {}) } }),
      figuresFrom: finished === undefined ? "console" : "store",
      workers: { total: workers.length, healthy: workers.filter((w) => isHealthyState(w.state)).length, byState: byWorkerState, known: core.directory !== undefined },
      slots: { total, busy, free: total - busy },
      deadLetters: dead === undefined ? null : dead.ready,
    } satisfies ConsoleOverview;
  }

  /**
   * Throughput and run times from the job records (`JobStore.finishedSummary`), so they cover the
   * whole window whenever the console started; undefined when the store cannot tell (or failed:
   * reported), and the overview falls back to what this console saw.
   */
  async #finished(now: number): Promise<FinishedSummary | undefined> {
    const store = this.#core.store;
    if (store.finishedSummary === undefined) return undefined;
    try {
      return await store.finishedSummary({ since: throughputSince(now), bucketMs: BUCKET_MS, runTimeSince: now - LATENCY_WINDOW_MS });
    } catch (error) {
      this.#core.report(error);
      return undefined;
    }
  }

  async jobs(ctx: RouteContext): Promise<void> {
    const filter = filterFromQuery(ctx.query);
    const page = await this.#core.store.list({ ...storeFilter(filter), limit: limitOf(ctx.query, 50, 500), ...cursorOf(ctx.query) });
    sendJson(ctx.res, 200, { jobs: page.records.map(summarize), ...(page.nextCursor === undefined ? {} : { nextCursor: page.nextCursor }) } satisfies ConsoleJobList);
  }

  async job(ctx: RouteContext): Promise<void> {
    const record = await this.#record(ctx.param);
    const { error: _error, progress: _progress, ...summary } = summarize(record);
    sendJson(ctx.res, 200, {
      job: {
        ...summary,
        payload: this.#core.redact(record.payload, record),
        ...(record.payloadOmitted === true ? { payloadOmitted: true } : {}),
        ...(record.payloadRedacted === true ? { payloadRedacted: true } : {}),
        ...(record.result === undefined ? {} : { result: this.#core.redact(record.result, record) }),
        ...(record.error === undefined ? {} : { error: record.error }),
        ...(record.cancel === undefined ? {} : { cancel: record.cancel }),
        ...(record.labels === undefined ? {} : { labels: record.labels }),
        ...(record.idempotencyKey === undefined ? {} : { idempotencyKey: record.idempotencyKey }),
        ...(record.traceId === undefined ? {} : { traceId: record.traceId }),
        ...(record.progress === undefined ? {} : { progress: record.progress }),
        timeoutMs: record.timeoutMs,
        startTimeoutMs: record.startTimeoutMs,
      },
      attempts: record.attempts,
      logs: await this.#logs(record.id),
    } satisfies ConsoleJobPage);
  }

  /**
   * The job's log: the lines the store keeps (`JobStore.logs`, written by the dispatchers), or
   * the lines this console saw on the stream when they are more (the store's write lags the
   * event by a moment, and a store without logs keeps none).
   */
  async #logs(jobId: string): Promise<ConsoleLogLine[]> {
    const live = this.#core.stats.logs(jobId);
    const store = this.#core.store;
    if (store.logs === undefined) return live;
    let kept: ConsoleLogLine[];
    try {
      kept = (await store.logs(jobId)).map(({ at, attempt, line, stream }) => ({ at, attempt, line, ...(stream === undefined ? {} : { stream }) }));
    } catch (error) {
      this.#core.report(error);
      return live;
    }
    return kept.length >= live.length ? kept : live;
  }

  async #record(id: string): Promise<JobRecord> {
    if (id === "" || id.length > 256) throw new HttpError(400, "invalid_argument", "Expected a job id of 1 to 256 characters");
    const record = await this.#core.store.get(id);
    if (record === undefined) throw new HttpError(404, "not_found", `No job ${id}`);
    return record;
  }

  /** Every worker, each with the jobs the store says run on it. */
  async #workers(): Promise<ConsoleWorker[]> {
    const directory = this.#core.directory;
    if (directory === undefined) return [];
    const workers = directory.list();
    if (workers.length === 0) return workers;
    const { records } = await this.#core.store.list({ state: "running", limit: RUNNING_SCAN });
    const running = new Map<string, string[]>();
    for (const record of records) {
      const workerId = record.attempts.at(-1)?.workerId;
      if (workerId === undefined) continue;
      running.set(workerId, [...(running.get(workerId) ?? []), record.id]);
    }
    return workers.map((w) => ({ ...w, running: running.get(w.id) ?? [] }));
  }

  async workers(ctx: RouteContext): Promise<void> {
    sendJson(ctx.res, 200, { workers: await this.#workers(), known: this.#core.directory !== undefined });
  }

  async worker(ctx: RouteContext): Promise<void> {
    const worker = (await this.#workers()).find((w) => w.id === ctx.param);
    if (worker === undefined) throw new HttpError(404, "not_found", `No worker ${ctx.param} in any pool`);
    sendJson(ctx.res, 200, { worker });
  }

  async deadLetters(ctx: RouteContext): Promise<void> {
    const filter = filterFromQuery(ctx.query);
    const page = await this.#core.store.list({ ...storeFilter(filter), deadLettered: true, limit: limitOf(ctx.query, 50, 500), ...cursorOf(ctx.query) });
    sendJson(ctx.res, 200, {
      deadLetters: page.records.map((record) => ({
        jobId: record.id,
        type: record.type,
        reason: record.deadLetter?.reason ?? "",
        deadLetteredAt: record.deadLetter?.at ?? record.updatedAt,
        redrives: record.redrives,
        createdAt: record.createdAt,
        metadata: record.metadata,
        ...(record.error === undefined ? {} : { error: record.error }),
        attempts: record.attempts,
      })),
      ...(page.nextCursor === undefined ? {} : { nextCursor: page.nextCursor }),
    } satisfies ConsoleDeadLetterList);
  }

  /** An invalid dead letter has no record: its envelope's payload/result go through `redact` alone; other bytes only to who may discard it. */
  async #access(ctx: RouteContext): Promise<BodyAccess> {
    return { redact: (value) => this.#core.redact(value, undefined), raw: await this.#core.allows(ctx.req, "discard") };
  }

  async invalidDeadLetters(ctx: RouteContext): Promise<void> {
    const core = this.#core;
    sendJson(ctx.res, 200, await listInvalidDeadLetters(core.options.queue, await this.#access(ctx), (error) => core.report(error)));
  }

  async invalidDeadLetter(ctx: RouteContext): Promise<void> {
    const id = checkString("id", ctx.param, 256);
    const core = this.#core;
    sendJson(ctx.res, 200, { deadLetter: await findInvalidDeadLetter(core.options.queue, id, await this.#access(ctx), (error) => core.report(error)) });
  }

  async audit(ctx: RouteContext): Promise<void> {
    const raw = ctx.query.get("before");
    const before = optional(raw === null || raw === "" ? undefined : Number(raw), undefined, (v) => checkInteger("before", v, 0));
    const entries: ConsoleAuditEntry[] = await this.#core.audit.list(limitOf(ctx.query, 100, 1000), before);
    sendJson(ctx.res, 200, { entries });
  }

  async filters(ctx: RouteContext): Promise<void> {
    const filters: ConsoleSavedFilter[] = await this.#core.audit.filters();
    sendJson(ctx.res, 200, { filters });
  }
}
