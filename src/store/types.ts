import type { SerializedError } from "../errors.ts";
import type { JobScheduleLink } from "../job/envelope.ts";
import type { CancelReason, JobOutcome, JobState } from "../job/types.ts";
import type { WaitOptions } from "../queue/types.ts";
import type { TokenBucketLimit, TokenTake } from "./token-bucket.ts";

/**
 * The state of a job as its record keeps it: the {@link JobState} every handle shows (`failed`
 * with `deadLetter` set while the job sits in the dead-letter queue and can be redriven).
 */
export type JobRecordState = JobState;

/** The final record states. */
export const FINAL_STATES: ReadonlySet<JobRecordState> = new Set<JobRecordState>(["completed", "failed", "cancelled"]);

/** How one attempt ended: its job's final outcome, `retrying` (it failed and the job goes on), or `lost`. */
export type JobAttemptOutcome = "completed" | "failed" | "cancelled" | "retrying" | "lost";

/** One attempt of a job, as its record keeps it. */
export interface JobAttemptRecord {
  /** 1-based attempt number within its round (a redrive starts a new round at 1). */
  number: number;
  /** How many redrives came before this attempt (0 for the job's first round). */
  round: number;
  /** The fencing token this attempt wrote with; grows across attempts and redrives. */
  fencingToken: number;
  /** The worker that ran it. */
  workerId?: string;
  /** The dispatcher that held it. */
  dispatcherId?: string;
  /** Epoch ms when it started on its worker. */
  startedAt?: number;
  /** Epoch ms when it ended. */
  endedAt?: number;
  /** How it ended; absent while it runs. */
  outcome?: JobAttemptOutcome;
  /** The copy of the job it started from (`StartedTransition.copy`), for an exclusive start. */
  copy?: string;
  /** Why it failed (`failed`, `retrying`, `lost`). */
  error?: SerializedError;
}

/** The latest progress a job reported. */
export interface JobProgressRecord {
  progress: number;
  message?: string;
  /** Epoch ms. */
  at: number;
  /** The attempt that reported it. */
  attempt: number;
}

/**
 * One job's record: what any process can learn about it through a {@link JobStore}. Times are
 * epoch milliseconds.
 */
export interface JobRecord {
  id: string;
  type: string;
  state: JobRecordState;
  /**
   * The payload as submitted, after the store's `redactPayload` hook; `undefined` with
   * `payloadOmitted` when its JSON was larger than the store's `maxPayloadBytes` (the worker
   * still gets the whole payload from the queue).
   */
  payload?: unknown;
  /** True when the payload was too large to keep. */
  payloadOmitted?: boolean;
  /**
   * True when the store's `redactPayload` hook changed the payload: `payload` is the redacted
   * copy, not the job's input, so it must not be submitted again as the job (the console's retry
   * refuses such a job unless its original message is still in the dead-letter queue).
   */
  payloadRedacted?: boolean;
  /** Free-form string pairs set at submit; `list()` filters on them. */
  metadata: Record<string, string>;
  idempotencyKey?: string;
  labels?: Record<string, string>;
  maxAttempts: number;
  timeoutMs: number;
  /** Longest wait between submit (or the due time, or a redrive) and the start of an attempt. */
  startTimeoutMs: number;
  /**
   * Epoch ms the job is due (`runAt` / `delayMs` at submit); absent for a job due at once. While
   * it has not come the record is `scheduled`.
   */
  runAt?: number;
  /** Priority level, 1 (highest) to 5; absent for the default, 3. */
  priority?: number;
  /** Every attempt, oldest first, across redrives. */
  attempts: JobAttemptRecord[];
  /** The latest progress reported. */
  progress?: JobProgressRecord;
  /** The result, for `completed`. */
  result?: unknown;
  /** The error, for `failed` (and the last failed attempt's while `retrying`). */
  error?: SerializedError;
  /** Why, for `cancelled`. */
  cancel?: { reason: CancelReason; message?: string };
  /** Why no worker can run it, for `unschedulable`; what it waits for, for `queued` (its concurrency key). */
  reason?: string;
  /** Set while the job sits in the dead-letter queue. */
  deadLetter?: { reason: string; at: number };
  /** How many times it was redriven from the dead-letter queue. */
  redrives: number;
  /**
   * Epoch ms by which an attempt must start, or the job fails with `deadline_exceeded`
   * (`details.reason` `"start_timeout"`): set at submit (from the due time for a delayed job)
   * and at each redrive, cleared once an attempt of the round starts.
   */
  startBy?: number;
  /** The highest fencing token recorded; transitions with a lower one are refused. */
  fencingToken: number;
  /** The W3C trace id the job was submitted under (from its envelope's `traceparent`). */
  traceId?: string;
  createdAt: number;
  updatedAt: number;
  /** When it reached its final state. */
  finishedAt?: number;
  /** The schedule that fired it, and for which tick. */
  schedule?: JobScheduleLink;
}

