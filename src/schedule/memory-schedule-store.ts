import { OrchestratorError } from "../errors.ts";
import type { WaitOptions } from "../queue/types.ts";
import { checkScheduleId, checkScheduleListOptions, checkScheduleRecord, isDueBy } from "./schedule-rules.ts";
import type { ScheduleCreateResult, ScheduleListOptions, SchedulePage, ScheduleRecord, ScheduleReplaceResult, ScheduleStore } from "./types.ts";

/**
 * The embedded {@link ScheduleStore}: schedules in this process's memory, for one process and
 * for tests. Same semantics as `PostgresScheduleStore` (both pass
 * `describeScheduleStoreContract()`); records are copied in and out.
 *
 * @example
 * ```ts
 * const schedules = new MemoryScheduleStore();
 * const client = new JobClient({ queue, events: queue, store, schedules });
 * const scheduler = new Scheduler({ queue, events: queue, store, schedules, leadership: new MemoryLeadership() });
 * ```
 */
export class MemoryScheduleStore implements ScheduleStore {
  readonly #records = new Map<string, ScheduleRecord>();
  #closed = false;

  /** Schedules held. */
  get size(): number {
    return this.#records.size;
  }

  create(record: ScheduleRecord, _options?: WaitOptions): Promise<ScheduleCreateResult> {
    return this.#do(() => {
      const input = checkScheduleRecord(record);
      const existing = this.#records.get(input.id);
      if (existing !== undefined) return { created: false, record: structuredClone(existing) };
      this.#records.set(input.id, input);
      return { created: true, record: structuredClone(input) };
    });
  }

  get(id: string, _options?: WaitOptions): Promise<ScheduleRecord | undefined> {
    return this.#do(() => {
      const record = this.#records.get(checkScheduleId("id", id));
      return record === undefined ? undefined : structuredClone(record);
    });
  }

  list(options: ScheduleListOptions = {}): Promise<SchedulePage> {
    return this.#do(() => {
      const o = checkScheduleListOptions(options);
      const ids = [...this.#records.keys()].filter((id) => o.cursor === undefined || id > o.cursor).sort();
      const records: ScheduleRecord[] = [];
      for (const id of ids) {
        const record = this.#records.get(id) as ScheduleRecord;
        if (!isDueBy(record, o.dueBefore)) continue;
        if (records.length === o.limit) return { records, nextCursor: (records.at(-1) as ScheduleRecord).id };
        records.push(structuredClone(record));
      }
      return { records };
    });
  }

  replace(record: ScheduleRecord, _options?: WaitOptions): Promise<ScheduleReplaceResult> {
    return this.#do((): ScheduleReplaceResult => {
      const input = checkScheduleRecord(record);
      const stored = this.#records.get(input.id);
      if (stored === undefined) return { status: "not_found" };
      if (stored.revision !== input.revision) return { status: "conflict", record: structuredClone(stored) };
      const next = { ...input, revision: input.revision + 1 };
      this.#records.set(next.id, next);
      return { status: "applied", record: structuredClone(next) };
    });
  }

  delete(id: string, _options?: WaitOptions): Promise<boolean> {
    return this.#do(() => this.#records.delete(checkScheduleId("id", id)));
  }

  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }

  #do<T>(fn: () => T): Promise<T> {
    if (this.#closed) return Promise.reject(new OrchestratorError("queue_closed", "the schedule store is closed"));
    try {
      return Promise.resolve(fn());
    } catch (error) {
      return Promise.reject(error);
    }
  }
}
