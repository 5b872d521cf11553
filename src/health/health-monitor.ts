import { EventEmitter } from "eventemitter3";
import { OrchestratorError } from "../errors.ts";
import { cancelError, raceSignal } from "../signals.ts";
import { MAX_TIMER_MS } from "../timers.ts";
import type { HealthStatus, TransportState } from "../transport/types.ts";
import { checkFunction, checkInteger, checkNumber, checkObject, checkString, optional } from "../validate.ts";
import { emitSafely, reportListenerError } from "../events.ts";
import type { HealthTarget } from "./types.ts";
import { type Logger, logSafely, resolveLogger } from "../telemetry/logger.ts";
import { recordHealthCheck } from "../telemetry/pool-telemetry.ts";
import { resolveTelemetry, type Telemetry } from "../telemetry/telemetry.ts";
import type { TelemetryOptions } from "../telemetry/telemetry.ts";

/** The longest delay a Node timer takes; beyond it Node fires after 1 ms instead. */

/** Options of {@link HealthMonitor}. */
export interface HealthMonitorOptions {
  /** What to check and whom to tell: a `WorkerPool`, or any {@link HealthTarget}. */
  target: HealthTarget;
  /**
   * How often every worker is checked, and how often the target's worker list is read again.
   * @default 5000
   */
  intervalMs?: number;
  /**
   * How long one check may take before it counts as failed (its signal is aborted then). This is
   * what catches a frozen worker whose connection stays open.
   * @default 2000
   */
  timeoutMs?: number;
  /**
   * Spread of the checks, from 0 to 1: each starts a random `0..jitter × intervalMs` after the
   * tick, so checks of many workers do not all land at once.
   * @default 0.1
   */
  jitter?: number;
  /**
   * Consecutive failed checks after which a worker is reported unhealthy.
   * @default 3
   */
  failureThreshold?: number;
  /**
   * Consecutive successful checks after which an unhealthy worker is reported healthy again.
   * @default 2
   */
  recoveryThreshold?: number;
  /**
   * Histogram `blacktree.health_check.duration` by outcome (`serving`, or the failure's code).
   * @default the global OpenTelemetry meter provider when `@opentelemetry/api` is installed; else nothing
   */
  telemetry?: TelemetryOptions;
  /**
   * Where failed checks and verdicts are recorded (pino-shaped).
   * @default none
   */
  logger?: Logger;
}

/** The events of a {@link HealthMonitor}, each with one payload object. */
export interface HealthMonitorEvents {
  /** A check failed or timed out; `consecutiveFailures` counts this one. */
  checkFailed: [{ workerId: string; error: OrchestratorError; consecutiveFailures: number }];
  /** The worker was reported unhealthy, after `failureThreshold` failures or a lost connection. */
  workerUnhealthy: [{ workerId: string; reason: string }];
  /** The worker was reported healthy again after `recoveryThreshold` successes. */
  workerRecovered: [{ workerId: string }];
  /** A listener, or the target's `workerIds()`/`report()`/`watch()`, threw; the monitor carried on. */
  error: [{ error: OrchestratorError }];
}

type ResolvedOptions = Readonly<Required<Omit<HealthMonitorOptions, "telemetry" | "logger">> & { telemetry: Telemetry; logger: Logger | undefined }>;

/** What the monitor knows of one worker. */
interface Tracked {
  readonly id: string;
  failures: number;
  successes: number;
  /** The verdict last reported; workers start healthy, as the pool adds them. */
  unhealthy: boolean;
  /** Bumped when the connection is lost, so a check begun before the loss cannot count towards recovery. */
  epoch: number;
  /** The jittered start of its next check. */
  scheduled: ReturnType<typeof setTimeout> | undefined;
  controller: AbortController | undefined;
  running: Promise<void> | undefined;
}