/** What {@link JobStore.create} takes: a new job's record before anything happened to it. */
export interface NewJobRecord {
  id: string;
  type: string;
  payload: unknown;
  metadata?: Record<string, string>;
  idempotencyKey?: string;
  labels?: Record<string, string>;
  maxAttempts: number;
  timeoutMs: number;
  startTimeoutMs: number;
  /** The W3C trace id of the submit (32 hex digits). */
  traceId?: string;
  /** @default now */
  createdAt?: number;
  /** Epoch ms the job is due; a time after `createdAt` makes the record `scheduled`. @default due at once */
  runAt?: number;
  /** The schedule that fired it, and for which tick. */
  schedule?: JobScheduleLink;
  /** Priority level, 1 (highest) to 5. @default 3 (not stored) */
  priority?: number;
}

interface TransitionBase {
  jobId: string;
  /**
   * The writer's fencing token: a transition whose token is lower than the record's is refused
   * (`stale`), so an older attempt never overwrites what a newer one recorded.
   */
  fencingToken: number;
  /** Epoch ms when it happened. */
  at: number;
}

/** An attempt started on a worker: state `running`, a new attempt entry. */
export interface StartedTransition extends TransitionBase {
  kind: "started";
  attempt: number;
  workerId: string;
  dispatcherId?: string;
  /**
   * Which copy of the job on the queue starts (a schedule's job: `envelope.schedule.copy`). When
   * set, the start is exclusive: refused (`stale`) when an attempt of the round already started
   * from another copy, so two copies of one job (a tick queued again by a new leader) run once.
   * The same copy starts as usual: deferred, redelivered, retried or recorded twice.
   */
  copy?: string;
}

/** Progress of the running attempt. */
export interface ProgressTransition extends TransitionBase {
  kind: "progress";
  attempt: number;
  progress: number;
  message?: string;
}

/** An attempt failed and another follows: state `retrying`. */
export interface RetryingTransition extends TransitionBase {
  kind: "retrying";
  attempt: number;
  error: SerializedError;
  /** `lost` when the worker or the orchestrator died under it. */
  lost?: boolean;
  workerId?: string;
  dispatcherId?: string;
}

/** Held, but no healthy worker can run it: state `unschedulable`. */
export interface UnschedulableTransition extends TransitionBase {
  kind: "unschedulable";
  reason: string;
}

/**
 * Back to `queued` without using an attempt (a dispatcher gave it back, or a worker appeared), or
 * a `scheduled` job that came due reached a dispatcher, or waiting in the queue for a reason:
 * `reason` (for example its concurrency key is at its limit).
 */
export interface QueuedTransition extends TransitionBase {
  kind: "queued";
  /** Why it waits, shown on the record while it is `queued`. */
  reason?: string;
}

/** The job ended: its outcome as published; `deadLetter` when it went to the dead-letter queue. */
export interface FinishedTransition extends TransitionBase {
  kind: "finished";
  attempt: number;
  outcome: JobOutcome;
  /** Whether an attempt ran (false for a job failed or cancelled before it started). */
  started: boolean;
  workerId?: string;
  dispatcherId?: string;
  deadLetter?: string;
}

