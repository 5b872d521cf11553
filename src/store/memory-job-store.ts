import { OrchestratorError } from "../errors.ts";
import type { WaitOptions } from "../queue/types.ts";
import { checkFunction, checkInteger, checkObject, checkString, optional } from "../validate.ts";
import {
  afterCursor, applyTransition, checkFinishedSummary, checkListOptions, checkNewJob, checkTransition, decodeCursor, DEFAULT_MAX_PAYLOAD_BYTES,
  DEFAULT_RETENTION_MS, encodeCursor, expireRecord, matchesFilter, newestFirst, newRecord, summarizeFinished, zeroCounts, type RecordLimits,
} from "./record-rules.ts";
import { MemoryConsoleRecords } from "./console-records.ts";
import { checkLogLines, DEFAULT_MAX_LOG_LINES, mergeLogLines } from "./job-logs.ts";
import { FINAL_STATES } from "./types.ts";
import { checkTokenBucketLimit, fullBucket, takeFromBucket, type BucketState, type TokenBucketLimit, type TokenTake } from "./token-bucket.ts";
import type {
  AuditEntry, AuditListOptions, ConsoleRecords, SavedFilter,
  CleanupOptions, CreateResult, ExpireOptions, FinishedSummary, FinishedSummaryOptions, JobCounts, JobLogLine, JobPage, JobRecord, JobStore, JobTransition, ListOptions, NewJobRecord,
  TransitionResult,
} from "./types.ts";

/** Options shared by every job store. */
export interface JobStoreOptions {
  /**
   * How long a finished record is kept before `cleanup()` removes it, in milliseconds.
   * @default 604800000 (7 days)
   */
  retentionMs?: number;
  /**
   * Largest payload kept in a record, as JSON bytes after `redactPayload`; a larger one is
   * dropped from the record (`payloadOmitted`). The job itself still carries it.
   * @default 65536
   */
  maxPayloadBytes?: number;
  /**
   * Turns a payload into what its record keeps and shows (drop secrets, keep what operators
   * need). Runs once per job, when its record is created.
   * @default undefined: the payload as submitted
   */
  redactPayload?: (payload: unknown, job: { id: string; type: string }) => unknown;
  /**
   * Most log lines kept per job (`appendLogs`), the latest; 0 keeps none.
   * @default 1000
   */
  maxLogLines?: number;
}

/** Options of {@link MemoryJobStore}. */
export interface MemoryJobStoreOptions extends JobStoreOptions {
  /**
   * Most records kept. When full, the records that finished first are dropped to make room; when
   * every record is unfinished, `create` rejects with `resource_exhausted`.
   * @default 10000
   */
  maxRecords?: number;
}

/** Resolves the options every store shares. @internal */
export function resolveStoreOptions(value: unknown): RecordLimits & { retentionMs: number; maxLogLines: number } {
  const o = checkObject("options", value ?? {});
  return {
    retentionMs: optional(o.retentionMs, DEFAULT_RETENTION_MS, (v) => checkInteger("retentionMs", v, 0)),
    maxLogLines: optional(o.maxLogLines, DEFAULT_MAX_LOG_LINES, (v) => checkInteger("maxLogLines", v, 0, 100_000)),
    maxPayloadBytes: optional(o.maxPayloadBytes, DEFAULT_MAX_PAYLOAD_BYTES, (v) => checkInteger("maxPayloadBytes", v, 0)),
    redactPayload: optional(o.redactPayload, undefined, (v) => checkFunction<NonNullable<RecordLimits["redactPayload"]>>("redactPayload", v)),
  };
}

const resolved = Promise.resolve();

/** Most rate-limit buckets and sticky keys kept each; the least recently touched go first. */
const MAX_KEYS = 100_000;

/** Sets `key` as the most recently touched entry of `map`, dropping the oldest beyond {@link MAX_KEYS}. */
function touch<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > MAX_KEYS) map.delete(map.keys().next().value as string);
}

/**
 * The embedded {@link JobStore}: every record in this process's memory, bounded by `maxRecords`.
 * Same semantics as `PostgresJobStore` (both pass `describeJobStoreContract()`), for one process
 * and for tests. Records are copied in and out.
 *
 * @example
 * ```ts
 * const store = new MemoryJobStore();
 * const client = new JobClient({ queue, events: queue, store });
 * const dispatcher = new Dispatcher({ queue, events: queue, pool, store });
 * ```
 */
export class MemoryJobStore implements JobStore, ConsoleRecords {
  readonly #o: ReturnType<typeof resolveStoreOptions>;
  readonly #console = new MemoryConsoleRecords();
  readonly #maxRecords: number;
  readonly #records = new Map<string, JobRecord>();
  readonly #byKey = new Map<string, string>();
  /** Ids of finished records, in the order they finished (the first to drop when full). */
  readonly #finished = new Set<string>();
  #closed = false;
  /** Rate-limit buckets and sticky keys, least recently touched first (see `#touch`). */
  readonly #buckets = new Map<string, BucketState>();
  readonly #sticky = new Map<string, { workerId: string; at: number }>();
  /** Log lines kept per job id, in order (see `job-logs.ts`). */
  readonly #logs = new Map<string, JobLogLine[]>();

