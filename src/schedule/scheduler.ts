import { EventEmitter } from "eventemitter3";
import { OrchestratorError } from "../errors.ts";
import { emitSafely, reportError, reportListenerError } from "../events.ts";
import type { Candidacy, LeaderTerm, Leadership } from "../queue/leadership.ts";
import type { JobEvents, JobQueue } from "../queue/types.ts";
import { FINAL_STATES, type JobStore } from "../store/types.ts";
import type { Logger } from "../telemetry/logger.ts";
import { resolveLogger } from "../telemetry/logger.ts";
import { MAX_TIMER_MS } from "../timers.ts";
import { checkFunction, checkInteger, checkObject, checkString, optional } from "../validate.ts";
import { fireTick } from "./fire-tick.ts";
import { dueAtOf, planTicks, scheduleJobId } from "./schedule-rules.ts";
import type { PendingTick, ScheduleRecord, ScheduleStore } from "./types.ts";

/** Options of {@link Scheduler}. */
export interface SchedulerOptions {
  /** Where fired jobs go. */
  queue: JobQueue;
  /** Where `cancel_previous` sends its cancel commands. */
  events: JobEvents;
  /** The job records: a tick's job is created there first (create-if-absent on its deterministic id). */
  store: JobStore;
  /** Where the schedules live (`MemoryScheduleStore`, `PostgresScheduleStore`). */
  schedules: ScheduleStore;
  /**
   * The election that makes one scheduler at a time fire ticks: `AmqpLeadership` across
   * processes on RabbitMQ, `MemoryLeadership` in one process.
   */
  leadership: Leadership;
  /**
   * The election's name; schedulers of one deployment share it.
   * @default "schedules"
   */
  name?: string;
  /**
   * How often the leader reads the schedule store for schedules created or changed elsewhere, in
   * milliseconds. A tick already known fires at its time; a schedule created or resumed in
   * another process is seen within this.
   * @default 1000
   */
  refreshIntervalMs?: number;
  /**
   * Where the scheduler's records go (pino-shaped).
   * @default none
   */
  logger?: Logger;
}

/** Events of {@link Scheduler}; each carries one payload object. */
export interface SchedulerEvents {
  /** This scheduler became the leader: it fires ticks until `following`. */
  leading: [{ since: number }];
  /** This scheduler stopped leading (lost the election's lease, or closed). */
  following: [{ reason: OrchestratorError }];
  /** A tick's job was created and queued. `lateMs`: how long after the tick. */
  tickFired: [{ scheduleId: string; tick: number; jobId: string; lateMs: number }];
  /** Ticks that fire nothing: missed beyond the catch-up window, or overlapping a job still running. */
  ticksSkipped: [{ scheduleId: string; count: number; reason: "missed" | "overlap" }];
  /** Something failed that no call can report (a store or the queue unavailable); the scheduler tries again. */
  error: [{ error: OrchestratorError }];
}

/** Longest wait between two looks at the store while leading, even with nothing due. */
const MAX_SLEEP_MS = 60_000;

/**
 * Fires the ticks of recurring schedules, inside orchestrator processes: run one in each (or
 * in some); the {@link Leadership} election lets one lead at a time and hands over when it dies.
 * Schedules are created and changed through `client.schedules` (any process); the scheduler
 * reads them from the {@link ScheduleStore}.
 *
 * Each tick fires exactly once, whichever scheduler leads and whichever dies:
 * 1. The leader decides what a due tick does (fire, or skip for overlap or as missed) and writes
 *    the decision to the schedule store by compare-and-set, the ticks to fire as `pending`
 *    (an outbox): two leaders of one instant cannot both decide a tick.
 * 2. For each pending tick it creates the job's record with the id `schedule:<id>:<tick>`
 *    (create-if-absent), queues the job, then clears the tick from `pending`. A leader that dies
 *    in between leaves the tick pending, and the next one queues it again.
 * 3. A tick queued twice that way is one job twice on the queue: the dispatcher starts a
 *    schedule's job only through an exclusive start in the job store, so it runs once.
 *
 * @example
 * ```ts
 * const scheduler = new Scheduler({ queue, events, store, schedules, leadership: new AmqpLeadership({ connection }) });
 * await scheduler.start();
 * …
 * await scheduler.close();
 * ```
 */
export class Scheduler extends EventEmitter<SchedulerEvents> {
  readonly #queue: JobQueue;
  readonly #events: JobEvents;
  readonly #store: JobStore;
  readonly #schedules: ScheduleStore;
  readonly #leadership: Leadership;
  readonly #name: string;
  readonly #refreshMs: number;
  readonly #logger: Logger | undefined;
  #candidacy: Promise<Candidacy> | undefined;
  #leading: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #closed: Promise<void> | undefined;

