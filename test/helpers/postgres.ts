import { randomBytes } from "node:crypto";
import pg from "pg";

/** The database the integration tests use: `DATABASE_URL`, else the local one (trust auth, database `test`). */
export const POSTGRES_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";

/** What {@link usePostgres} gives a test file. */
export interface Postgres {
  /** Whether PostgreSQL answered; tests needing it are skipped (locally) when false. */
  readonly available: boolean;
  readonly url: string;
  /** A fresh schema name of its own (`test_records_<hex>`); `cleanup()` drops every one handed out. */
  schemaName(): string;
  /** Drops the schemas `schemaName()` handed out. */
  cleanup(): Promise<void>;
  /** Runs one query on a throwaway connection. */
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, params?: unknown[]): Promise<R[]>;
}

async function probe(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  client.on("error", () => {});
  try {
    await client.connect();
    await client.query("SELECT 1");
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * Checks once whether the PostgreSQL integration tests can run. With `CI=true` a missing server
 * throws (the file fails: CI must not skip silently); locally it warns loudly and the tests are
 * skipped.
 */
export async function usePostgres(): Promise<Postgres> {
  const available = await probe(POSTGRES_URL);
  if (!available) {
    const message = `PostgreSQL is not answering at ${POSTGRES_URL}`;
    if (process.env.CI === "true") {
      throw new Error(`${message}: the PostgreSQL integration tests cannot run (start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start)`);
    }
    console.warn(`\n⚠️  ${message}: SKIPPING the PostgreSQL integration tests\n`);
  }
  const schemas = new Set<string>();
  const query = async <R extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<R[]> => {
    const client = new pg.Client({ connectionString: POSTGRES_URL });
    client.on("error", () => {});
    await client.connect();
    try {
      return (await client.query<R>(sql, params)).rows;
    } finally {
      await client.end().catch(() => {});
    }
  };
  return {
    available,
    url: POSTGRES_URL,
    schemaName() {
      const name = `test_records_${randomBytes(6).toString("hex")}`;
      schemas.add(name);
      return name;
    },
    async cleanup() {
      for (const name of schemas) await query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`);
      schemas.clear();
    },
    query,
  };
}
