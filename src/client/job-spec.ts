import { randomUUID } from "node:crypto";
import { invalidArgument, OrchestratorError } from "../errors.ts";
import { MAX_TIMER_MS } from "../timers.ts";
import { checkInteger, checkKnownKeys, checkObject, checkSignal, checkString, knownKeys, optional } from "../validate.ts";
import { checkPriority, ENVELOPE_VERSION, parseEnvelope, type JobEnvelope } from "../job/envelope.ts";
import { checkJobId } from "../job/event-checks.ts";
import { checkAffinity, checkRateLimit } from "../job/affinity.ts";
import { dueTimeOf } from "../job/due-time.ts";
import { checkMetadata } from "../store/record-rules.ts";
import type { JobSpec, JobTypeMap } from "./types.ts";

/**
 * Every field `submit()` knows, one per line in alphabetical order: any other field of a spec is
 * refused with `invalid_argument` naming it and the field most likely meant (`maxAttempt` →
 * `maxAttempts`), so an option that does nothing is never silently accepted. A field added to
 * {@link JobSpec} must be added here too: the compiler refuses the build until it is (the error
 * names the field).
 * @internal
 */
export const JOB_SPEC_FIELDS = knownKeys<JobSpec<JobTypeMap, string>>()(
  [
    "affinity",
    "concurrency",
    "delayMs",
    "id",
    "idempotencyKey",
    "labels",
    "maxAttempts",
    "metadata",
    "payload",
    "priority",
    "rateLimit",
    "runAt",
    "signal",
    "startTimeoutMs",
    "timeoutMs",
    "trace",
    "type",
  ],
  true,
);

/** The deepest nesting a payload may have. */
const MAX_DEPTH = 100;

interface NotJson {
  path: string;
  value: unknown;
  expectation: string;
  /** What reading the value threw (a getter, a proxy trap). */
  cause?: unknown;
}

/**
 * Finds the first part of `value` that would not survive JSON unchanged, or undefined. The path
 * is built only on the way out of a failure, so a valid payload costs one walk and no strings.
 */
function findNotJson(value: unknown, depth: number, seen: Set<object>): NotJson | undefined {
  switch (typeof value) {
    case "string":
    case "boolean":
      return undefined;
    case "number":
      return Number.isFinite(value) ? undefined : { path: "", value, expectation: "a JSON value (finite numbers only)" };
    case "object": {
      if (value === null) return undefined;
      if (depth >= MAX_DEPTH) return { path: "", value: "…", expectation: `a JSON value nested at most ${MAX_DEPTH} levels deep` };
      if (seen.has(value)) return { path: "", value: "[Circular]", expectation: "a JSON value without cycles" };
      seen.add(value);
      try {
        if (Array.isArray(value)) {
          for (let i = 0; i < value.length; i++) {
            const bad = findNotJson(value[i], depth + 1, seen);
            if (bad !== undefined) return { ...bad, path: `[${i}]${bad.path}` };
          }
          return undefined;
        }
        const proto: unknown = Object.getPrototypeOf(value);
        if (proto !== Object.prototype && proto !== null) {
          return { path: "", value, expectation: "a JSON value (plain objects and arrays only: convert dates, maps and class instances first)" };
        }
        for (const key of Object.keys(value)) {
          let child: unknown;
          try {
            child = (value as Record<string, unknown>)[key];
          } catch (cause) {
            return { path: propertyPath(key), value: undefined, expectation: "a JSON value that can be read", cause };
          }
          if (child === undefined) continue; // dropped by JSON, as an optional field should be
          const bad = findNotJson(child, depth + 1, seen);
          if (bad !== undefined) return { ...bad, path: `${propertyPath(key)}${bad.path}` };
        }
        return undefined;
      } finally {
        seen.delete(value);
      }
    }
    default:
      return { path: "", value, expectation: "a JSON value" };
  }
}

