import type { OrchestratorError, SerializedError } from "../errors.ts";
import type { JobEvents, JobQueue } from "../queue/types.ts";
import type { JobLogEvent, JobOutcome, JobProgressEvent, JobState } from "../job/types.ts";
import type { JobStore } from "../store/types.ts";
import type { ScheduleStore } from "../schedule/types.ts";
import type { JobHandler } from "../worker/types.ts";
import type { TraceContext } from "../job/envelope.ts";
import type { JobAffinity, JobRateLimit } from "../job/affinity.ts";
import type { ConcurrencyStrategy } from "../job/concurrency.ts";
import type { Logger } from "../telemetry/logger.ts";
import type { TelemetryOptions } from "../telemetry/telemetry.ts";

/**
 * The job types a {@link JobClient} submits, by name: each with its payload and result type, so
 * `submit({ type, payload })` and `handle.result()` are typed end to end.
 *
 * @example
 * ```ts
 * type Jobs = { build: { payload: { context: string; tag: string }; result: { imageId: string } } };
 * const client = new JobClient<Jobs>({ queue, events });
 * const handle = await client.submit({ type: "build", payload: { context: ".", tag: "app:1" } });
 * const { imageId } = await handle.result();
 * ```
 */
export type JobTypeMap = Record<string, { payload: unknown; result: unknown }>;

/**
 * The {@link JobTypeMap} of a set of worker handlers, so producer and worker share one source of
 * truth: `new JobClient<JobTypesOf<typeof handlers>>(…)`.
 */
export type JobTypesOf<H extends Record<string, JobHandler<never, unknown>>> = {
  [K in keyof H & string]: { payload: Parameters<H[K]>[0]; result: Awaited<ReturnType<H[K]>> };
};

/** What {@link JobClient.submit} takes: one job of type `K`. */
export interface JobSpec<Jobs extends JobTypeMap, K extends keyof Jobs & string> {
  /** The job type; selects the worker handler. A non-empty string of at most 256 characters. */
  type: K;
  /** The handler's input: a JSON value (plain objects, arrays, strings, finite numbers, booleans, null). */
  payload: Jobs[K]["payload"];
  /**
   * The job id, unique among the jobs this client follows.
   * @default a random UUID
   */
  id?: string;
  /**
   * Deadline of one attempt on a worker, in milliseconds; the handler's signal fires when it passes.
   * @default the client's `defaults.timeoutMs`
   */
  timeoutMs?: number;
  /**
   * Attempts before the job fails for good (1 to 1000).
   * @default the client's `defaults.maxAttempts`
   */
  maxAttempts?: number;
  /**
   * A second submit with the same key returns the first job's handle instead of a new job: with a
   * `store`, for every client of that store (in any process) while the job's record is retained;
   * without one, while this client still knows the first job (running, or finished less than
   * `idempotencyRetentionMs` ago). Workers see the key too (`ctx.idempotencyKey`) to make their
   * effects idempotent.
   */
  idempotencyKey?: string;
  /**
   * When the job is due: a `Date`, epoch milliseconds, or an ISO 8601 date-time with a zone
   * (`"2026-12-24T18:00:00Z"`). Until then it waits as `scheduled` (`handle.runAt` says when) and
   * can be cancelled; it runs no earlier, and as close after as the queue allows (RabbitMQ: within
   * tens of milliseconds, see docs/rabbitmq.md). A time not in the future means now; at most
   * 90 days ahead (`MAX_DELAY_MS`). Give `runAt` or `delayMs`, not both.
   * @default due at once
   */
  runAt?: Date | number | string;
  /**
   * Milliseconds from now until the job is due (0 to `MAX_DELAY_MS`, 90 days); see `runAt`.
   * @default 0
   */
  delayMs?: number;
  /**
   * Longest wait for the job's first attempt to start, in milliseconds from the submit, from its
   * due time (`runAt` / `delayMs`) or from a redrive; past it the job fails with
   * `deadline_exceeded` (`details.reason` `"start_timeout"`), for example when no worker serves
   * its type or carries its labels.
   * @default the client's `defaults.startTimeoutMs`
   */
  startTimeoutMs?: number;
  /**
   * String pairs kept in the job's record (with a `store`), for `client.list({ metadata })`.
   * At most 64 pairs.
   */
  metadata?: Record<string, string>;
  /** Labels a worker must carry (each key with the same value) to run the job. */
  labels?: Record<string, string>;
  /**
   * Where the job would rather run: preferred labels with weights, and stickiness to the worker
   * that ran the previous job of the same `stickyKey` (`sticky: "soft"` or `"hard"`).
   * @example `{ preferred: { cache: { value: "warm", weight: 10 } }, stickyKey: "repo:web", sticky: "soft" }`
   */
  affinity?: JobAffinity;
  /**
   * The rate-limit key the job counts against (besides its type's limit); the limits are set on
   * the dispatchers (`rateLimits.keys`). A key no dispatcher limits does not hold the job back.
   */
  rateLimit?: JobRateLimit;
  /**
   * Priority level: an integer from 1 (highest) to 5 (lowest), like Temporal's priority key. A
   * free slot takes the highest-priority job waiting, FIFO within a level; a lower level that
   * was passed over too many times in a row gets the next turn, so it never starves.
   * @default 3
   */
  priority?: number;
  /** W3C trace context, so the worker's spans join the producer's trace. */
  trace?: TraceContext;
  /**
   * A concurrency key: at most `limit` jobs of `key` are held by dispatchers (waiting for a
   * worker slot or running) at once, across every dispatcher of the queue, and a holder's slot
   * of the key is freed when its dispatcher dies. A job over the limit waits in the queue (it
   * holds no prefetch and no worker slot; its state stays `queued`, with a `reason`), or, by
   * `strategy`, cancels the oldest holder (`cancel_running`) or is dropped (`drop_newest`,
   * finishing `cancelled`). See README "Concurrency keys".
   * @example `{ key: "env:prod" }`: one deploy to prod at a time, the others wait in order.
   */
  concurrency?: { key: string; limit?: number; strategy?: ConcurrencyStrategy };
  /** Stops waiting for the queue's confirmation; the job may or may not have been queued. */
  signal?: AbortSignal;
}

