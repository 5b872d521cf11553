import type { EventEmitter } from "eventemitter3";
import type { DispatchTelemetry } from "../telemetry/dispatch-telemetry.ts";
import type { JobRecorder } from "./job-recorder.ts";
import type { Placement } from "./placement.ts";
import type { RateLimiter } from "./rate-limiter.ts";
import type { ResolvedDispatcherOptions } from "./options.ts";
import type { Run, RunRegistry } from "./run.ts";
import type { DispatcherEvents } from "./types.ts";

/** Emits a {@link DispatcherEvents} event safely (a throwing listener is reported, never thrown). @internal */
export type DispatcherEmit = <K extends keyof DispatcherEvents & string>(event: K, ...args: EventEmitter.EventArgs<DispatcherEvents, K>) => void;

/** Reports a problem that does not stop the dispatcher, as an `error` event. @internal */
export type DispatcherReport = (cause: unknown, doing: string, jobId?: string) => void;

/** What the parts of one {@link Dispatcher} share. @internal */
export interface DispatcherContext {
  readonly options: ResolvedDispatcherOptions;
  /** Every run held: delivered and not yet ended. */
  readonly runs: RunRegistry;
  /** The runs waiting for a free worker slot. */
  readonly waiting: Set<Run>;
  readonly emit: DispatcherEmit;
  readonly report: DispatcherReport;
  /** Spans, figures and log records of the runs. */
  readonly telemetry: DispatchTelemetry;
  /** Writes the runs' transitions into the job store (a no-op without one). */
  readonly recorder: JobRecorder;
  /** The pool requirements of each job, and the memory of sticky keys. */
  readonly placement: Placement;
  /** The rate limits; undefined without `rateLimits`. */
  readonly limiter: RateLimiter | undefined;
  /** Whether new deliveries may start (false once `close()` began). */
  accepting(): boolean;
}
