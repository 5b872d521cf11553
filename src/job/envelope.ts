import { invalidArgument, OrchestratorError } from "../errors.ts";
import { checkInteger, checkLabels, checkObject, checkString } from "../validate.ts";
import { checkJobId } from "./event-checks.ts";
import { checkAffinity, checkRateLimit, type JobAffinity, type JobRateLimit } from "./affinity.ts";
import { checkConcurrency, type JobConcurrency } from "./concurrency.ts";

/** The envelope version this build writes and reads. */
export const ENVELOPE_VERSION = 1;

/** W3C trace context carried with a job so a worker's spans join the producer's trace. */
export interface TraceContext {
  traceparent?: string;
  tracestate?: string;
}

/**
 * A job as it travels on a queue: JSON with a version field, validated on the way in by
 * {@link parseEnvelope}. Queues carry it unchanged except for `attempt`, which a retry raises.
 */
export interface JobEnvelope<P = unknown> {
  /** Envelope version; {@link ENVELOPE_VERSION}. */
  v: 1;
  /** Unique job id (a UUID unless the producer chose one). */
  id: string;
  /** Job type: selects the worker handler. */
  type: string;
  /** The handler's input; any JSON value. */
  payload: P;
  /** 1-based attempt this envelope starts; raised by each `Delivery.retry()`. */
  attempt: number;
  /** Attempts allowed before the job is dead-lettered. */
  maxAttempts: number;
  /** Deadline of one attempt, in milliseconds from its start on a worker. */
  timeoutMs: number;
  /** Producer-chosen key making submits and handler effects idempotent. */
  idempotencyKey?: string;
  /** Labels a worker must carry (every key with the same value) to run this job. */
  labels?: Record<string, string>;
  /** ISO 8601 time of the first submit. */
  createdAt: string;
  /** W3C trace context. */
  trace?: TraceContext;
  /**
   * Attempts this job ran in earlier lives, before it was dead-lettered and redriven (the sum of
   * every `redrives[].attempts`, kept exactly even when old entries are dropped). Absent: never
   * redriven. `priorAttempts + attempt` only grows over a job's whole history.
   */
  priorAttempts?: number;
  /** One entry per redrive, oldest first; at most the last {@link MAX_REDRIVES_KEPT}. */
  redrives?: JobRedrive[];
  /**
   * Longest wait, in milliseconds from `createdAt` (or from the latest `redrives[].redrivenAt`),
   * for the first attempt to start; past it the job fails with `deadline_exceeded`
   * (`details.reason` `"start_timeout"`). Absent: no limit.
   */
  startTimeoutMs?: number;
  /**
   * Epoch ms the job is due: queues deliver it no earlier (a job submitted with `runAt` or
   * `delayMs`). Its start timeout counts from here. Absent: due at once.
   */
  runAt?: number;
  /**
   * Priority level, 1 (highest) to {@link PRIORITY_LEVELS} (lowest). Absent: {@link DEFAULT_PRIORITY}
   * (written only when it differs, so envelopes of older producers stay the default).
   */
  priority?: number;
  /** Preferred labels and sticky assignment (see `JobAffinity`). Absent: none. */
  affinity?: JobAffinity;
  /** The rate-limit key it counts against (see `JobRateLimit`). Absent: its type's limit only. */
  rateLimit?: JobRateLimit;
  /** Set on the jobs a schedule fires: which schedule, and the tick (epoch ms) this job is for. */
  schedule?: JobScheduleLink;
  /**
   * The job's concurrency key: at most `limit` jobs of `key` held by dispatchers at once, across
   * every dispatcher; `strategy` says what a job arriving over the limit does. Absent: no key.
   */
  concurrency?: JobConcurrency;
}

/** The schedule a job was fired by, and for which of its ticks. */
export interface JobScheduleLink {
  /** The schedule's id. */
  id: string;
  /** The tick's time, epoch milliseconds. */
  tick: number;
  /**
   * Which firing of the tick put this copy on the queue (a random id; the envelope only). A new
   * leader that cannot tell whether its predecessor queued a tick queues it again, as another
   * copy: the dispatcher starts the job only from the first copy that starts (see
   * `StartedTransition.copy`).
   */
  copy?: string;
}

/** Priority levels: 1 (highest) to {@link PRIORITY_LEVELS} (lowest). */
export const PRIORITY_LEVELS = 5;
/** The priority of a job that names none: the middle level. */
export const DEFAULT_PRIORITY = 3;

