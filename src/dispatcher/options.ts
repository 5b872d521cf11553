import { randomUUID } from "node:crypto";
import type { JobEvents, JobQueue } from "../queue/types.ts";
import type { JobStore } from "../store/types.ts";
import { checkBoolean, checkFunction, checkInteger, checkKnownKeys, checkNumber, checkObject, checkString, knownKeys, optional } from "../validate.ts";
import { invalidArgument } from "../errors.ts";
import { MAX_TIMER_MS } from "../timers.ts";
import { type Logger, resolveLogger } from "../telemetry/logger.ts";
import { resolveTelemetry, type Telemetry } from "../telemetry/telemetry.ts";
import type { DispatcherOptions, DispatcherPool, RetryOptions } from "./types.ts";
import { resolveRateLimits, type ResolvedRateLimits } from "./rate-limiter.ts";

/** {@link DispatcherOptions} checked and filled with their defaults. @internal */
export interface ResolvedDispatcherOptions {
  readonly queue: JobQueue;
  readonly events: JobEvents;
  readonly pool: DispatcherPool;
  readonly backoff: { readonly baseMs: number; readonly maxMs: number; readonly factor: number; readonly jitter: number };
  readonly jobTypes: ReadonlySet<string> | undefined;
  readonly closeTimeoutMs: number | undefined;
  readonly noWorkerDelayMs: number;
  readonly workerLostDelayMs: number;
  readonly cancelRetentionMs: number;
  readonly maxRetainedCancels: number;
  readonly telemetry: Telemetry;
  readonly logger: Logger | undefined;
  readonly store: JobStore | undefined;
  readonly storeTimeoutMs: number;
  readonly keepLogs: boolean;
  readonly maintenanceIntervalMs: number;
  readonly dispatcherId: string;
  readonly rateLimits: ResolvedRateLimits | undefined;
}

/** Every field of {@link DispatcherOptions}, in alphabetical order; any other is refused. */
const dispatcherOptionKeys = knownKeys<DispatcherOptions>()(
  [
    "cancelRetentionMs",
    "closeTimeoutMs",
    "dispatcherId",
    "events",
    "jobTypes",
    "keepLogs",
    "logger",
    "maintenanceIntervalMs",
    "maxRetainedCancels",
    "noWorkerDelayMs",
    "pool",
    "queue",
    "rateLimits",
    "retry",
    "store",
    "storeTimeoutMs",
    "telemetry",
    "workerLostDelayMs",
  ],
  true,
);
const retryOptionKeys = knownKeys<RetryOptions>()(["baseDelayMs", "factor", "jitter", "maxDelayMs"], true);

function checkMethods(field: string, value: unknown, methods: readonly string[]): void {
  const o = checkObject(field, value);
  for (const method of methods) checkFunction(`${field}.${method}`, o[method]);
}

/**
 * Checks every option once and fills the defaults.
 * @throws {OrchestratorError} `invalid_argument` naming the first bad option.
 * @internal
 */
export function resolveDispatcherOptions(options: DispatcherOptions): ResolvedDispatcherOptions {
  const o = checkObject("options", options);
  checkKnownKeys("the Dispatcher options", o, dispatcherOptionKeys);
  checkMethods("queue", o.queue, ["enqueue", "consume"]);
  checkMethods("events", o.events, ["publish", "subscribeCancels"]);
  checkMethods("pool", o.pool, ["acquire", "canRun", "onAvailable", "on", "off"]);
  const retry = checkObject("retry", o.retry ?? {});
  checkKnownKeys("the Dispatcher options", retry, retryOptionKeys, "retry.");
  const baseMs = optional(retry.baseDelayMs, 1000, (v) => checkInteger("retry.baseDelayMs", v, 0, MAX_TIMER_MS));
  const maxMs = optional(retry.maxDelayMs, Math.max(60_000, baseMs), (v) => checkInteger("retry.maxDelayMs", v, baseMs, MAX_TIMER_MS));
  const factor = optional(retry.factor, 2, (v) => checkNumber("retry.factor", v, 1, 100));
  const jitter = optional(retry.jitter, 0.2, (v) => checkNumber("retry.jitter", v, 0, 1));
  let jobTypes: Set<string> | undefined;
  if (o.jobTypes !== undefined) {
    if (!Array.isArray(o.jobTypes)) throw invalidArgument("jobTypes", "an array of job type names", o.jobTypes);
    jobTypes = new Set(o.jobTypes.map((type: unknown, i) => checkString(`jobTypes[${i}]`, type, 256)));
  }
  const store = optional<JobStore | undefined>(o.store, undefined, (v) => {
    checkMethods("store", v, ["create", "record", "expireUnstarted", "cleanup"]);
    return v as JobStore;
  });
  return {
    queue: o.queue as JobQueue,
    events: o.events as JobEvents,
    pool: o.pool as DispatcherPool,
    backoff: { baseMs, maxMs, factor, jitter },
    jobTypes,
    closeTimeoutMs: optional<number | undefined>(o.closeTimeoutMs, undefined, (v) => checkInteger("closeTimeoutMs", v, 0, MAX_TIMER_MS)),
    noWorkerDelayMs: optional(o.noWorkerDelayMs, 5000, (v) => checkInteger("noWorkerDelayMs", v, 0, MAX_TIMER_MS)),
    workerLostDelayMs: optional(o.workerLostDelayMs, 0, (v) => checkInteger("workerLostDelayMs", v, 0, MAX_TIMER_MS)),
    cancelRetentionMs: optional(o.cancelRetentionMs, 86_400_000, (v) => checkInteger("cancelRetentionMs", v, 0)),
    maxRetainedCancels: optional(o.maxRetainedCancels, 100_000, (v) => checkInteger("maxRetainedCancels", v, 0)),
    telemetry: resolveTelemetry(o.telemetry),
    logger: resolveLogger(o.logger),
    store,
    storeTimeoutMs: optional(o.storeTimeoutMs, 10_000, (v) => checkInteger("storeTimeoutMs", v, 1, MAX_TIMER_MS)),
    keepLogs: optional(o.keepLogs, true, (v) => checkBoolean("keepLogs", v)),
    maintenanceIntervalMs: optional(o.maintenanceIntervalMs, 30_000, (v) => checkInteger("maintenanceIntervalMs", v, 10, MAX_TIMER_MS)),
    dispatcherId: optional(o.dispatcherId, randomUUID(), (v) => checkString("dispatcherId", v, 256)),
    rateLimits: resolveRateLimits(o.rateLimits, store),
  };
}
