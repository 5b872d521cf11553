import type { QueryResultRow } from "pg";
import type { WaitOptions } from "../../queue/types.ts";
import { checkString } from "../../validate.ts";
import { checkAuditEntry, checkAuditList, checkSavedFilter } from "../console-records.ts";
import type { AuditEntry, AuditListOptions, ConsoleRecords, SavedFilter } from "../types.ts";

/** Runs one query of the store (its pool, its error translation, its wait options). @internal */
export type StoreQuery = <R extends QueryResultRow>(doing: string, options: WaitOptions, sql: string, params: unknown[]) => Promise<R[]>;

/**
 * {@link ConsoleRecords} in the job store's schema: `console_audit` (one row per entry, the
 * entry as `jsonb`, indexed by time) and `console_filters` (one row per name). `PostgresJobStore`
 * delegates to it. @internal
 */
export class PostgresConsoleRecords implements ConsoleRecords {
  readonly #query: StoreQuery;
  readonly #schema: string;

  /** @param schema the quoted schema name */
  constructor(query: StoreQuery, schema: string) {
    this.#query = query;
    this.#schema = schema;
  }

  async appendAudit(entry: AuditEntry, options: WaitOptions = {}): Promise<void> {
    const e = checkAuditEntry(entry);
    await this.#query("recording an audit entry", options, `INSERT INTO ${this.#schema}.console_audit (id, at, entry) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING`, [
      e.id, e.at, JSON.stringify(e),
    ]);
  }

  async listAudit(options: AuditListOptions = {}): Promise<AuditEntry[]> {
    const { limit, before } = checkAuditList(options);
    const rows = await this.#query<{ entry: AuditEntry }>(
      "reading the audit log",
      options,
      `SELECT entry FROM ${this.#schema}.console_audit ${before === undefined ? "" : "WHERE at < $2"} ORDER BY at DESC, id DESC LIMIT $1`,
      before === undefined ? [limit] : [limit, before],
    );
    return rows.map((r) => r.entry);
  }

  async saveFilter(filter: SavedFilter, options: WaitOptions = {}): Promise<void> {
    const f = checkSavedFilter(filter);
    await this.#query(
      "saving a filter",
      options,
      `INSERT INTO ${this.#schema}.console_filters (name, filter, created_at, created_by) VALUES ($1, $2, $3, $4)
       ON CONFLICT (name) DO UPDATE SET filter = EXCLUDED.filter, created_at = EXCLUDED.created_at, created_by = EXCLUDED.created_by`,
      [f.name, JSON.stringify(f.filter), f.createdAt, f.createdBy],
    );
  }

  async listFilters(options: WaitOptions = {}): Promise<SavedFilter[]> {
    const rows = await this.#query<{ name: string; filter: Record<string, unknown>; created_at: string; created_by: string }>(
      "reading the saved filters",
      options,
      `SELECT name, filter, created_at, created_by FROM ${this.#schema}.console_filters ORDER BY name`,
      [],
    );
    return rows.map((r) => ({ name: r.name, filter: r.filter, createdAt: Number(r.created_at), createdBy: r.created_by }));
  }

  async deleteFilter(name: string, options: WaitOptions = {}): Promise<boolean> {
    const rows = await this.#query<{ name: string }>("deleting a filter", options, `DELETE FROM ${this.#schema}.console_filters WHERE name = $1 RETURNING name`, [
      checkString("name", name, 128),
    ]);
    return rows.length > 0;
  }
}