/** Options of {@link JobClient}. */
export interface JobClientOptions {
  /** Where jobs are submitted. */
  queue: JobQueue;
  /** Where job events come from and cancel commands go. */
  events: JobEvents;
  /** Defaults of each {@link JobSpec}. */
  defaults?: {
    /**
     * Deadline of one attempt, in milliseconds.
     * @default 3600000 (one hour)
     */
    timeoutMs?: number;
    /**
     * Attempts before a job fails for good.
     * @default 3
     */
    maxAttempts?: number;
    /**
     * Longest wait for a job's first attempt to start, in milliseconds.
     * @default 3600000 (one hour)
     */
    startTimeoutMs?: number;
  };
  /**
   * Where job records live. With a store, `submit()` creates the job's record first (an
   * idempotency key then holds for every client of the store), and `get()`, `list()`,
   * `counts()`, `deadLetters()` and `redrive()` work from any process.
   * @default undefined: no records; `get()` and friends reject with `precondition_failed`
   */
  store?: JobStore;
  /**
   * Where recurring schedules live (`MemoryScheduleStore`, `PostgresScheduleStore`): with it,
   * `client.schedules` creates, changes and lists them from any process; a `Scheduler` in the
   * orchestrators fires their ticks.
   * @default undefined: `client.schedules` methods reject with `precondition_failed`
   */
  schedules?: ScheduleStore;
  /**
   * With a `store`: how often the records of followed unfinished jobs are read again, so a
   * handle settles even when its result event was missed, and jobs past their start timeout
   * are failed even when no dispatcher runs.
   * @default 5000
   */
  storePollIntervalMs?: number;
  /**
   * How long a finished job's idempotency key still returns its handle, in milliseconds.
   * @default 600000 (ten minutes)
   */
  idempotencyRetentionMs?: number;
  /**
   * Spans (`send {queue}` per submit, its context written into the envelope and the AMQP
   * headers) and figures (`messaging.client.sent.messages`, `messaging.client.operation.duration`).
   * @default the global OpenTelemetry providers when `@opentelemetry/api` is installed; else nothing
   */
  telemetry?: TelemetryOptions;
  /**
   * Where this client's records go (pino-shaped).
   * @default none: silent, except a one-time console warning for an error nobody listens to
   */
  logger?: Logger;
}

/** A state change of a job as a {@link JobHandle} reports it: like `JobStateEvent`, final states included. */
export interface JobHandleStateEvent {
  kind: "state";
  jobId: string;
  state: JobState;
  /** The attempt the change belongs to. */
  attempt: number;
  /** Epoch milliseconds. */
  at: number;
  /** The worker running it, for `running`. */
  workerId?: string;
  /** Why no healthy worker can run it, for `unschedulable`. */
  reason?: string;
  /** Why the attempt failed, for `retrying`. */
  error?: SerializedError;
  /**
   * When the next attempt comes, for `retrying`; for `unschedulable`, when a rate limit sent the
   * job back to the queue, how long after `at` it comes back (a cancel then ends it at once).
   */
  delayMs?: number;
  /** How the job ended, for `completed`, `failed` and `cancelled`. */
  outcome?: JobOutcome;
}

/** What iterating a {@link JobHandle} yields. */
export type JobHandleEvent = JobHandleStateEvent | JobProgressEvent | JobLogEvent;

/** Events of {@link JobHandle}; each carries one payload object. */
export interface JobHandleEvents {
  /** The job changed state (`running`, `retrying`, then one final state). */
  state: [JobHandleStateEvent];
  /** The handler reported progress. */
  progress: [JobProgressEvent];
  /** The handler wrote a log line. */
  log: [JobLogEvent];
}

/** Events of {@link JobClient}; each carries one payload object. */
export interface JobClientEvents {
  /** A handle's listener threw, or the event subscription reported a problem; the client carried on. */
  error: [{ error: OrchestratorError }];
}
