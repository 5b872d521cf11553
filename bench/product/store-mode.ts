/**
 * The job store of the bench's product processes, chosen by the environment, so the store
 * section can run the same product with and without one in the same rounds:
 * - `BENCH_STORE` unset: no store (the reference);
 * - `BENCH_STORE=postgres`: a `PostgresJobStore` on `DATABASE_URL` (default the local `test`
 *   database) in schema `BENCH_STORE_SCHEMA`, which the bench created and migrated, shared by the
 *   producer (`JobClient`) and the orchestrator (`Dispatcher`).
 */
import { PostgresJobStore } from "../../src/store/postgres/postgres-job-store.ts";
import type { JobStore } from "../../src/store/types.ts";

/** The database the bench's store uses. */
export const BENCH_DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";

/** The store this process must use, or undefined. */
export function benchStore(): JobStore | undefined {
  const mode = process.env.BENCH_STORE;
  if (mode === undefined || mode === "" || mode === "none") return undefined;
  if (mode !== "postgres") throw new Error(`BENCH_STORE must be postgres or unset, got ${JSON.stringify(mode)}`);
  const schema = process.env.BENCH_STORE_SCHEMA;
  if (schema === undefined) throw new Error("BENCH_STORE=postgres needs BENCH_STORE_SCHEMA");
  return new PostgresJobStore({ connectionString: BENCH_DATABASE_URL, schema });
}
