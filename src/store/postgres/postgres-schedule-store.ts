import type { PoolClient, QueryResultRow } from "pg";
import { OrchestratorError } from "../../errors.ts";
import type { WaitOptions } from "../../queue/types.ts";
import { checkScheduleId, checkScheduleListOptions, checkScheduleRecord, dueAtOf } from "../../schedule/schedule-rules.ts";
import type { ScheduleCreateResult, ScheduleListOptions, SchedulePage, ScheduleRecord, ScheduleReplaceResult, ScheduleStore } from "../../schedule/types.ts";
import { raceSignal, waitSignal } from "../../signals.ts";
import { checkObject, checkString, optional } from "../../validate.ts";
import { postgresError } from "./errors.ts";
import { PgPoolSource } from "./pool-source.ts";
import { jobStoreSchemaSql, quoteSchema } from "./schema.ts";

/** Options of {@link PostgresScheduleStore}. */
export interface PostgresScheduleStoreOptions {
  /** The `pg` pool to use; it belongs to the caller (`close()` leaves it open). Give either this or `connectionString`. */
  pool?: import("pg").Pool;
  /** A PostgreSQL URL; the store opens (and closes) its own pool of `poolSize` connections. */
  connectionString?: string;
  /**
   * Connections of the pool the store opens itself.
   * @default 2
   */
  poolSize?: number;
  /**
   * The schema holding the `schedules` table: the job store's (`PostgresJobStore`'s `schema`).
   * @default "blacktree"
   */
  schema?: string;
}

/**
 * A {@link ScheduleStore} on PostgreSQL, in the job store's schema (table `schedules`, created by
 * the same migration as `jobs`): every process opening the same database and schema sees the
 * same schedules. `create` is one `INSERT … ON CONFLICT DO NOTHING`; `replace` one
 * `UPDATE … WHERE revision = $n`, so of two writers of one revision exactly one wins.
 *
 * @example
 * ```ts
 * import { PostgresJobStore, PostgresScheduleStore } from "@blacktree/orchestrator/postgres";
 * const schedules = new PostgresScheduleStore({ connectionString: process.env.DATABASE_URL });
 * await schedules.migrate();
 * ```
 */
export class PostgresScheduleStore implements ScheduleStore {
  readonly #schema: string;
  readonly #pool: PgPoolSource;
  #closed: Promise<void> | undefined;

  /** Checks the options; does no I/O. @throws {OrchestratorError} `invalid_argument` naming the first bad option. */
  constructor(options: PostgresScheduleStoreOptions) {
    const o = checkObject("options", options);
    this.#schema = quoteSchema(optional(o.schema, "blacktree", (v) => checkString("schema", v, 63)));
    this.#pool = new PgPoolSource(o, 2);
  }

  /**
   * Creates the schema and its tables (`jobs` and `schedules`) when missing: the same migration
   * as `PostgresJobStore.migrate()`, idempotent, serialised across processes by the same lock.
   * @throws {OrchestratorError} `unavailable` when PostgreSQL cannot be reached.
   */
  async migrate(options: WaitOptions = {}): Promise<void> {
    await this.#withClient("migrating the schema", options, async (client) => {
      await client.query("BEGIN");
      try {
        await client.query("SELECT pg_advisory_xact_lock(hashtext($1))", [`blacktree-job-store:${this.#schema}`]);
        await client.query(jobStoreSchemaSql(this.#schema.slice(1, -1)));
        await client.query("COMMIT");
      } catch (error) {
        await client.query("ROLLBACK").catch(() => {});
        throw error;
      }
    });
  }

