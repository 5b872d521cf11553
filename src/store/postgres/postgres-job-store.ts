import type { Pool, PoolClient, QueryResult, QueryResultRow } from "pg";
import { OrchestratorError } from "../../errors.ts";
import type { WaitOptions } from "../../queue/types.ts";
import { raceSignal, waitSignal } from "../../signals.ts";
import { checkInteger, checkObject, checkString, optional } from "../../validate.ts";
import { resolveStoreOptions, type JobStoreOptions } from "../memory-job-store.ts";
import {
  applyTransition, checkFinishedSummary, checkListOptions, checkNewJob, checkTransition, decodeCursor, encodeCursor, expireRecord, newRecord,
  RECORD_STATES, UNSTARTED_STATES, zeroCounts,
} from "../record-rules.ts";
import type {
  AuditEntry, AuditListOptions, ConsoleRecords, FinishedSummary, FinishedSummaryOptions, JobLogLine, SavedFilter,
  CleanupOptions, CreateResult, ExpireOptions, JobCounts, JobPage, JobRecord, JobStore, JobTransition, ListOptions, NewJobRecord,
  TransitionResult,
} from "../types.ts";
import { postgresError } from "./errors.ts";
import { checkTokenBucketLimit, type TokenBucketLimit, type TokenTake } from "../token-bucket.ts";
import { PgPoolSource } from "./pool-source.ts";
import { jobStoreSchemaSql, quoteSchema } from "./schema.ts";
import { PostgresConsoleRecords } from "./postgres-console-records.ts";
import { PostgresJobLogs } from "./postgres-job-logs.ts";

/** Options of {@link PostgresJobStore}. */
export interface PostgresJobStoreOptions extends JobStoreOptions {
  /**
   * The `pg` pool to use; it belongs to the caller (`close()` leaves it open). Give either this
   * or `connectionString`.
   */
  pool?: Pool;
  /** A PostgreSQL URL; the store opens (and closes) its own `pg` pool of `poolSize` connections. */
  connectionString?: string;
  /**
   * Connections of the pool the store opens itself.
   * @default 6
   */
  poolSize?: number;
  /**
   * The schema holding the `jobs` table.
   * @default "blacktree"
   */
  schema?: string;
  /**
   * Most creates and transitions written in one transaction.
   * @default 500
   */
  maxBatch?: number;
  /**
   * How long informational transitions (`started`, `progress`, `unschedulable`, `queued`) may
   * wait for company before they are written: an outcome of the same job or a full batch writes
   * them at once (another job's outcome takes along only those that waited this long), so a
   * short job's start and outcome update its row once. A caller that awaits such a transition
   * (the dispatcher does for the start of a retried, redelivered or delayed job) may wait this
   * long.
   * @default 100
   */
  lingerMs?: number;
  /**
   * Batches written at the same time (each on its own connection). Fewer, larger batches cost
   * PostgreSQL less (one commit each); more cut the wait of an outcome behind a batch in flight.
   * @default 2
   */
  concurrentBatches?: number;
}

type Op =
  | { kind: "create"; job: NewJobRecord; resolve: (result: CreateResult) => void; reject: (error: unknown) => void }
  | { kind: "record"; transition: JobTransition; resolve: (result: TransitionResult) => void; reject: (error: unknown) => void; since?: number };

const ignore = (): void => {};

/** Transition kinds nobody waits on for long: written with the next urgent op, or after `lingerMs`. */
const LAZY_KINDS: ReadonlySet<string> = new Set(["started", "progress", "unschedulable", "queued"]);

/** Whether an op's writer waits on it to go on (creates, outcomes, retries, redrives). */
function isUrgent(op: Op): boolean {
  return op.kind === "create" || !LAZY_KINDS.has(op.transition.kind);
}

const COLUMNS = "id, type, state, idempotency_key, metadata, dead_lettered, fencing_token, created_at, updated_at, finished_at, start_by, record";
const RECORDSET = `id text, type text, state text, idempotency_key text, metadata jsonb, dead_lettered boolean, fencing_token bigint,
  created_at bigint, updated_at bigint, finished_at bigint, start_by bigint, record jsonb`;

/** One row as `jsonb_to_recordset` reads it. */
function row(record: JobRecord): Record<string, unknown> {
  return {
    id: record.id,
    type: record.type,
    state: record.state,
    idempotency_key: record.idempotencyKey ?? null,
    metadata: record.metadata,
    dead_lettered: record.deadLetter !== undefined,
    fencing_token: record.fencingToken,
    created_at: record.createdAt,
    updated_at: record.updatedAt,
    finished_at: record.finishedAt ?? null,
    start_by: record.startBy ?? null,
    record,
  };
}

