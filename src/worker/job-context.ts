import type { TraceContext } from "../job/envelope.ts";
import type { WorkerJobEvent } from "../job/types.ts";
import { safeText } from "./handler-safety.ts";
import type { JobContext } from "./types.ts";

const never = new AbortController().signal;

/** Options of {@link createJobContext}. */
export interface JobContextOptions {
  /** The attempt the handler runs: what `WorkerTransport.execute` received. */
  request: {
    readonly jobId: string;
    readonly type: string;
    readonly attempt: number;
    /** The attempt's fencing token (`ctx.fencingToken`). @default `attempt` (an orchestrator that sends none) */
    readonly fencingToken?: number | undefined;
    /** Epoch milliseconds after which the attempt is aborted (`ctx.deadline`). */
    readonly deadline: number;
    readonly idempotencyKey?: string | undefined;
    readonly trace?: TraceContext | undefined;
  };
  /** Fires when the handler must stop (cancel, deadline, lost worker); becomes `ctx.signal`. */
  signal: AbortSignal;
  /** Fires when the worker begins a graceful shutdown (`ctx.shuttingDown`). @default a signal that never fires */
  shuttingDown?: AbortSignal;
  /**
   * Receives each progress event (clamped to 0..1; NaN and non-numbers dropped) and log line
   * (made a string) the handler reports. A throw is swallowed: `ctx.progress()` and `ctx.log()`
   * never throw into the handler.
   */
  onEvent(event: WorkerJobEvent): void;
  /** Events are dropped once this returns false (the attempt has ended). @default always open */
  isOpen?(): boolean;
}

/**
 * Builds the {@link JobContext} a handler gets, keeping the rules every worker keeps: progress
 * clamped to 0..1 (±Infinity to 1 or 0; NaN and non-numbers dropped), messages and log lines made
 * text without throwing (`Object.create(null)`, a throwing `toString`), a stream other than
 * stdout/stderr dropped (the line kept), nothing reported after the attempt ended, and
 * `progress()`/`log()` never throwing. `serveWorker()` and `InProcessTransport` use it;
 * a custom transport that runs handlers itself should too (docs/transport.md lists a transport's
 * duties).
 *
 * @example
 * ```ts
 * const ctx = createJobContext({ request, signal: options.signal, onEvent: options.onEvent });
 * const result = await handler(payload, ctx);
 * ```
 */
export function createJobContext(options: JobContextOptions): JobContext {
  const { request, signal, onEvent } = options;
  const isOpen = options.isOpen ?? (() => true);
  const send = (event: WorkerJobEvent): void => {
    if (!isOpen()) return;
    try {
      onEvent(event);
    } catch {
      // Progress and log lines are best effort and must never throw into the handler.
    }
  };
  return {
    jobId: request.jobId,
    attempt: request.attempt,
    fencingToken: request.fencingToken ?? request.attempt,
    type: request.type,
    idempotencyKey: request.idempotencyKey,
    trace: request.trace === undefined ? undefined : { ...request.trace },
    signal,
    deadline: request.deadline,
    shuttingDown: options.shuttingDown ?? never,
    progress(progress: number, message?: string): void {
      try {
        if (typeof progress !== "number" || Number.isNaN(progress)) return;
        const value = Math.min(1, Math.max(0, progress));
        send(message === undefined ? { kind: "progress", progress: value } : { kind: "progress", progress: value, message: safeText(message) });
      } catch {
        // Documented never to throw.
      }
    },
    log(line: string, stream?: "stdout" | "stderr"): void {
      try {
        const text = safeText(line);
        send(stream === "stdout" || stream === "stderr" ? { kind: "log", line: text, stream } : { kind: "log", line: text });
      } catch {
        // Documented never to throw.
      }
    },
  };
}
