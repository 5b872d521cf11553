import { invalidArgument, OrchestratorError } from "../errors.ts";
import { checkInteger, checkLabels, checkObject, checkString, optional } from "../validate.ts";
import { checkScheduleLink } from "../job/envelope.ts";
import type { JobOutcome } from "../job/types.ts";
import { checkPriority, DEFAULT_PRIORITY } from "../job/envelope.ts";
import { FINAL_STATES } from "./types.ts";
import type { FinishedSummary, JobAttemptRecord, JobCounts, JobFilter, JobRecord, JobRecordState, JobTransition, ListOptions, NewJobRecord, TransitionStatus } from "./types.ts";

/**
 * The rules every job store applies, in one home: how a new record looks, how a transition
 * changes one (fencing included), what a filter matches and how pages are cut. `MemoryJobStore`
 * applies them to its map; `PostgresJobStore` to the rows it locked. @internal
 */

export const RECORD_STATES: readonly JobRecordState[] = ["scheduled", "queued", "unschedulable", "running", "retrying", "completed", "failed", "cancelled"];
const stateSet: ReadonlySet<string> = new Set(RECORD_STATES);

/** What shapes a record on creation; resolved store options. */
export interface RecordLimits {
  maxPayloadBytes: number;
  redactPayload: ((payload: unknown, job: { id: string; type: string }) => unknown) | undefined;
}

/** Default `retentionMs` of every store: 7 days. */
export const DEFAULT_RETENTION_MS = 7 * 24 * 3_600_000;
/** Default `maxPayloadBytes`: 64 KiB. */
export const DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024;

/** Checks the caller's input to `create`. */
export function checkNewJob(value: unknown): NewJobRecord {
  const o = checkObject("job", value);
  const job: NewJobRecord = {
    id: checkString("job.id", o.id, 256),
    type: checkString("job.type", o.type, 256),
    payload: o.payload,
    maxAttempts: checkInteger("job.maxAttempts", o.maxAttempts, 1, 1000),
    timeoutMs: checkInteger("job.timeoutMs", o.timeoutMs, 1),
    startTimeoutMs: checkInteger("job.startTimeoutMs", o.startTimeoutMs, 1),
  };
  if (o.metadata !== undefined) job.metadata = checkMetadata("job.metadata", o.metadata);
  if (o.idempotencyKey !== undefined) job.idempotencyKey = checkString("job.idempotencyKey", o.idempotencyKey, 512);
  if (o.labels !== undefined) job.labels = checkLabels("job.labels", o.labels);
  if (o.createdAt !== undefined) job.createdAt = checkInteger("job.createdAt", o.createdAt, 0);
  if (o.runAt !== undefined) job.runAt = checkInteger("job.runAt", o.runAt, 0);
  if (o.schedule !== undefined) job.schedule = checkScheduleLink("job.schedule", o.schedule);
  if (o.traceId !== undefined) {
    if (typeof o.traceId !== "string" || !/^[0-9a-f]{32}$/.test(o.traceId)) throw invalidArgument("job.traceId", "32 lowercase hex digits", o.traceId);
    job.traceId = o.traceId;
  }
  if (o.priority !== undefined && o.priority !== DEFAULT_PRIORITY) job.priority = checkPriority("job.priority", o.priority);
  return job;
}

/** Metadata: at most 64 pairs of non-empty keys (128 chars) and values (1024 chars). */
export function checkMetadata(field: string, value: unknown): Record<string, string> {
  const labels = checkLabels(field, value);
  const keys = Object.keys(labels);
  if (keys.length > 64) throw invalidArgument(field, "at most 64 pairs", `${keys.length} pairs`);
  for (const key of keys) {
    checkString(`${field} key`, key, 128);
    if ((labels[key] as string).length > 1024) throw invalidArgument(`${field}.${key}`, "a string of at most 1024 characters", labels[key]);
  }
  return labels;
}

const transitionKinds: ReadonlySet<string> = new Set(["started", "progress", "retrying", "unschedulable", "queued", "finished", "redriven"]);