/**
 * A dead-lettered job goes back to the queue: state `queued`, a new round of attempts starting
 * at 1, `redrives` + 1, the history kept. Its token must be higher than the record's.
 */
export interface RedrivenTransition extends TransitionBase {
  kind: "redriven";
}

/** A change of one job's record, as the dispatcher (or an operator's redrive) records it. */
export type JobTransition =
  | StartedTransition
  | ProgressTransition
  | RetryingTransition
  | UnschedulableTransition
  | QueuedTransition
  | FinishedTransition
  | RedrivenTransition;

/**
 * What became of a transition:
 * - `applied`: recorded;
 * - `stale`: refused, the record holds a higher fencing token (a newer attempt wrote it), or an
 *   start with a `copy` found an attempt started from another copy;
 * - `finished`: refused, the job already reached its final state (only `redriven` leaves it), or a
 *   `redriven` of a job that is not dead-lettered;
 * - `not_found`: no record with that id.
 */
export type TransitionStatus = "applied" | "stale" | "finished" | "not_found";

/**
 * The answer to {@link JobStore.record}: the status, and for `stale` and `finished` the record as
 * it now is (so the writer can tell what a newer attempt or an earlier life of itself recorded).
 */
export interface TransitionResult {
  status: TransitionStatus;
  record?: JobRecord;
}

/** The answer to {@link JobStore.create}. */
export interface CreateResult {
  /** False when a record with the same id or idempotency key existed; `record` is that one. */
  created: boolean;
  record: JobRecord;
}

/** Which records {@link JobStore.list} returns; every field narrows (AND). */
export interface JobFilter {
  /** One state or any of several. */
  state?: JobRecordState | readonly JobRecordState[];
  type?: string;
  /** Created at or after, epoch ms. */
  createdAfter?: number;
  /** Created before, epoch ms. */
  createdBefore?: number;
  /** Ids starting with this. */
  idPrefix?: string;
  /** Every pair must be in the record's metadata. */
  metadata?: Record<string, string>;
  /** Only records in (true) or out of (false) the dead-letter queue. */
  deadLettered?: boolean;
  /** Only the jobs fired by this schedule (its id). */
  schedule?: string;
  /**
   * Text the record holds, case-insensitive: in its id, type, metadata values or payload (as
   * JSON text). A scan of the records the other fields leave, so narrow with them on big stores.
   */
  search?: string;
}

/** Options of {@link JobStore.list}. */
export interface ListOptions extends JobFilter, WaitOptions {
  /**
   * Most records per page (1 to 1000).
   * @default 100
   */
  limit?: number;
  /** `nextCursor` of the previous page. */
  cursor?: string;
}

/** One page of {@link JobStore.list}, newest first (by `createdAt`, then id). */
export interface JobPage {
  records: JobRecord[];
  /** Pass as `cursor` for the next page; absent on the last page. */
  nextCursor?: string;
}

/** How many records are in each state (every state present, 0 when none). */
export type JobCounts = Record<JobRecordState, number>;

/** Options of {@link JobStore.cleanup}. */
export interface CleanupOptions {
  /** Removes finished records whose `finishedAt` is before this. @default now - the store's `retentionMs` */
  before?: number;
  /** Records removed per batch. @default 1000 */
  batchSize?: number;
  signal?: AbortSignal;
}

/** Options of {@link JobStore.expireUnstarted}. */
export interface ExpireOptions {
  /** @default Date.now() */
  now?: number;
  /** Most records expired in one call. @default 1000 */
  limit?: number;
}

/**
 * The record of every job: one {@link JobRecord} per job id, shared by every process that opens
 * the same store (`MemoryJobStore` for one process, `PostgresJobStore` for many).
 *
 * Semantics every implementation keeps, and `describeJobStoreContract()` checks:
 * - `create` is atomic across every client of the store: of two creates with one idempotency
 *   key (or one id), exactly one creates; the other gets the existing record.
 * - `record` is fenced: a transition whose `fencingToken` is lower than the record's is refused,
 *   so a stale attempt never overwrites what a newer one wrote; a final record only leaves its
 *   state by `redriven`.
 * - Records returned are copies: changing one changes nothing stored.
 * - Operations reject with `OrchestratorError`: `invalid_argument` for bad input (naming the
 *   field), `unavailable` when the backing service cannot be reached, `resource_exhausted` when a
 *   bounded store is full of unfinished jobs, `queue_closed` after `close()`.
 */
