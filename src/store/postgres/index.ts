export { PostgresJobStore } from "./postgres-job-store.ts";
export type { PostgresJobStoreOptions } from "./postgres-job-store.ts";
export { jobStoreSchemaSql, JOB_STORE_SCHEMA_VERSION } from "./schema.ts";
export { PostgresScheduleStore } from "./postgres-schedule-store.ts";
export type { PostgresScheduleStoreOptions } from "./postgres-schedule-store.ts";
