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
  ServingStatus,
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
import { Batcher } from "../wire/batcher.ts";
import type { FlushMode } from "../wire/batcher.ts";
import { toGrpcStatus, toWireError } from "../wire/errors.ts";
import { cancelReasonFromWire, decodeJson, encodeJson, logStreamToWire, PING_INTERVAL_HEADER, PING_TIMEOUT_HEADER } from "../wire/wire.ts";
import type { WorkerJobEvent } from "../job/types.ts";
import { AssignGate, stallMsFor } from "./assign-gate.ts";
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
  /** Assigns received and not started yet. */
  readonly gate: AssignGate<HeldAssign>;
  /** Sequence number of the orchestrator's latest Ping (0 before one). */
  lastPingSeq: number;
  closed: boolean;
}

interface HeldAssign {
  readonly job: Job;
  /** `performance.now()` when it arrived: its `timeout_ms` counts from then. */
  readonly receivedAt: number;
}

/** Serves the worker protocol for one {@link JobRunner}. */
export class WorkerService {
  readonly #options: WorkerServiceOptions;
  readonly #sessions = new Set<Session>();

  constructor(options: WorkerServiceOptions) {
    this.#options = options;
  }

  /** Tells every session how many slots are stuck (see `JobRunner.stuck`). */
  reportStuck(stuck: number): void {
    for (const session of this.#sessions) {
      if (!session.closed) session.batcher.push(create(WorkerMessageSchema, { kind: { case: "slots", value: { stuck } } }), 16);
    }
  }