/**
 * Checks every worker of a {@link HealthTarget} on an interval and reports when one turns
 * unhealthy or recovers.
 *
 * At each tick (every `intervalMs`) the target's worker list is read again, so added workers are
 * checked from then on and removed ones forgotten; each worker's check then starts after its own
 * random jitter. A worker whose live connection vouches for its health (`target.vouched`: a
 * `GrpcTransport` session answering its pings carries the worker's serving status) is not
 * checked: the tick counts what the connection says as that check's outcome, so a thousand idle
 * workers cost no calls and no timers; losing the connection is reported at once through `watch`. A check is bounded by `timeoutMs` (its signal is aborted, and a check that
 * ignores the signal still counts as failed), and a worker never has two checks at once: a tick
 * that finds one still running skips it. After `failureThreshold` consecutive failures the
 * target hears `report(id, false, reason)`, and again at each further failed check; after
 * `recoveryThreshold` consecutive successes `report(id, true)`. A connection `lost` from `target.watch` reports unhealthy at once and
 * restarts the success count; the checks go on, so the worker recovers by itself. Timers are
 * unref'd: the monitor never holds a process open.
 *
 * @example
 * ```ts
 * const monitor = new HealthMonitor({ target: pool, intervalMs: 2000, timeoutMs: 1000 });
 * monitor.on("workerUnhealthy", ({ workerId, reason }) => log.warn(workerId, reason));
 * monitor.start();
 * // …
 * await monitor.close();
 * ```
 */
export class HealthMonitor extends EventEmitter<HealthMonitorEvents> {
  readonly #options: ResolvedOptions;
  readonly #workers = new Map<string, Tracked>();
  readonly #onListenerError = (error: OrchestratorError): void => reportListenerError(this as unknown as EventEmitter, error, this.#options.logger);
  #ticker: ReturnType<typeof setInterval> | undefined;
  #unwatch: (() => void) | undefined;
  #started = false;
  #closing: Promise<void> | undefined;

  /** @throws {OrchestratorError} `invalid_argument` naming the bad option. */
  constructor(options: HealthMonitorOptions) {
    super();
    this.#options = resolveOptions(options);
  }

