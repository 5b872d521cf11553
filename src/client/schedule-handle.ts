import { OrchestratorError } from "../errors.ts";
import type { WaitOptions } from "../queue/types.ts";
import { scheduleJobId } from "../schedule/schedule-rules.ts";
import type { ScheduleRecord } from "../schedule/types.ts";
import type { ScheduleInfo, ScheduleLink, ScheduleUpdate } from "./schedule-client.ts";

/** Most compare-and-set rounds one change tries before it gives up (`unavailable`). */
const MAX_ROUNDS = 20;

/**
 * One schedule, by id (modelled on Temporal's `ScheduleHandle`): cheap, holds no connection,
 * every method one read-modify-write of the schedule store (compare-and-set, retried when the
 * scheduler wrote in between). Changes take effect at the leading scheduler's next look (its
 * `refreshIntervalMs`).
 */
export class ScheduleHandle {
  /** The schedule's id. */
  readonly id: string;
  readonly #link: ScheduleLink;

  /** @internal */
  constructor(id: string, link: ScheduleLink) {
    this.id = id;
    this.#link = link;
  }

  /**
   * The schedule as stored: definition, next tick, last tick and its job id, counts.
   * @throws {OrchestratorError} `not_found` when it does not exist (or was deleted).
   */
  async describe(options: WaitOptions = {}): Promise<ScheduleInfo> {
    const record = await this.#link.store.get(this.id, options);
    if (record === undefined) throw this.#notFound();
    return record;
  }

  /**
   * Changes the definition; the fields not given stay. Giving any timing field (`cron`,
   * `everyMs`, `timezone`, `startAt`, `endAt`) replaces the timing whole and recomputes the next
   * tick from now; a new `job` applies from the next tick.
   * @throws {OrchestratorError} `invalid_argument` naming the field; `not_found`.
   */
  update(patch: ScheduleUpdate, options: WaitOptions = {}): Promise<ScheduleInfo> {
    return this.#change((current, now) => this.#link.apply(current, { ...(patch as Record<string, unknown>) }, now), options);
  }

  /** Stops the schedule firing until `resume()`; ticks meanwhile are not caught up. Idempotent. @throws {OrchestratorError} `not_found`. */
  pause(options: WaitOptions = {}): Promise<ScheduleInfo> {
    return this.#change((current, now) => this.#link.apply(current, { paused: true }, now), options);
  }

  /** Fires again from the next tick after now. Idempotent. @throws {OrchestratorError} `not_found`. */
  resume(options: WaitOptions = {}): Promise<ScheduleInfo> {
    return this.#change((current, now) => this.#link.apply(current, { paused: false }, now), options);
  }

  /**
   * Fires one job now, outside the timing (Temporal's `trigger`, BullMQ's run-now), also while
   * paused; the overlap policy does not apply to it. Resolves with the job's id
   * (`schedule:<id>:<now>`) once it is queued, for `client.get()`. The tick is written to the
   * schedule's `pending` first: should queueing it fail (the rejection says why), the leading
   * scheduler queues it. Without a job `store` on the client, the scheduler queues it.
   * @throws {OrchestratorError} `not_found`; what the job store or the queue rejects with.
   */
  async trigger(options: WaitOptions = {}): Promise<string> {
    let tick = 0;
    const record = await this.#change((current, now) => {
      tick = now;
      return {
        ...current, pending: [...current.pending, { tick }], fired: current.fired + 1, lastTick: tick, lastJobId: scheduleJobId(current.id, tick), updatedAt: now,
      };
    }, options);
    if (this.#link.fire !== undefined) {
      await this.#link.fire(record, tick);
      await this.#change((current, now) => ({ ...current, pending: current.pending.filter((p) => p.tick !== tick), updatedAt: now }), options);
    }
    return scheduleJobId(this.id, tick);
  }

  /** Removes the schedule: nothing fires any more (a job already fired goes on). Idempotent. */
  async delete(options: WaitOptions = {}): Promise<void> {
    await this.#link.store.delete(this.id, options);
  }

  async #change(change: (current: ScheduleRecord, now: number) => ScheduleRecord, options: WaitOptions): Promise<ScheduleInfo> {
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const current = await this.#link.store.get(this.id, options);
      if (current === undefined) throw this.#notFound();
      const result = await this.#link.store.replace(change(current, Date.now()), options);
      if (result.status === "applied") return result.record;
      if (result.status === "not_found") throw this.#notFound();
    }
    throw new OrchestratorError("unavailable", `schedule ${this.id} kept changing under this update (${MAX_ROUNDS} tries); try again`);
  }

  #notFound(): OrchestratorError {
    return new OrchestratorError("not_found", `no schedule with id "${this.id}"`, { details: { scheduleId: this.id } });
  }
}