export interface JobStore {
  /** Creates a job's record, or returns the one that has its id or idempotency key. */
  create(job: NewJobRecord, options?: WaitOptions): Promise<CreateResult>;
  /**
   * Records one transition (see {@link TransitionStatus}); fenced. Recording the same transition
   * twice leaves the record as once.
   */
  record(transition: JobTransition, options?: WaitOptions): Promise<TransitionResult>;
  /** The record of `id`, or undefined. */
  get(id: string, options?: WaitOptions): Promise<JobRecord | undefined>;
  /** The record created with `key`, or undefined. */
  getByIdempotencyKey(key: string, options?: WaitOptions): Promise<JobRecord | undefined>;
  /** Records matching the filter, newest first, one page at a time. */
  list(options?: ListOptions): Promise<JobPage>;
  /** Records per state (of one type when given). */
  counts(filter?: { type?: string }, options?: WaitOptions): Promise<JobCounts>;
  /**
   * Fails (`deadline_exceeded`, `details.reason` `"start_timeout"`) the `scheduled`, `queued` and
   * `unschedulable` records whose start timeout has passed, and returns them as they now are,
   * so the caller can publish their outcome. A dispatcher that later receives one of these jobs
   * finds its record final and does not run it.
   */
  expireUnstarted(options?: ExpireOptions): Promise<JobRecord[]>;
  /** Removes finished records older than the retention, in batches; resolves with how many. */
  cleanup(options?: CleanupOptions): Promise<number>;
  /** Releases what the store holds (connections). Idempotent. */
  close(): Promise<void>;
  /**
   * Optional: takes `units` tokens from the token bucket `key` (a negative `units` gives tokens
   * back), atomically for every client of the store, so a rate limit holds across dispatchers. A
   * bucket first seen is full. `limit` is the caller's: every client should pass the same for
   * one key. Stores without it cannot share rate limits (dispatchers then refuse `shared` limits).
   */
  takeTokens?(key: string, limit: TokenBucketLimit, units: number, options?: WaitOptions): Promise<TokenTake>;
  /**
   * Optional: keeps log lines a job's handler wrote (the dispatcher running the attempt appends
   * them as they come, in batches), so they can be read after the fact (`logs()`). At most the
   * store's `maxLogLines` latest per job are kept, each cut to 4000 characters; a line already
   * kept (same `fencingToken` and `seq`) is not added twice, so a batch written again is harmless.
   * Lines of a job without a record are dropped; a record's lines go with it (`cleanup()`).
   * Best effort for its callers: the job never waits on it.
   */
  appendLogs?(jobId: string, lines: readonly JobLogLine[], options?: WaitOptions): Promise<void>;
  /** Optional: the log lines kept for a job, oldest first (by run, then as written); `[]` when none. */
  logs?(jobId: string, options?: WaitOptions): Promise<JobLogLine[]>;
  /**
   * Optional: what finished lately, from the records: how many reached each final state per
   * `bucketMs` since `since` (by `finishedAt`), and the run time (its last attempt's end minus
   * start) and wait (due time to first start) of those finished since `runTimeSince`. For dashboards (the console's overview): it
   * reads every record finished in the window, so keep the window to minutes.
   */
  finishedSummary?(options: FinishedSummaryOptions): Promise<FinishedSummary>;
  /** Optional: the worker that started the latest job of sticky key `key`, or undefined. */
  stickyWorker?(key: string, options?: WaitOptions): Promise<string | undefined>;
  /**
   * Optional: remembers that `workerId` started the latest job of sticky key `key`. Entries not
   * touched for the store's retention are removed by `cleanup()`.
   */
  rememberSticky?(key: string, workerId: string, options?: WaitOptions): Promise<void>;
}