  /** Checks the options; does no I/O. @throws {OrchestratorError} `invalid_argument` naming the first bad option. */
  constructor(options: SchedulerOptions) {
    super();
    const o = checkObject("options", options);
    checkFunction("queue.enqueue", checkObject("queue", o.queue).enqueue);
    checkFunction("events.cancel", checkObject("events", o.events).cancel);
    for (const method of ["create", "get"]) checkFunction(`store.${method}`, checkObject("store", o.store)[method]);
    for (const method of ["get", "list", "replace"]) checkFunction(`schedules.${method}`, checkObject("schedules", o.schedules)[method]);
    checkFunction("leadership.campaign", checkObject("leadership", o.leadership).campaign);
    this.#queue = o.queue as JobQueue;
    this.#events = o.events as JobEvents;
    this.#store = o.store as JobStore;
    this.#schedules = o.schedules as ScheduleStore;
    this.#leadership = o.leadership as Leadership;
    this.#name = optional(o.name, "schedules", (v) => checkString("name", v, 200));
    this.#refreshMs = optional(o.refreshIntervalMs, 1000, (v) => checkInteger("refreshIntervalMs", v, 10, MAX_SLEEP_MS));
    this.#logger = resolveLogger(o.logger);
  }

  /** Whether this scheduler leads now. */
  get leading(): boolean {
    return this.#leading !== undefined;
  }

  /**
   * Joins the election; resolves once joined (leading or not). Idempotent.
   * @throws {OrchestratorError} `queue_closed` after `close()`; what the election rejects with.
   */
  start(): Promise<void> {
    if (this.#closed !== undefined) return Promise.reject(new OrchestratorError("queue_closed", "the scheduler is closed"));
    this.#candidacy ??= this.#leadership.campaign(this.#name, (term) => this.#onTerm(term));
    this.#candidacy.catch(() => (this.#candidacy = undefined));
    return this.#candidacy.then(() => undefined);
  }

  /** Looks at the schedule store now rather than at the next refresh (a schedule just created in this process). */
  refresh(): void {
    this.#wake?.();
  }

  #onTerm(term: LeaderTerm): void {
    if (this.#closed !== undefined) return;
    const leading = this.#lead(term).finally(() => {
      if (this.#leading === leading) this.#leading = undefined;
      this.#emit("following", { reason: OrchestratorError.from(term.signal.reason ?? new OrchestratorError("unavailable", "leadership ended")) });
    });
    this.#leading = leading;
    this.#emit("leading", { since: term.since });
  }

