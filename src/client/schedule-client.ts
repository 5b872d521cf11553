import { invalidArgument, OrchestratorError } from "../errors.ts";
import type { JobQueue, WaitOptions } from "../queue/types.ts";
import { fireTick } from "../schedule/fire-tick.ts";
import type { JobStore } from "../store/types.ts";
import {
  checkPolicies, checkScheduleId, checkScheduleListOptions, checkTiming, DEFAULT_CATCHUP_WINDOW_MS, nextTickAfter,
} from "../schedule/schedule-rules.ts";
import type { MissedTickPolicy, OverlapPolicy, ScheduleJobTemplate, ScheduleRecord, ScheduleStore } from "../schedule/types.ts";
import { checkMetadata } from "../store/record-rules.ts";
import { checkBoolean, checkObject } from "../validate.ts";
import { envelopeFromSpec, type SpecDefaults } from "./job-spec.ts";
import { ScheduleHandle } from "./schedule-handle.ts";
import type { JobSpec, JobTypeMap } from "./types.ts";

/** The job each tick of a schedule fires: a `submit()` spec without what belongs to one job only. */
export type ScheduledJobSpec<Jobs extends JobTypeMap, K extends keyof Jobs & string> = Omit<JobSpec<Jobs, K>, "id" | "idempotencyKey" | "signal">;

/** When a schedule ticks, as {@link ScheduleOptions} and updates give it. */
export interface ScheduleTimingOptions {
  /**
   * A cron expression: 5 fields (`"0 2 * * *"`: 02:00 every day), or 6 with seconds first, read by
   * croner. A time that a daylight-saving change skips fires once, at the first valid time after
   * the gap; a time it repeats fires once, at its first occurrence. Exclusive with `everyMs`.
   */
  cron?: string;
  /**
   * The IANA time zone the cron expression is read in.
   * @default "UTC"
   */
  timezone?: string;
  /**
   * A tick every this many milliseconds (at least 100), aligned on `startAt`, or on the Unix
   * epoch without it (`everyMs: 3_600_000` ticks on the hour). Exclusive with `cron`.
   */
  everyMs?: number;
  /** No tick before this time (a `Date`, epoch ms or an ISO 8601 string). */
  startAt?: Date | number | string;
  /** No tick after this time. */
  endAt?: Date | number | string;
}

/** What {@link ScheduleClient.create} takes. */
export interface ScheduleOptions<Jobs extends JobTypeMap = JobTypeMap, K extends keyof Jobs & string = keyof Jobs & string> extends ScheduleTimingOptions {
  /** The schedule's id, unique in its store (at most 200 characters). Its jobs are `schedule:<id>:<tick epoch ms>`. */
  id: string;
  /** The job each tick fires; checked as `submit()` checks a spec, with the client's defaults. */
  job: ScheduledJobSpec<Jobs, K>;
  /**
   * What a tick does while the previous tick's job has not finished.
   * @default "skip"
   */
  overlap?: OverlapPolicy;
  /**
   * What happens to ticks missed (later than `catchupWindowMs`) while no scheduler ran.
   * @default "skip"
   */
  missedTicks?: MissedTickPolicy;
  /**
   * How late a tick may fire and still count as on time (a leader handing over, a slow store), in
   * milliseconds; later ticks are missed (see `missedTicks`). At least 1000.
   * @default 60000
   */
  catchupWindowMs?: number;
  /**
   * Created paused: no tick fires until `resume()`.
   * @default false
   */
  paused?: boolean;
}

/** What {@link ScheduleHandle.update} takes: the fields to change (the timing is replaced whole when any of its fields is given). */
export type ScheduleUpdate<Jobs extends JobTypeMap = JobTypeMap, K extends keyof Jobs & string = keyof Jobs & string> = Partial<Omit<ScheduleOptions<Jobs, K>, "id">>;

/** A schedule as its store keeps it: the definition and the scheduler's progress. */
export type ScheduleInfo = ScheduleRecord;

/** One page of {@link ScheduleClient.list}. */
export interface ScheduleListPage {
  schedules: ScheduleInfo[];
  /** Pass as `cursor` for the next page; absent on the last page. */
  nextCursor?: string;
}

const TIMING_FIELDS = ["cron", "timezone", "everyMs", "startAt", "endAt"] as const;
/** Spec fields that belong to one job, never to a template. */
const NOT_IN_TEMPLATE = ["id", "idempotencyKey", "signal", "runAt", "delayMs"] as const;

