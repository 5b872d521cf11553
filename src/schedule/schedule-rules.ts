import { Cron } from "croner";
import { invalidArgument } from "../errors.ts";
import { checkBoolean, checkInteger, checkObject, checkString, optional } from "../validate.ts";
import {
  MAX_CATCHUP_TICKS, MISSED_TICK_POLICIES, OVERLAP_POLICIES, type MissedTickPolicy, type OverlapPolicy, type PendingTick, type ScheduleJobTemplate,
  type ScheduleRecord, type ScheduleTiming,
} from "./types.ts";

/**
 * The rules of schedules, in one place: checking a definition, the ticks of a timing (croner for
 * cron, arithmetic for intervals), the deterministic job id of a tick, and which due ticks fire
 * under the missed-tick policy. Stores and the scheduler share them; none does I/O.
 * @internal
 */

/** Longest schedule id. */
export const MAX_SCHEDULE_ID_LENGTH = 200;
/** Shortest interval. */
export const MIN_EVERY_MS = 100;
/** Default of `catchupWindowMs`. */
export const DEFAULT_CATCHUP_WINDOW_MS = 60_000;
/** Most ticks walked through in one decision; a cron ticking faster over a longer outage skips the oldest. */
const MAX_TICKS_WALKED = 100_000;

/** Checks a schedule id: a non-empty string of at most {@link MAX_SCHEDULE_ID_LENGTH} characters, no control characters. */
export function checkScheduleId(field: string, value: unknown): string {
  const id = checkString(field, value, MAX_SCHEDULE_ID_LENGTH);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(id)) throw invalidArgument(field, "a string without control characters", value);
  return id;
}

/** The id of the job a schedule fires for one tick: the same in every process, so a tick fired twice is one job. */
export function scheduleJobId(scheduleId: string, tick: number): string {
  return `schedule:${scheduleId}:${tick}`;
}

/** Reads a time given as a `Date`, epoch milliseconds or an ISO 8601 string. */
export function checkTime(field: string, value: unknown): number {
  const ms = value instanceof Date ? value.getTime() : typeof value === "string" ? Date.parse(value) : value;
  if (typeof ms !== "number" || !Number.isSafeInteger(ms) || ms < 0) {
    throw invalidArgument(field, "a Date, epoch milliseconds or an ISO 8601 string, at or after 1970", value);
  }
  return ms;
}

/** Checks an IANA time zone name against the runtime's time zone data. */
export function checkTimezone(field: string, value: unknown): string {
  const zone = checkString(field, value, 64);
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: zone });
  } catch {
    throw invalidArgument(field, "an IANA time zone name (Europe/Berlin, America/New_York, UTC)", value);
  }
  return zone;
}

const crons = new Map<string, Cron>();

/** A paused croner instance for an expression and zone (cached: parsing costs more than a lookup). */
function cronOf(expression: string, timezone: string | undefined): Cron {
  const key = `${timezone ?? ""}\u0000${expression}`;
  let cron = crons.get(key);
  if (cron === undefined) {
    cron = new Cron(expression, { paused: true, ...(timezone === undefined ? {} : { timezone }) });
    if (crons.size > 1000) crons.clear();
    crons.set(key, cron);
  }
  return cron;
}

/**
 * Checks a timing: exactly one of `cron` (with an optional `timezone`) and `everyMs`, and
 * optional `startAt` / `endAt`.
 * @throws {OrchestratorError} `invalid_argument` naming the field (`cron`, `timezone`, `everyMs`, …).
 */
