import { OrchestratorError } from "../errors.ts";

/**
 * Whether a failed `execute` never started the job on the worker: the transport could not open a
 * connection, or the worker refused the job before running it (no free slot, shutting down, no
 * handler). Such an error carries `details.started === false`; the dispatcher puts the job back
 * without spending an attempt. Any other error may have come after the handler started.
 */
export function neverStarted(error: OrchestratorError): boolean {
  return error.details.started === false;
}

/** The same error, marked as one that never started its job (see {@link neverStarted}). */
export function markNotStarted(error: OrchestratorError): OrchestratorError {
  if (neverStarted(error)) return error;
  return new OrchestratorError(error.code, error.rawMessage, { cause: error.cause ?? error, retryable: error.retryable, details: { ...error.details, started: false } });
}
