import { randomUUID } from "node:crypto";
import { MemoryConsoleRecords } from "../store/console-records.ts";
import type { AuditEntry, ConsoleRecords, JobStore, SavedFilter } from "../store/types.ts";

/** The console records of a store when it keeps them, else ones in this process's memory. @internal */
export function consoleRecordsOf(store: JobStore): { records: ConsoleRecords; persisted: boolean } {
  const candidate = store as Partial<ConsoleRecords>;
  const methods = ["appendAudit", "listAudit", "saveFilter", "listFilters", "deleteFilter"] as const;
  if (methods.every((m) => typeof candidate[m] === "function")) return { records: store as unknown as ConsoleRecords, persisted: true };
  return { records: new MemoryConsoleRecords(), persisted: false };
}

/**
 * Writes audit entries (to the store's console records) and tells the live stream; an entry
 * that cannot be written is still streamed and reported, never lost silently. @internal
 */
export class AuditLog {
  readonly #records: ConsoleRecords;
  readonly #announce: (entry: AuditEntry) => void;
  readonly #report: (error: unknown) => void;

  constructor(records: ConsoleRecords, announce: (entry: AuditEntry) => void, report: (error: unknown) => void) {
    this.#records = records;
    this.#announce = announce;
    this.#report = report;
  }

  get records(): ConsoleRecords {
    return this.#records;
  }

  /** Records one entry (its id and time filled in) and resolves with it. */
  async write(entry: Omit<AuditEntry, "id" | "at">): Promise<AuditEntry> {
    const full: AuditEntry = { id: `${Date.now().toString(36)}-${randomUUID()}`, at: Date.now(), ...entry };
    if (full.detail !== undefined && full.detail.length > 4096) full.detail = `${full.detail.slice(0, 4093)}...`;
    try {
      await this.#records.appendAudit(full);
    } catch (error) {
      this.#report(error);
    }
    this.#announce(full);
    return full;
  }

  list(limit: number, before: number | undefined): Promise<AuditEntry[]> {
    return this.#records.listAudit({ limit, ...(before === undefined ? {} : { before }) });
  }

  filters(): Promise<SavedFilter[]> {
    return this.#records.listFilters();
  }
}