  /**
   * Starts the ticks, the first one at once, and follows `target.watch`. Idempotent.
   * @throws {OrchestratorError} `precondition_failed` after `close()`.
   */
  start(): void {
    if (this.#closing) throw new OrchestratorError("precondition_failed", "the health monitor is closed");
    if (this.#started) return;
    this.#started = true;
    const { target, intervalMs } = this.#options;
    if (target.watch) {
      try {
        this.#unwatch = target.watch((workerId, state) => this.#onTransportState(workerId, state));
      } catch (error) {
        this.#targetError("watch", error);
      }
    }
    this.#tick();
    this.#ticker = setInterval(() => this.#tick(), intervalMs);
    this.#ticker.unref?.();
  }

  /**
   * Checks one worker (or every worker of the target) now, without waiting for the next tick, and
   * resolves when done; the outcome counts like any other check. Joins a check already running.
   * Works before `start()`.
   * @throws {OrchestratorError} `not_found` when the target does not list `workerId`; `canceled`
   * (reason `shutdown`) after `close()`.
   */
  async checkNow(workerId?: string): Promise<void> {
    if (this.#closing) throw cancelError("shutdown", "the health monitor is closed");
    if (workerId !== undefined) checkString("workerId", workerId);
    this.#sync();
    if (workerId === undefined) {
      await Promise.all(Array.from(this.#workers.values(), (worker) => this.#check(worker)));
      return;
    }
    const worker = this.#workers.get(workerId);
    if (worker === undefined) throw new OrchestratorError("not_found", `worker ${workerId} is not among the monitored workers`);
    await this.#check(worker);
  }

  /** Stops every timer, aborts the checks in flight and stops following `target.watch`. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #close(): Promise<void> {
    clearInterval(this.#ticker);
    this.#ticker = undefined;
    try {
      this.#unwatch?.();
    } catch (error) {
      this.#targetError("watch", error);
    }
    const running: Array<Promise<void>> = [];
    const reason = cancelError("shutdown", "the health monitor was closed");
    for (const worker of this.#workers.values()) {
      clearTimeout(worker.scheduled);
      worker.scheduled = undefined;
      if (worker.running) running.push(worker.running);
      worker.controller?.abort(reason);
    }
    this.#workers.clear();
    await Promise.allSettled(running);
  }

  /** Emits so that a throwing listener neither skips the others nor breaks this object's state. */
  #emit<K extends keyof HealthMonitorEvents>(event: K, ...args: HealthMonitorEvents[K]): void {
    emitSafely(this as unknown as EventEmitter, this.#onListenerError, event, ...args);
  }

  #tick(): void {
    this.#sync();
    const { intervalMs, jitter, target } = this.#options;
    for (const worker of this.#workers.values()) {
      // No overlapping checks: a check still running (or about to start) makes this tick skip the worker.
      if (worker.running || worker.scheduled) continue;
      // A live connection that answers its pings already says what a check would (no call, no timer).
      const vouched = target.vouched === undefined ? undefined : this.#vouched(worker.id);
      if (vouched === "serving") {
        this.#succeeded(worker);
        continue;
      }
      if (vouched === "not_serving") {
        this.#failed(worker, new OrchestratorError("unavailable", `worker ${worker.id} reports not_serving on its connection`));
        continue;
      }
      const delayMs = Math.random() * jitter * intervalMs;
      // Timers round a delay under 1 ms up to 1 ms; a check due now starts now.
      if (delayMs < 1) {
        void this.#check(worker);
        continue;
      }
      worker.scheduled = setTimeout(() => {
        worker.scheduled = undefined;
        void this.#check(worker);
      }, delayMs);
      worker.scheduled.unref?.();
    }
  }

  #vouched(workerId: string): HealthStatus | undefined {
    try {
      return this.#options.target.vouched?.(workerId);
    } catch (error) {
      this.#targetError("vouched", error);
      return undefined;
    }
  }

  /** Follows the target's worker list: new ids are tracked, missing ones forgotten. */
  #sync(): void {
    let ids: Set<string>;
    try {
      ids = new Set(this.#options.target.workerIds());
    } catch (error) {
      this.#targetError("workerIds", error);
      return;
    }
    for (const id of ids) {
      if (!this.#workers.has(id)) {
        this.#workers.set(id, { id, failures: 0, successes: 0, unhealthy: false, epoch: 0, scheduled: undefined, controller: undefined, running: undefined });
      }
    }
    for (const worker of this.#workers.values()) {
      if (ids.has(worker.id)) continue;
      clearTimeout(worker.scheduled);
      worker.controller?.abort(new OrchestratorError("canceled", `worker ${worker.id} is no longer monitored`));
      this.#workers.delete(worker.id);
    }
  }

  #check(worker: Tracked): Promise<void> {
    if (worker.running) return worker.running;
    clearTimeout(worker.scheduled);
    worker.scheduled = undefined;
    const { target, timeoutMs } = this.#options;
    const controller = new AbortController();
    const timer = setTimeout(() => {
      controller.abort(new OrchestratorError("deadline_exceeded", `health check of worker ${worker.id} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    timer.unref?.();
    const epoch = worker.epoch;
    worker.controller = controller;
    worker.running = (async () => {
      let failure: OrchestratorError | undefined;
      const startedAt = performance.now();
      try {
        // raceSignal: a check that ignores its signal (a frozen worker) still ends at the timeout.
        await raceSignal(Promise.resolve().then(() => target.check(worker.id, { signal: controller.signal })), controller.signal);
      } catch (error) {
        failure = OrchestratorError.from(error, "unavailable");
      } finally {
        recordHealthCheck(this.#options.telemetry, (performance.now() - startedAt) / 1000, failure === undefined ? "serving" : failure.code);
        clearTimeout(timer);
        worker.running = undefined;
        worker.controller = undefined;
      }
      // Closed, or the worker left the target meanwhile: the outcome concerns nobody.
      if (this.#closing || this.#workers.get(worker.id) !== worker) return;
      if (failure) this.#failed(worker, failure);
      else if (worker.epoch === epoch) this.#succeeded(worker);
    })();
    return worker.running;
  }

  #failed(worker: Tracked, error: OrchestratorError): void {
    worker.successes = 0;
    worker.failures += 1;
    if (this.#options.logger !== undefined) {
      logSafely(this.#options.logger, "debug", { workerId: worker.id, consecutiveFailures: worker.failures, code: error.code }, `health check failed: ${error.rawMessage}`);
    }
    this.#emit("checkFailed", { workerId: worker.id, error, consecutiveFailures: worker.failures });
    if (worker.failures < this.#options.failureThreshold) return;
    const reason = `${worker.failures} consecutive failed health checks, the last: ${error.rawMessage}`;
    if (!worker.unhealthy) this.#markUnhealthy(worker, reason);
    // Told again while it stays unhealthy: a target that lost the verdict (a worker removed and
    // added again under the same id between two ticks starts healthy) learns it at the next
    // failed check; the pool ignores a report that changes nothing.
    else this.#report(worker.id, false, reason);
  }

  #succeeded(worker: Tracked): void {
    worker.failures = 0;
    worker.successes += 1;
    if (!worker.unhealthy || worker.successes < this.#options.recoveryThreshold) return;
    worker.unhealthy = false;
    this.#report(worker.id, true);
    this.#emit("workerRecovered", { workerId: worker.id });
  }

  #markUnhealthy(worker: Tracked, reason: string): void {
    worker.unhealthy = true;
    worker.successes = 0;
    this.#report(worker.id, false, reason);
    if (this.#options.logger !== undefined) logSafely(this.#options.logger, "warn", { workerId: worker.id }, `worker unhealthy: ${reason}`);
    this.#emit("workerUnhealthy", { workerId: worker.id, reason });
  }

  #onTransportState(workerId: string, state: TransportState): void {
    if (state !== "lost" || this.#closing) return;
    let worker = this.#workers.get(workerId);
    if (worker === undefined) {
      // Added since the last tick: pick it up now rather than miss the loss.
      this.#sync();
      worker = this.#workers.get(workerId);
      if (worker === undefined) return;
    }
    worker.epoch += 1;
    worker.successes = 0;
    if (!worker.unhealthy) this.#markUnhealthy(worker, "connection lost");
  }

  #report(workerId: string, healthy: boolean, reason?: string): void {
    try {
      this.#options.target.report(workerId, healthy, reason);
    } catch (error) {
      this.#targetError("report", error);
    }
  }

  #targetError(method: string, error: unknown): void {
    const message = error instanceof Error ? error.message : String(error);
    this.#onListenerError(new OrchestratorError("internal", `target.${method}() threw: ${message}`, { cause: error }));
  }
}

function resolveOptions(options: HealthMonitorOptions): ResolvedOptions {
  const spec = checkObject("options", options);
  const target = checkObject("target", spec.target);
  for (const method of ["workerIds", "check", "report"]) checkFunction(`target.${method}`, target[method]);
  if (target.watch !== undefined) checkFunction("target.watch", target.watch);
  return Object.freeze({
    target: target as unknown as HealthTarget,
    intervalMs: optional(spec.intervalMs, 5000, (value) => checkNumber("intervalMs", value, 1, MAX_TIMER_MS)),
    timeoutMs: optional(spec.timeoutMs, 2000, (value) => checkNumber("timeoutMs", value, 1, MAX_TIMER_MS)),
    jitter: optional(spec.jitter, 0.1, (value) => checkNumber("jitter", value, 0, 1)),
    failureThreshold: optional(spec.failureThreshold, 3, (value) => checkInteger("failureThreshold", value, 1)),
    recoveryThreshold: optional(spec.recoveryThreshold, 2, (value) => checkInteger("recoveryThreshold", value, 1)),
    telemetry: resolveTelemetry(spec.telemetry),
    logger: resolveLogger(spec.logger),
  });
}
