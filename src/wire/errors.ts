import { Metadata, status as GrpcStatus } from "@grpc/grpc-js";
import type { ServiceError, StatusObject } from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { deserializeError, isOrchestratorErrorCode, OrchestratorError } from "../errors.ts";
import type { OrchestratorErrorCode } from "../errors.ts";
import { ErrorSchema } from "../gen/blacktree/orchestrator/v1/worker_pb.ts";
import type { Error as WireError } from "../gen/blacktree/orchestrator/v1/worker_pb.ts";

/**
 * The one place where foreign errors of the gRPC boundary become `OrchestratorError`s and back:
 * grpc-js statuses and service errors, connect-es `ConnectError`s (same numeric codes), Node
 * socket errors, and the protocol's own `Error` message.
 * @internal
 */

/** Trailer carrying the exact `OrchestratorError` code of a failed call (grpc statuses are coarser). */
export const ERROR_CODE_TRAILER = "blacktree-error-code";

const fromStatus: Readonly<Record<number, OrchestratorErrorCode>> = {
  [GrpcStatus.CANCELLED]: "canceled",
  [GrpcStatus.UNKNOWN]: "internal",
  [GrpcStatus.INVALID_ARGUMENT]: "invalid_argument",
  [GrpcStatus.DEADLINE_EXCEEDED]: "deadline_exceeded",
  [GrpcStatus.NOT_FOUND]: "not_found",
  [GrpcStatus.ALREADY_EXISTS]: "precondition_failed",
  [GrpcStatus.PERMISSION_DENIED]: "permission_denied",
  [GrpcStatus.RESOURCE_EXHAUSTED]: "resource_exhausted",
  [GrpcStatus.FAILED_PRECONDITION]: "precondition_failed",
  [GrpcStatus.ABORTED]: "unavailable",
  [GrpcStatus.OUT_OF_RANGE]: "invalid_argument",
  // The peer does not speak this method: another protocol version or not a worker at all.
  [GrpcStatus.UNIMPLEMENTED]: "not_found",
  [GrpcStatus.INTERNAL]: "internal",
  [GrpcStatus.UNAVAILABLE]: "unavailable",
  [GrpcStatus.DATA_LOSS]: "internal",
  [GrpcStatus.UNAUTHENTICATED]: "unauthenticated",
};

const toStatus: Readonly<Record<OrchestratorErrorCode, GrpcStatus>> = {
  invalid_argument: GrpcStatus.INVALID_ARGUMENT,
  canceled: GrpcStatus.CANCELLED,
  deadline_exceeded: GrpcStatus.DEADLINE_EXCEEDED,
  unavailable: GrpcStatus.UNAVAILABLE,
  worker_lost: GrpcStatus.UNAVAILABLE,
  queue_closed: GrpcStatus.UNAVAILABLE,
  handler_failed: GrpcStatus.UNKNOWN,
  resource_exhausted: GrpcStatus.RESOURCE_EXHAUSTED,
  not_found: GrpcStatus.NOT_FOUND,
  already_settled: GrpcStatus.FAILED_PRECONDITION,
  unknown_outcome: GrpcStatus.UNKNOWN,
  unauthenticated: GrpcStatus.UNAUTHENTICATED,
  permission_denied: GrpcStatus.PERMISSION_DENIED,
  precondition_failed: GrpcStatus.FAILED_PRECONDITION,
  internal: GrpcStatus.INTERNAL,
};

/** Node socket error codes that mean "the peer cannot be reached right now". */
const unreachable = new Set(["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN"]);

/** The `OrchestratorError` code of a grpc status code. */
export function codeFromGrpcStatus(status: number): OrchestratorErrorCode {
  return fromStatus[status] ?? "internal";
}

/** The grpc status code a worker answers with for an `OrchestratorError` code. */
export function grpcStatusFromCode(code: OrchestratorErrorCode): GrpcStatus {
  return toStatus[code];
}

function isGrpcStatusLike(value: unknown): value is Pick<StatusObject, "code" | "details"> & { metadata?: Metadata } {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as { code?: unknown }).code === "number" &&
    Number.isInteger((value as { code: number }).code) &&
    ((value as { code: number }).code as number) >= 0 &&
    ((value as { code: number }).code as number) <= 16
  );
}

/**
 * Translates anything the gRPC stack (grpc-js or connect-es) or the socket layer threw into an
 * `OrchestratorError`, keeping the original as `cause`. The `blacktree-error-code` trailer, when
 * a worker sent one, gives the exact code.
 */
