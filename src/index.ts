export { OrchestratorError, nonRetryable, deserializeError, isOrchestratorErrorCode } from "./errors.ts";
export type { OrchestratorErrorCode, OrchestratorErrorOptions, SerializedError } from "./errors.ts";
export { Dispatcher } from "./dispatcher/dispatcher.ts";
export type {
  DispatcherOptions, DispatcherEvents, DispatcherJobInfo, DispatcherPool, DispatcherPoolEvent, RetryOptions, DeferReason, RateLimitOptions, RateLimitsOptions,
} from "./dispatcher/types.ts";
export type { JobAffinity, JobRateLimit, PreferredLabel, StickyMode } from "./job/affinity.ts";
export { JobClient } from "./client/job-client.ts";
export { JobHandle } from "./client/job-handle.ts";
export { MAX_DELAY_MS } from "./job/due-time.ts";
export type { CancelOptions } from "./client/job-handle.ts";
export type { RedriveTarget, JobRedriveOptions, JobRedriveResult } from "./client/redrive.ts";
export type {
  JobTypeMap, JobTypesOf, JobSpec, JobClientOptions, JobClientEvents, JobHandleEvents, JobHandleEvent, JobHandleStateEvent,
} from "./client/types.ts";
export { ScheduleClient } from "./client/schedule-client.ts";
export type { ScheduleOptions, ScheduleUpdate, ScheduleInfo, ScheduleListPage, ScheduleTimingOptions, ScheduledJobSpec } from "./client/schedule-client.ts";
export { ScheduleHandle } from "./client/schedule-handle.ts";
export { Scheduler } from "./schedule/scheduler.ts";
export type { SchedulerOptions, SchedulerEvents } from "./schedule/scheduler.ts";
export { MemoryScheduleStore } from "./schedule/memory-schedule-store.ts";
export { OVERLAP_POLICIES, MISSED_TICK_POLICIES, MAX_CATCHUP_TICKS } from "./schedule/types.ts";
export type {
  OverlapPolicy, MissedTickPolicy, ScheduleStore, ScheduleRecord, ScheduleTiming, ScheduleJobTemplate, PendingTick, ScheduleCreateResult,
  ScheduleReplaceResult, ScheduleListOptions, SchedulePage,
} from "./schedule/types.ts";
export { MemoryLeadership } from "./queue/leadership.ts";
export type { Leadership, LeaderTerm, Candidacy } from "./queue/leadership.ts";
export { ENVELOPE_VERSION, parseEnvelope, encodeEnvelope, decodeEnvelope, redrivenEnvelope, MAX_REDRIVES_KEPT } from "./job/envelope.ts";
export type { JobEnvelope, JobRedrive, TraceContext, EnvelopeLimits, JobScheduleLink } from "./job/envelope.ts";
export { CONCURRENCY_STRATEGIES } from "./job/concurrency.ts";
export type { ConcurrencyStrategy, JobConcurrency } from "./job/concurrency.ts";
export { MemoryJobStore } from "./store/memory-job-store.ts";
export type { MemoryJobStoreOptions, JobStoreOptions } from "./store/memory-job-store.ts";
export type {
  JobRecord, JobRecordState, JobAttemptRecord, JobAttemptOutcome, JobProgressRecord, JobLogLine, JobFilter, ListOptions, JobPage, JobCounts,
} from "./store/types.ts";
export { MemoryQueue } from "./queue/memory-queue.ts";
export type { MemoryQueueOptions, MemoryQueueEvents, MemoryQueueInfo } from "./queue/memory-queue.ts";
export { InProcessTransport } from "./transport/in-process-transport.ts";
export type { InProcessTransportOptions } from "./transport/in-process-transport.ts";
export { createJobContext } from "./worker/job-context.ts";
export type { JobContextOptions } from "./worker/job-context.ts";
export { WorkerPool } from "./worker-pool/worker-pool.ts";
export type {
  WorkerState, WorkerOptions, WorkerPoolOptions, WorkerInfo, JobRequirements, Lease, RemoveWorkerOptions, AvailableOptions, WorkerPoolEvents,
} from "./worker-pool/types.ts";
export { WorkerDiscovery } from "./discovery/worker-discovery.ts";
export type { WorkerDiscoveryOptions, WorkerDiscoveryEvents } from "./discovery/worker-discovery.ts";
export { StaticWorkers } from "./discovery/static-workers.ts";
export type { StaticWorkersOptions } from "./discovery/static-workers.ts";
export { DnsWorkers } from "./discovery/dns-workers.ts";
export type { DnsWorkersOptions, DnsRecordType } from "./discovery/dns-workers.ts";
export type { DiscoveredWorker, WorkerSource, WorkerSourceEvents } from "./discovery/types.ts";
export { HealthMonitor } from "./health/health-monitor.ts";
export type { HealthMonitorOptions, HealthMonitorEvents } from "./health/health-monitor.ts";
export type { HealthTarget } from "./health/types.ts";
export type {
  JobQueue, Consumer, Delivery, ConsumeOptions, EnqueueOptions, WaitOptions, DeadLetterInfo, JobEvents, Subscription, PublishOptions,
  RedriveOptions, RedriveResult, DeadLettersOptions, KeyHooks, QueueDepth,
} from "./queue/types.ts";
export type {
  JobEvent, JobStateEvent, JobProgressEvent, JobLogEvent, JobResultEvent, JobState, JobOutcome, CancelCommand, CancelReason,
  WorkerJobEvent,
} from "./job/types.ts";
export type {
  WorkerTransport, ExecuteRequest, ExecuteOptions, HealthStatus, WorkerDescription, TransportState,
} from "./transport/types.ts";
export type {
  JobStore, NewJobRecord, CreateResult, JobTransition, StartedTransition, ProgressTransition, RetryingTransition, UnschedulableTransition,
  QueuedTransition, FinishedTransition, RedrivenTransition, TransitionStatus, TransitionResult, CleanupOptions, ExpireOptions,
  ConsoleRecords, AuditEntry, AuditListOptions, SavedFilter,
} from "./store/types.ts";
export type { TokenBucketLimit, TokenTake } from "./store/token-bucket.ts";
export { PrometheusRegistry } from "./telemetry/prometheus.ts";
export type { PrometheusRegistryOptions } from "./telemetry/prometheus.ts";
export { silentLogger } from "./telemetry/logger.ts";
export type { Logger, JobLogFields } from "./telemetry/logger.ts";
export type { TelemetryOptions, TracerProviderLike, MeterProviderLike, PropagatorLike } from "./telemetry/telemetry.ts";
