import type { OrchestratorError } from "../errors.ts";
import type { JobEnvelope } from "../job/envelope.ts";
import type { CancelReason } from "../job/types.ts";
import type { JobEvents, JobQueue } from "../queue/types.ts";
import type { Logger } from "../telemetry/logger.ts";
import type { TelemetryOptions } from "../telemetry/telemetry.ts";
import type { JobStore } from "../store/types.ts";
import type { JobRequirements, Lease, WorkerInfo, WorkerPoolEvents } from "../worker-pool/types.ts";

/** Backoff between attempts of a failed job: `baseDelayMs * factor^(attempt-1)`, capped, ± jitter. */
export interface RetryOptions {
  /**
   * Delay before the second attempt, in milliseconds.
   * @default 1000
   */
  baseDelayMs?: number;
  /**
   * Longest delay between two attempts, in milliseconds.
   * @default 60000
   */
  maxDelayMs?: number;
  /**
   * Growth of the delay per attempt.
   * @default 2
   */
  factor?: number;
  /**
   * Random spread of each delay, as a fraction of it (0 to 1), so retries of jobs that failed
   * together do not come back together.
   * @default 0.2
   */
  jitter?: number;
}

/** The pool events a dispatcher follows. */
export type DispatcherPoolEvent = "capacityChanged" | "workerStateChanged" | "workerRemoved";

/**
 * What the dispatcher needs of a worker pool: a narrow port that `WorkerPool` implements, so a
 * test or a host may pass its own.
 */
export interface DispatcherPool {
  /** Subscribes to the pool events the dispatcher follows. */
  on<K extends DispatcherPoolEvent>(event: K, listener: (...args: WorkerPoolEvents[K]) => void): unknown;
  /** Removes a listener added with `on`. */
  off<K extends DispatcherPoolEvent>(event: K, listener: (...args: WorkerPoolEvents[K]) => void): unknown;
  /** Slots of healthy workers: how many jobs the dispatcher may hold. */
  readonly capacity: number;
  /** Whether some worker (in any state but removed) could ever run the job. */
  canRun(job: JobRequirements): boolean;
  /**
   * Optional: every worker, so that a job no healthy worker can run is reported with the reason
   * (`WorkerPool` has it).
   */
  list?(): readonly WorkerInfo[];
  /**
   * Optional: one worker, so that a job with sticky `"hard"` whose worker is draining or gone is
   * failed at once with the reason (`WorkerPool` has it).
   */
  get?(id: string): WorkerInfo | undefined;
  /** Leases a free slot of a healthy worker that can run the job, or returns undefined. */
  acquire(job: JobRequirements): Lease | undefined;
  /** Resolves when a matching free slot may exist; rejects with the signal's reason. */
  onAvailable(job?: JobRequirements, options?: { signal?: AbortSignal }): Promise<void>;
}

