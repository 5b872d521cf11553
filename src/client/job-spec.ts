import { randomUUID } from "node:crypto";
import { invalidArgument } from "../errors.ts";
import { MAX_TIMER_MS } from "../timers.ts";
import { checkInteger, checkObject, checkSignal, checkString, optional } from "../validate.ts";
import { ENVELOPE_VERSION, parseEnvelope, type JobEnvelope } from "../job/envelope.ts";
import { checkJobId } from "../job/event-checks.ts";

/** The deepest nesting a payload may have. */
const MAX_DEPTH = 100;

interface NotJson {
  path: string;
  value: unknown;
  expectation: string;
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
          const child = (value as Record<string, unknown>)[key];
          if (child === undefined) continue; // dropped by JSON, as an optional field should be
          const bad = findNotJson(child, depth + 1, seen);
          if (bad !== undefined) return { ...bad, path: `${/^[A-Za-z_$][\w$]*$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`}${bad.path}` };
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

/**
 * Checks that `value` is a JSON value that survives the queue unchanged.
 * @throws {OrchestratorError} `invalid_argument` naming the offending path (`payload.items[2].when`).
 * @internal
 */
export function checkJson(field: string, value: unknown): void {
  const bad = findNotJson(value, 0, new Set());
  if (bad !== undefined) throw invalidArgument(`${field}${bad.path}`, bad.expectation, bad.value);
}

/** Defaults applied to every spec. @internal */
export interface SpecDefaults {
  timeoutMs: number;
  maxAttempts: number;
  startTimeoutMs: number;
}

/**
 * Checks a `submit()` spec and builds its envelope (attempt 1, created now).
 * @throws {OrchestratorError} `invalid_argument` naming the first bad field.
 * @internal
 */
export function envelopeFromSpec(spec: unknown, defaults: SpecDefaults): { envelope: JobEnvelope; signal: AbortSignal | undefined } {
  const s = checkObject("spec", spec);
  const type = checkString("type", s.type, 256);
  if (!("payload" in s) || s.payload === undefined) throw invalidArgument("payload", "a JSON value (use null for none)", s.payload);
  checkJson("payload", s.payload);
  const maxAttempts = optional(s.maxAttempts, defaults.maxAttempts, (v) => checkInteger("maxAttempts", v, 1, 1000));
  const timeoutMs = optional(s.timeoutMs, defaults.timeoutMs, (v) => checkInteger("timeoutMs", v, 1, MAX_TIMER_MS));
  const startTimeoutMs = optional(s.startTimeoutMs, defaults.startTimeoutMs, (v) => checkInteger("startTimeoutMs", v, 1, MAX_TIMER_MS));
  const id = optional(s.id, undefined, (v) => checkJobId("id", v)) ?? randomUUID();
  const signal = checkSignal("signal", s.signal);
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
    createdAt: new Date().toISOString(),
    idempotencyKey: s.idempotencyKey,
    labels: s.labels,
    trace: s.trace,
  });
  return { envelope, signal };
}