/** Checks a transition's common fields and the fields its kind needs. */
export function checkTransition(value: unknown): JobTransition {
  const o = checkObject("transition", value);
  if (typeof o.kind !== "string" || !transitionKinds.has(o.kind)) {
    throw invalidArgument("transition.kind", `one of ${[...transitionKinds].join(", ")}`, o.kind);
  }
  checkString("transition.jobId", o.jobId, 256);
  checkInteger("transition.fencingToken", o.fencingToken, 0);
  checkInteger("transition.at", o.at, 0);
  if (o.kind !== "unschedulable" && o.kind !== "queued" && o.kind !== "redriven") checkInteger("transition.attempt", o.attempt, 1);
  if (o.kind === "started") {
    checkString("transition.workerId", o.workerId, 256);
    if (o.copy !== undefined) checkString("transition.copy", o.copy, 64);
  }
  if (o.kind === "progress" && (typeof o.progress !== "number" || !Number.isFinite(o.progress))) {
    throw invalidArgument("transition.progress", "a finite number", o.progress);
  }
  if (o.kind === "retrying") checkObject("transition.error", o.error);
  if (o.kind === "unschedulable" || (o.kind === "queued" && o.reason !== undefined)) checkString("transition.reason", o.reason, 1024);
  if (o.kind === "finished") {
    const outcome = checkObject("transition.outcome", o.outcome);
    if (outcome.status !== "completed" && outcome.status !== "failed" && outcome.status !== "cancelled") {
      throw invalidArgument("transition.outcome.status", "completed, failed or cancelled", outcome.status);
    }
  }
  return o as unknown as JobTransition;
}

/** A fresh record for a checked {@link NewJobRecord}. */
export function newRecord(job: NewJobRecord, now: number, limits: RecordLimits): JobRecord {
  const createdAt = job.createdAt ?? now;
  // A job due later waits as `scheduled`; its start timeout counts from its due time.
  const scheduled = job.runAt !== undefined && job.runAt > createdAt;
  const record: JobRecord = {
    id: job.id,
    type: job.type,
    state: scheduled ? "scheduled" : "queued",
    metadata: { ...(job.metadata ?? {}) },
    maxAttempts: job.maxAttempts,
    timeoutMs: job.timeoutMs,
    startTimeoutMs: job.startTimeoutMs,
    attempts: [],
    redrives: 0,
    fencingToken: 0,
    createdAt,
    updatedAt: createdAt,
    startBy: Math.max(createdAt, job.runAt ?? 0) + job.startTimeoutMs,
  };
  if (job.runAt !== undefined) record.runAt = job.runAt;
  if (job.priority !== undefined && job.priority !== DEFAULT_PRIORITY) record.priority = job.priority;
  const shown = limits.redactPayload === undefined ? job.payload : limits.redactPayload(job.payload, { id: job.id, type: job.type });
  const text = JSON.stringify(shown) ?? "null";
  // Compared as the JSON the queue carries: what is kept is the job's own payload, or it is not.
  if (limits.redactPayload !== undefined && text !== (JSON.stringify(job.payload) ?? "null")) record.payloadRedacted = true;
  if (Buffer.byteLength(text) > limits.maxPayloadBytes) record.payloadOmitted = true;
  else record.payload = shown;
  if (job.idempotencyKey !== undefined) record.idempotencyKey = job.idempotencyKey;
  if (job.labels !== undefined) record.labels = { ...job.labels };
  if (job.schedule !== undefined) record.schedule = { ...job.schedule };
  if (job.traceId !== undefined) record.traceId = job.traceId;
  return record;
}

/** The error of a job that did not start within its start timeout; one home for its code and wording. */
export function startTimeoutError(record: Pick<JobRecord, "id" | "startTimeoutMs" | "reason">): OrchestratorError {
  const why = record.reason === undefined ? "" : ` (${record.reason})`;
  return new OrchestratorError("deadline_exceeded", `job ${record.id} did not start within its start timeout of ${record.startTimeoutMs} ms${why}`, {
    retryable: false,
    details: { reason: "start_timeout", startTimeoutMs: record.startTimeoutMs, ...(record.reason === undefined ? {} : { unschedulable: record.reason }) },
  });
}