export function checkTiming(value: unknown, field = "timing"): ScheduleTiming {
  const o = checkObject(field, value);
  const prefix = field === "" ? "" : `${field}.`;
  const timing: ScheduleTiming = {};
  if (o.cron !== undefined && o.everyMs !== undefined) throw invalidArgument(`${prefix}everyMs`, "absent when `cron` is set (a schedule has one of cron and everyMs)", o.everyMs);
  if (o.cron === undefined && o.everyMs === undefined) throw invalidArgument(`${prefix}cron`, "a cron expression, or `everyMs`", undefined);
  if (o.cron !== undefined) {
    const expression = checkString(`${prefix}cron`, o.cron, 256);
    const timezone = optional(o.timezone, "UTC", (v) => checkTimezone(`${prefix}timezone`, v));
    try {
      cronOf(expression, timezone);
    } catch (cause) {
      throw invalidArgument(`${prefix}cron`, `a cron expression croner reads (${(cause as Error).message})`, o.cron);
    }
    timing.cron = expression;
    timing.timezone = timezone;
  } else {
    if (o.timezone !== undefined) throw invalidArgument(`${prefix}timezone`, "absent with `everyMs` (an interval has no time zone)", o.timezone);
    timing.everyMs = checkInteger(`${prefix}everyMs`, o.everyMs, MIN_EVERY_MS, 366 * 86_400_000);
  }
  if (o.startAt !== undefined) timing.startAt = checkTime(`${prefix}startAt`, o.startAt);
  if (o.endAt !== undefined) timing.endAt = checkTime(`${prefix}endAt`, o.endAt);
  if (timing.startAt !== undefined && timing.endAt !== undefined && timing.endAt < timing.startAt) {
    throw invalidArgument(`${prefix}endAt`, `a time at or after startAt (${new Date(timing.startAt).toISOString()})`, o.endAt);
  }
  return timing;
}

/** The first tick of `timing` strictly after `after`, or undefined when there is none (past `endAt`, or a cron that never matches). */
export function nextTickAfter(timing: ScheduleTiming, after: number): number | undefined {
  const from = timing.startAt !== undefined && after < timing.startAt ? timing.startAt - 1 : after;
  let tick: number | undefined;
  if (timing.everyMs !== undefined) {
    const anchor = timing.startAt ?? 0;
    tick = from < anchor ? anchor : anchor + (Math.floor((from - anchor) / timing.everyMs) + 1) * timing.everyMs;
  } else if (timing.cron !== undefined) {
    tick = cronOf(timing.cron, timing.timezone).nextRun(new Date(from))?.getTime();
  }
  if (tick === undefined || (timing.endAt !== undefined && tick > timing.endAt)) return undefined;
  return tick;
}

/** What one look at a schedule decides. */
export interface TickPlan {
  /** Ticks to fire, oldest first. */
  fire: number[];
  /** Ticks dropped as missed. */
  skipped: number;
  /** The new cursor (`now`). */
  cursor: number;
  /** The first tick after `now`, if any. */
  nextTick: number | undefined;
}

/**
 * Which due ticks of a schedule fire at `now`: every tick in (`cursor`, `now`], those within
 * `catchupWindowMs` of `now` because they are on time (late, but not missed), the older ones
 * as `missedTicks` says. A paused schedule fires nothing and keeps its cursor.
 */
export function planTicks(record: Pick<ScheduleRecord, "timing" | "cursor" | "paused" | "missedTicks" | "catchupWindowMs">, now: number): TickPlan {
  if (record.paused || now <= record.cursor) {
    return { fire: [], skipped: 0, cursor: record.cursor, nextTick: nextTickAfter(record.timing, Math.max(record.cursor, now)) };
  }
  const onTimeFrom = now - record.catchupWindowMs;
  const onTime: number[] = [];
  const missed: number[] = [];
  let missedCount = 0;
  // `skip` needs no missed tick but their count: walk them only as far as needed.
  let tick = nextTickAfter(record.timing, record.cursor);
  for (let walked = 0; tick !== undefined && tick <= now; walked++) {
    if (walked >= MAX_TICKS_WALKED) {
      // An outage far longer than the tick rate: jump to the on-time window.
      tick = nextTickAfter(record.timing, Math.max(tick, onTimeFrom - 1));
      walked = 0;
      continue;
    }
    if (tick >= onTimeFrom) onTime.push(tick);
    else {
      missedCount++;
      missed.push(tick);
      if (missed.length > MAX_CATCHUP_TICKS) missed.shift();
    }
    tick = nextTickAfter(record.timing, tick);
  }
  let fired: number[];
  if (record.missedTicks === "run_all") fired = missed;
  else if (record.missedTicks === "run_once") fired = missed.slice(-1);
  else fired = [];
  return {
    fire: [...fired, ...onTime],
    skipped: missedCount - fired.length,
    cursor: now,
    nextTick: tick,
  };
}