/** The job's priority level, 1 (highest) to 5; {@link DEFAULT_PRIORITY} when the envelope has none. */
export function priorityOf(envelope: Pick<JobEnvelope, "priority">): number {
  return envelope.priority ?? DEFAULT_PRIORITY;
}

/**
 * Checks a priority level.
 * @throws {OrchestratorError} `invalid_argument` unless an integer from 1 to {@link PRIORITY_LEVELS}.
 */
export function checkPriority(field: string, value: unknown): number {
  return checkInteger(field, value, 1, PRIORITY_LEVELS);
}

/** One earlier life of a redriven job: how it ended in the dead letters, and when it came back. */
export interface JobRedrive {
  /** The attempt it had reached when it was dead-lettered. */
  attempts: number;
  /** Why it was dead-lettered. */
  reason: string;
  /** When it was dead-lettered, ISO 8601. */
  deadLetteredAt: string;
  /** When it was redriven, ISO 8601. */
  redrivenAt: string;
}

/** Most redrive entries an envelope keeps (the oldest are dropped; `priorAttempts` stays exact). */
export const MAX_REDRIVES_KEPT = 20;
/** Longest reason a redrive entry keeps, in characters. */
const MAX_REDRIVE_REASON = 2048;

/** Limits applied by {@link parseEnvelope}. */
export interface EnvelopeLimits {
  /**
   * Largest encoded envelope accepted, in bytes.
   * @default 1 MiB
   */
  maxBytes?: number;
}

export const DEFAULT_MAX_ENVELOPE_BYTES = 1024 * 1024;

/**
 * Validates an untrusted value as a {@link JobEnvelope}.
 * @throws {OrchestratorError} `invalid_argument` naming the first bad field.
 */
export function parseEnvelope(value: unknown): JobEnvelope {
  const o = checkObject("envelope", value);
  if (o.v !== ENVELOPE_VERSION) throw invalidArgument("v", `envelope version ${ENVELOPE_VERSION}`, o.v);
  const envelope: JobEnvelope = {
    v: ENVELOPE_VERSION,
    id: checkJobId("id", o.id),
    type: checkString("type", o.type, 256),
    payload: o.payload,
    attempt: checkInteger("attempt", o.attempt, 1),
    maxAttempts: checkInteger("maxAttempts", o.maxAttempts, 1, 1000),
    timeoutMs: checkInteger("timeoutMs", o.timeoutMs, 1),
    createdAt: checkString("createdAt", o.createdAt, 64),
  };
  if (!("payload" in o)) throw invalidArgument("payload", "present (any JSON value)", undefined);
  if (o.idempotencyKey !== undefined) envelope.idempotencyKey = checkString("idempotencyKey", o.idempotencyKey, 512);
  if (o.labels !== undefined) envelope.labels = checkLabels("labels", o.labels);
  if (o.startTimeoutMs !== undefined) envelope.startTimeoutMs = checkInteger("startTimeoutMs", o.startTimeoutMs, 1);
  if (o.runAt !== undefined) envelope.runAt = checkInteger("runAt", o.runAt, 0);
  if (o.trace !== undefined) {
    const t = checkObject("trace", o.trace);
    envelope.trace = {};
    if (t.traceparent !== undefined) envelope.trace.traceparent = checkString("trace.traceparent", t.traceparent, 256);
    if (t.tracestate !== undefined) envelope.trace.tracestate = checkString("trace.tracestate", t.tracestate, 1024);
  }
  if (o.priorAttempts !== undefined) envelope.priorAttempts = checkInteger("priorAttempts", o.priorAttempts, 0);
  if (o.redrives !== undefined) envelope.redrives = checkRedrives(o.redrives);
  if (o.affinity !== undefined) envelope.affinity = checkAffinity("affinity", o.affinity);
  if (o.rateLimit !== undefined) envelope.rateLimit = checkRateLimit("rateLimit", o.rateLimit);
  if (o.schedule !== undefined) envelope.schedule = checkScheduleLink("schedule", o.schedule);
  if (o.concurrency !== undefined) envelope.concurrency = checkConcurrency("concurrency", o.concurrency);
  if (o.priority !== undefined && o.priority !== DEFAULT_PRIORITY) envelope.priority = checkPriority("priority", o.priority);
  return envelope;
}

/**
 * Checks a {@link JobScheduleLink}.
 * @throws {OrchestratorError} `invalid_argument` naming the field.
 */
