export { createConsole } from "./console.ts";
export { PoolReporter } from "./pool-reporter.ts";
export { AmqpPoolBus, MemoryPoolBus } from "./pool-bus.ts";
export { CONSOLE_ACTIONS } from "./api-types.ts";
export { CONTENT_SECURITY_POLICY } from "./http.ts";
export { CSRF_COOKIE, CSRF_HEADER } from "./csrf.ts";
export type { ConsoleHandler } from "./console.ts";
export type { ConsoleAction, ConsoleOptions } from "./types.ts";
export type {
  ConsoleActionKind, ConsoleJobFilter, ConsoleErrorBody, ConsoleErrorInfo, ConsoleSession, ConsoleQueueDepth, ConsoleOverview, ConsoleJobSummary,
  ConsoleJobList, ConsoleAttempt, ConsoleLogLine, ConsoleJobPage, ConsoleWorkerHistoryEntry, ConsoleWorker, ConsoleDeadLetterList, ConsoleInvalidDeadLetter, ConsoleInvalidDeadLetterList, ConsoleMessageBody,
  ConsoleAuditEntry, ConsoleSavedFilter, ConsoleBulkPreview, ConsoleBulkResult, ConsoleJobEvent, ConsoleStreamEvents,
} from "./api-types.ts";
export type { PoolBus, PoolTopic, AmqpPoolBusOptions } from "./pool-bus.ts";
export type { PoolReporterEvents, PoolReporterOptions, ReportedWorker, WorkerHistoryEntry } from "./pool-reporter.ts";
export type { AuditEntry, ConsoleRecords, SavedFilter, AuditListOptions } from "../store/types.ts";
