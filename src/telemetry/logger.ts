import { invalidArgument } from "../errors.ts";

/**
 * A structured logger, shaped like pino's (and accepted as is from pino, bunyan or any object
 * with these four methods): each call gets the record's fields first, then the message. Records
 * about a job carry `jobId`, `attempt`, `workerId` when known, and `traceId` / `spanId` when a
 * span is recording.
 */
export interface Logger {
  debug(fields: object, message?: string): void;
  info(fields: object, message?: string): void;
  warn(fields: object, message?: string): void;
  error(fields: object, message?: string): void;
}

/** Fields of a record about one job. */
export interface JobLogFields {
  jobId: string;
  attempt?: number;
  jobType?: string;
  workerId?: string;
  traceId?: string;
  spanId?: string;
  [field: string]: unknown;
}

/** A logger that drops everything. */
export const silentLogger: Logger = Object.freeze({ debug() {}, info() {}, warn() {}, error() {} });

/**
 * Checks a `logger` option; undefined stays undefined (the component then records nothing about
 * jobs; its own errors still warn once on the console when nobody listens to `error`).
 * @throws {OrchestratorError} `invalid_argument` unless an object with the four methods.
 * @internal
 */
export function resolveLogger(value: unknown, field = "logger"): Logger | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "object" || value === null) throw invalidArgument(field, "an object with debug, info, warn and error methods (pino-shaped)", value);
  for (const method of ["debug", "info", "warn", "error"] as const) {
    if (typeof (value as Record<string, unknown>)[method] !== "function") {
      throw invalidArgument(`${field}.${method}`, "a function (a pino-shaped logger)", (value as Record<string, unknown>)[method]);
    }
  }
  return value as Logger;
}

/** Calls a logger method, never letting a logger's throw reach the caller. @internal */
export function logSafely(logger: Logger, level: keyof Logger, fields: object, message: string): void {
  try {
    logger[level](fields, message);
  } catch {
    // A broken logger must not break a dispatcher or a worker.
  }
}

/** A logger adding `fields` to every record (the worker's id, for instance). @internal */
export function withFields(logger: Logger, fields: object): Logger {
  return {
    debug: (o, m) => logger.debug({ ...fields, ...o }, m),
    info: (o, m) => logger.info({ ...fields, ...o }, m),
    warn: (o, m) => logger.warn({ ...fields, ...o }, m),
    error: (o, m) => logger.error({ ...fields, ...o }, m),
  };
}