  /**
   * Tells every session the worker's serving status at once, in a Pong for the latest Ping it
   * received (see `Pong.status`): an orchestrator whose idle session pings rarely learns that
   * shutdown began without waiting for its next Ping.
   */
  announceStatus(): void {
    for (const session of this.#sessions) {
      if (!session.closed) session.batcher.push(this.#pong(session.lastPingSeq), 16);
    }
  }

  /** Writes what every session has pending and ends them (OK status); their jobs are already settled. */
  endSessions(): void {
    for (const session of this.#sessions) {
      session.batcher.flush();
      session.closed = true;
      session.gate.close();
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
    const push = (message: WorkerMessage, bytes = 64) => session.batcher.push(message, bytes);
    const session: Session = {
      call,
      lastPingSeq: 0,
      closed: false,
      batcher: new Batcher<WorkerMessage>(
        (messages) => {
          if (!session.closed) call.write(create(SessionResponseSchema, { messages }));
        },
        { mode: flushMode, maxBytes: Math.min(256 * 1024, maxMessageBytes / 2), maxCount: 1024 },
      ),
      gate: new AssignGate<HeldAssign>({
        stallMs: announcedStallMs(call.metadata),
        start: ({ job, receivedAt }) => {
          const sink = this.#sink(job, (wire, bytes) => push(create(WorkerMessageSchema, { kind: wire }), bytes));
          this.#start(job, undefined, sink, session, performance.now() - receivedAt);
        },
      }),
    };
    this.#sessions.add(session);
    // Jobs die with their session: the orchestrator has already failed them over with worker_lost.
    // Those not started yet never start.
    const lost = (why: string) => {
      if (session.closed) return;
      session.closed = true;
      session.gate.close();
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
    if (runner.stuck > 0) push(create(WorkerMessageSchema, { kind: { case: "slots", value: { stuck: runner.stuck } } }));
    session.batcher.flush();
  }

  #onSessionMessage(message: OrchestratorMessage, session: Session, push: (message: WorkerMessage, bytes?: number) => void): void {
    const { kind } = message;
    switch (kind.case) {
      case "assign":
        // Not started here: see AssignGate (a reset may wait behind it in the same read).
        session.gate.hold({ job: kind.value, receivedAt: performance.now() });
        return;
      case "cancel": {
        const { jobId, attempt } = kind.value;
        // A job cancelled before it started never starts; its execute has already settled.
        session.gate.drop(({ job }) => job.jobId === jobId && (attempt === 0 || job.attempt === attempt));
        this.#options.runner.cancel(jobId, attempt, cancelReasonFromWire(kind.value.reason), kind.value.message || undefined);
        return;
      }
      case "ping":
        session.gate.ping(kind.value.seq);
        session.lastPingSeq = kind.value.seq;
        push(this.#pong(kind.value.seq));
        return;
      default:
        // A newer orchestrator's message this worker does not know: ignore it, as proto3 does unknown fields.
        return;
    }
  }

  /**
   * A Pong carries what the health service's Check would answer (NOT_SERVING once shutdown began),
   * so an orchestrator with pongs on time needs no separate health check.
   */
  #pong(seq: number): WorkerMessage {
    const status = this.#options.runner.shuttingDown ? ServingStatus.NOT_SERVING : ServingStatus.SERVING;
    return create(WorkerMessageSchema, { kind: { case: "pong", value: { seq, status } } });
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

  /**
   * Decodes and starts `job`; a job that cannot start gets its failed Result through `sink`.
   * `heldMs`: how long it waited since it arrived.
   */
  #start(job: Job, callMs: number | undefined, sink: JobSink, origin: object, heldMs = 0): void {
    let request: RunRequest;
    try {
      request = toRunRequest(job, callMs, heldMs);
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

/**
 * The stall threshold of an orchestrator that announced its ping timing in the session's
 * metadata (`GrpcTransport` does); undefined for one that did not.
 */
function announcedStallMs(metadata: Metadata): number | undefined {
  const read = (key: string) => {
    const value = Number(metadata.get(key)[0]);
    return Number.isSafeInteger(value) && value > 0 ? value : undefined;
  };
  const timeoutMs = read(PING_TIMEOUT_HEADER);
  if (timeoutMs === undefined) return undefined;
  return stallMsFor(read(PING_INTERVAL_HEADER) ?? timeoutMs, timeoutMs);
}

function unauthenticated(): OrchestratorError {
  return new OrchestratorError("unauthenticated", "missing or invalid credentials");
}

/**
 * Validates a protocol `Job`; `callMs` is the time left of the carrying call, if it has a
 * deadline; `heldMs` how long the job waited on this worker before it starts.
 */
function toRunRequest(job: Job, callMs: number | undefined, heldMs: number): RunRequest {
  if (job.jobId === "") throw new OrchestratorError("invalid_argument", "Job.job_id is required", { details: { field: "job_id" } });
  if (job.type === "") throw new OrchestratorError("invalid_argument", "Job.type is required", { details: { field: "type" } });
  if (job.attempt < 1) throw new OrchestratorError("invalid_argument", "Job.attempt must be >= 1", { details: { field: "attempt" } });
  // timeout_ms counts from receipt, and the wait counts against it.
  let timeoutMs = job.timeoutMs > 0 ? Math.max(1, Math.ceil(job.timeoutMs - heldMs)) : 0;
  if (callMs !== undefined && callMs !== Infinity) timeoutMs = timeoutMs > 0 ? Math.min(timeoutMs, callMs) : callMs;
  return {
    jobId: job.jobId,
    type: job.type,
    payload: decodeJson(job.payload, "Job.payload"),
    attempt: job.attempt,
    fencingToken: job.fencingToken > 0 ? job.fencingToken : undefined,
    timeoutMs: Math.max(timeoutMs, timeoutMs === 0 ? 0 : 1),
    deadline: job.deadlineUnixMs > 0 && Number.isFinite(job.deadlineUnixMs) ? job.deadlineUnixMs : undefined,
    idempotencyKey: job.idempotencyKey === "" ? undefined : job.idempotencyKey,
    trace: job.trace && (job.trace.traceparent !== "" || job.trace.tracestate !== "")
      ? {
          ...(job.trace.traceparent === "" ? {} : { traceparent: job.trace.traceparent }),
          ...(job.trace.tracestate === "" ? {} : { tracestate: job.trace.tracestate }),
        }
      : undefined,
    traceCarrier: Object.keys(job.traceCarrier).length === 0 ? undefined : job.traceCarrier,
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
