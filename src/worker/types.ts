import type { TraceContext } from "../job/envelope.ts";

/**
 * What a handler gets besides its payload (modelled on Temporal's activity `Context`).
 * The same object shape is given by `serveWorker()` over gRPC and by `InProcessTransport`.
 */
export interface JobContext {
  readonly jobId: string;
  /** 1-based attempt; greater than 1 when an earlier attempt failed or its worker died. */
  readonly attempt: number;
  /**
   * This attempt's fencing token: it only grows over the job's attempts and redrives, so an attempt
   * started later (a redelivery after the orchestrator lost this worker, a retry, a redrive) always
   * holds a larger one. Pass it with every write to an outside system that can keep the largest
   * token it has seen and refuse smaller ones (a conditional update, a compare-and-set), so a stale
   * attempt still running can never overwrite a newer one's result.
   *
   * @example
   * ```ts
   * await db.query(
   *   "UPDATE deployments SET image = $1, fencing_token = $2 WHERE id = $3 AND fencing_token <= $2",
   *   [image, ctx.fencingToken, id],
   * ); // 0 rows: a newer attempt already wrote; give up quietly
   * ```
   */
  readonly fencingToken: number;
  readonly type: string;
  readonly idempotencyKey: string | undefined;
  readonly trace: TraceContext | undefined;
  /**
   * Fires when the job must stop: cancelled (`requested`), past its deadline (`timeout`), the
   * worker is shutting down past its grace period (`shutdown`), or the orchestrator lost the
   * worker (`worker_lost`). Its `reason` is an `OrchestratorError`. Pass it on to everything
   * the handler awaits.
   */
  readonly signal: AbortSignal;
  /** Epoch milliseconds after which the job is aborted. */
  readonly deadline: number;
  /** Fires when the worker has begun a graceful shutdown; the handler may finish or wrap up early. */
  readonly shuttingDown: AbortSignal;
  /**
   * Reports progress from 0 to 1, with an optional message. Never throws, whatever it is given:
   * values below 0 (and -Infinity) count as 0, above 1 (and Infinity) as 1, NaN or a
   * non-number is dropped; the message is made text without throwing (`Object.create(null)`
   * and a throwing `toString` included).
   */
  progress(progress: number, message?: string): void;
  /**
   * Streams a log line to whoever follows the job. Never throws; the line is made text as the
   * progress message is; a stream other than `"stdout"` / `"stderr"` is dropped (the line is kept).
   */
  log(line: string, stream?: "stdout" | "stderr"): void;
}

/**
 * A user's job handler: `async (payload, ctx) => result`. The result must be a JSON value (or
 * `undefined` for none): one JSON would change (a function, `Map`, `Set`, bigint, NaN, a class
 * instance without `toJSON`, a cycle) fails the attempt with non-retryable `invalid_argument`
 * naming the path (`result.items[2]`). Throwing fails the attempt: an `OrchestratorError` with its
 * own code, anything else as `handler_failed` with a readable message (a thrown plain object as
 * its JSON, an empty `Error` as "Error thrown without a message"); throw `nonRetryable(message)`
 * to skip the remaining attempts. A rejection the handler's code leaves unhandled, or a throw in
 * a timer it set, fails its job the same way (`handler_failed`, "unhandled rejection in the
 * handler's code: …") and the worker process keeps running (see `serveWorker()`).
 */
export type JobHandler<P = unknown, R = unknown> = (payload: P, ctx: JobContext) => Promise<R> | R;

/**
 * A handler of any payload type, as {@link JobHandlers} holds it. Written in method syntax so its
 * parameter is checked both ways: a handler annotated with its own payload type fits, and an
 * inline handler without annotations gets a payload of type `unknown` (not `never`).
 */
export type AnyJobHandler = { handle(payload: unknown, ctx: JobContext): unknown }["handle"];

/** Handlers by job type. */
export type JobHandlers = Record<string, AnyJobHandler>;