export function fromGrpcError(error: unknown, context?: string): OrchestratorError {
  if (error instanceof OrchestratorError) return error;
  const prefix = context ? `${context}: ` : "";
  if (isGrpcStatusLike(error)) {
    // grpc-js ServiceError / StatusObject, or connect-es ConnectError (its Code enum uses the same numbers).
    const status = error as { code: number; details?: unknown; metadata?: unknown; rawMessage?: unknown; message?: unknown };
    const trailer = status.metadata instanceof Metadata ? status.metadata.get(ERROR_CODE_TRAILER)[0] : undefined;
    const code = typeof trailer === "string" && isOrchestratorErrorCode(trailer) ? trailer : codeFromGrpcStatus(status.code);
    const text =
      typeof status.details === "string" && status.details !== ""
        ? status.details
        : typeof status.rawMessage === "string"
          ? status.rawMessage
          : typeof status.message === "string"
            ? status.message
            : `grpc status ${status.code}`;
    return new OrchestratorError(code, `${prefix}${text}`, { cause: error, details: { grpcStatus: status.code } });
  }
  if (error instanceof Error) {
    const sysCode = (error as NodeJS.ErrnoException).code;
    if (typeof sysCode === "string" && unreachable.has(sysCode)) {
      return new OrchestratorError("unavailable", `${prefix}${error.message}`, { cause: error, details: { errno: sysCode } });
    }
    if (error.name === "AbortError") return new OrchestratorError("canceled", `${prefix}${error.message}`, { cause: error });
    if (error.name === "TimeoutError") return new OrchestratorError("deadline_exceeded", `${prefix}${error.message}`, { cause: error });
    return new OrchestratorError("internal", `${prefix}${error.message}`, { cause: error });
  }
  return new OrchestratorError("internal", `${prefix}${String(error)}`, { cause: error });
}

/** What grpc-js reports for a call whose connection the server closed with HTTP/2 ENHANCE_YOUR_CALM. */
const ENHANCE_YOUR_CALM_DETAILS = "Bandwidth exhausted or memory limit exceeded";

/**
 * Whether a grpc-js call failed because the server closed its connection with HTTP/2
 * ENHANCE_YOUR_CALM: what gRPC-Go, gRPC-Java and C-core send (GOAWAY, debug data
 * `too_many_pings`) when the client's keepalive pings come more often than they permit. grpc-js
 * keeps the debug data to itself (it doubles the channel's keepalive interval on it), so the
 * status and its fixed text are all a call sees.
 */
export function isEnhanceYourCalm(error: unknown): boolean {
  if (!isGrpcStatusLike(error)) return false;
  const status = error as { code: number; details?: unknown };
  return status.code === GrpcStatus.RESOURCE_EXHAUSTED && status.details === ENHANCE_YOUR_CALM_DETAILS;
}

/**
 * A grpc-js status for failing a call with `error`, with the exact code in a trailer so a
 * Blacktree client gets the same `OrchestratorError` back.
 */
export function toGrpcStatus(error: unknown): Partial<ServiceError> & { code: GrpcStatus; details: string; metadata: Metadata } {
  const err = OrchestratorError.from(error);
  const metadata = new Metadata();
  metadata.set(ERROR_CODE_TRAILER, err.code);
  return { code: grpcStatusFromCode(err.code), details: err.rawMessage, metadata, message: err.rawMessage, name: "OrchestratorError" };
}

/** The protocol's `Error` message for a failed attempt. */
export function toWireError(error: OrchestratorError): WireError {
  let detailsJson = "";
  if (Object.keys(error.details).length > 0) {
    try {
      detailsJson = JSON.stringify(error.details);
    } catch {
      // Details are documented as JSON-safe; a handler that broke that still gets its failure reported.
      detailsJson = "";
    }
  }
  return create(ErrorSchema, { code: error.code, message: error.rawMessage, retryable: error.retryable, nonRetryable: !error.retryable, detailsJson });
}

/** Rebuilds the `OrchestratorError` of a protocol `Error`; an unknown code becomes `internal`, bad details are dropped. */
/**
 * Whether a failed attempt may be retried, by the protocol's rule (docs/protocol.md, "Retries"):
 * retryable unless the worker set `non_retryable`. A worker of this SDK from before that field
 * (`legacySdk`) said it with `retryable` alone, which is read instead.
 */
export function wireRetryable(error: Pick<WireError, "retryable" | "nonRetryable">, legacySdk = false): boolean {
  if (error.nonRetryable !== undefined) return !error.nonRetryable;
  return legacySdk ? error.retryable : true;
}

/** Whether a worker's announced version is this SDK's (whose errors predate `non_retryable` when they lack it). */
export function isSdkWorkerVersion(version: string): boolean {
  return version.startsWith("@blacktree/orchestrator ");
}

export function fromWireError(error: WireError, legacySdk = false): OrchestratorError {
  let details: Record<string, unknown> | undefined;
  if (error.detailsJson !== "") {
    try {
      const parsed: unknown = JSON.parse(error.detailsJson);
      if (typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)) details = parsed as Record<string, unknown>;
    } catch {
      details = undefined;
    }
  }
  // An unknown code becomes `internal`; the worker's own code is kept for whoever reads the error.
  const code = isOrchestratorErrorCode(error.code) ? error.code : "internal";
  if (code !== error.code) details = { ...details, wireCode: error.code };
  return deserializeError({ code, message: error.message, retryable: wireRetryable(error, legacySdk), ...(details ? { details } : {}) });
}
