import type { OrchestratorError } from "../errors.ts";
import type { WorkerDescription, WorkerTransport } from "../transport/types.ts";
import type { Logger } from "../telemetry/logger.ts";
import type { TelemetryOptions } from "../telemetry/telemetry.ts";

/**
 * Where a worker is in its life. Changed in one place only (the pool's private `#setState`),
 * and every change is announced by a `workerStateChanged` event.
 *
 * - `joining`: added but not admitted yet: its session is not open or its first check has not
 *   passed (or it announced something the pool cannot accept); `reason` says which. No leases.
 * - `idle`: healthy, every slot free.
 * - `busy`: healthy, at least one slot leased (it may still have free slots).
 * - `saturated`: healthy, but every slot it has is held, some by handlers that were aborted and have
 *   not returned (its `stuckSlots`); no leases until they return.
 * - `unhealthy`: failed its health checks or lost its connection; gets no leases, and its running
 *   leases were aborted with `worker_lost`. A health report brings it back, or (after a lost
 *   connection) the connection coming back with a passing check.
 * - `draining`: finishing the leases it holds and getting no new ones (`drain()`, or
 *   `remove(id, { drain: true })` waiting for its leases).
 * - `removed`: gone from the pool; terminal.
 */
export type WorkerState = "joining" | "idle" | "busy" | "saturated" | "unhealthy" | "draining" | "removed";

/** A worker to add to a {@link WorkerPool}. */
export interface WorkerOptions {
  /** Unique in the pool; a non-empty string of at most 1024 characters. */
  id: string;
  /**
   * How the pool reaches the worker. The pool owns it from `add()` on: `remove()` and `close()`
   * close it.
   */
  transport: WorkerTransport;
  /**
   * How many of its slots the pool may use at once: at most what the worker announces (a worker
   * announcing 2 slots gets 2 leases even when this says 5). With `admission: "trust"`, its slots.
   * @default what the worker announces (1 with `admission: "trust"`)
   */
  slots?: number;
  /**
   * Labels the worker must announce with these values, or it is not admitted (`reason` says
   * which). A job runs on a worker only when each of the job's required labels is among the
   * worker's announced labels with the same value. With `admission: "trust"`, its labels.
   * @default {}
   */
  labels?: Record<string, string>;
  /**
   * The job types the pool sends it: only those of them the worker announces (none in common: not
   * admitted). With `admission: "trust"`, the types it runs.
   * @default what the worker announces (any type with `admission: "trust"`)
   */
  jobTypes?: readonly string[];
  /**
   * `announce`: the worker joins `joining` and is admitted once its session is open and its first
   * check passed, with what it announces about itself. `trust`: it is `idle` at once and the
   * options above are taken as they are (for transports that cannot describe their worker, and
   * tests).
   * @default "announce"
   */
  admission?: "announce" | "trust";
}

/** A read-only snapshot of one worker, as `get()`, `list()` and the pool's events give it. */
export interface WorkerInfo {
  readonly id: string;
  readonly state: WorkerState;
  readonly slots: number;
  /** Slots leased right now, including leases aborted but not yet released. */
  readonly busySlots: number;
  readonly labels: Readonly<Record<string, string>>;
  /** The job types it runs; absent when it runs any type. */
  readonly jobTypes?: readonly string[];
  /** Epoch milliseconds of its latest lease; absent before the first one. */
  readonly lastLeasedAt?: number;
  /** Slots held by handlers that were aborted and have not returned; absent when none. */
  readonly stuckSlots?: number;
  /**
   * Why it is `joining`, `unhealthy` or `saturated`, in words a person can act on ("nothing
   * listens on 10.0.0.7:50051 (connection refused)", "the certificate of … has expired").
   */
  readonly reason?: string;
  /** What the worker announced when it was admitted (id, slots, labels, job types, version, protocol). */
  readonly description?: WorkerDescription;
}

/**
 * What a job needs from a worker: its type and the labels the worker must carry; and what it
 * would rather have: preferred labels with weights, a worker of its own choosing.
 */