  /** @throws {OrchestratorError} `invalid_argument` naming the first bad option. */
  constructor(options: MemoryJobStoreOptions = {}) {
    this.#o = resolveStoreOptions(options);
    this.#maxRecords = optional(checkObject("options", options).maxRecords, 10_000, (v) => checkInteger("maxRecords", v, 1));
  }

  /** Records held. */
  get size(): number {
    return this.#records.size;
  }

  create(job: NewJobRecord, _options?: WaitOptions): Promise<CreateResult> {
    return this.#do(() => {
      const input = checkNewJob(job);
      const existingId = this.#records.has(input.id) ? input.id : input.idempotencyKey === undefined ? undefined : this.#byKey.get(input.idempotencyKey);
      if (existingId !== undefined) return { created: false, record: structuredClone(this.#records.get(existingId) as JobRecord) };
      if (this.#records.size >= this.#maxRecords) this.#makeRoom();
      const record = newRecord(input, Date.now(), this.#o);
      this.#records.set(record.id, record);
      if (record.idempotencyKey !== undefined) this.#byKey.set(record.idempotencyKey, record.id);
      return { created: true, record: structuredClone(record) };
    });
  }

  #makeRoom(): void {
    const oldest = this.#finished.values().next();
    if (oldest.done === true) {
      throw new OrchestratorError("resource_exhausted", `the memory job store holds ${this.#maxRecords} unfinished jobs (maxRecords)`, {
        details: { maxRecords: this.#maxRecords },
      });
    }
    this.#remove(oldest.value);
  }

  #remove(id: string): void {
    const record = this.#records.get(id);
    if (record === undefined) return;
    this.#records.delete(id);
    this.#finished.delete(id);
    this.#logs.delete(id);
    if (record.idempotencyKey !== undefined && this.#byKey.get(record.idempotencyKey) === id) this.#byKey.delete(record.idempotencyKey);
  }

  record(transition: JobTransition, _options?: WaitOptions): Promise<TransitionResult> {
    return this.#do(() => {
      const t = checkTransition(transition);
      const record = this.#records.get(t.jobId);
      if (record === undefined) return { status: "not_found" };
      // Applied to a copy so that a transition that throws half-way changes nothing.
      const next = structuredClone(record);
      const status = applyTransition(next, t);
      if (status !== "applied") return { status, record: next };
      this.#records.set(next.id, next);
      this.#trackFinished(next);
      return { status };
    });
  }