function attemptOf(record: JobRecord, number: number): JobAttemptRecord | undefined {
  for (let i = record.attempts.length - 1; i >= 0; i--) {
    const attempt = record.attempts[i] as JobAttemptRecord;
    if (attempt.round !== record.redrives) return undefined;
    if (attempt.number === number) return attempt;
  }
  return undefined;
}

function ensureAttempt(record: JobRecord, number: number, token: number): JobAttemptRecord {
  let attempt = attemptOf(record, number);
  if (attempt === undefined) {
    attempt = { number, round: record.redrives, fencingToken: token };
    record.attempts.push(attempt);
  }
  attempt.fencingToken = Math.max(attempt.fencingToken, token);
  return attempt;
}

/** Most attempts a record keeps; the oldest beyond are dropped (a job redriven many times). */
export const MAX_ATTEMPTS_KEPT = 200;

/**
 * Applies a checked transition to `record` (mutating it) and says whether it was applied.
 * Fencing: a token lower than the record's is `stale`; a final record only takes `redriven`, and
 * a `failed` one not yet dead-lettered the dead-letter mark of a `finished` failed transition.
 */
export function applyTransition(record: JobRecord, t: JobTransition): TransitionStatus {
  if (t.fencingToken < record.fencingToken) return "stale";
  const final = FINAL_STATES.has(record.state);
  if (t.kind === "redriven") {
    if (!final || record.deadLetter === undefined) return "finished";
    record.state = "queued";
    delete record.deadLetter;
    delete record.result;
    delete record.finishedAt;
    delete record.reason;
    delete record.progress;
    record.redrives++;
    record.startBy = t.at + record.startTimeoutMs;
  } else if (final) {
    // A job failed while still in the queue (its start timeout) is dead-lettered when a
    // dispatcher takes its message: the record takes the mark, its outcome stays.
    if (t.kind !== "finished" || t.deadLetter === undefined || record.state !== "failed" || record.deadLetter !== undefined || t.outcome.status !== "failed") return "finished";
    record.deadLetter = { reason: t.deadLetter, at: t.at };
  } else {
    switch (t.kind) {
      case "started": {
        if (t.copy !== undefined && startedFromAnotherCopy(record, t.copy)) return "stale";
        // Earlier attempts of the round that never ended died with their worker or orchestrator.
        for (const earlier of record.attempts) {
          if (earlier.round === record.redrives && earlier.number < t.attempt && earlier.outcome === undefined) {
            earlier.outcome = "lost";
            earlier.endedAt = t.at;
          }
        }
        const attempt = ensureAttempt(record, t.attempt, t.fencingToken);
        attempt.workerId = t.workerId;
        if (t.dispatcherId !== undefined) attempt.dispatcherId = t.dispatcherId;
        attempt.startedAt = t.at;
        if (t.copy !== undefined) attempt.copy = t.copy;
        delete attempt.endedAt;
        delete attempt.outcome;
        delete attempt.error;
        record.state = "running";
        delete record.reason;
        delete record.startBy;
        break;
      }
      case "progress":
        record.progress = { progress: t.progress, at: t.at, attempt: t.attempt, ...(t.message === undefined ? {} : { message: t.message }) };
        break;
      case "retrying": {
        const attempt = ensureAttempt(record, t.attempt, t.fencingToken);
        if (t.workerId !== undefined) attempt.workerId = t.workerId;
        if (t.dispatcherId !== undefined) attempt.dispatcherId = t.dispatcherId;
        attempt.endedAt = t.at;
        attempt.outcome = t.lost === true ? "lost" : "retrying";
        attempt.error = t.error;
        record.error = t.error;
        record.state = "retrying";
        break;
      }
      case "unschedulable":
        record.state = "unschedulable";
        record.reason = t.reason;
        break;
      case "queued":
        // A wait announced as the job went to its key's line may be written after its start
        // (another process, a lazy write): it never takes a running attempt back.
        if (t.reason !== undefined && record.state === "running") break;
        record.state = "queued";
        if (t.reason === undefined) delete record.reason;
        else record.reason = t.reason;
        break;
      case "finished": {
        const { outcome } = t;
        if (t.started) {
          const attempt = ensureAttempt(record, t.attempt, t.fencingToken);
          if (t.workerId !== undefined) attempt.workerId = t.workerId;
          if (t.dispatcherId !== undefined) attempt.dispatcherId = t.dispatcherId;
          attempt.endedAt = t.at;
          attempt.outcome = outcome.status;
          if (outcome.status === "failed") attempt.error = outcome.error;
        }
        record.state = outcome.status;
        if (outcome.status === "completed") {
          record.result = outcome.result;
          delete record.error;
        } else if (outcome.status === "failed") {
          record.error = outcome.error;
        } else {
          record.cancel = { reason: outcome.reason, ...(outcome.message === undefined ? {} : { message: outcome.message }) };
        }
        if (t.deadLetter !== undefined) record.deadLetter = { reason: t.deadLetter, at: t.at };
        record.finishedAt = t.at;
        delete record.startBy;
        break;
      }
    }
  }
  if (record.attempts.length > MAX_ATTEMPTS_KEPT) record.attempts.splice(0, record.attempts.length - MAX_ATTEMPTS_KEPT);
  record.fencingToken = t.fencingToken;
  record.updatedAt = Math.max(record.updatedAt, t.at);
  return "applied";
}