/** Options of {@link JobStore.finishedSummary}. */
export interface FinishedSummaryOptions extends WaitOptions {
  /** Records finished at or after this epoch ms. */
  since: number;
  /** Width of each bucket in ms (1000 to 3600000); buckets start at multiples of it. */
  bucketMs: number;
  /** The run times cover the records finished at or after this. @default since */
  runTimeSince?: number;
  /**
   * Most records the run and wait times are read from: the newest finished at or after
   * `runTimeSince` (by `finishedAt`, then id), so the cost of a summary is bounded however
   * many jobs finish (1 to 1,000,000). The buckets count every record.
   * @default 10000
   */
  sampleLimit?: number;
}

/** The answer of {@link JobStore.finishedSummary}. */
export interface FinishedSummary {
  /** Records per bucket and final state, oldest first; buckets where none finished are left out. */
  buckets: Array<{ t: number; completed: number; failed: number; cancelled: number }>;
  /** Nearest-rank percentiles of the run times (ms); null when none. */
  runTime: { p50Ms: number | null; p95Ms: number | null; count: number };
  /**
   * Nearest-rank percentiles of how long the same jobs waited to start (ms): from their due time
   * (`runAt`, else `createdAt`) to their first attempt's start; null when none started.
   */
  waitTime: { p50Ms: number | null; p95Ms: number | null; count: number };
  /** True when more records finished since `runTimeSince` than `sampleLimit`: `runTime` and `waitTime` cover the newest `sampleLimit`. */
  capped: boolean;
}

/** One line a job's handler logged, as a job store keeps it ({@link JobStore.appendLogs}). */
export interface JobLogLine {
  /** Epoch ms. */
  at: number;
  attempt: number;
  /** The fencing token of the run that wrote it: with `seq`, names the line. */
  fencingToken: number;
  /** The line's place among those of its run, from 0. */
  seq: number;
  line: string;
  stream?: "stdout" | "stderr";
}

/** One line of an operator audit log (the console's): who did what, when, and how it went. */
export interface AuditEntry {
  /** Unique; entries with the same `at` are ordered by it. */
  id: string;
  /** Epoch ms. */
  at: number;
  who: string;
  /** What was asked: `cancel`, `retry`, `redrive`, `drain`, `undrain`, `submit`, `bulk`, `filters`. */
  action: string;
  /** The job, worker or filter acted on. */
  target?: string;
  /** The jobs a bulk action covered. */
  filter?: Record<string, unknown>;
  /** How many jobs a bulk action covered. */
  count?: number;
  outcome: "ok" | "denied" | "failed";
  /** The reason given, the error, or what was done. */
  detail?: string;
}

/** A named job filter an operator saved. */
export interface SavedFilter {
  name: string;
  filter: Record<string, unknown>;
  /** Epoch ms. */
  createdAt: number;
  createdBy: string;
}

/** Options of {@link ConsoleRecords.listAudit}. */
export interface AuditListOptions extends WaitOptions {
  /** Most entries, newest first (1 to 1000). @default 100 */
  limit?: number;
  /** Only entries before this epoch ms (the `at` of the last entry of the previous page). */
  before?: number;
}

/**
 * What an operator console keeps beside the job records: its audit log and saved filters.
 * Both job stores implement it (PostgreSQL in the store's schema, tables `console_audit` and
 * `console_filters`), so every console of one store shares them.
 */
export interface ConsoleRecords {
  /** Appends one entry. */
  appendAudit(entry: AuditEntry, options?: WaitOptions): Promise<void>;
  /** Entries newest first. */
  listAudit(options?: AuditListOptions): Promise<AuditEntry[]>;
  /** Saves a filter, replacing one of the same name. */
  saveFilter(filter: SavedFilter, options?: WaitOptions): Promise<void>;
  /** Every saved filter, by name. */
  listFilters(options?: WaitOptions): Promise<SavedFilter[]>;
  /** Deletes a filter; resolves with whether it existed. */
  deleteFilter(name: string, options?: WaitOptions): Promise<boolean>;
}