export function checkScheduleLink(field: string, value: unknown): JobScheduleLink {
  const o = checkObject(field, value);
  const link: JobScheduleLink = { id: checkString(`${field}.id`, o.id, 200), tick: checkInteger(`${field}.tick`, o.tick, 0) };
  if (o.copy !== undefined) link.copy = checkString(`${field}.copy`, o.copy, 64);
  return link;
}

function checkRedrives(value: unknown): JobRedrive[] {
  if (!Array.isArray(value) || value.length > MAX_REDRIVES_KEPT) throw invalidArgument("redrives", `an array of at most ${MAX_REDRIVES_KEPT} entries`, value);
  return value.map((entry, i) => {
    const r = checkObject(`redrives[${i}]`, entry);
    return {
      attempts: checkInteger(`redrives[${i}].attempts`, r.attempts, 1),
      reason: checkString(`redrives[${i}].reason`, r.reason, MAX_REDRIVE_REASON),
      deadLetteredAt: checkString(`redrives[${i}].deadLetteredAt`, r.deadLetteredAt, 64),
      redrivenAt: checkString(`redrives[${i}].redrivenAt`, r.redrivenAt, 64),
    };
  });
}

/**
 * The envelope that puts a dead-lettered job back on its queue: attempt 1 again (a fresh count
 * against `maxAttempts`), its dead life appended to `redrives` and added to `priorAttempts`.
 * `attempts`: the attempt it had reached when dead-lettered (at least `job.attempt`).
 */
export function redrivenEnvelope(job: JobEnvelope, dead: { attempts: number | undefined; reason: string; deadLetteredAt: string }, now = new Date()): JobEnvelope {
  const attempts = Math.max(job.attempt, dead.attempts ?? job.attempt);
  const entry: JobRedrive = {
    attempts,
    reason: dead.reason.length > MAX_REDRIVE_REASON ? `${dead.reason.slice(0, MAX_REDRIVE_REASON - 1)}…` : dead.reason,
    deadLetteredAt: dead.deadLetteredAt.slice(0, 64),
    redrivenAt: now.toISOString(),
  };
  return {
    ...job,
    attempt: 1,
    priorAttempts: (job.priorAttempts ?? 0) + attempts,
    redrives: [...(job.redrives ?? []), entry].slice(-MAX_REDRIVES_KEPT),
  };
}

/** Encodes an envelope as UTF-8 JSON. */
export function encodeEnvelope(envelope: JobEnvelope): Buffer {
  return Buffer.from(JSON.stringify(envelope));
}

/**
 * Refuses an encoded envelope over a queue's size limit. The error names `payload` (what the
 * caller controls and must shrink), with the sizes in `details`.
 * @throws {OrchestratorError} `invalid_argument`.
 */
export function checkEnvelopeSize(body: Uint8Array, maxBytes: number): void {
  if (body.byteLength <= maxBytes) return;
  throw new OrchestratorError(
    "invalid_argument",
    `Expected \`payload\` to be smaller: the job is ${body.byteLength} bytes encoded, over the queue's limit of ${maxBytes} bytes (its \`maxEnvelopeBytes\` option)`,
    { details: { field: "payload", bytes: body.byteLength, maxBytes } },
  );
}

/**
 * Decodes and validates envelope bytes from a queue.
 * @throws {OrchestratorError} `invalid_argument` for oversized input, invalid JSON or a bad field.
 */
export function decodeEnvelope(bytes: Uint8Array, limits: EnvelopeLimits = {}): JobEnvelope {
  const maxBytes = limits.maxBytes ?? DEFAULT_MAX_ENVELOPE_BYTES;
  if (bytes.byteLength > maxBytes) {
    throw new OrchestratorError("invalid_argument", `Envelope of ${bytes.byteLength} bytes exceeds the limit of ${maxBytes} bytes`, {
      details: { field: "envelope", bytes: bytes.byteLength, maxBytes },
    });
  }
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8"));
  } catch (cause) {
    throw new OrchestratorError("invalid_argument", `Envelope is not valid JSON: ${(cause as Error).message}`, {
      cause,
      details: { field: "envelope" },
    });
  }
  return parseEnvelope(value);
}

/**
 * The envelope's W3C trace context as message headers (`traceparent`, `tracestate`), where a
 * broker-side tool or an AMQP instrumentation looks for it; undefined without one.
 */
export function traceHeaders(envelope: JobEnvelope): Record<string, string> | undefined {
  const trace = envelope.trace;
  if (trace?.traceparent === undefined) return undefined;
  return trace.tracestate === undefined ? { traceparent: trace.traceparent } : { traceparent: trace.traceparent, tracestate: trace.tracestate };
}