/** The link from a {@link ScheduleHandle} to its client. @internal */
export interface ScheduleLink {
  readonly store: ScheduleStore;
  /** Creates and queues one tick's job (`trigger()`), when the client has a job store. */
  readonly fire: ((record: ScheduleRecord, tick: number) => Promise<unknown>) | undefined;
  /** Builds the record that replaces `current` with `patch` applied (checked). */
  apply(current: ScheduleRecord, patch: Record<string, unknown>, now: number): ScheduleRecord;
}

/**
 * Creates and finds recurring schedules: `client.schedules` of a {@link JobClient} with a
 * `schedules` store. The ticks themselves are fired by a `Scheduler` running in the
 * orchestrators; this only writes and reads definitions, so it works from any process.
 *
 * @example
 * ```ts
 * const nightly = await client.schedules.create({
 *   id: "nightly-build", cron: "0 2 * * *", timezone: "Europe/Berlin",
 *   job: { type: "build", payload: { ref: "main" } },
 * });
 * await nightly.pause();
 * ```
 */
export class ScheduleClient<Jobs extends JobTypeMap = JobTypeMap> {
  readonly #store: ScheduleStore;
  readonly #defaults: SpecDefaults;
  readonly #link: ScheduleLink;

  /** @internal */
  constructor(store: ScheduleStore, defaults: SpecDefaults, jobs: { queue: JobQueue; store: JobStore | undefined }) {
    this.#store = store;
    this.#defaults = defaults;
    const jobStore = jobs.store;
    this.#link = {
      store,
      apply: (current, patch, now) => this.#apply(current, patch, now),
      fire: jobStore === undefined ? undefined : (record, tick) => fireTick(record, tick, jobs.queue, jobStore),
    };
  }

  /**
   * Creates a schedule; its first tick is the first after now (and after `startAt`).
   * @throws {OrchestratorError} `invalid_argument` naming the field (`cron`, `timezone`,
   * `everyMs` with `cron`, `job.payload`, …); `precondition_failed` (`details.reason`
   * `"already_exists"`) when the id is taken (use `upsert()` to replace it); what the store
   * rejects with.
   */
  async create<K extends keyof Jobs & string>(options: ScheduleOptions<Jobs, K>, waitOptions: WaitOptions = {}): Promise<ScheduleHandle> {
    const record = this.#newRecord(options, Date.now());
    const { created } = await this.#store.create(record, waitOptions);
    if (!created) {
      throw new OrchestratorError("precondition_failed", `a schedule with id "${record.id}" exists already (update it, or use upsert())`, {
        details: { reason: "already_exists", scheduleId: record.id },
      });
    }
    return new ScheduleHandle(record.id, this.#link);
  }

  /**
   * Creates the schedule, or replaces the definition of the one with its id (BullMQ's
   * `upsertJobScheduler`): its progress is kept, and a changed timing counts from now.
   * @throws {OrchestratorError} as {@link ScheduleClient.create}.
   */
  async upsert<K extends keyof Jobs & string>(options: ScheduleOptions<Jobs, K>, waitOptions: WaitOptions = {}): Promise<ScheduleHandle> {
    const record = this.#newRecord(options, Date.now());
    const { created } = await this.#store.create(record, waitOptions);
    const handle = new ScheduleHandle(record.id, this.#link);
    if (!created) {
      const { id: _id, ...patch } = options as unknown as Record<string, unknown>;
      await handle.update({ paused: false, overlap: "skip", missedTicks: "skip", catchupWindowMs: DEFAULT_CATCHUP_WINDOW_MS, ...patch } as ScheduleUpdate, waitOptions);
    }
    return handle;
  }

  /**
   * The handle of schedule `id` (Temporal's `getHandle`): no I/O; its methods reject with
   * `not_found` when there is no such schedule.
   * @throws {OrchestratorError} `invalid_argument` for a bad id.
   */
  getHandle(id: string): ScheduleHandle {
    return new ScheduleHandle(checkScheduleId("id", id), this.#link);
  }

  /**
   * One page of schedules, by id.
   * @throws {OrchestratorError} `invalid_argument` for bad options; what the store rejects with.
   */
  async list(options: { limit?: number; cursor?: string } & WaitOptions = {}): Promise<ScheduleListPage> {
    const o = checkScheduleListOptions(options);
    const page = await this.#store.list({ ...options, limit: o.limit });
    return page.nextCursor === undefined ? { schedules: page.records } : { schedules: page.records, nextCursor: page.nextCursor };
  }

  #newRecord(options: unknown, now: number): ScheduleRecord {
    const o = checkObject("options", options);
    const id = checkScheduleId("id", o.id);
    const base: ScheduleRecord = {
      id, timing: {}, job: { type: "", payload: null }, overlap: "skip", missedTicks: "skip", catchupWindowMs: 0, paused: false,
      cursor: now, pending: [], fired: 0, skipped: 0, revision: 1, createdAt: now, updatedAt: now,
    };
    const { id: _id, ...patch } = o;
    if (patch.job === undefined) throw invalidArgument("job", "the job each tick fires ({ type, payload, … })", undefined);
    return this.#apply(base, { overlap: "skip", missedTicks: "skip", paused: false, ...patch }, now);
  }

  /** `current` with `patch` applied and checked; a new timing or a resume counts from `now`. */
  #apply(current: ScheduleRecord, patch: Record<string, unknown>, now: number): ScheduleRecord {
    for (const key of Object.keys(patch)) {
      if (!KNOWN_FIELDS.has(key)) throw invalidArgument(key, `one of the schedule's fields (${[...KNOWN_FIELDS].join(", ")})`, patch[key]);
    }
    const next: ScheduleRecord = structuredClone(current);
    const timingGiven = current.timing.cron === undefined && current.timing.everyMs === undefined ? true : TIMING_FIELDS.some((field) => patch[field] !== undefined);
    if (timingGiven) next.timing = checkTiming(Object.fromEntries(TIMING_FIELDS.map((f) => [f, patch[f]])), "");
    if (patch.job !== undefined) next.job = this.#template(patch.job);
    Object.assign(next, checkPolicies({ overlap: current.overlap, missedTicks: current.missedTicks, catchupWindowMs: current.catchupWindowMs || undefined, ...definedOf(patch) }));
    const resumed = current.paused && patch.paused === false;
    if (patch.paused !== undefined) next.paused = checkBoolean("paused", patch.paused);
    // A new timing or a resume counts from now: no tick of the old timing, or of the pause, fires late.
    if (timingGiven || resumed) next.cursor = Math.max(current.cursor, now);
    const tick = nextTickAfter(next.timing, next.cursor);
    if (tick === undefined) delete next.nextTick;
    else next.nextTick = tick;
    next.updatedAt = now;
    return next;
  }

  /** Checks a job spec as `submit()` does and keeps its envelope fields as the template. */
  #template(value: unknown): ScheduleJobTemplate {
    const spec = checkObject("job", value);
    for (const field of NOT_IN_TEMPLATE) {
      if (spec[field] !== undefined) throw invalidArgument(`job.${field}`, "absent: each tick's job gets its own (the id is schedule:<id>:<tick>)", spec[field]);
    }
    let envelope;
    try {
      ({ envelope } = envelopeFromSpec(spec, this.#defaults));
    } catch (error) {
      throw prefixed(error, "job");
    }
    const { v: _v, id: _id, attempt: _attempt, createdAt: _createdAt, ...fields } = envelope;
    const template: ScheduleJobTemplate = { ...fields };
    if (spec.metadata !== undefined) template.metadata = checkMetadata("job.metadata", spec.metadata);
    return template;
  }
}

const KNOWN_FIELDS: ReadonlySet<string> = new Set([...TIMING_FIELDS, "job", "overlap", "missedTicks", "catchupWindowMs", "paused"]);

function definedOf(patch: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of ["overlap", "missedTicks", "catchupWindowMs"]) if (patch[key] !== undefined) out[key] = patch[key];
  return out;
}

/** The same `invalid_argument`, its field named under `prefix` (`payload` → `job.payload`). */
function prefixed(error: unknown, prefix: string): unknown {
  if (!(error instanceof OrchestratorError) || error.code !== "invalid_argument" || typeof error.details.field !== "string") return error;
  const field = error.details.field;
  const suggestion = typeof error.details.suggestion === "string" ? error.details.suggestion : undefined;
  let message = error.rawMessage.replace(`\`${field}\``, `\`${prefix}.${field}\``);
  // The suggested field is under the prefix too (`job.priorty`: did you mean `job.priority`?).
  if (suggestion !== undefined) message = message.replace(`\`${suggestion}\``, `\`${prefix}.${suggestion}\``);
  return new OrchestratorError("invalid_argument", message, {
    cause: error, details: { ...error.details, field: `${prefix}.${field}`, ...(suggestion === undefined ? {} : { suggestion: `${prefix}.${suggestion}` }) },
  });
}
