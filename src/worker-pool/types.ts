import type { OrchestratorError } from "../errors.ts";
import type { WorkerTransport } from "../transport/types.ts";
import type { Logger } from "../telemetry/logger.ts";
import type { TelemetryOptions } from "../telemetry/telemetry.ts";

/**
 * Where a worker is in its life. Changed in one place only (the pool's private `#setState`),
 * and every change is announced by a `workerStateChanged` event.
 *
 * - `idle`: healthy, every slot free.
 * - `busy`: healthy, at least one slot leased (it may still have free slots).
 * - `unhealthy`: failed its health checks or lost its connection; gets no leases, and its running
 *   leases were aborted with `worker_lost`. Only a health report brings it back.
 * - `draining`: finishing the leases it holds and getting no new ones (`drain()`, or
 *   `remove(id, { drain: true })` waiting for its leases).
 * - `removed`: gone from the pool; terminal.
 */
export type WorkerState = "idle" | "busy" | "unhealthy" | "draining" | "removed";

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
   * How many jobs the worker runs at once.
   * @default 1
   */
  slots?: number;
  /**
   * What the worker offers (`{ gpu: "a100", zone: "eu-1" }`); a job runs here only when each of
   * its required labels is present with the same value.
   * @default {}
   */
  labels?: Record<string, string>;
  /**
   * The job types the worker has handlers for.
   * @default undefined (runs any type)
   */
  jobTypes?: readonly string[];
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
}

/** What a job needs from a worker: its type and the labels the worker must carry. */
export interface JobRequirements {
  type: string;
  /** Each key must be present on the worker with the same value. @default {} */
  labels?: Record<string, string>;
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
  /** A worker's {@link WorkerState} changed; `reason` says why when known (a health report's reason). */
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