/** The time a scheduler must next look at a record: at once for pending ticks, at `nextTick` unless paused, else never. */
export function dueAtOf(record: Pick<ScheduleRecord, "pending" | "paused" | "nextTick">): number | undefined {
  if (record.pending.length > 0) return 0;
  return record.paused ? undefined : record.nextTick;
}

/** Checks a schedule's policies and window (from a definition or a stored record). */
export function checkPolicies(o: Record<string, unknown>, prefix = ""): { overlap: OverlapPolicy; missedTicks: MissedTickPolicy; catchupWindowMs: number } {
  return {
    overlap: optional(o.overlap, "skip" as OverlapPolicy, (v) => checkOneOf(`${prefix}overlap`, v, OVERLAP_POLICIES)),
    missedTicks: optional(o.missedTicks, "skip" as MissedTickPolicy, (v) => checkOneOf(`${prefix}missedTicks`, v, MISSED_TICK_POLICIES)),
    catchupWindowMs: optional(o.catchupWindowMs, DEFAULT_CATCHUP_WINDOW_MS, (v) => checkInteger(`${prefix}catchupWindowMs`, v, 1000, 366 * 86_400_000)),
  };
}

function checkOneOf<T extends string>(field: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value !== "string" || !(allowed as readonly string[]).includes(value)) throw invalidArgument(field, `one of ${allowed.map((a) => `"${a}"`).join(", ")}`, value);
  return value as T;
}

function checkPending(value: unknown): PendingTick[] {
  if (!Array.isArray(value)) throw invalidArgument("record.pending", "an array", value);
  return value.map((entry, i) => {
    const p = checkObject(`record.pending[${i}]`, entry);
    const pending: PendingTick = { tick: checkInteger(`record.pending[${i}].tick`, p.tick, 0) };
    if (p.cancels !== undefined) pending.cancels = checkString(`record.pending[${i}].cancels`, p.cancels, 1024);
    return pending;
  });
}

/**
 * Checks a record handed to a {@link ScheduleStore} and returns a copy holding only its known
 * fields, so every store keeps the same shape.
 * @throws {OrchestratorError} `invalid_argument` naming the field (`record.timing.cron`, …).
 */
export function checkScheduleRecord(value: unknown): ScheduleRecord {
  const o = checkObject("record", value);
  const job = checkObject("record.job", o.job);
  checkString("record.job.type", job.type, 256);
  const record: ScheduleRecord = {
    id: checkScheduleId("record.id", o.id),
    timing: checkTiming(o.timing, "record.timing"),
    job: structuredClone(job) as ScheduleJobTemplate,
    ...checkPolicies(o, "record."),
    paused: checkBoolean("record.paused", o.paused),
    cursor: checkInteger("record.cursor", o.cursor, 0),
    pending: checkPending(o.pending),
    fired: checkInteger("record.fired", o.fired, 0),
    skipped: checkInteger("record.skipped", o.skipped, 0),
    revision: checkInteger("record.revision", o.revision, 0),
    createdAt: checkInteger("record.createdAt", o.createdAt, 0),
    updatedAt: checkInteger("record.updatedAt", o.updatedAt, 0),
  };
  if (o.nextTick !== undefined) record.nextTick = checkInteger("record.nextTick", o.nextTick, 0);
  if (o.lastTick !== undefined) record.lastTick = checkInteger("record.lastTick", o.lastTick, 0);
  if (o.lastJobId !== undefined) record.lastJobId = checkString("record.lastJobId", o.lastJobId, 1024);
  return record;
}

/** Checks the page options of {@link ScheduleStore.list}. */
export function checkScheduleListOptions(value: unknown): { limit: number; cursor?: string; dueBefore?: number } {
  const o = checkObject("options", value ?? {});
  const options: { limit: number; cursor?: string; dueBefore?: number } = { limit: optional(o.limit, 100, (v) => checkInteger("limit", v, 1, 1000)) };
  if (o.cursor !== undefined) options.cursor = checkScheduleId("cursor", o.cursor);
  if (o.dueBefore !== undefined) options.dueBefore = checkInteger("dueBefore", o.dueBefore, 0);
  return options;
}

/** Whether a record belongs on a `list({ dueBefore })` page. */
export function isDueBy(record: ScheduleRecord, dueBefore: number | undefined): boolean {
  if (dueBefore === undefined) return true;
  const due = dueAtOf(record);
  return due !== undefined && due <= dueBefore;
}
