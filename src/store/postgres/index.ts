export { PostgresJobStore } from "./postgres-job-store.ts";
export type { PostgresJobStoreOptions } from "./postgres-job-store.ts";
export { jobStoreSchemaSql, JOB_STORE_SCHEMA_VERSION } from "./schema.ts";