/** Options of {@link Dispatcher}. */
export interface DispatcherOptions {
  /** Where jobs come from. */
  queue: JobQueue;
  /** Where job events (state, progress, log, results) go and cancel commands come from. */
  events: JobEvents;
  /** The workers that run the jobs. */
  pool: DispatcherPool;
  /** Backoff between attempts of a failed job. */
  retry?: RetryOptions;
  /**
   * The job types this dispatcher accepts; a job of another type is failed (`not_found`) and
   * dead-lettered without reaching a worker.
   * @default undefined: every type
   */
  jobTypes?: readonly string[];
  /**
   * How long `close()` lets running jobs finish before it aborts them (as if its signal fired).
   * @default undefined: wait for the signal only
   */
  closeTimeoutMs?: number;
  /**
   * Delay before a job that no worker of the pool can run (its type or labels match none) is
   * offered again. It goes back to the queue with its attempt unchanged: waiting for a worker
   * is not a failure.
   * @default 5000
   */
  noWorkerDelayMs?: number;
  /**
   * Delay before a job whose worker was lost mid-run is offered again. The lost attempt counts.
   * @default 0
   */
  workerLostDelayMs?: number;
  /**
   * How long a cancel command is remembered for a job this dispatcher has not seen yet, so the
   * job never starts when it is consumed later.
   * @default 86400000 (24 hours)
   */
  cancelRetentionMs?: number;
  /**
   * Most cancel commands remembered; the oldest are forgotten first.
   * @default 100000
   */
  maxRetainedCancels?: number;
  /**
   * Spans `process {queue}` (CONSUMER, per delivery) and `execute {type}` (CLIENT, per trip to a
   * worker; its context travels to the worker in the assign message), with retries, cancels,
   * timeouts, evictions and dead letters as span events; the semconv messaging metrics and job
   * duration, queue wait, jobs active, retries, dead letters and cancel latency.
   * @default the global OpenTelemetry providers when `@opentelemetry/api` is installed; else nothing
   */
  telemetry?: TelemetryOptions;
  /**
   * Where records about jobs go (pino-shaped), each with `jobId`, `jobType`, `attempt`,
   * `workerId` and `traceId`/`spanId` when known: debug for each step, info for cancels, warn for
   * failures, retries and dead letters, error for what went wrong in the dispatcher itself.
   * @default none: silent, except a one-time console warning for an error nobody listens to
   */
  logger?: Logger;
  /**
   * Where every job's record is kept (`MemoryJobStore`, `PostgresJobStore`). The dispatcher
   * records each transition: `unschedulable` with its reason, `started`, progress, `retrying`,
   * and how the job ended, which joins the settle order as its first step (recorded, then
   * published, then the delivery settled, then the slot released). A job whose record is already
   * final (recorded before a crash that lost the ack, or failed at its start timeout) is not run
   * again: its recorded outcome is published and its delivery settled.
   * @default undefined: nothing recorded
   */
  store?: JobStore;
  /**
   * Longest wait for the store to record an outcome; past it (or when the store fails) the
   * outcome counts as unpublished: the delivery goes back to the queue, nothing is acked.
   * @default 10000
   */
  storeTimeoutMs?: number;
  /**
   * Whether, with a `store` that keeps logs (`JobStore.appendLogs`), every line a handler logs
   * is written to it (best effort, one write in flight per running job). `false` writes none:
   * the lines still reach the job events (`JobHandle`, the console's live view), and the store's
   * connections are left to the transitions.
   * @default true
   */
  keepLogs?: boolean;
  /**
   * How often, with a `store`, jobs past their start timeout are failed and records past the
   * store's retention removed.
   * @default 30000
   */
  maintenanceIntervalMs?: number;
  /**
   * This dispatcher's name in the attempts it records.
   * @default a random UUID
   */
  dispatcherId?: string;
  /**
   * So many starts per interval, per job type and per rate-limit key (a job's
   * `rateLimit.key`). A job takes one token from each limit that covers it before it starts; one
   * held back holds no worker slot, waits here at most `maxHoldMs`, else goes back to the queue
   * until its token is due, shown meanwhile as `unschedulable` with the reason.
   * @default none
   * @example `{ types: { deploy: { max: 2, intervalMs: 60_000, shared: true } }, keys: { "tenant:*": { max: 10, intervalMs: 1000 } } }`
   */
  rateLimits?: RateLimitsOptions;
}

/**
 * One rate limit, a token bucket: at most `max` starts per `intervalMs` on average, and at most
 * `burst` at once after a quiet spell. In any span of `t` ms at most `burst + max × t / intervalMs`
 * jobs it covers start.
 */
export interface RateLimitOptions {
  /** Starts per `intervalMs`: the sustained rate. An integer >= 1. */
  max: number;
  /** The interval `max` counts over, in milliseconds. */
  intervalMs: number;
  /**
   * Most starts at once after a quiet spell (the bucket's size).
   * @default max
   */
  burst?: number;
  /**
   * Shared by every dispatcher of the same job `store` (the bucket is a row of the store, taken
   * with one atomic statement per start), rather than this dispatcher's own. Needs a `store`
   * with `takeTokens()`; every dispatcher sharing it should set the same limit.
   * @default false
   */
  shared?: boolean;
}

