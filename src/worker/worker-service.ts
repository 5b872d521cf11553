import { create } from "@bufbuild/protobuf";
import type { Metadata, sendUnaryData, ServerDuplexStream, ServerUnaryCall, ServerWritableStream, UntypedServiceImplementation } from "@grpc/grpc-js";
import { OrchestratorError } from "../errors.ts";
import {
  CancelResponseSchema,
  DescribeResponseSchema,
  ExecuteResponseSchema,
  LogSchema,
  ProgressSchema,
  ResultSchema,
  SessionResponseSchema,
  WorkerMessageSchema,
} from "../gen/blacktree/orchestrator/v1/worker_pb.ts";
import type {
  CancelRequest,
  CancelResponse,
  DescribeRequest,
  DescribeResponse,
  ExecuteRequest,
  ExecuteResponse,
  Job,
  Log,
  OrchestratorMessage,
  Progress,
  Result,
  SessionRequest,
  SessionResponse,
  WorkerDescription,
  WorkerMessage,
} from "../gen/blacktree/orchestrator/v1/worker_pb.ts";
import { Batcher } from "../transport/grpc/batcher.ts";
import type { FlushMode } from "../transport/grpc/batcher.ts";
import { toGrpcStatus, toWireError } from "../transport/grpc/errors.ts";
import { cancelReasonFromWire, decodeJson, encodeJson, logStreamToWire } from "../transport/grpc/wire.ts";
import type { WorkerJobEvent } from "../transport/types.ts";
import type { JobRunner, JobSink, RunOutcome, RunRequest } from "./job-runner.ts";

/**
 * The worker side of `blacktree.orchestrator.v1.WorkerService`: sessions, plain Execute, Cancel
 * and Describe, all feeding one {@link JobRunner}.
 * @internal
 */

/** Options of {@link WorkerService}. */
export interface WorkerServiceOptions {
  runner: JobRunner;
  description: WorkerDescription;
  /** Whether a call's metadata is allowed to use the service. */
  authorize: (metadata: Metadata) => boolean;
  maxMessageBytes: number;
  flushMode: FlushMode;
}

/** Room left in a message for everything but a payload, result or log line. */
const ENVELOPE_OVERHEAD_BYTES = 4096;

interface Session {
  readonly batcher: Batcher<WorkerMessage>;
  readonly call: ServerDuplexStream<SessionRequest, SessionResponse>;
  closed: boolean;
}

/** Serves the worker protocol for one {@link JobRunner}. */
export class WorkerService {
  readonly #options: WorkerServiceOptions;
  readonly #sessions = new Set<Session>();

  constructor(options: WorkerServiceOptions) {
    this.#options = options;
  }

  /** Writes what every session has pending and ends them (OK status); their jobs are already settled. */
  endSessions(): void {
    for (const session of this.#sessions) {
      session.batcher.flush();
      session.closed = true;
      session.batcher.close();
      session.call.end();
    }
    this.#sessions.clear();
  }

