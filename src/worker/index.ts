export { OrchestratorError } from "../errors.ts";
export { serveWorker, WORKER_SDK_VERSION } from "./serve-worker.ts";
export type { ServeWorkerOptions, ServeWorkerTlsOptions, WorkerServer } from "./serve-worker.ts";
export { nonRetryable } from "../errors.ts";
export type { JobContext, JobHandler, JobHandlers } from "./types.ts";
