import { invalidArgument } from "../errors.ts";
import { checkInteger, checkObject, checkString, optional } from "../validate.ts";
import type { AuditEntry, AuditListOptions, ConsoleRecords, SavedFilter } from "./types.ts";
import type { WaitOptions } from "../queue/types.ts";

/**
 * The checks of {@link ConsoleRecords} input, in one home for both stores, and the in-memory
 * implementation `MemoryJobStore` delegates to. @internal
 */

const OUTCOMES: ReadonlySet<string> = new Set(["ok", "denied", "failed"]);

/** Checks an audit entry; returns a copy holding only its known fields. */
export function checkAuditEntry(value: unknown): AuditEntry {
  const o = checkObject("entry", value);
  const entry: AuditEntry = {
    id: checkString("entry.id", o.id, 128),
    at: checkInteger("entry.at", o.at, 0),
    who: checkString("entry.who", o.who, 256),
    action: checkString("entry.action", o.action, 64),
    outcome: o.outcome as AuditEntry["outcome"],
  };
  if (typeof o.outcome !== "string" || !OUTCOMES.has(o.outcome)) throw invalidArgument("entry.outcome", "ok, denied or failed", o.outcome);
  if (o.target !== undefined) entry.target = checkString("entry.target", o.target, 1024);
  if (o.filter !== undefined) entry.filter = structuredClone(checkObject("entry.filter", o.filter));
  if (o.count !== undefined) entry.count = checkInteger("entry.count", o.count, 0);
  if (o.detail !== undefined) entry.detail = checkString("entry.detail", o.detail, 4096);
  return entry;
}

/** Checks the options of `listAudit`. */
export function checkAuditList(value: unknown): { limit: number; before: number | undefined } {
  const o = checkObject("options", value ?? {});
  return {
    limit: optional(o.limit, 100, (v) => checkInteger("limit", v, 1, 1000)),
    before: optional(o.before, undefined, (v) => checkInteger("before", v, 0)),
  };
}

/** Checks a saved filter. */
export function checkSavedFilter(value: unknown): SavedFilter {
  const o = checkObject("filter", value);
  return {
    name: checkString("filter.name", o.name, 128),
    filter: structuredClone(checkObject("filter.filter", o.filter)),
    createdAt: checkInteger("filter.createdAt", o.createdAt, 0),
    createdBy: checkString("filter.createdBy", o.createdBy, 256),
  };
}

/** Newest first: by `at`, then by id. */
export function auditOrder(a: AuditEntry, b: AuditEntry): number {
  return b.at - a.at || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
}

/** {@link ConsoleRecords} in memory, the newest `maxEntries` audit entries kept. @internal */
export class MemoryConsoleRecords implements ConsoleRecords {
  readonly #audit: AuditEntry[] = [];
  readonly #filters = new Map<string, SavedFilter>();
  readonly #maxEntries: number;

  constructor(maxEntries = 10_000) {
    this.#maxEntries = maxEntries;
  }

  async appendAudit(entry: AuditEntry, _options?: WaitOptions): Promise<void> {
    this.#audit.push(checkAuditEntry(entry));
    if (this.#audit.length > this.#maxEntries) this.#audit.splice(0, this.#audit.length - this.#maxEntries);
  }

  async listAudit(options: AuditListOptions = {}): Promise<AuditEntry[]> {
    const { limit, before } = checkAuditList(options);
    return this.#audit
      .filter((e) => before === undefined || e.at < before)
      .sort(auditOrder)
      .slice(0, limit)
      .map((e) => structuredClone(e));
  }

  async saveFilter(filter: SavedFilter, _options?: WaitOptions): Promise<void> {
    const checked = checkSavedFilter(filter);
    this.#filters.set(checked.name, checked);
  }

  async listFilters(_options?: WaitOptions): Promise<SavedFilter[]> {
    return [...this.#filters.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)).map((f) => structuredClone(f));
  }

  async deleteFilter(name: string, _options?: WaitOptions): Promise<boolean> {
    return this.#filters.delete(checkString("name", name, 128));
  }
}