  async #lead(term: LeaderTerm): Promise<void> {
    /** Jobs this term queued: a retried flush does not queue them again. */
    const queued = new Set<string>();
    while (!term.signal.aborted) {
      let wakeAt = Date.now() + this.#refreshMs;
      try {
        let cursor: string | undefined;
        do {
          const page = await this.#schedules.list({ dueBefore: wakeAt, limit: 1000, ...(cursor === undefined ? {} : { cursor }) });
          for (const found of page.records) {
            if (term.signal.aborted) return;
            let record: ScheduleRecord | undefined = found;
            if ((dueAtOf(found) ?? Infinity) <= Date.now()) record = await this.#process(found, term, queued);
            const due = record === undefined ? undefined : dueAtOf(record);
            if (due !== undefined) wakeAt = Math.min(wakeAt, due);
          }
          cursor = page.nextCursor;
        } while (cursor !== undefined);
      } catch (error) {
        this.#report(error, "reading the schedules");
      }
      if (queued.size > 10_000) queued.clear();
      await this.#sleep(Math.max(0, Math.min(wakeAt - Date.now(), MAX_SLEEP_MS)), term.signal);
    }
  }

  #sleep(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.#wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      timer.unref?.();
      signal.addEventListener("abort", done, { once: true });
      this.#wake = done;
    });
  }

  /**
   * Brings one schedule up to date: fires its pending ticks, then decides its due ticks and
   * fires those. Resolves with the record as stored (undefined when deleted).
   */
  async #process(start: ScheduleRecord, term: LeaderTerm, queued: Set<string>): Promise<ScheduleRecord | undefined> {
    let record = start;
    // A few rounds: a conflict (a client changed the schedule meanwhile) re-reads and decides again.
    for (let round = 0; round < 5 && !term.signal.aborted; round++) {
      try {
        if (record.pending.length > 0) {
          for (const pending of record.pending) await this.#fire(record, pending, queued);
          const written = await this.#schedules.replace({ ...record, pending: record.pending.filter((p) => !queued.has(scheduleJobId(record.id, p.tick))), updatedAt: Date.now() });
          if (written.status === "not_found") return undefined;
          record = written.record;
          continue;
        }
        const decided = await this.#decide(record);
        if (decided === undefined) return record;
        const written = await this.#schedules.replace(decided.next);
        if (written.status === "not_found") return undefined;
        record = written.record;
        if (written.status === "applied") {
          if (decided.missed > 0) this.#emit("ticksSkipped", { scheduleId: record.id, count: decided.missed, reason: "missed" });
          if (decided.overlapping > 0) this.#emit("ticksSkipped", { scheduleId: record.id, count: decided.overlapping, reason: "overlap" });
          if (record.pending.length === 0) return record;
        }
      } catch (error) {
        this.#report(error, `running schedule ${record.id}`);
        return record;
      }
    }
    return record;
  }

  /** What is due of a schedule without pending ticks: the record to write, or undefined when nothing changes. */
  async #decide(record: ScheduleRecord): Promise<{ next: ScheduleRecord; missed: number; overlapping: number } | undefined> {
    const now = Date.now();
    const plan = planTicks(record, now);
    // Nothing fires or drops: the cursor may lag behind, no tick lies between it and now.
    if (plan.fire.length === 0 && plan.skipped === 0 && plan.nextTick === record.nextTick) return undefined;
    let fire = plan.fire;
    let overlapping = 0;
    let cancels: string | undefined;
    if (fire.length > 0 && record.overlap !== "allow") {
      // Ticks firing together would overlap each other: only the latest fires.
      overlapping = fire.length - 1;
      fire = fire.slice(-1);
      const previous = record.lastJobId === undefined ? undefined : await this.#store.get(record.lastJobId);
      if (previous !== undefined && !FINAL_STATES.has(previous.state)) {
        if (record.overlap === "skip") {
          overlapping += fire.length;
          fire = [];
        } else {
          cancels = previous.id;
        }
      }
    }
    const pending: PendingTick[] = fire.map((tick, i) => (i === 0 && cancels !== undefined ? { tick, cancels } : { tick }));
    const last = fire.at(-1);
    const next: ScheduleRecord = {
      ...record,
      cursor: plan.cursor,
      pending,
      fired: record.fired + fire.length,
      skipped: record.skipped + plan.skipped + overlapping,
      updatedAt: now,
      ...(last === undefined ? {} : { lastTick: last, lastJobId: scheduleJobId(record.id, last) }),
    };
    if (plan.nextTick === undefined) delete next.nextTick;
    else next.nextTick = plan.nextTick;
    return { next, missed: plan.skipped, overlapping };
  }

  /** Creates a pending tick's job record (create-if-absent) and queues the job, unless it already runs or ran. */
  async #fire(record: ScheduleRecord, pending: PendingTick, queued: Set<string>): Promise<void> {
    const jobId = scheduleJobId(record.id, pending.tick);
    if (queued.has(jobId)) return;
    if (pending.cancels !== undefined) {
      await this.#events.cancel({ jobId: pending.cancels, reason: "requested", message: `schedule ${record.id}: the tick of ${new Date(pending.tick).toISOString()} replaces it`, at: Date.now() });
    }
    const now = Date.now();
    const fired = await fireTick(record, pending.tick, this.#queue, this.#store, now);
    queued.add(jobId);
    if (fired.queued) this.#emit("tickFired", { scheduleId: record.id, tick: pending.tick, jobId, lateMs: Math.max(0, now - pending.tick) });
  }

  #emit<K extends keyof SchedulerEvents>(event: K, ...args: SchedulerEvents[K]): void {
    emitSafely(this, (error) => reportListenerError(this, error, this.#logger), event, ...args);
  }

  #report(error: unknown, doing: string): void {
    const e = OrchestratorError.from(error);
    reportError(this, e, { source: `scheduler: ${doing}` }, "@blacktree/orchestrator", this.#logger);
  }

  /**
   * Leaves the election (another scheduler takes over at once) and waits for a tick being
   * fired. Idempotent.
   */
  close(): Promise<void> {
    this.#closed ??= this.#close();
    return this.#closed;
  }

  /** Same as `close()`, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #close(): Promise<void> {
    const candidacy = await this.#candidacy?.catch(() => undefined);
    await candidacy?.resign();
    this.#wake?.();
    await this.#leading;
  }
}
