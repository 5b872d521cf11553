import { invalidArgument } from "../../errors.ts";

/** The schema version {@link jobStoreSchemaSql} creates; `migrate()` records it. */
export const JOB_STORE_SCHEMA_VERSION = 4;

/** Quotes a PostgreSQL identifier. @throws {OrchestratorError} `invalid_argument` for a bad schema name. */
export function quoteSchema(schema: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(schema)) throw invalidArgument("schema", "a PostgreSQL identifier (letters, digits, _; at most 63)", schema);
  return `"${schema}"`;
}

/**
 * The SQL that `PostgresJobStore.migrate()` runs (idempotent: every statement is `IF NOT EXISTS`),
 * for operators who apply migrations with their own tool (`PostgresScheduleStore.migrate()` runs
 * it too). The table `jobs`: the columns every `list()` filter and `cleanup()` reads, each with
 * its index, and the whole record as `jsonb`; `rate_limits` (one token bucket per row, see
 * `takeTokens`) and `sticky_keys` (the worker that ran the latest job of each sticky key);
 * `schedules` (version 2): one row per recurring schedule, its `revision` for compare-and-set,
 * `due_at` for the scheduler's look-ups; the console's `console_audit` and `console_filters`
 * (version 3); `job_logs` (version 4): the latest log lines of each job, removed with its row.
 * `id` and `idempotency_key` use the "C" collation so pages are cut in the same order as in
 * `MemoryJobStore` and an id prefix is an index range.
 */
export function jobStoreSchemaSql(schema = "blacktree"): string {
  const s = quoteSchema(schema);
  return `CREATE SCHEMA IF NOT EXISTS ${s};
CREATE TABLE IF NOT EXISTS ${s}.jobs (
  id text COLLATE "C" PRIMARY KEY,
  type text NOT NULL,
  state text NOT NULL,
  idempotency_key text COLLATE "C",
  metadata jsonb NOT NULL DEFAULT '{}',
  dead_lettered boolean NOT NULL DEFAULT false,
  fencing_token bigint NOT NULL DEFAULT 0,
  created_at bigint NOT NULL,
  updated_at bigint NOT NULL,
  finished_at bigint,
  start_by bigint,
  record jsonb NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency_key ON ${s}.jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_created ON ${s}.jobs (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_state_created ON ${s}.jobs (state, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_type_created ON ${s}.jobs (type, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_metadata ON ${s}.jobs USING gin (metadata jsonb_path_ops);
CREATE INDEX IF NOT EXISTS jobs_dead_lettered ON ${s}.jobs (created_at DESC, id DESC) WHERE dead_lettered;
CREATE INDEX IF NOT EXISTS jobs_finished ON ${s}.jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_start_by ON ${s}.jobs (start_by) WHERE start_by IS NOT NULL;
CREATE TABLE IF NOT EXISTS ${s}.rate_limits (
  key text COLLATE "C" PRIMARY KEY,
  tokens double precision NOT NULL,
  updated_at double precision NOT NULL,
  granted boolean NOT NULL
);
CREATE TABLE IF NOT EXISTS ${s}.sticky_keys (
  key text COLLATE "C" PRIMARY KEY,
  worker_id text NOT NULL,
  updated_at bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS sticky_keys_updated ON ${s}.sticky_keys (updated_at);
CREATE TABLE IF NOT EXISTS ${s}.schedules (
  id text COLLATE "C" PRIMARY KEY,
  revision bigint NOT NULL,
  due_at bigint,
  created_at bigint NOT NULL,
  updated_at bigint NOT NULL,
  record jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS schedules_due ON ${s}.schedules (due_at) WHERE due_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS ${s}.console_audit (id text COLLATE "C" PRIMARY KEY, at bigint NOT NULL, entry jsonb NOT NULL);
CREATE INDEX IF NOT EXISTS console_audit_at ON ${s}.console_audit (at DESC, id DESC);
CREATE TABLE IF NOT EXISTS ${s}.console_filters (name text PRIMARY KEY, filter jsonb NOT NULL, created_at bigint NOT NULL, created_by text NOT NULL);
CREATE TABLE IF NOT EXISTS ${s}.job_logs (
  job_id text COLLATE "C" NOT NULL REFERENCES ${s}.jobs (id) ON DELETE CASCADE,
  fencing_token bigint NOT NULL,
  seq integer NOT NULL,
  at bigint NOT NULL,
  attempt integer NOT NULL,
  stream text,
  line text NOT NULL,
  PRIMARY KEY (job_id, fencing_token, seq)
);
CREATE TABLE IF NOT EXISTS ${s}.schema_version (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
INSERT INTO ${s}.schema_version (version) VALUES (1), (2), (3), (${JOB_STORE_SCHEMA_VERSION}) ON CONFLICT DO NOTHING;
`;
}