/** The states of a job not started yet, whose `startBy` can pass. */
export const UNSTARTED_STATES: ReadonlySet<JobRecordState> = new Set<JobRecordState>(["scheduled", "queued", "unschedulable"]);

/** Whether an attempt of the record's round started from a copy other than `copy` (see `StartedTransition.copy`). */
function startedFromAnotherCopy(record: JobRecord, copy: string): boolean {
  return record.attempts.some((a) => a.round === record.redrives && a.startedAt !== undefined && a.copy !== undefined && a.copy !== copy);
}

/** Fails a `scheduled` / `queued` / `unschedulable` record whose `startBy` has passed; false when it has not. */
export function expireRecord(record: JobRecord, now: number): boolean {
  if (!UNSTARTED_STATES.has(record.state) || record.startBy === undefined || record.startBy > now) return false;
  record.state = "failed";
  record.error = startTimeoutError(record).toJSON();
  record.finishedAt = now;
  record.updatedAt = Math.max(record.updatedAt, now);
  delete record.startBy;
  return true;
}

/** Checks a list filter and page options. */
export function checkListOptions(value: unknown): ListOptions & { limit: number } {
  const o = checkObject("options", value ?? {});
  const options: ListOptions & { limit: number } = { limit: optional(o.limit, 100, (v) => checkInteger("limit", v, 1, 1000)) };
  if (o.state !== undefined) {
    const states = Array.isArray(o.state) ? o.state : [o.state];
    for (const state of states) if (typeof state !== "string" || !stateSet.has(state)) throw invalidArgument("state", `one of ${RECORD_STATES.join(", ")}`, state);
    options.state = states as JobRecordState[];
  }
  if (o.type !== undefined) options.type = checkString("type", o.type, 256);
  if (o.createdAfter !== undefined) options.createdAfter = checkInteger("createdAfter", o.createdAfter, 0);
  if (o.createdBefore !== undefined) options.createdBefore = checkInteger("createdBefore", o.createdBefore, 0);
  if (o.idPrefix !== undefined) options.idPrefix = checkString("idPrefix", o.idPrefix, 256);
  if (o.metadata !== undefined) options.metadata = checkMetadata("metadata", o.metadata);
  if (o.schedule !== undefined) options.schedule = checkString("schedule", o.schedule, 200);
  if (o.deadLettered !== undefined) {
    if (typeof o.deadLettered !== "boolean") throw invalidArgument("deadLettered", "a boolean", o.deadLettered);
    options.deadLettered = o.deadLettered;
  }
  if (o.search !== undefined) options.search = checkString("search", o.search, 256);
  if (o.cursor !== undefined) {
    options.cursor = checkString("cursor", o.cursor, 1024);
    decodeCursor(options.cursor);
  }
  return options;
}