  async create(record: ScheduleRecord, options: WaitOptions = {}): Promise<ScheduleCreateResult> {
    const input = checkScheduleRecord(record);
    const inserted = await this.#query<{ record: ScheduleRecord }>(
      "creating a schedule",
      options,
      `INSERT INTO ${this.#schema}.schedules (id, revision, due_at, created_at, updated_at, record) VALUES ($1, $2, $3, $4, $5, $6)
       ON CONFLICT (id) DO NOTHING RETURNING record`,
      [input.id, input.revision, dueAtOf(input) ?? null, input.createdAt, input.updatedAt, JSON.stringify(input)],
    );
    if (inserted[0] !== undefined) return { created: true, record: inserted[0].record };
    const existing = await this.get(input.id, options);
    if (existing === undefined) throw new OrchestratorError("internal", `schedule ${input.id} was neither created nor found (deleted meanwhile?)`);
    return { created: false, record: existing };
  }

  async get(id: string, options: WaitOptions = {}): Promise<ScheduleRecord | undefined> {
    checkScheduleId("id", id);
    const rows = await this.#query<{ record: ScheduleRecord }>("reading a schedule", options, `SELECT record FROM ${this.#schema}.schedules WHERE id = $1`, [id]);
    return rows[0]?.record;
  }

  async list(options: ScheduleListOptions = {}): Promise<SchedulePage> {
    const o = checkScheduleListOptions(options);
    const rows = await this.#query<{ record: ScheduleRecord }>(
      "listing schedules",
      options,
      `SELECT record FROM ${this.#schema}.schedules WHERE ($1::text IS NULL OR id > $1) AND ($2::bigint IS NULL OR due_at <= $2) ORDER BY id LIMIT $3`,
      [o.cursor ?? null, o.dueBefore ?? null, o.limit + 1],
    );
    const records = rows.slice(0, o.limit).map((r) => r.record);
    const last = records.at(-1);
    return rows.length > o.limit && last !== undefined ? { records, nextCursor: last.id } : { records };
  }

  async replace(record: ScheduleRecord, options: WaitOptions = {}): Promise<ScheduleReplaceResult> {
    const input = checkScheduleRecord(record);
    const next: ScheduleRecord = { ...input, revision: input.revision + 1 };
    const updated = await this.#query<{ record: ScheduleRecord }>(
      "writing a schedule",
      options,
      `UPDATE ${this.#schema}.schedules SET revision = $3, due_at = $4, updated_at = $5, record = $6 WHERE id = $1 AND revision = $2 RETURNING record`,
      [input.id, input.revision, next.revision, dueAtOf(next) ?? null, next.updatedAt, JSON.stringify(next)],
    );
    if (updated[0] !== undefined) return { status: "applied", record: updated[0].record };
    const current = await this.get(input.id, options);
    return current === undefined ? { status: "not_found" } : { status: "conflict", record: current };
  }

  async delete(id: string, options: WaitOptions = {}): Promise<boolean> {
    checkScheduleId("id", id);
    const rows = await this.#query<{ id: string }>("deleting a schedule", options, `DELETE FROM ${this.#schema}.schedules WHERE id = $1 RETURNING id`, [id]);
    return rows.length > 0;
  }

  /** Closes the pool the store opened (a pool passed in stays open); later calls reject with `queue_closed`. Idempotent. */
  close(): Promise<void> {
    this.#closed ??= this.#pool.end();
    return this.#closed;
  }

  #checkOpen(): void {
    if (this.#closed !== undefined) throw new OrchestratorError("queue_closed", "the schedule store is closed");
  }

  async #withClient<T>(doing: string, options: WaitOptions, fn: (client: PoolClient) => Promise<T>): Promise<T> {
    this.#checkOpen();
    const wait = waitSignal(options, `${doing} in the schedule store`);
    try {
      const pool = await this.#pool.get("PostgresScheduleStore");
      const client = await raceSignal(pool.connect(), wait.signal).catch((error: unknown) => {
        throw postgresError(error, doing);
      });
      let broken: Error | undefined;
      try {
        return await fn(client);
      } catch (error) {
        broken = error instanceof Error ? error : new Error(String(error));
        throw postgresError(error, doing);
      } finally {
        client.release(broken);
      }
    } finally {
      wait.dispose();
    }
  }

  async #query<R extends QueryResultRow>(doing: string, options: WaitOptions, sql: string, params: unknown[]): Promise<R[]> {
    this.#checkOpen();
    const wait = waitSignal(options, `${doing} in the schedule store`);
    try {
      const pool = await this.#pool.get("PostgresScheduleStore");
      const result = await raceSignal(pool.query<R>(sql, params), wait.signal).catch((error: unknown) => {
        throw postgresError(error, doing);
      });
      return result.rows;
    } finally {
      wait.dispose();
    }
  }
}