  /** The grpc-js implementation, keyed like `workerServiceDefinition`. */
  implementation(): UntypedServiceImplementation {
    return {
      session: (call: ServerDuplexStream<SessionRequest, SessionResponse>) => this.#session(call),
      execute: (call: ServerWritableStream<ExecuteRequest, ExecuteResponse>) => this.#execute(call),
      cancel: (call: ServerUnaryCall<CancelRequest, CancelResponse>, callback: sendUnaryData<CancelResponse>) => {
        if (!this.#authorized(call.metadata)) return callback(toGrpcStatus(unauthenticated()));
        const { jobId, attempt, reason, message } = call.request;
        const found = this.#options.runner.cancel(jobId, attempt, cancelReasonFromWire(reason), message || undefined);
        callback(null, create(CancelResponseSchema, { found }));
      },
      describe: (call: ServerUnaryCall<DescribeRequest, DescribeResponse>, callback: sendUnaryData<DescribeResponse>) => {
        if (!this.#authorized(call.metadata)) return callback(toGrpcStatus(unauthenticated()));
        callback(null, create(DescribeResponseSchema, { worker: this.#options.description }));
      },
    };
  }

  #authorized(metadata: Metadata): boolean {
    try {
      return this.#options.authorize(metadata) === true;
    } catch {
      // A throwing auth callback denies; it must never take the worker down.
      return false;
    }
  }

  #session(call: ServerDuplexStream<SessionRequest, SessionResponse>): void {
    const { runner, maxMessageBytes, flushMode } = this.#options;
    if (!this.#authorized(call.metadata)) return void call.emit("error", toGrpcStatus(unauthenticated()));
    if (runner.shuttingDown) return void call.emit("error", toGrpcStatus(new OrchestratorError("unavailable", "worker is shutting down")));
    const session: Session = {
      call,
      closed: false,
      batcher: new Batcher<WorkerMessage>(
        (messages) => {
          if (!session.closed) call.write(create(SessionResponseSchema, { messages }));
        },
        { mode: flushMode, maxBytes: Math.min(256 * 1024, maxMessageBytes / 2), maxCount: 1024 },
      ),
    };
    this.#sessions.add(session);
    const push = (message: WorkerMessage, bytes = 64) => session.batcher.push(message, bytes);
    // Jobs die with their session: the orchestrator has already failed them over with worker_lost.
    const lost = (why: string) => {
      if (session.closed) return;
      session.closed = true;
      session.batcher.close();
      this.#sessions.delete(session);
      runner.abortOrigin(session, "worker_lost", why);
    };
    call.on("cancelled", () => lost("the orchestrator's session was cancelled"));
    call.on("error", () => lost("the orchestrator's session failed"));
    call.on("end", () => {
      lost("the orchestrator ended its session");
      call.end();
    });
    call.on("data", (request: SessionRequest) => {
      // Nothing starts on a session already lost: its results would have nowhere to go.
      for (const message of request.messages) if (!session.closed) this.#onSessionMessage(message, session, push);
    });
    push(create(WorkerMessageSchema, { kind: { case: "hello", value: { worker: this.#options.description } } }));
    session.batcher.flush();
  }

  #onSessionMessage(message: OrchestratorMessage, session: Session, push: (message: WorkerMessage, bytes?: number) => void): void {
    const { kind } = message;
    switch (kind.case) {
      case "assign": {
        const job = kind.value;
        this.#start(job, undefined, this.#sink(job, (wire, bytes) => push(create(WorkerMessageSchema, { kind: wire }), bytes)), session);
        return;
      }
      case "cancel":
        this.#options.runner.cancel(kind.value.jobId, kind.value.attempt, cancelReasonFromWire(kind.value.reason), kind.value.message || undefined);
        return;
      case "ping":
        push(create(WorkerMessageSchema, { kind: { case: "pong", value: { seq: kind.value.seq } } }));
        return;
      default:
        // A newer orchestrator's message this worker does not know: ignore it, as proto3 does unknown fields.
        return;
    }
  }

  #execute(call: ServerWritableStream<ExecuteRequest, ExecuteResponse>): void {
    if (!this.#authorized(call.metadata)) return void call.emit("error", toGrpcStatus(unauthenticated()));
    const job = call.request.job;
    if (!job) return void call.emit("error", toGrpcStatus(new OrchestratorError("invalid_argument", "ExecuteRequest.job is required")));
    const sink = this.#sink(job, (wire) => {
      if (call.cancelled || !call.writable) return;
      call.write(create(ExecuteResponseSchema, { kind: wire }));
      if (wire.case === "result") call.end();
    });
    // Cancelling the call is how a plain client cancels its job.
    call.on("cancelled", () => this.#options.runner.abortOrigin(call, "requested", "the Execute call was cancelled"));
    const deadline = call.getDeadline();
    const callMs = deadline instanceof Date ? deadline.getTime() - Date.now() : Number.isFinite(deadline) ? deadline - Date.now() : Infinity;
    this.#start(job, callMs, sink, call);
  }

  /** Decodes and starts `job`; a job that cannot start gets its failed Result through `sink`. */
  #start(job: Job, callMs: number | undefined, sink: JobSink, origin: object): void {
    let request: RunRequest;
    try {
      request = toRunRequest(job, callMs);
    } catch (error) {
      sink.done({ ok: false, error: OrchestratorError.from(error) });
      return;
    }
    this.#options.runner.start(request, sink, origin);
  }

  /** A sink turning runner events into protocol messages for one attempt. */
  #sink(job: Job, send: (message: WireEvent, bytes: number) => void): JobSink {
    const { jobId, attempt } = job;
    const maxBytes = this.#options.maxMessageBytes - ENVELOPE_OVERHEAD_BYTES;
    return {
      event: (e: WorkerJobEvent) => {
        if (e.kind === "progress") {
          const message = truncate(e.message ?? "", maxBytes);
          send({ case: "progress", value: create(ProgressSchema, { jobId, attempt, progress: e.progress, message }) }, 64 + message.length);
        } else {
          const line = truncate(e.line, maxBytes);
          send({ case: "log", value: create(LogSchema, { jobId, attempt, line, stream: logStreamToWire(e.stream) }) }, 64 + line.length);
        }
      },
      done: (outcome: RunOutcome) => {
        const result = resultMessage(jobId, attempt, outcome, maxBytes);
        const bytes = result.outcome.case === "value" ? result.outcome.value.byteLength : (result.outcome.value?.message.length ?? 0);
        send({ case: "result", value: result }, 64 + bytes);
      },
    };
  }
}

/** What a job sends while it runs, in the shape shared by `WorkerMessage.kind` and `ExecuteResponse.kind`. */
type WireEvent = { case: "progress"; value: Progress } | { case: "log"; value: Log } | { case: "result"; value: Result };

function unauthenticated(): OrchestratorError {
  return new OrchestratorError("unauthenticated", "missing or invalid credentials");
}

/** Validates a protocol `Job`; `callMs` is the time left of the carrying call, if it has a deadline. */
function toRunRequest(job: Job, callMs: number | undefined): RunRequest {
  if (job.jobId === "") throw new OrchestratorError("invalid_argument", "Job.job_id is required", { details: { field: "job_id" } });
  if (job.type === "") throw new OrchestratorError("invalid_argument", "Job.type is required", { details: { field: "type" } });
  if (job.attempt < 1) throw new OrchestratorError("invalid_argument", "Job.attempt must be >= 1", { details: { field: "attempt" } });
  let timeoutMs = job.timeoutMs;
  if (callMs !== undefined && callMs !== Infinity) timeoutMs = timeoutMs > 0 ? Math.min(timeoutMs, callMs) : callMs;
  return {
    jobId: job.jobId,
    type: job.type,
    payload: decodeJson(job.payload, "Job.payload"),
    attempt: job.attempt,
    timeoutMs: Math.max(timeoutMs, timeoutMs === 0 ? 0 : 1),
    deadline: job.deadlineUnixMs > 0 && Number.isFinite(job.deadlineUnixMs) ? job.deadlineUnixMs : undefined,
    idempotencyKey: job.idempotencyKey === "" ? undefined : job.idempotencyKey,
    trace: job.trace && (job.trace.traceparent !== "" || job.trace.tracestate !== "")
      ? {
          ...(job.trace.traceparent === "" ? {} : { traceparent: job.trace.traceparent }),
          ...(job.trace.tracestate === "" ? {} : { tracestate: job.trace.tracestate }),
        }
      : undefined,
  };
}

function resultMessage(jobId: string, attempt: number, outcome: RunOutcome, maxBytes: number): Result {
  let error: OrchestratorError;
  if (outcome.ok) {
    try {
      const value = encodeJson(outcome.value, "the handler's result");
      if (value.byteLength <= maxBytes) return create(ResultSchema, { jobId, attempt, outcome: { case: "value", value } });
      error = new OrchestratorError("resource_exhausted", `the handler's result of ${value.byteLength} bytes exceeds the limit of ${maxBytes} bytes`, {
        retryable: false,
      });
    } catch (cause) {
      error = new OrchestratorError("handler_failed", (cause as OrchestratorError).rawMessage ?? String(cause), { cause, retryable: false });
    }
  } else {
    error = outcome.error;
  }
  return create(ResultSchema, { jobId, attempt, outcome: { case: "error", value: toWireError(error) } });
}

function truncate(text: string, maxBytes: number): string {
  // Characters, not bytes: a UTF-8 character is at most 4 bytes, so a quarter of the limit always fits.
  const max = Math.floor(maxBytes / 4);
  return text.length > max ? `${text.slice(0, max)}…` : text;
}