/** Whether `record` passes `filter`. */
export function matchesFilter(record: JobRecord, filter: JobFilter): boolean {
  if (filter.state !== undefined && !(filter.state as readonly string[]).includes(record.state)) return false;
  if (filter.type !== undefined && record.type !== filter.type) return false;
  if (filter.createdAfter !== undefined && record.createdAt < filter.createdAfter) return false;
  if (filter.createdBefore !== undefined && record.createdAt >= filter.createdBefore) return false;
  if (filter.idPrefix !== undefined && !record.id.startsWith(filter.idPrefix)) return false;
  if (filter.deadLettered !== undefined && (record.deadLetter !== undefined) !== filter.deadLettered) return false;
  if (filter.schedule !== undefined && record.schedule?.id !== filter.schedule) return false;
  if (filter.metadata !== undefined) {
    for (const [key, value] of Object.entries(filter.metadata)) if (record.metadata[key] !== value) return false;
  }
  if (filter.search !== undefined && !searchHit(record, filter.search.toLowerCase())) return false;
  return true;
}

/** Whether `needle` (lowercased) is in the id, type, a metadata value, or a string or number of the payload. */
function searchHit(record: JobRecord, needle: string): boolean {
  const hit = (text: string): boolean => text.toLowerCase().includes(needle);
  if (hit(record.id) || hit(record.type) || Object.values(record.metadata).some(hit)) return true;
  const walk = (value: unknown): boolean => {
    if (typeof value === "string") return hit(value);
    if (typeof value === "number") return hit(String(value));
    if (Array.isArray(value)) return value.some(walk);
    if (typeof value === "object" && value !== null) return Object.values(value).some(walk);
    return false;
  };
  return walk(record.payload);
}

/** The position a page ends at: the last record's `createdAt` and id. */
export interface Cursor {
  createdAt: number;
  id: string;
}

export function encodeCursor(record: Pick<JobRecord, "createdAt" | "id">): string {
  return Buffer.from(JSON.stringify([record.createdAt, record.id])).toString("base64url");
}

/** @throws {OrchestratorError} `invalid_argument` for a cursor no store wrote. */
export function decodeCursor(cursor: string): Cursor {
  try {
    const value: unknown = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
    if (Array.isArray(value) && value.length === 2 && Number.isInteger(value[0]) && typeof value[1] === "string") {
      return { createdAt: value[0] as number, id: value[1] };
    }
  } catch {
    // reported below
  }
  throw invalidArgument("cursor", "the nextCursor of an earlier page", cursor);
}

/** Newest first: `createdAt` descending, then id descending. */
export function newestFirst(a: Pick<JobRecord, "createdAt" | "id">, b: Pick<JobRecord, "createdAt" | "id">): number {
  if (a.createdAt !== b.createdAt) return b.createdAt - a.createdAt;
  return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}

/** Whether `record` comes after `cursor` in {@link newestFirst} order. */
export function afterCursor(record: Pick<JobRecord, "createdAt" | "id">, cursor: Cursor): boolean {
  return record.createdAt < cursor.createdAt || (record.createdAt === cursor.createdAt && record.id < cursor.id);
}

/** Every state at 0. */
export function zeroCounts(): JobCounts {
  return Object.fromEntries(RECORD_STATES.map((state) => [state, 0])) as JobCounts;
}

/** The outcome a final record holds, as its result event carries it; undefined while unfinished. */
export function outcomeOf(record: JobRecord): JobOutcome | undefined {
  switch (record.state) {
    case "completed":
      return { status: "completed", result: record.result };
    case "failed":
      return { status: "failed", error: record.error ?? { code: "internal", message: "failed without a recorded error", retryable: false } };
    case "cancelled":
      return { status: "cancelled", reason: record.cancel?.reason ?? "requested", ...(record.cancel?.message === undefined ? {} : { message: record.cancel.message }) };
    default:
      return undefined;
  }
}