/** A string literal that PostgreSQL reads back as `value` whatever `standard_conforming_strings` says (as pg's `escapeLiteral`). */
function quoteLiteral(value: string): string {
  const body = value.replace(/'/g, "''");
  return value.includes("\\") ? `E'${body.replace(/\\/g, "\\\\")}'` : `'${body}'`;
}

function likePrefix(prefix: string): string {
  return `${prefix.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

/**
 * A {@link JobStore} on PostgreSQL through `pg` (node-postgres), shared by every process that
 * opens the same database and schema: producers, orchestrators and whatever reads job state.
 *
 * - Schema: created by an explicit {@link PostgresJobStore.migrate} (or by applying
 *   {@link jobStoreSchemaSql} yourself); the constructor does no I/O.
 * - Writes are batched: creates and transitions arriving together are written in one transaction
 *   (`maxBatch` at most, `concurrentBatches` at a time), the rows locked in id order so two
 *   orchestrators never deadlock. Creates use `INSERT … ON CONFLICT DO NOTHING`, so an
 *   idempotency key is unique across every process; transitions are fenced on the locked row.
 * - A lost connection rejects the operations of its batch with `unavailable`; a batch whose
 *   commit was cut off may or may not be written (the fencing makes writing it again harmless).
 *
 * @example
 * ```ts
 * import { PostgresJobStore } from "@blacktree/orchestrator/postgres";
 * const store = new PostgresJobStore({ connectionString: process.env.DATABASE_URL });
 * await store.migrate();
 * ```
 */
export class PostgresJobStore implements JobStore, ConsoleRecords {
  readonly #o: ReturnType<typeof resolveStoreOptions>;
  readonly #schema: string;
  readonly #console: PostgresConsoleRecords;
  readonly #logs: PostgresJobLogs;
  readonly #maxBatch: number;
  readonly #concurrent: number;
  readonly #pool: PgPoolSource;
  #pending: Op[] = [];
  /** Ops in `#pending` that someone waits on before going on (see {@link isUrgent}). */
  #urgent = 0;
  #linger: NodeJS.Timeout | undefined;
  readonly #lingerMs: number;
  #flushing = 0;
  #closed: Promise<void> | undefined;

  /** Checks the options; does no I/O. @throws {OrchestratorError} `invalid_argument` naming the first bad option. */
  constructor(options: PostgresJobStoreOptions) {
    const o = checkObject("options", options);
    this.#o = resolveStoreOptions(options);
    this.#schema = quoteSchema(optional(o.schema, "blacktree", (v) => checkString("schema", v, 63)));
    this.#console = new PostgresConsoleRecords((doing, wait, sql, params) => this.#query(doing, wait, sql, params), this.#schema);
    this.#logs = new PostgresJobLogs((doing, wait, sql, params) => this.#query(doing, wait, sql, params), this.#schema, this.#o.maxLogLines);
    this.#maxBatch = optional(o.maxBatch, 500, (v) => checkInteger("maxBatch", v, 1, 10_000));
    this.#concurrent = optional(o.concurrentBatches, 2, (v) => checkInteger("concurrentBatches", v, 1, 64));
    this.#lingerMs = optional(o.lingerMs, 100, (v) => checkInteger("lingerMs", v, 0, 60_000));
    this.#pool = new PgPoolSource(o, 6);
  }

  /** The SQL {@link PostgresJobStore.migrate} runs for this store's schema. */
  get schemaSql(): string {
    return jobStoreSchemaSql(this.#schema.slice(1, -1));
  }

  /**
   * Creates the schema, the `jobs` table and its indexes when missing (idempotent; concurrent
   * calls from several processes are serialised by an advisory lock).
   * @throws {OrchestratorError} `unavailable` when PostgreSQL cannot be reached.
   */
  async migrate(options: WaitOptions = {}): Promise<void> {
    await this.#withClient("migrating the job store schema", options, async (client) => {
      await client.query("BEGIN");
      try {
        await client.query("SELECT pg_advisory_xact_lock(hashtext($1))", [`blacktree-job-store:${this.#schema}`]);
        await client.query(this.schemaSql);
        await client.query("COMMIT");
      } catch (error) {
        await client.query("ROLLBACK").catch(() => {});
        throw error;
      }
    });
  }

  /** {@inheritDoc JobStore.appendLogs} */
  appendLogs(jobId: string, lines: readonly JobLogLine[], options?: WaitOptions): Promise<void> {
    return this.#logs.append(jobId, lines, options);
  }

  /** {@inheritDoc JobStore.logs} */
  logs(jobId: string, options?: WaitOptions): Promise<JobLogLine[]> {
    return this.#logs.read(jobId, options);
  }

  /** {@inheritDoc ConsoleRecords.appendAudit} */
  appendAudit(entry: AuditEntry, options?: WaitOptions): Promise<void> {
    return this.#console.appendAudit(entry, options);
  }

  /** {@inheritDoc ConsoleRecords.listAudit} */
  listAudit(options?: AuditListOptions): Promise<AuditEntry[]> {
    return this.#console.listAudit(options);
  }

  /** {@inheritDoc ConsoleRecords.saveFilter} */
  saveFilter(filter: SavedFilter, options?: WaitOptions): Promise<void> {
    return this.#console.saveFilter(filter, options);
  }

  /** {@inheritDoc ConsoleRecords.listFilters} */
  listFilters(options?: WaitOptions): Promise<SavedFilter[]> {
    return this.#console.listFilters(options);
  }

  /** {@inheritDoc ConsoleRecords.deleteFilter} */
  deleteFilter(name: string, options?: WaitOptions): Promise<boolean> {
    return this.#console.deleteFilter(name, options);
  }

  create(job: NewJobRecord, options?: WaitOptions): Promise<CreateResult> {
    let input: NewJobRecord;
    try {
      this.#checkOpen();
      input = checkNewJob(job);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#enqueue<CreateResult>((resolve, reject) => ({ kind: "create", job: input, resolve, reject }), options);
  }

  record(transition: JobTransition, options?: WaitOptions): Promise<TransitionResult> {
    let t: JobTransition;
    try {
      this.#checkOpen();
      t = checkTransition(transition);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#enqueue<TransitionResult>((resolve, reject) => ({ kind: "record", transition: t, resolve, reject }), options);
  }

  #enqueue<T>(make: (resolve: (value: T) => void, reject: (error: unknown) => void) => Op, options: WaitOptions | undefined): Promise<T> {
    const written = new Promise<T>((resolve, reject) => {
      const op = make(resolve, reject);
      if (isUrgent(op)) this.#urgent++;
      else if (op.kind === "record") op.since = performance.now();
      this.#pending.push(op);
    });
    this.#pump();
    if (options?.signal === undefined && options?.timeoutMs === undefined) return written;
    // Giving up the wait does not take the write back: it may still be committed.
    written.catch(() => {});
    const wait = waitSignal(options, "writing to the job store");
    return raceSignal(written, wait.signal).finally(wait.dispose);
  }

  #pump(): void {
    // Only informational transitions waiting: let them linger, so that the outcome of a short
    // job (or its next progress) joins them and the row is written once.
    if (this.#urgent === 0 && this.#pending.length > 0 && this.#pending.length < this.#maxBatch) {
      if (this.#linger === undefined && this.#flushing < this.#concurrent) {
        const oldest = this.#pending[0] as { since?: number };
        const waitMs = Math.max(0, (oldest.since ?? 0) + this.#lingerMs - performance.now());
        this.#linger = setTimeout(() => {
          this.#linger = undefined;
          this.#flushNow(true);
        }, waitMs);
      }
      return;
    }
    this.#flushNow(this.#pending.length >= this.#maxBatch);
  }

  /**
   * Starts batches while connections are free. `all`: everything pending goes (linger over, a
   * full batch, closing); else the urgent ops, the informational ones of the same jobs (in
   * order, so a short job's start and outcome make one row update) and those that lingered
   * `lingerMs` already; the rest wait for their own outcome or their timer.
   */
  #flushNow(all: boolean): void {
    clearTimeout(this.#linger);
    this.#linger = undefined;
    while (this.#flushing < this.#concurrent && this.#pending.length > 0) {
      let batch: Op[];
      if (all) {
        batch = this.#pending.length <= this.#maxBatch ? this.#pending : this.#pending.slice(0, this.#maxBatch);
        this.#pending = batch === this.#pending ? [] : this.#pending.slice(this.#maxBatch);
      } else {
        batch = this.#takeUrgent();
        if (batch.length === 0) break;
      }
      for (const op of batch) if (isUrgent(op)) this.#urgent--;
      this.#flushing++;
      void this.#flush(batch).finally(() => {
        this.#flushing--;
        this.#pump();
      });
    }
  }

  /** Takes from `#pending` (at most `maxBatch`) the ops {@link PostgresJobStore.#flushNow} sends without `all`. */
  #takeUrgent(): Op[] {
    const jobs = new Set<string>();
    for (const op of this.#pending) if (op.kind === "record" && isUrgent(op)) jobs.add(op.transition.jobId);
    const due = performance.now() - this.#lingerMs;
    const batch: Op[] = [];
    const left: Op[] = [];
    for (const op of this.#pending) {
      const goes = batch.length < this.#maxBatch && (op.kind === "create" || isUrgent(op) || jobs.has(op.transition.jobId) || (op.since ?? 0) <= due);
      (goes ? batch : left).push(op);
    }
    this.#pending = left;
    return batch;
  }

  async #flush(batch: Op[]): Promise<void> {
    const creates: Array<Extract<Op, { kind: "create" }>> = [];
    const transitions: Array<Extract<Op, { kind: "record" }>> = [];
    for (const op of batch) (op.kind === "create" ? creates : transitions).push(op as never);
    let results: Array<() => void>;
    try {
      results = await this.#withClient("writing a batch", {}, async (client) => {
        // Two round trips for the usual batches: creates alone need no transaction (one
        // INSERT … ON CONFLICT is atomic), transitions alone lock and update in one each.
        if (transitions.length === 0) return this.#writeCreates(client, creates);
        if (creates.length === 0) return this.#writeTransitions(client, transitions, true);
        await client.query("BEGIN");
        try {
          const done = [...(await this.#writeCreates(client, creates)), ...(await this.#writeTransitions(client, transitions, false))];
          await client.query("COMMIT");
          return done;
        } catch (error) {
          await client.query("ROLLBACK").catch(() => {});
          throw error;
        }
      });
    } catch (error) {
      const translated = postgresError(error, "writing a batch");
      for (const op of batch) op.reject(translated);
      return;
    }
    for (const settle of results) settle();
  }

  async #writeCreates(client: PoolClient, ops: Array<Extract<Op, { kind: "create" }>>): Promise<Array<() => void>> {
    if (ops.length === 0) return [];
    const now = Date.now();
    const records = ops.map((op) => newRecord(op.job, now, this.#o));
    const inserted = await client.query<{ id: string }>(
      `INSERT INTO ${this.#schema}.jobs (${COLUMNS}) SELECT ${COLUMNS} FROM jsonb_to_recordset($1::jsonb) AS r(${RECORDSET})
       ON CONFLICT DO NOTHING RETURNING id`,
      [JSON.stringify(records.map(row))],
    );
    const created = new Set(inserted.rows.map((r) => r.id));
    // A record created by this batch is "created" for its first op only; a second op with its id
    // or key (in the batch or already stored) gets the stored one.
    const first = new Set<number>();
    const seen = new Set<string>();
    const existingIds: string[] = [];
    const existingKeys: string[] = [];
    records.forEach((record, i) => {
      if (created.has(record.id) && !seen.has(record.id)) {
        seen.add(record.id);
        first.add(i);
        return;
      }
      existingIds.push(record.id);
      if (record.idempotencyKey !== undefined) existingKeys.push(record.idempotencyKey);
    });
    const byId = new Map<string, JobRecord>();
    const byKey = new Map<string, JobRecord>();
    if (existingIds.length > 0) {
      const found = await client.query<{ record: JobRecord }>(
        `SELECT record FROM ${this.#schema}.jobs WHERE id = ANY($1::text[]) OR idempotency_key = ANY($2::text[])`,
        [existingIds, existingKeys],
      );
      for (const { record } of found.rows) {
        byId.set(record.id, record);
        if (record.idempotencyKey !== undefined) byKey.set(record.idempotencyKey, record);
      }
    }
    return ops.map((op, i) => {
      const record = records[i] as JobRecord;
      if (first.has(i)) return () => op.resolve({ created: true, record });
      const existing = byId.get(record.id) ?? (record.idempotencyKey === undefined ? undefined : byKey.get(record.idempotencyKey));
      if (existing === undefined) {
        const error = new OrchestratorError("internal", `job ${record.id} was neither created nor found (a concurrent cleanup removed it?)`);
        return () => op.reject(error);
      }
      return () => op.resolve({ created: false, record: structuredClone(existing) });
    });
  }

  /**
   * Locks the rows of the transitions' jobs in id order, applies the transitions in order (the
   * rules of record-rules.ts) and writes the rows that changed. `own`: the batch has no
   * transaction yet, so it opens and commits its own, sent with the lock and the update as
   * multi-statement queries (values inlined as escaped literals) to save two round trips.
   */
  async #writeTransitions(client: PoolClient, ops: Array<Extract<Op, { kind: "record" }>>, own: boolean): Promise<Array<() => void>> {
    if (ops.length === 0) return [];
    const ids = [...new Set(ops.map((op) => op.transition.jobId))].sort();
    const lock = `SELECT record FROM ${this.#schema}.jobs WHERE id = ANY(${own ? `ARRAY[${ids.map((id) => client.escapeLiteral(id)).join(",")}]` : "$1"}::text[]) ORDER BY id FOR UPDATE`;
    let locked: Array<{ record: JobRecord }>;
    if (own) {
      const results = (await client.query(`BEGIN; ${lock}`)) as unknown as Array<QueryResult<{ record: JobRecord }>>;
      locked = results[1]?.rows ?? [];
    } else {
      locked = (await client.query<{ record: JobRecord }>(lock, [ids])).rows;
    }
    try {
      const records = new Map(locked.map(({ record }) => [record.id, record]));
      const changed = new Set<string>();
      const settles = ops.map((op) => {
        const record = records.get(op.transition.jobId);
        if (record === undefined) return () => op.resolve({ status: "not_found" });
        const status = applyTransition(record, op.transition);
        if (status === "applied") {
          changed.add(record.id);
          return () => op.resolve({ status });
        }
        const snapshot = structuredClone(record);
        return () => op.resolve({ status, record: snapshot });
      });
      // The ids again as an array: with the join alone the planner, which guesses 100 rows for
      // jsonb_to_recordset, scans the whole table (a hash join) until it holds thousands of rows.
      const update = (values: string, changedIds: string): string => `UPDATE ${this.#schema}.jobs AS j SET state = u.state, dead_lettered = u.dead_lettered, fencing_token = u.fencing_token,
           updated_at = u.updated_at, finished_at = u.finished_at, start_by = u.start_by, record = u.record
         FROM jsonb_to_recordset(${values}::jsonb) AS u(${RECORDSET}) WHERE j.id = u.id AND j.id = ANY(${changedIds}::text[])`;
      const rows = changed.size === 0 ? undefined : JSON.stringify([...changed].map((id) => row(records.get(id) as JobRecord)));
      if (own) {
        const changedIds = `ARRAY[${[...changed].map((id) => client.escapeLiteral(id)).join(",")}]`;
        await client.query(rows === undefined ? "COMMIT" : `${update(client.escapeLiteral(rows), changedIds)}; COMMIT`);
      } else if (rows !== undefined) await client.query(update("$1", "$2"), [rows, [...changed]]);
      return settles;
    } catch (error) {
      if (own) await client.query("ROLLBACK").catch(() => {});
      throw error;
    }
  }

  async get(id: string, options: WaitOptions = {}): Promise<JobRecord | undefined> {
    checkString("id", id, 256);
    const rows = await this.#query<{ record: JobRecord }>("reading a job", options, `SELECT record FROM ${this.#schema}.jobs WHERE id = $1`, [id]);
    return rows[0]?.record;
  }

  async getByIdempotencyKey(key: string, options: WaitOptions = {}): Promise<JobRecord | undefined> {
    checkString("key", key, 512);
    const rows = await this.#query<{ record: JobRecord }>(
      "reading a job",
      options,
      `SELECT record FROM ${this.#schema}.jobs WHERE idempotency_key = $1`,
      [key],
    );
    return rows[0]?.record;
  }

  async list(options: ListOptions = {}): Promise<JobPage> {
    const o = checkListOptions(options);
    const where: string[] = [];
    const params: unknown[] = [];
    const param = (value: unknown): string => {
      params.push(value);
      return `$${params.length}`;
    };
    if (o.state !== undefined) where.push(`state = ANY(${param(o.state)}::text[])`);
    if (o.type !== undefined) where.push(`type = ${param(o.type)}`);
    if (o.createdAfter !== undefined) where.push(`created_at >= ${param(o.createdAfter)}`);
    if (o.createdBefore !== undefined) where.push(`created_at < ${param(o.createdBefore)}`);
    if (o.idPrefix !== undefined) where.push(`id LIKE ${param(likePrefix(o.idPrefix))}`);
    if (o.metadata !== undefined) where.push(`metadata @> ${param(JSON.stringify(o.metadata))}::jsonb`);
    if (o.deadLettered !== undefined) where.push(o.deadLettered ? "dead_lettered" : "NOT dead_lettered");
    // A schedule's jobs have ids `schedule:<id>:<tick>`: an index range on the key, then the exact link.
    if (o.schedule !== undefined) where.push(`id LIKE ${param(likePrefix(`schedule:${o.schedule}:`))} AND record->'schedule'->>'id' = ${param(o.schedule)}`);
    if (o.search !== undefined) {
      // The same text MemoryJobStore searches: id, type, metadata values, the payload's string and number values.
      const like = param(`%${o.search.replace(/[\\%_]/g, (c) => `\\${c}`)}%`);
      where.push(`(id ILIKE ${like} OR type ILIKE ${like} OR EXISTS (SELECT 1 FROM jsonb_each_text(metadata) m WHERE m.value ILIKE ${like})
        OR EXISTS (SELECT 1 FROM jsonb_path_query(coalesce(record->'payload', 'null'::jsonb), 'strict $.**') v
                   WHERE jsonb_typeof(v) IN ('string', 'number') AND v #>> '{}' ILIKE ${like}))`);
    }
    if (o.cursor !== undefined) {
      const cursor = decodeCursor(o.cursor);
      where.push(`(created_at, id) < (${param(cursor.createdAt)}, ${param(cursor.id)})`);
    }
    const sql = `SELECT record FROM ${this.#schema}.jobs ${where.length > 0 ? `WHERE ${where.join(" AND ")}` : ""}
      ORDER BY created_at DESC, id DESC LIMIT ${param(o.limit + 1)}`;
    const rows = await this.#query<{ record: JobRecord }>("listing jobs", options, sql, params);
    const records = rows.slice(0, o.limit).map((r) => r.record);
    const last = records.at(-1);
    return rows.length > o.limit && last !== undefined ? { records, nextCursor: encodeCursor(last) } : { records };
  }

  async counts(filter: { type?: string } = {}, options: WaitOptions = {}): Promise<JobCounts> {
    const type = optional(checkObject("filter", filter).type, undefined, (v) => checkString("filter.type", v, 256));
    const rows = await this.#query<{ state: string; n: string }>(
      "counting jobs",
      options,
      `SELECT state, count(*) AS n FROM ${this.#schema}.jobs ${type === undefined ? "" : "WHERE type = $1"} GROUP BY state`,
      type === undefined ? [] : [type],
    );
    const counts = zeroCounts();
    for (const { state, n } of rows) if ((RECORD_STATES as readonly string[]).includes(state)) counts[state as keyof JobCounts] = Number(n);
    return counts;
  }

  /**
   * {@inheritDoc JobStore.finishedSummary}
   * Two aggregate queries over the rows with `finished_at` in the window (index `jobs_finished`);
   * the run times with `percentile_disc`, the nearest rank `MemoryJobStore` uses too. Only the
   * second reads `record` (jsonb, TOASTed when large), of the newest `sampleLimit` rows alone.
   */
  async finishedSummary(options: FinishedSummaryOptions): Promise<FinishedSummary> {
    const { since, bucketMs, runTimeSince, sampleLimit } = checkFinishedSummary(options);
    const s = this.#schema;
    const last = `record->'attempts'->-1`;
    const first = `record->'attempts'->0`;
    const window = `finished_at >= $1 AND state IN ('completed', 'failed', 'cancelled')`;
    const [rows, runs] = await Promise.all([
      this.#query<{ t: string; state: string; n: number }>(
        "summing up finished jobs",
        options,
        `SELECT (finished_at / $2) * $2 AS t, state, count(*)::int AS n FROM ${s}.jobs
         WHERE finished_at >= $1 AND state IN ('completed', 'failed', 'cancelled') GROUP BY 1, 2 ORDER BY 1`,
        [since, bucketMs],
      ),
      // Ordered-set aggregates skip nulls: each figure covers the records that have it.
      // The records of the newest `sampleLimit` rows only (a bounded top-N sort); `capped` counts up to one row more, reading no record.
      this.#query<{ run50: string | null; run95: string | null; runs: number; wait50: string | null; wait95: string | null; waits: number; capped: boolean }>(
        "summing up run and wait times",
        options,
        `SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY run) AS run50, percentile_disc(0.95) WITHIN GROUP (ORDER BY run) AS run95, count(run)::int AS runs,
                percentile_disc(0.5) WITHIN GROUP (ORDER BY wait) AS wait50, percentile_disc(0.95) WITHIN GROUP (ORDER BY wait) AS wait95, count(wait)::int AS waits,
                (SELECT count(*) FROM (SELECT 1 FROM ${s}.jobs WHERE ${window} LIMIT $2 + 1) c) > $2 AS capped
         FROM (SELECT CASE WHEN ${last} ? 'startedAt' AND ${last} ? 'endedAt' THEN greatest(0, (${last}->>'endedAt')::bigint - (${last}->>'startedAt')::bigint) END AS run,
                      CASE WHEN ${first} ? 'startedAt' THEN greatest(0, (${first}->>'startedAt')::bigint - greatest(created_at, coalesce((record->>'runAt')::bigint, 0))) END AS wait
               FROM (SELECT record, created_at FROM ${s}.jobs WHERE ${window} ORDER BY finished_at DESC, id DESC LIMIT $2) n) r`,
        [runTimeSince, sampleLimit],
      ),
    ]);
    const buckets = new Map<number, FinishedSummary["buckets"][number]>();
    for (const row of rows) {
      const t = Number(row.t);
      const bucket = buckets.get(t) ?? { t, completed: 0, failed: 0, cancelled: 0 };
      bucket[row.state as "completed" | "failed" | "cancelled"] = row.n;
      buckets.set(t, bucket);
    }
    const r = runs[0];
    const ms = (value: string | null | undefined) => (value == null ? null : Number(value));
    return {
      buckets: [...buckets.values()],
      runTime: { p50Ms: ms(r?.run50), p95Ms: ms(r?.run95), count: r?.runs ?? 0 },
      waitTime: { p50Ms: ms(r?.wait50), p95Ms: ms(r?.wait95), count: r?.waits ?? 0 },
      capped: r?.capped === true,
    };
  }

  async expireUnstarted(options: ExpireOptions = {}): Promise<JobRecord[]> {
    const o = checkObject("options", options);
    const now = optional(o.now, Date.now(), (v) => checkInteger("now", v, 0));
    const limit = optional(o.limit, 1000, (v) => checkInteger("limit", v, 1));
    this.#checkOpen();
    return this.#withClient("expiring unstarted jobs", {}, async (client) => {
      await client.query("BEGIN");
      try {
        const due = await client.query<{ record: JobRecord }>(
          `SELECT record FROM ${this.#schema}.jobs WHERE start_by <= $1 AND state IN (${[...UNSTARTED_STATES].map((state) => `'${state}'`).join(", ")})
           ORDER BY start_by LIMIT $2 FOR UPDATE SKIP LOCKED`,
          [now, limit],
        );
        const expired = due.rows.map((r) => r.record).filter((record) => expireRecord(record, now));
        if (expired.length > 0) {
          await client.query(
            `UPDATE ${this.#schema}.jobs AS j SET state = u.state, updated_at = u.updated_at, finished_at = u.finished_at, start_by = u.start_by,
               record = u.record FROM jsonb_to_recordset($1::jsonb) AS u(${RECORDSET}) WHERE j.id = u.id AND j.id = ANY($2::text[])`,
            [JSON.stringify(expired.map(row)), expired.map((record) => record.id)],
          );
        }
        await client.query("COMMIT");
        return expired;
      } catch (error) {
        await client.query("ROLLBACK").catch(() => {});
        throw error;
      }
    });
  }

  async cleanup(options: CleanupOptions = {}): Promise<number> {
    const o = checkObject("options", options);
    const before = optional(o.before, Date.now() - this.#o.retentionMs, (v) => checkInteger("before", v));
    const batchSize = optional(o.batchSize, 1000, (v) => checkInteger("batchSize", v, 1, 100_000));
    let removed = 0;
    for (;;) {
      const rows = await this.#query<{ id: string }>(
        "removing old jobs",
        { signal: options.signal },
        `DELETE FROM ${this.#schema}.jobs WHERE id IN (
           SELECT id FROM ${this.#schema}.jobs WHERE finished_at < $1 ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED
         ) RETURNING id`,
        [before, batchSize],
      );
      removed += rows.length;
      if (rows.length < batchSize) break;
    }
    // Sticky keys and rate-limit buckets untouched for the retention (a bucket that old is full).
    await this.#query("removing old sticky keys", { signal: options.signal }, `DELETE FROM ${this.#schema}.sticky_keys WHERE updated_at < $1`, [before]);
    await this.#query("removing old rate-limit buckets", { signal: options.signal }, `DELETE FROM ${this.#schema}.rate_limits WHERE updated_at < $1`, [before]);
    return removed;
  }

  /**
   * Takes `units` tokens from the bucket `key`, shared by every process on this schema: one
   * `INSERT … ON CONFLICT DO UPDATE … RETURNING` on the bucket's row, which PostgreSQL locks, so
   * concurrent takes queue on the row and none is lost or granted twice. Time is the database's
   * clock (`clock_timestamp()`), so the processes' clocks need not agree.
   * @throws {OrchestratorError} `invalid_argument`; `unavailable` when PostgreSQL cannot be reached.
   */
  async takeTokens(key: string, limit: TokenBucketLimit, units: number, options: WaitOptions = {}): Promise<TokenTake> {
    checkString("key", key, 1024);
    const checked = checkTokenBucketLimit("limit", limit);
    checkInteger("units", units, -checked.burst, checked.burst);
    const rate = checked.max / checked.intervalMs;
    const results = await this.#query<QueryResult<{ granted: boolean; tokens: number }>>("taking a rate-limit token", options, this.#takeTokenSql(key, checked.burst, units, rate), undefined);
    // A simple-protocol batch answers one result per statement; the second is the INSERT's.
    const row = results[1]?.rows[0];
    if (row === undefined) throw new OrchestratorError("internal", `taking a rate-limit token of ${key} returned no row`);
    return row.granted ? { granted: true, waitMs: 0 } : { granted: false, waitMs: Math.ceil((units - row.tokens) / rate) };
  }

  /** The worker that started the latest job of sticky key `key`, or undefined. */
  async stickyWorker(key: string, options: WaitOptions = {}): Promise<string | undefined> {
    checkString("key", key, 1024);
    const rows = await this.#query<{ worker_id: string }>("reading a sticky key", options, `SELECT worker_id FROM ${this.#schema}.sticky_keys WHERE key = $1`, [key]);
    return rows[0]?.worker_id;
  }

  /** Remembers that `workerId` started the latest job of sticky key `key`. */
  async rememberSticky(key: string, workerId: string, options: WaitOptions = {}): Promise<void> {
    checkString("key", key, 1024);
    checkString("workerId", workerId);
    await this.#query(
      "remembering a sticky key",
      options,
      `INSERT INTO ${this.#schema}.sticky_keys (key, worker_id, updated_at) VALUES ($1, $2, $3)
       ON CONFLICT (key) DO UPDATE SET worker_id = EXCLUDED.worker_id, updated_at = EXCLUDED.updated_at`,
      [key, workerId, Date.now()],
    );
  }

  /**
   * The token bucket of `token-bucket.ts` in one statement. Every SET expression reads the row
   * as it was before this statement (locked by the conflict), so the take and the refill are one
   * atomic step; `granted` records its answer. It runs with `synchronous_commit` off for its own
   * implicit transaction (`SET LOCAL` in one simple-protocol batch, hence literals, not
   * parameters): a take then waits for no WAL flush (`bench/scheduling-costs.ts`, PostgreSQL 15
   * on 2 loaded shared cores: 733 takes/s on one hot key from 4 connections against 453 with the
   * flush, 336 against 168 from one). A
   * PostgreSQL crash may forget the last takes before it, so a bucket may then grant up to a
   * few hundred milliseconds' worth of tokens again; never fewer.
   */
  #takeTokenSql(key: string, burst: number, units: number, rate: number): string {
    const b = `${burst}::float8`;
    const u = `${units}::float8`;
    const available = `LEAST(${b}, b.tokens + GREATEST(0, EXCLUDED.updated_at - b.updated_at) * ${rate}::float8)`;
    return `SET LOCAL synchronous_commit TO off;
      INSERT INTO ${this.#schema}.rate_limits AS b (key, tokens, updated_at, granted)
      SELECT ${quoteLiteral(key)}, LEAST(${b}, ${b} - ${u}), n.now, true
        FROM (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS now) AS n
      ON CONFLICT (key) DO UPDATE SET
        granted = ${available} >= ${u},
        tokens = CASE WHEN ${available} >= ${u} THEN LEAST(${b}, ${available} - ${u}) ELSE ${available} END,
        updated_at = GREATEST(b.updated_at, EXCLUDED.updated_at)
      RETURNING granted, tokens`;
  }

  /**
   * Waits for the writes already accepted, then closes the pool the store opened (a pool passed
   * in `pool` stays open). Later calls reject with `queue_closed`. Idempotent.
   */
  close(): Promise<void> {
    this.#closed ??= this.#close();
    return this.#closed;
  }

  async #close(): Promise<void> {
    this.#flushNow(true);
    while (this.#pending.length > 0 || this.#flushing > 0) {
      await new Promise((resolve) => setTimeout(resolve, 5));
      this.#flushNow(true);
    }
    await this.#pool.end();
  }

  #checkOpen(): void {
    if (this.#closed !== undefined) throw new OrchestratorError("queue_closed", "the job store is closed");
  }

  #getPool(): Promise<Pool> {
    return this.#pool.get("PostgresJobStore");
  }

  async #withClient<T>(doing: string, options: WaitOptions, fn: (client: PoolClient) => Promise<T>): Promise<T> {
    this.#checkOpen();
    const wait = waitSignal(options, `${doing} in the job store`);
    try {
      const pool = await this.#getPool();
      let client: PoolClient;
      try {
        client = await raceSignal(pool.connect(), wait.signal);
      } catch (error) {
        throw postgresError(error, doing);
      }
      let broken: Error | undefined;
      // A checked-out client emits its socket's death as an `error` event too (the query in
      // flight rejects with it): without a listener that event would crash the process.
      client.on("error", ignore);
      try {
        return await fn(client);
      } catch (error) {
        broken = error instanceof Error ? error : new Error(String(error));
        throw postgresError(error, doing);
      } finally {
        // A client whose query failed may hold a dead socket or an aborted transaction: drop it.
        client.off("error", ignore);
        client.release(broken);
      }
    } finally {
      wait.dispose();
    }
  }

  async #query<R extends QueryResultRow>(doing: string, options: WaitOptions, sql: string, params: unknown[] | undefined): Promise<R[]> {
    this.#checkOpen();
    const wait = waitSignal(options, `${doing} in the job store`);
    try {
      const pool = await this.#getPool();
      const result = await raceSignal(pool.query<R>(sql, params), wait.signal).catch((error: unknown) => {
        throw postgresError(error, doing);
      });
      // A batch of statements (no params: the simple protocol) answers one result per statement.
      return Array.isArray(result) ? (result as unknown as R[]) : result.rows;
    } finally {
      wait.dispose();
    }
  }
}