function propertyPath(key: string): string {
  return /^[A-Za-z_$][\w$]*$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`;
}

/**
 * Checks that `value` is a JSON value that survives the queue unchanged.
 * @throws {OrchestratorError} `invalid_argument` naming the offending path (`payload.items[2].when`),
 * also when reading it throws (a getter, a proxy), with what it threw as `cause`.
 * @internal
 */
export function checkJson(field: string, value: unknown): void {
  let bad: NotJson | undefined;
  try {
    bad = findNotJson(value, 0, new Set());
  } catch (cause) {
    bad = { path: "", value: undefined, expectation: "a JSON value that can be read", cause };
  }
  if (bad === undefined) return;
  if (!("cause" in bad)) throw invalidArgument(`${field}${bad.path}`, bad.expectation, bad.value);
  throw unreadable(`${field}${bad.path}`, bad.cause);
}

/** The error of a value whose reading threw: `invalid_argument`, what it threw kept as `cause`. */
function unreadable(field: string, cause: unknown): OrchestratorError {
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new OrchestratorError("invalid_argument", `Expected \`${field}\` to be a JSON value that can be read, but reading it threw: ${reason}`, {
    cause,
    details: { field },
  });
}

/** Defaults applied to every spec. @internal */
export interface SpecDefaults {
  timeoutMs: number;
  maxAttempts: number;
  startTimeoutMs: number;
}

/** A checked spec: its envelope, and what stays with the producer. @internal */
export interface CheckedSpec {
  envelope: JobEnvelope;
  signal: AbortSignal | undefined;
  metadata: Record<string, string> | undefined;
}

/**
 * Checks a `submit()` spec and builds its envelope (attempt 1, created now).
 * @throws {OrchestratorError} `invalid_argument` naming the first bad field.
 * @internal
 */
export function envelopeFromSpec(spec: unknown, defaults: SpecDefaults): CheckedSpec {
  try {
    return buildEnvelope(spec, defaults);
  } catch (error) {
    // A getter or proxy on the spec itself threw: still the caller's input, so `invalid_argument`.
    if (error instanceof OrchestratorError) throw error;
    throw unreadable("spec", error);
  }
}

function buildEnvelope(spec: unknown, defaults: SpecDefaults): CheckedSpec {
  const s = checkObject("spec", spec);
  checkKnownKeys("the job spec", s, JOB_SPEC_FIELDS);
  const type = checkString("type", s.type, 256);
  if (!("payload" in s) || s.payload === undefined) throw invalidArgument("payload", "a JSON value (use null for none)", s.payload);
  checkJson("payload", s.payload);
  const maxAttempts = optional(s.maxAttempts, defaults.maxAttempts, (v) => checkInteger("maxAttempts", v, 1, 1000));
  const timeoutMs = optional(s.timeoutMs, defaults.timeoutMs, (v) => checkInteger("timeoutMs", v, 1, MAX_TIMER_MS));
  const startTimeoutMs = optional(s.startTimeoutMs, defaults.startTimeoutMs, (v) => checkInteger("startTimeoutMs", v, 1, MAX_TIMER_MS));
  const id = optional(s.id, undefined, (v) => checkJobId("id", v)) ?? randomUUID();
  const signal = checkSignal("signal", s.signal);
  const metadata = optional(s.metadata, undefined, (v) => checkMetadata("metadata", v));
  const now = Date.now();
  const runAt = dueTimeOf(s.runAt, s.delayMs, now);
  // The envelope parser checks the remaining fields (key, labels, trace) as a consumer would.
  const envelope = parseEnvelope({
    v: ENVELOPE_VERSION,
    id,
    type,
    payload: s.payload,
    attempt: 1,
    maxAttempts,
    timeoutMs,
    startTimeoutMs,
    createdAt: new Date(now).toISOString(),
    idempotencyKey: s.idempotencyKey,
    labels: s.labels,
    trace: s.trace,
    priority: optional(s.priority, undefined, (v) => checkPriority("priority", v)),
    affinity: optional(s.affinity, undefined, (v) => checkAffinity("affinity", v, true)),
    rateLimit: optional(s.rateLimit, undefined, (v) => checkRateLimit("rateLimit", v, true)),
    concurrency: s.concurrency,
    runAt,
  });
  return { envelope, signal, metadata };
}