/** The attempt number a record last reached in its current round (0 before the first start). */
export function lastAttemptOf(record: JobRecord): number {
  const last = record.attempts.at(-1);
  return last !== undefined && last.round === record.redrives ? last.number : 0;
}

/** The `q`-th nearest-rank percentile of `sorted` (ascending), or null when empty: PostgreSQL's `percentile_disc`. */
export function nearestRank(sorted: readonly number[], q: number): number | null {
  return sorted.length === 0 ? null : (sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] as number);
}

/** Checks the options of `finishedSummary`. @throws {OrchestratorError} `invalid_argument` naming the field. */
export function checkFinishedSummary(options: unknown): { since: number; bucketMs: number; runTimeSince: number; sampleLimit: number } {
  const o = checkObject("options", options);
  const since = checkInteger("options.since", o.since, 0);
  return {
    since,
    bucketMs: checkInteger("options.bucketMs", o.bucketMs, 1000, 3_600_000),
    runTimeSince: optional(o.runTimeSince, since, (v) => checkInteger("options.runTimeSince", v, 0)),
    sampleLimit: optional(o.sampleLimit, DEFAULT_SUMMARY_SAMPLE, (v) => checkInteger("options.sampleLimit", v, 1, 1_000_000)),
  };
}

/** Default `FinishedSummaryOptions.sampleLimit`. */
export const DEFAULT_SUMMARY_SAMPLE = 10_000;

/** How long a finished record's last attempt ran, or undefined when it never started or ended. */
export function runTimeOf(record: JobRecord): number | undefined {
  const last = record.attempts.at(-1);
  if (last?.startedAt === undefined || last.endedAt === undefined) return undefined;
  return Math.max(0, last.endedAt - last.startedAt);
}

/** How long a record waited from its due time (`runAt`, else `createdAt`) to its first attempt's start, or undefined when none started. */
export function waitTimeOf(record: JobRecord): number | undefined {
  const first = record.attempts[0];
  if (first?.startedAt === undefined) return undefined;
  return Math.max(0, first.startedAt - Math.max(record.createdAt, record.runAt ?? 0));
}

/** `finishedSummary` over records in memory: the same figures the PostgreSQL store computes in SQL. */
export function summarizeFinished(records: Iterable<JobRecord>, options: { since: number; bucketMs: number; runTimeSince: number; sampleLimit: number }): FinishedSummary {
  const buckets = new Map<number, { t: number; completed: number; failed: number; cancelled: number }>();
  const runs: number[] = [];
  const waits: number[] = [];
  const timed: JobRecord[] = [];
  for (const record of records) {
    const at = record.finishedAt;
    if (at === undefined || at < options.since || (record.state !== "completed" && record.state !== "failed" && record.state !== "cancelled")) continue;
    const t = Math.floor(at / options.bucketMs) * options.bucketMs;
    const bucket = buckets.get(t) ?? { t, completed: 0, failed: 0, cancelled: 0 };
    bucket[record.state] += 1;
    buckets.set(t, bucket);
    if (at >= options.runTimeSince) timed.push(record);
  }
  // The newest `sampleLimit`, as the SQL twin's ORDER BY finished_at DESC, id DESC LIMIT.
  timed.sort((a, b) => (b.finishedAt as number) - (a.finishedAt as number) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  for (const record of timed.slice(0, options.sampleLimit)) {
    const ran = runTimeOf(record);
    if (ran !== undefined) runs.push(ran);
    const waited = waitTimeOf(record);
    if (waited !== undefined) waits.push(waited);
  }
  const percentiles = (values: number[]) => {
    values.sort((a, b) => a - b);
    return { p50Ms: nearestRank(values, 0.5), p95Ms: nearestRank(values, 0.95), count: values.length };
  };
  return { buckets: [...buckets.values()].sort((a, b) => a.t - b.t), runTime: percentiles(runs), waitTime: percentiles(waits), capped: timed.length > options.sampleLimit };
}
