import type { WaitOptions } from "../queue/types.ts";

/**
 * What a schedule does when its tick comes while the job of its previous tick has not finished
 * (queued, waiting for a worker, running or retrying):
 * - `skip`: this tick fires nothing (counted in `skipped`); Temporal's default;
 * - `allow`: this tick's job starts beside the previous one;
 * - `cancel_previous`: the previous job is cancelled (`reason` `"requested"`), then this tick's job fires.
 *
 * When several ticks fire at once (catching up), `skip` and `cancel_previous` fire only the
 * latest of them: the others would overlap it.
 */
export type OverlapPolicy = "skip" | "allow" | "cancel_previous";

/** Every {@link OverlapPolicy}, for validators. */
export const OVERLAP_POLICIES: readonly OverlapPolicy[] = ["skip", "allow", "cancel_previous"];

/**
 * What happens to ticks missed (later than `catchupWindowMs`) while no orchestrator ran a
 * scheduler, or its leader was down:
 * - `skip`: they fire nothing (counted in `skipped`); the schedule goes on with its next tick;
 * - `run_once`: one job fires for all of them, as the latest missed tick (Kubernetes CronJob, Celery beat);
 * - `run_all`: each fires, oldest first (at most the latest {@link MAX_CATCHUP_TICKS}).
 *
 * Ticks that fire late but within `catchupWindowMs` (a leader handing over) are not missed:
 * they fire under every policy.
 */
export type MissedTickPolicy = "skip" | "run_once" | "run_all";

/** Every {@link MissedTickPolicy}, for validators. */
export const MISSED_TICK_POLICIES: readonly MissedTickPolicy[] = ["skip", "run_once", "run_all"];

/** The most missed ticks `run_all` fires after one outage (the oldest beyond are skipped). */
export const MAX_CATCHUP_TICKS = 1000;

/** When a schedule ticks: a cron expression in a time zone, or a fixed interval. Times are epoch ms. */
export interface ScheduleTiming {
  /** A cron expression (5 fields, or 6 with seconds first), read by croner. Exclusive with `everyMs`. */
  cron?: string;
  /** The IANA time zone `cron` is read in (`Europe/Berlin`). @default "UTC" (set only with `cron`) */
  timezone?: string;
  /**
   * A tick every this many milliseconds, aligned on `startAt` (or on the Unix epoch without one,
   * so `everyMs: 60000` ticks on the minute). Exclusive with `cron`.
   */
  everyMs?: number;
  /** No tick before this time. */
  startAt?: number;
  /** No tick after this time; the schedule then has no next tick. */
  endAt?: number;
}

/**
 * The job each tick fires, as stored: the fields of a job envelope (type, payload, maxAttempts,
 * timeoutMs, labels, and every field a later version adds), checked by the same rules as a
 * `submit()` spec, and the record's `metadata`. The id and the schedule link are set per tick.
 */
export interface ScheduleJobTemplate {
  type: string;
  payload: unknown;
  /** Other envelope fields (maxAttempts, timeoutMs, startTimeoutMs, labels, …). */
  [field: string]: unknown;
  metadata?: Record<string, string>;
}

/** A tick decided and not yet confirmed on the queue: the scheduler's outbox entry. */
export interface PendingTick {
  /** The tick's time, epoch ms. */
  tick: number;
  /** The job to cancel first (overlap policy `cancel_previous`). */
  cancels?: string;
}

/**
 * One schedule as a {@link ScheduleStore} keeps it, visible to every process. The definition
 * (`timing`, `job`, policies, `paused`) is written by clients; the progress (`cursor`,
 * `nextTick`, `pending`, `last*`, counts) by the leading scheduler. Times are epoch ms.
 */
export interface ScheduleRecord {
  id: string;
  timing: ScheduleTiming;
  job: ScheduleJobTemplate;
  overlap: OverlapPolicy;
  missedTicks: MissedTickPolicy;
  /** How late a tick may fire and still count as on time. */
  catchupWindowMs: number;
  paused: boolean;
  /** Every tick up to this time has been dealt with (fired or skipped); later ones are to come. */
  cursor: number;
  /** The next tick after `cursor`, or undefined when the schedule has ended (`endAt`). */
  nextTick?: number;
  /** Ticks decided to fire whose job is not yet confirmed on the queue, oldest first. */
  pending: PendingTick[];
  /** The latest tick fired, and its job's id. */
  lastTick?: number;
  lastJobId?: string;
  /** Ticks fired, and ticks skipped (overlap, missed, ended), since the schedule was created. */
  fired: number;
  skipped: number;
  /** Grows by one with every write; {@link ScheduleStore.replace} compares it. */
  revision: number;
  createdAt: number;
  updatedAt: number;
}

/** The answer to {@link ScheduleStore.create}. */
export interface ScheduleCreateResult {
  /** False when a schedule with this id existed; `record` is that one. */
  created: boolean;
  record: ScheduleRecord;
}

/**
 * The answer to {@link ScheduleStore.replace}: `applied` with the record as now stored,
 * `conflict` with the record as another writer left it, or `not_found` (deleted).
 */
export type ScheduleReplaceResult =
  | { status: "applied"; record: ScheduleRecord }
  | { status: "conflict"; record: ScheduleRecord }
  | { status: "not_found" };

/** Options of {@link ScheduleStore.list}. */
export interface ScheduleListOptions extends WaitOptions {
  /**
   * Only schedules with something to do by this time: pending ticks, or not paused with a
   * `nextTick` at or before it.
   */
  dueBefore?: number;
  /**
   * Most schedules per page (1 to 1000).
   * @default 100
   */
  limit?: number;
  /** `nextCursor` of the previous page. */
  cursor?: string;
}

/** One page of {@link ScheduleStore.list}, by id. */
export interface SchedulePage {
  records: ScheduleRecord[];
  /** Pass as `cursor` for the next page; absent on the last page. */
  nextCursor?: string;
}

/**
 * Where schedules live, shared by every process that opens the same store: clients write the
 * definitions, the leading scheduler its progress. A store keeps records; the rules (ticks,
 * policies) live in the scheduler, so an implementation is storage only.
 *
 * Semantics every implementation keeps, and `describeScheduleStoreContract()` checks:
 * - `create` is create-if-absent and atomic across every client of the store;
 * - `replace` is a compare-and-set on `revision`: it writes only when the stored revision equals
 *   the given one, and stores the record with `revision + 1`; of two writers of one revision,
 *   exactly one wins;
 * - records returned are copies;
 * - operations reject with `OrchestratorError`: `invalid_argument` (naming the field),
 *   `unavailable`, `queue_closed` after `close()`.
 */
export interface ScheduleStore {
  /** Stores a new schedule (its `revision` as given, usually 1), or returns the one with its id. */
  create(record: ScheduleRecord, options?: WaitOptions): Promise<ScheduleCreateResult>;
  /** The schedule `id`, or undefined. */
  get(id: string, options?: WaitOptions): Promise<ScheduleRecord | undefined>;
  /** Schedules by id, one page at a time; only the due ones with `dueBefore`. */
  list(options?: ScheduleListOptions): Promise<SchedulePage>;
  /** Writes `record` if the stored one still has `record.revision` (see {@link ScheduleReplaceResult}). */
  replace(record: ScheduleRecord, options?: WaitOptions): Promise<ScheduleReplaceResult>;
  /** Removes the schedule; resolves true when it existed. Idempotent. */
  delete(id: string, options?: WaitOptions): Promise<boolean>;
  /** Releases what the store holds. Idempotent. */
  close(): Promise<void>;
}
