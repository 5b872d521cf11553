/**
 * The machine-readable reason of an {@link OrchestratorError}.
 *
 * - `invalid_argument`: bad input (a job spec, an option, a malformed message); never retried.
 * - `canceled`: the job or the wait was cancelled (see {@link CancelReason}).
 * - `deadline_exceeded`: the job ran past its `timeoutMs`, or a wait past its own timeout.
 * - `unavailable`: a broker or worker could not be reached; usually transient.
 * - `worker_lost`: the worker running a job died, froze or was evicted mid-job; the job is retried elsewhere.
 * - `queue_closed`: the queue, consumer or client was closed before the operation could finish.
 * - `handler_failed`: the user's handler threw; `retryable` says whether another attempt may help.
 * - `resource_exhausted`: a bounded buffer or a worker's slots are full.
 * - `not_found`: the job, worker or handler type is unknown.
 * - `already_settled`: a delivery or lease was settled twice.
 * - `unknown_outcome`: a publish may or may not have reached the broker (the connection died before the confirm).
 * - `unauthenticated` / `permission_denied`: the peer refused our credentials.
 * - `precondition_failed`: the broker or peer state conflicts (for example a queue declared with other arguments).
 * - `internal`: a bug or an unexpected foreign error; the original is kept in `cause`.
 */
export type OrchestratorErrorCode =
  | "invalid_argument"
  | "canceled"
  | "deadline_exceeded"
  | "unavailable"
  | "worker_lost"
  | "queue_closed"
  | "handler_failed"
  | "resource_exhausted"
  | "not_found"
  | "already_settled"
  | "unknown_outcome"
  | "unauthenticated"
  | "permission_denied"
  | "precondition_failed"
  | "internal";

const codes: ReadonlySet<string> = new Set<OrchestratorErrorCode>([
  "invalid_argument",
  "canceled",
  "deadline_exceeded",
  "unavailable",
  "worker_lost",
  "queue_closed",
  "handler_failed",
  "resource_exhausted",
  "not_found",
  "already_settled",
  "unknown_outcome",
  "unauthenticated",
  "permission_denied",
  "precondition_failed",
  "internal",
]);

/** Whether `value` is one of the {@link OrchestratorErrorCode} strings. */
export function isOrchestratorErrorCode(value: unknown): value is OrchestratorErrorCode {
  return typeof value === "string" && codes.has(value);
}

/** Codes after which another attempt of the same job cannot help. */
const notRetryable: ReadonlySet<OrchestratorErrorCode> = new Set([
  "invalid_argument",
  "canceled",
  "not_found",
  "unauthenticated",
  "permission_denied",
  "precondition_failed",
]);

/** Options of {@link OrchestratorError}. */
export interface OrchestratorErrorOptions {
  /** The foreign error this one translates; always kept. */
  cause?: unknown;
  /**
   * Whether another attempt of the job may succeed.
   * @default false for `invalid_argument`, `canceled`, `not_found`, `unauthenticated`,
   * `permission_denied` and `precondition_failed`; true otherwise.
   */
  retryable?: boolean;
  /** Structured, JSON-safe details (the offending field, the queue name, …). */
  details?: Record<string, unknown>;
}

const brand = Symbol.for("@blacktree/orchestrator/OrchestratorError");

/**
 * The one error type of the SDK: every rejection and every `error` event carries one.
 *
 * The message is prefixed with the code (`[worker_lost] worker w1 stopped answering`), the
 * foreign error it translates is kept in `cause`, and `instanceof` works across duplicate
 * installs of the package.
 *
 * @example
 * ```ts
 * try { await handle.result(); }
 * catch (err) { if (err instanceof OrchestratorError && err.code === "canceled") … }
 * ```
 */
export class OrchestratorError extends Error {
  override readonly name = "OrchestratorError";
  /** The machine-readable reason. */
  readonly code: OrchestratorErrorCode;
  /** The message without the `[code]` prefix. */
  readonly rawMessage: string;
  /** Whether another attempt of the job may succeed. */
  readonly retryable: boolean;
  /** Structured, JSON-safe details. */
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: OrchestratorErrorCode, message: string, options: OrchestratorErrorOptions = {}) {
    super(`[${code}] ${message}`, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.rawMessage = message;
    this.retryable = options.retryable ?? !notRetryable.has(code);
    this.details = options.details ?? {};
    Object.defineProperty(this, brand, { value: true });
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[brand] === true;
  }

  /**
   * Turns anything thrown into an `OrchestratorError`: returns `reason` itself when it already
   * is one, otherwise wraps it with `code` (default `internal`) and keeps it as `cause`.
   */
  static from(reason: unknown, code: OrchestratorErrorCode = "internal"): OrchestratorError {
    if (reason instanceof OrchestratorError) return reason;
    if (reason instanceof Error) {
      // A DOMException from AbortSignal.abort()/timeout() reads best as our own codes.
      if (reason.name === "AbortError") return new OrchestratorError("canceled", reason.message, { cause: reason });
      if (reason.name === "TimeoutError") return new OrchestratorError("deadline_exceeded", reason.message, { cause: reason });
      return new OrchestratorError(code, reason.message, { cause: reason });
    }
    return new OrchestratorError(code, String(reason), { cause: reason });
  }

  /** A JSON-safe form for events and the wire. */
  toJSON(): SerializedError {
    return { code: this.code, message: this.rawMessage, retryable: this.retryable, details: { ...this.details } };
  }
}