export interface JobRequirements {
  type: string;
  /** Each key must be present on the worker with the same value. @default {} */
  labels?: Record<string, string>;
  /**
   * Labels the job would rather find, each with a weight (1 to 100, @default 1): a worker's score
   * is the sum of the weights of those it carries with the same value, and among the free workers
   * that qualify the highest score wins, then the least recently leased.
   * @default {}
   */
  preferred?: Record<string, { value: string; weight?: number }>;
  /**
   * A worker by id: with `required` only that worker (when it has a free slot, else nothing);
   * without, that worker when it has a free slot and qualifies, else as usual. Sticky assignment.
   */
  worker?: { id: string; required?: boolean };
}

/**
 * One slot of one worker, held from `acquire()` until `release()`.
 *
 * @example
 * ```ts
 * const lease = pool.acquire({ type: "build" });
 * if (lease) {
 *   try { await lease.transport.execute(request, { signal: lease.signal, onEvent }); }
 *   finally { lease.release(); }
 * }
 * ```
 */
export interface Lease {
  readonly workerId: string;
  readonly transport: WorkerTransport;
  /**
   * Aborted with an `OrchestratorError` code `worker_lost` (`details.reason === "worker_lost"`,
   * see `cancelReasonOf()`) when the worker goes unhealthy or is removed without drain before
   * the lease is released. Pass it (combined with the job's own signal) to `execute()`.
   */
  readonly signal: AbortSignal;
  /**
   * Gives the slot back. Idempotent: later calls do nothing. Call it after the job's outcome is
   * settled, also when the signal fired (the slot stays taken until then).
   */
  release(): void;
}

/** Options of {@link WorkerPool.remove}. */
export interface RemoveWorkerOptions {
  /**
   * Wait for the worker's leases to be released first (it is `draining` meanwhile); when false
   * its leases are aborted with `worker_lost` at once.
   * @default false
   */
  drain?: boolean;
  /**
   * Stops waiting for the drain: when it fires the worker is removed at once, as without
   * `drain`, and its remaining leases are aborted with `worker_lost`.
   */
  signal?: AbortSignal;
}

/** Options of {@link WorkerPool.onAvailable}. */
export interface AvailableOptions {
  /** Stops waiting; the promise rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Gives up after this long, rejecting with `deadline_exceeded`. */
  timeoutMs?: number;
}

/** The events of a {@link WorkerPool}, each with one payload object. */
export interface WorkerPoolEvents {
  /** A worker joined the pool (it starts `idle`). */
  workerAdded: [{ worker: WorkerInfo }];
  /** A worker left the pool; `worker.state` is `removed`. */
  workerRemoved: [{ worker: WorkerInfo }];
  /**
   * A worker passed its admission (session open, first check passed) and serves with `worker`'s
   * slots, labels and job types; `description` is what it announced.
   */
  workerAdmitted: [{ worker: WorkerInfo; description: WorkerDescription }];
  /**
   * A worker could not be admitted (or re-admitted after a lost connection): `reason` says why
   * (refused, unreachable, unknown CA, expired certificate, name mismatch, plaintext to TLS, a
   * mismatch with the pool's options). Emitted when the reason changes; admission keeps trying.
   */
  workerUnavailable: [{ workerId: string; reason: string; error: OrchestratorError }];
  /**
   * A worker's {@link WorkerState} changed, or (with `from === to`) why it stays `joining`
   * changed; `reason` says why when known (a health report's, or an admission's).
   */
  workerStateChanged: [{ workerId: string; from: WorkerState; to: WorkerState; reason?: string }];
  /**
   * The pool's totals changed: `capacity` is the slots of healthy (`idle`/`busy`) workers, what a
   * dispatcher may hold at once; `free` the slots of those not leased.
   */
  capacityChanged: [{ capacity: number; free: number }];
  /** A listener of another event, or a transport's `watch()`, threw; the pool carried on. */
  error: [{ error: OrchestratorError }];
}

/** Options of {@link WorkerPool}. */
export interface WorkerPoolOptions {
  /**
   * Gauges `blacktree.workers` (by state) and `blacktree.worker.slots` (free, busy, unavailable).
   * @default the global OpenTelemetry meter provider when `@opentelemetry/api` is installed; else nothing
   */
  telemetry?: TelemetryOptions;
  /**
   * Where worker state changes are recorded (pino-shaped; `warn` when a worker turns unhealthy).
   * @default none
   */
  logger?: Logger;
}

