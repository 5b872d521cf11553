import type { TraceContext } from "../job/envelope.ts";
import type { WorkerJobEvent } from "../job/types.ts";

/** One attempt of a job as sent to a worker. */
export interface ExecuteRequest {
  jobId: string;
  type: string;
  payload: unknown;
  /** 1-based attempt number; a duplicate run always has a higher one. */
  attempt: number;
  /**
   * The attempt's fencing token (see `fencingToken()`): only grows over the job's attempts and
   * redrives. The worker shows it to the handler as `ctx.fencingToken`. Absent: `attempt`.
   */
  fencingToken?: number;
  /** Epoch milliseconds after which the worker must abort the handler. */
  deadline: number;
  idempotencyKey?: string;
  /** The job's creation context (the producer's `send` span), from its envelope. */
  trace?: TraceContext;
  /**
   * The context of the dispatcher's span for this attempt (`execute {type}`) as the OpenTelemetry
   * propagator wrote it; the worker's `handle {type}` span is its child. A transport carries it
   * with the job (the gRPC one in the assign message) and gives it to the worker's runner.
   */
  traceCarrier?: Record<string, string>;
}

/** Options of {@link WorkerTransport.execute}. */
export interface ExecuteOptions {
  /**
   * Aborting cancels the job on the worker: the handler's `ctx.signal` fires with the same
   * reason, and `execute` rejects with that reason (an `OrchestratorError`).
   */
  signal: AbortSignal;
  /** Called in order with every progress and log event of this attempt. Must not throw. */
  onEvent: (event: WorkerJobEvent) => void;
}

/** Health of a worker as its standard `grpc.health.v1` service answers it. */
export type HealthStatus = "serving" | "not_serving";

export type { WorkerDescription } from "../wire/description.ts";
import type { WorkerDescription } from "../wire/description.ts";
export { WORKER_PROTOCOL } from "../wire/protocol.ts";

/** Connection state a transport reports on its own, between health checks. */
export type TransportState = "ready" | "lost";

/**
 * Talks to one worker. Implementations: {@link InProcessTransport} (a function in this process),
 * `GrpcTransport` (`@blacktree/orchestrator/grpc`), or the host's own (HTTP, SSH, a Kubernetes Job).
 * `describeTransportContract()` checks any implementation.
 */
export interface WorkerTransport {
  /**
   * Runs one attempt and resolves with the handler's result (a JSON value).
   * @throws {OrchestratorError} the signal's reason when aborted; `deadline_exceeded` when the
   * deadline passed; `handler_failed` when the handler threw (with its message, and
   * `retryable: false` when the handler said so); `worker_lost` when the worker died or the
   * connection broke mid-job; `resource_exhausted` when the worker has no free slot;
   * `not_found` when it has no handler for the type; `unavailable` when it cannot be reached.
   */
  execute(request: ExecuteRequest, options: ExecuteOptions): Promise<unknown>;
  /**
   * Asks the worker whether it serves (the standard health check).
   * @throws {OrchestratorError} `unavailable` when it does not answer, `deadline_exceeded`
   * after `timeoutMs`, `canceled` when the signal fires.
   */
  check(options: { signal?: AbortSignal; timeoutMs?: number }): Promise<HealthStatus>;
  /** Asks the worker for its slots, labels and job types. */
  describe(options?: { signal?: AbortSignal; timeoutMs?: number }): Promise<WorkerDescription>;
  /**
   * Optional: opens the connection (a session) and resolves with what the worker announced on it.
   * A pool admits a worker only after this (or `describe()` for a transport without one) and a
   * passing `check()`.
   * @throws {OrchestratorError} `unavailable` / `unauthenticated` with a reason a person can act on
   * (`details.connectFailure` for code); `deadline_exceeded`; the signal's reason.
   */
  connect?(options?: { signal?: AbortSignal; timeoutMs?: number }): Promise<WorkerDescription>;
  /**
   * Optional: calls `listener` with the number of the worker's stuck slots (held by handlers whose
   * attempt was aborted and that have not returned) whenever it changes. Returns the unsubscribe.
   */
  watchSlots?(listener: (stuck: number) => void): () => void;
  /**
   * Optional: reports connection loss the moment the transport notices it, so the pool can evict
   * the worker before its next health check. Returns an unsubscribe function.
   */
  watch?(listener: (state: TransportState) => void): () => void;
  /**
   * Optional: the worker's health as a live connection already shows it, without asking: the
   * serving status its latest answer to a liveness ping carried, while that connection answers
   * its pings in time. `undefined` when nothing vouches for it now (no live connection, or a worker
   * that does not report it); the caller then asks with `check()`. A health monitor uses it to
   * skip a check that would tell nothing new. Synchronous and cheap.
   */
  vouchedHealth?(): HealthStatus | undefined;
  /** Releases connections; running `execute` calls reject with `worker_lost`. Idempotent. */
  close(): Promise<void>;
}