/** The `rateLimits` option of {@link DispatcherOptions}. */
export interface RateLimitsOptions {
  /** Limits per job type. */
  types?: Record<string, RateLimitOptions>;
  /**
   * Limits per rate-limit key. A name ending in `*` is a pattern: every key starting with what
   * precedes the `*` gets a bucket of its own with that limit (`"tenant:*"`: each tenant its
   * own); an exact name wins over a pattern, a longer pattern over a shorter. A job naming a key
   * no limit covers is not held back (logged once per key as a warning).
   */
  keys?: Record<string, RateLimitOptions>;
  /**
   * Longest time a held-back job waits here for its tokens (holding its delivery) before it goes
   * back to the queue until they are due.
   * @default 1000
   */
  maxHoldMs?: number;
}

/** Why a job went back to the queue without using an attempt (see `jobDeferred`). */
export type DeferReason = "no_worker" | "shutdown" | "not_started" | "rate_limited";

/** Who a dispatcher event is about. */
export interface DispatcherJobInfo {
  /** The job as it came from the queue. */
  job: JobEnvelope;
  /** The attempt of this delivery (see `Delivery.attempt`). */
  attempt: number;
}

/** Events of {@link Dispatcher}; each carries one payload object. */
export interface DispatcherEvents {
  /** An attempt was handed to a worker. */
  jobStarted: [DispatcherJobInfo & { workerId: string }];
  /** The job completed; its result was published and its delivery acked. */
  jobCompleted: [DispatcherJobInfo & { workerId: string; result: unknown; durationMs: number }];
  /**
   * The job failed for good; its result `failed` was published. Either its error was not
   * retryable or its attempts ran out (then `jobDeadLettered` follows once the delivery is
   * dead-lettered), or the queue took the delivery away for being held past the broker's
   * `consumer_timeout` (`error.code` `deadline_exceeded`, `error.details.reason`
   * `"consumer_timeout"`): the queue dead-lettered it itself, so no `jobDeadLettered` follows.
   */
  jobFailed: [DispatcherJobInfo & { workerId?: string; error: OrchestratorError }];
  /** An attempt failed and the job goes back to the queue for attempt `attempt + 1` after `delayMs`. */
  jobRetrying: [DispatcherJobInfo & { workerId?: string; error: OrchestratorError; delayMs: number }];
  /** The job was cancelled; `started` says whether it had reached a worker. */
  jobCancelled: [DispatcherJobInfo & { workerId?: string; reason: CancelReason; started: boolean }];
  /** The dispatcher moved the delivery to the dead-letter queue with `reason`. */
  jobDeadLettered: [DispatcherJobInfo & { reason: string }];
  /**
   * The job went back to the queue without using an attempt: no worker of the pool can run it
   * (`no_worker`, after `noWorkerDelayMs`), or none can right now because the pool's healthy
   * capacity dropped below the jobs held (`no_worker`, `delayMs` 0), or the worker refused it
   * before it started (`not_started`: no session could be opened, or no slot was free there; see
   * `neverStarted()`), or the dispatcher is closing (`shutdown`), or a rate limit holds it back
   * longer than `rateLimits.maxHoldMs` (`rate_limited`, `delayMs` until its token is due).
   */
  jobDeferred: [DispatcherJobInfo & { reason: DeferReason; delayMs: number }];
  /**
   * The queue took the job's delivery away before it was settled (`Delivery.signal` fired with
   * `delivery_lost`: its channel or connection died, or its consumer was cancelled) while the job
   * waited for a slot or ran. The attempt was aborted on its worker (`workerId` is set when it
   * had started; the handler's signal fired with `error`), nothing was published or settled for
   * it, and its slot is released right after this event, once the transport call has ended. The
   * queue delivers the job again with a higher attempt, to this dispatcher or another; a copy
   * that reaches this one while the abandoned attempt is still winding down waits for it.
   *
   * `superseded` (with a job store): the store holds a newer attempt of the job (a higher
   * fencing token), so this older copy was acked without running or publishing anything.
   */
  jobAbandoned: [DispatcherJobInfo & { workerId?: string; reason: "delivery_lost" | "superseded"; error: OrchestratorError }];
  /** Forwarded from the pool. */
  workerStateChanged: WorkerPoolEvents["workerStateChanged"];
  /**
   * Something went wrong that did not stop the dispatcher: an outcome that could not be
   * published (the job goes back to the queue with `retry`), a settle on a lost delivery, a throwing
   * listener, a prefetch change the queue refused. `error.details.jobId` names the job when
   * there is one.
   */
  error: [{ error: OrchestratorError }];
}