/** The JSON form of an {@link OrchestratorError}, as carried in job events and over the wire. */
export interface SerializedError {
  code: OrchestratorErrorCode;
  message: string;
  retryable: boolean;
  details?: Record<string, unknown>;
}

/** Rebuilds an {@link OrchestratorError} from its JSON form; unknown codes become `internal`. */
export function deserializeError(value: SerializedError): OrchestratorError {
  const code = isOrchestratorErrorCode(value.code) ? value.code : "internal";
  return new OrchestratorError(code, String(value.message), {
    retryable: value.retryable,
    ...(value.details === undefined ? {} : { details: value.details }),
  });
}

/**
 * Marks a handler failure that no further attempt can fix; the dispatcher dead-letters the
 * job at once instead of retrying it.
 *
 * @example
 * ```ts
 * if (!payload.image) throw nonRetryable("payload.image is required");
 * ```
 */
export function nonRetryable(message: string, cause?: unknown): OrchestratorError {
  return new OrchestratorError("handler_failed", message, { retryable: false, cause });
}

/**
 * Formats a value for a validation message: `5 (number)`, `"x" (string)`, `NaN (number)`,
 * `-0 (number)`, `10n (bigint)`, `Symbol(a) (symbol)`, `{"a":NaN} (object)`. Every value reads
 * as itself (JSON would turn `NaN`, `Infinity` and `-0` into `null` or `0`); cut to 80 characters.
 */
export function describeValue(value: unknown): string {
  let text = formatValue(value, 0);
  if (text.length > 80) text = `${text.slice(0, 77)}...`;
  return `\`${text}\` (${value === null ? "null" : Array.isArray(value) ? "array" : typeof value})`;
}

/** Most entries of an array or object {@link describeValue} shows. */
const MAX_SHOWN_ENTRIES = 10;

function formatValue(value: unknown, depth: number): string {
  switch (typeof value) {
    case "string":
      return JSON.stringify(value);
    case "number":
      return Object.is(value, -0) ? "-0" : String(value);
    case "bigint":
      return `${value}n`;
    case "boolean":
    case "undefined":
      return String(value);
    case "symbol":
      return value.toString();
    case "function":
      return `[Function ${value.name === "" ? "(anonymous)" : value.name}]`;
  }
  if (value === null) return "null";
  if (depth >= 3) return Array.isArray(value) ? "[…]" : "{…}";
  try {
    if (Array.isArray(value)) {
      const shown = value.slice(0, MAX_SHOWN_ENTRIES).map((v: unknown) => formatValue(v, depth + 1));
      if (value.length > MAX_SHOWN_ENTRIES) shown.push("…");
      return `[${shown.join(",")}]`;
    }
    if (value instanceof Date) return Number.isNaN(value.getTime()) ? "Invalid Date" : value.toISOString();
    const proto: unknown = Object.getPrototypeOf(value);
    const name = proto === Object.prototype || proto === null ? "" : `${(value as { constructor?: { name?: unknown } }).constructor?.name ?? "Object"} `;
    const keys = Object.keys(value as object);
    const shown = keys.slice(0, MAX_SHOWN_ENTRIES).map((key) => `${JSON.stringify(key)}:${formatValue((value as Record<string, unknown>)[key], depth + 1)}`);
    if (keys.length > MAX_SHOWN_ENTRIES) shown.push("…");
    return `${String(name)}{${shown.join(",")}}`;
  } catch {
    return "[unreadable]";
  }
}

/**
 * Builds the `invalid_argument` error of a failed check, naming the field, the expectation and
 * the value received: ``Expected `slots` to be an integer >= 1, got `0` (number)``.
 */
export function invalidArgument(field: string, expectation: string, value: unknown): OrchestratorError {
  return new OrchestratorError("invalid_argument", `Expected \`${field}\` to be ${expectation}, got ${describeValue(value)}`, {
    details: { field },
  });
}