  #trackFinished(record: JobRecord): void {
    if (FINAL_STATES.has(record.state)) {
      this.#finished.delete(record.id);
      this.#finished.add(record.id);
    } else {
      this.#finished.delete(record.id);
    }
  }

  get(id: string, _options?: WaitOptions): Promise<JobRecord | undefined> {
    return this.#do(() => {
      const record = this.#records.get(checkString("id", id, 256));
      return record === undefined ? undefined : structuredClone(record);
    });
  }

  getByIdempotencyKey(key: string, _options?: WaitOptions): Promise<JobRecord | undefined> {
    return this.#do(() => {
      const id = this.#byKey.get(checkString("key", key, 512));
      const record = id === undefined ? undefined : this.#records.get(id);
      return record === undefined ? undefined : structuredClone(record);
    });
  }

  list(options: ListOptions = {}): Promise<JobPage> {
    return this.#do(() => {
      const o = checkListOptions(options);
      const cursor = o.cursor === undefined ? undefined : decodeCursor(o.cursor);
      const matching: JobRecord[] = [];
      for (const record of this.#records.values()) {
        if (matchesFilter(record, o) && (cursor === undefined || afterCursor(record, cursor))) matching.push(record);
      }
      matching.sort(newestFirst);
      const records = matching.slice(0, o.limit).map((record) => structuredClone(record));
      const last = records.at(-1);
      return matching.length > o.limit && last !== undefined ? { records, nextCursor: encodeCursor(last) } : { records };
    });
  }

  counts(filter: { type?: string } = {}, _options?: WaitOptions): Promise<JobCounts> {
    return this.#do(() => {
      const type = optional(checkObject("filter", filter).type, undefined, (v) => checkString("filter.type", v, 256));
      const counts = zeroCounts();
      for (const record of this.#records.values()) if (type === undefined || record.type === type) counts[record.state]++;
      return counts;
    });
  }

  expireUnstarted(options: ExpireOptions = {}): Promise<JobRecord[]> {
    return this.#do(() => {
      const o = checkObject("options", options);
      const now = optional(o.now, Date.now(), (v) => checkInteger("now", v, 0));
      const limit = optional(o.limit, 1000, (v) => checkInteger("limit", v, 1));
      const expired: JobRecord[] = [];
      for (const record of this.#records.values()) {
        if (expired.length >= limit) break;
        if (expireRecord(record, now)) {
          this.#trackFinished(record);
          expired.push(structuredClone(record));
        }
      }
      return expired;
    });
  }

  cleanup(options: CleanupOptions = {}): Promise<number> {
    return this.#do(() => {
      const o = checkObject("options", options);
      const before = optional(o.before, Date.now() - this.#o.retentionMs, (v) => checkInteger("before", v));
      let removed = 0;
      for (const id of [...this.#finished]) {
        const finishedAt = this.#records.get(id)?.finishedAt ?? 0;
        if (finishedAt >= before) continue;
        this.#remove(id);
        removed++;
      }
      for (const [key, entry] of this.#sticky) if (entry.at < before) this.#sticky.delete(key);
      for (const [key, bucket] of this.#buckets) if (bucket.updatedAt < before) this.#buckets.delete(key);
      return removed;
    });
  }

  /** Takes tokens from the bucket `key`, shared by every dispatcher using this store (one process). */
  takeTokens(key: string, limit: TokenBucketLimit, units: number): Promise<TokenTake> {
    return this.#do(() => {
      checkString("key", key, 1024);
      const checked = checkTokenBucketLimit("limit", limit);
      const now = Date.now();
      const bucket = this.#buckets.get(key) ?? fullBucket(checked, now);
      const take = takeFromBucket(bucket, checked, checkInteger("units", units, -checked.burst, checked.burst), now);
      touch(this.#buckets, key, bucket);
      return take;
    });
  }

  stickyWorker(key: string): Promise<string | undefined> {
    return this.#do(() => this.#sticky.get(checkString("key", key, 1024))?.workerId);
  }

  rememberSticky(key: string, workerId: string): Promise<void> {
    return this.#do(() => {
      touch(this.#sticky, checkString("key", key, 1024), { workerId: checkString("workerId", workerId), at: Date.now() });
    });
  }

  /** {@inheritDoc JobStore.finishedSummary} */
  finishedSummary(options: FinishedSummaryOptions): Promise<FinishedSummary> {
    return this.#do(() => {
      const checked = checkFinishedSummary(options);
      return summarizeFinished([...this.#finished].map((id) => this.#records.get(id) as JobRecord), checked);
    });
  }

  /** {@inheritDoc JobStore.appendLogs} */
  appendLogs(jobId: string, lines: readonly JobLogLine[], _options?: WaitOptions): Promise<void> {
    return this.#do(() => {
      const input = checkLogLines(jobId, lines);
      if (this.#o.maxLogLines === 0 || input.lines.length === 0 || !this.#records.has(input.jobId)) return;
      this.#logs.set(input.jobId, mergeLogLines(this.#logs.get(input.jobId) ?? [], input.lines, this.#o.maxLogLines));
    });
  }

  /** {@inheritDoc JobStore.logs} */
  logs(jobId: string, _options?: WaitOptions): Promise<JobLogLine[]> {
    return this.#do(() => (this.#logs.get(checkString("jobId", jobId, 256)) ?? []).map((line) => ({ ...line })));
  }

  /** {@inheritDoc ConsoleRecords.appendAudit} */
  appendAudit(entry: AuditEntry, options?: WaitOptions): Promise<void> {
    return this.#do(() => undefined).then(() => this.#console.appendAudit(entry, options));
  }

  /** {@inheritDoc ConsoleRecords.listAudit} */
  listAudit(options?: AuditListOptions): Promise<AuditEntry[]> {
    return this.#do(() => undefined).then(() => this.#console.listAudit(options));
  }

  /** {@inheritDoc ConsoleRecords.saveFilter} */
  saveFilter(filter: SavedFilter, options?: WaitOptions): Promise<void> {
    return this.#do(() => undefined).then(() => this.#console.saveFilter(filter, options));
  }

  /** {@inheritDoc ConsoleRecords.listFilters} */
  listFilters(options?: WaitOptions): Promise<SavedFilter[]> {
    return this.#do(() => undefined).then(() => this.#console.listFilters(options));
  }

  /** {@inheritDoc ConsoleRecords.deleteFilter} */
  deleteFilter(name: string, options?: WaitOptions): Promise<boolean> {
    return this.#do(() => undefined).then(() => this.#console.deleteFilter(name, options));
  }

  close(): Promise<void> {
    this.#closed = true;
    return resolved;
  }

  #do<T>(fn: () => T): Promise<T> {
    if (this.#closed) return Promise.reject(new OrchestratorError("queue_closed", "the job store is closed"));
    try {
      return Promise.resolve(fn());
    } catch (error) {
      return Promise.reject(error);
    }
  }
}
