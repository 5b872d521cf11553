import { create } from "@bufbuild/protobuf";
import type { Client, ClientDuplexStream, Metadata } from "@grpc/grpc-js";
import { OrchestratorError } from "../../errors.ts";
import { OrchestratorMessageSchema, ServingStatus, SessionRequestSchema, WorkerDescriptionSchema } from "../../gen/blacktree/orchestrator/v1/worker_pb.ts";
import type { OrchestratorMessage, SessionRequest, SessionResponse, WorkerDescription, WorkerMessage } from "../../gen/blacktree/orchestrator/v1/worker_pb.ts";
import { abortReason, cancelError, cancelReasonOf } from "../../signals.ts";
import { MAX_TIMER_MS } from "../../timers.ts";
import type { ExecuteOptions, ExecuteRequest, HealthStatus } from "../types.ts";
import { outsideAnyTrace } from "../../telemetry/telemetry.ts";
import { Batcher } from "../../wire/batcher.ts";
import type { FlushMode } from "../../wire/batcher.ts";
import { fromGrpcError, fromWireError, isEnhanceYourCalm, isSdkWorkerVersion } from "../../wire/errors.ts";
import { cancelReasonToWire, decodeJson, logStreamFromWire, methodOf, PING_INTERVAL_HEADER, PING_TIMEOUT_HEADER, workerServiceDefinition } from "../../wire/wire.ts";

/**
 * The orchestrator's end of one `Session` stream: many attempts in flight, their cancels, and
 * liveness pings on the same stream. When the stream breaks or a pong is late, every attempt in
 * flight rejects at once with `worker_lost`; anything arriving for an attempt no longer in
 * flight is ignored.
 * @internal
 */

/** Settings of a {@link ClientSession}, resolved by `GrpcTransport`. */
export interface ClientSessionOptions {
  client: Client;
  metadata: () => Metadata;
  pingIntervalMs: number;
  pingTimeoutMs: number;
  connectTimeoutMs: number;
  /**
   * The connection's HTTP/2 keepalive pings come at least once per ping period and give up no
   * later than `pingTimeoutMs`: they prove the worker alive while no job runs, so an idle session
   * sends its own Ping only every {@link IDLE_PING_PERIODS} periods.
   */
  thinIdlePings: boolean;
  flushMode: FlushMode;
  /** Largest gRPC message; batches stay well below it. */
  maxMessageBytes: number;
  /** The worker said hello: the session is usable. */
  onReady: (session: ClientSession, worker: WorkerDescription) => void;
  /** The worker reported how many of its slots are stuck (`SlotReport`). */
  onSlots?: (stuck: number) => void;
  /** A ping was answered after `rttMs`. */
  onPong?: (rttMs: number) => void;
  /**
   * The worker closed the connection with ENHANCE_YOUR_CALM, as gRPC stacks do for keepalive
   * pings more frequent than they permit; `onClosed` follows.
   */
  onPingsRefused?: () => void;
  /** The session ended; `wasReady` tells whether it ever said hello. Called once. */
  onClosed: (session: ClientSession, error: OrchestratorError, wasReady: boolean) => void;
}

interface InFlight {
  readonly jobId: string;
  readonly attempt: number;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: OrchestratorError) => void;
  readonly onEvent: ExecuteOptions["onEvent"];
  readonly signal: AbortSignal;
  readonly onAbort: () => void;
  readonly timer: NodeJS.Timeout;
}

const method = methodOf(workerServiceDefinition, "session");
const keyOf = (jobId: string, attempt: number): string => `${attempt}:${jobId}`;
/** A job's timeout travels as uint32 milliseconds. */
const MAX_WIRE_TIMEOUT_MS = 2 ** 32 - 1;
/**
 * An idle session (no attempt in flight for `pingTimeoutMs`) whose connection's keepalive
 * vouches for the worker pings on the stream once per this many periods: enough to refresh the
 * worker's serving status and to prove the stream itself still carries messages.
 */
export const IDLE_PING_PERIODS = 10;

/**
 * Time between two Pings: `pingIntervalMs`, but at least two per `pingTimeoutMs`, so a worker
 * can tell a stall from the normal gap between two (docs/wire.md, "A worker that stalls").
 */
export function pingPeriodFor(pingIntervalMs: number, pingTimeoutMs: number): number {
  return Math.max(1, Math.min(pingIntervalMs, Math.floor(pingTimeoutMs / 2)));
}

/** One multiplexed session; see the module comment. */
export class ClientSession {
  readonly #options: ClientSessionOptions;
  readonly #inFlight = new Map<string, InFlight>();
  readonly #batcher: Batcher<OrchestratorMessage>;
  /** Time between two Pings, see {@link pingPeriodFor}. */
  readonly #pingPeriodMs: number;
  #call: ClientDuplexStream<SessionRequest, SessionResponse> | undefined;
  #state: "connecting" | "ready" | "closed" = "connecting";
  #connectTimer: NodeJS.Timeout | undefined;
  #pingTimer: NodeJS.Timeout | undefined;
  #pingSeq = 0;
  #pingSentAt = 0;
  #pingOutstanding = false;
  /** When an attempt was last sent or seen in flight. */
  #busyAt = 0;
  /** The session skipped a Ping for idleness since it was last busy. */
  #thinned = false;
  /** Send the next Ping as soon as the outstanding one is answered (a thinned session got work). */
  #pingOnPong = false;
  /** The serving status of the latest Pong; undefined before one, or from a worker that does not report it. */
  #serving: HealthStatus | undefined;
  /** The worker is this SDK's: an error without `non_retryable` is read by `retryable` (see wireRetryable). */
  #legacySdkErrors = false;

  constructor(options: ClientSessionOptions) {
    this.#options = options;
    this.#pingPeriodMs = pingPeriodFor(options.pingIntervalMs, options.pingTimeoutMs);
    this.#batcher = new Batcher<OrchestratorMessage>(
      (messages) => {
        this.#call?.write(create(SessionRequestSchema, { messages }));
      },
      { mode: options.flushMode, maxBytes: Math.min(256 * 1024, options.maxMessageBytes / 2), maxCount: 1024 },
    );
  }

  /** `connecting` until the worker's hello, then `ready`, then `closed` for good. */
  get state(): "connecting" | "ready" | "closed" {
    return this.#state;
  }

  /** Attempts in flight. */
  get size(): number {
    return this.#inFlight.size;
  }

  /**
   * The worker's serving status as its latest Pong reported it, while the session is ready (a
   * session whose Ping goes unanswered past `pingTimeoutMs` closes, so a ready one is live);
   * undefined otherwise, or when the worker does not report it.
   */
  get serving(): HealthStatus | undefined {
    return this.#state === "ready" ? this.#serving : undefined;
  }

  /** Opens the stream. */
  open(): void {
    const metadata = this.#options.metadata();
    // The worker holds Assigns that arrive after a silence longer than these allow (AssignGate).
    metadata.set(PING_INTERVAL_HEADER, String(this.#pingPeriodMs));
    metadata.set(PING_TIMEOUT_HEADER, String(this.#options.pingTimeoutMs));
    // One stream carries many jobs: it belongs to no job's trace (an RPC instrumentation's span included).
    const call = outsideAnyTrace(() =>
      this.#options.client.makeBidiStreamRequest(
        method.path,
        method.requestSerialize as (value: SessionRequest) => Buffer,
        method.responseDeserialize as (bytes: Buffer) => SessionResponse,
        metadata,
        {},
      ),
    );
    this.#call = call;
    call.on("data", (response: SessionResponse) => {
      for (const message of response.messages) {
        if (this.#state === "closed") return;
        this.#onMessage(message);
      }
    });
    call.on("error", (error: unknown) => {
      if (isEnhanceYourCalm(error)) this.#options.onPingsRefused?.();
      this.close(fromGrpcError(error, "worker session failed"));
    });
    call.on("end", () => this.close(new OrchestratorError("unavailable", "worker ended the session")));
    this.#connectTimer = setTimeout(() => {
      this.close(new OrchestratorError("unavailable", `worker did not answer within ${this.#options.connectTimeoutMs} ms`));
    }, this.#options.connectTimeoutMs);
    this.#connectTimer.unref();
  }

  /** Sends one attempt; see `WorkerTransport.execute`. The payload is already checked to encode. */
  execute(request: ExecuteRequest, payload: Uint8Array, options: ExecuteOptions): Promise<unknown> {
    const { jobId, attempt } = request;
    const key = keyOf(jobId, attempt);
    if (this.#inFlight.has(key)) {
      return Promise.reject(new OrchestratorError("precondition_failed", `job ${jobId} attempt ${attempt} is already running on this worker`));
    }
    const now = Date.now();
    const remaining = request.deadline - now;
    this.#busyAt = now;
    if (this.#thinned) this.#resumePings();
    return new Promise<unknown>((resolve, reject) => {
      const { signal, onEvent } = options;
      const onAbort = () => {
        const reason = abortReason(signal);
        this.#sendCancel(jobId, attempt, reason);
        this.#settle(key)?.reject(reason);
      };
      const timer = setTimeout(() => {
        const reason = cancelError("timeout", `job ${jobId} attempt ${attempt} passed its deadline`);
        this.#sendCancel(jobId, attempt, reason);
        this.#settle(key)?.reject(reason);
      }, Math.min(remaining, MAX_TIMER_MS));
      this.#inFlight.set(key, { jobId, attempt, resolve, reject, onEvent, signal, onAbort, timer });
      signal.addEventListener("abort", onAbort, { once: true });
      const assign = {
        jobId,
        type: request.type,
        payload,
        attempt,
        fencingToken: request.fencingToken ?? attempt,
        timeoutMs: Math.min(MAX_WIRE_TIMEOUT_MS, Math.max(1, Math.ceil(remaining))),
        deadlineUnixMs: request.deadline,
        idempotencyKey: request.idempotencyKey ?? "",
        ...(request.trace ? { trace: { traceparent: request.trace.traceparent ?? "", tracestate: request.trace.tracestate ?? "" } } : {}),
        ...(request.traceCarrier ? { traceCarrier: request.traceCarrier } : {}),
      };
      this.#batcher.push(create(OrchestratorMessageSchema, { kind: { case: "assign", value: assign } }), 96 + payload.byteLength);
    });
  }

  /**
   * Ends the session: every attempt in flight rejects with `worker_lost` (or with `error` itself
   * when the worker never said hello, so nothing can have started). Idempotent.
   */
  close(error: OrchestratorError): void {
    if (this.#state === "closed") return;
    const wasReady = this.#state === "ready";
    this.#state = "closed";
    clearTimeout(this.#connectTimer);
    clearInterval(this.#pingTimer);
    this.#batcher.close();
    // Before the hello nothing can have started: the attempts fail with the session's own error
    // (unavailable, unauthenticated, ...), always retryable: a worker that refuses our credentials
    // or is no worker at all fails this worker, not the job, which another worker may run. After
    // the hello they were running and are lost.
    const lost = wasReady
      ? new OrchestratorError("worker_lost", `lost the worker: ${error.rawMessage}`, { cause: error, details: { reason: "worker_lost" } })
      : new OrchestratorError(error.code, error.rawMessage, { cause: error, retryable: true, details: { ...error.details, started: false } });
    for (const key of [...this.#inFlight.keys()]) this.#settle(key)?.reject(lost);
    this.#call?.cancel();
    this.#options.onClosed(this, error, wasReady);
  }

  #onMessage(message: WorkerMessage): void {
    const { kind } = message;
    switch (kind.case) {
      case "hello":
        if (this.#state !== "connecting") return;
        this.#state = "ready";
        clearTimeout(this.#connectTimer);
        this.#startPings();
        this.#legacySdkErrors = isSdkWorkerVersion(kind.value.worker?.version ?? "");
        this.#options.onReady(this, kind.value.worker ?? create(WorkerDescriptionSchema, {}));
        return;
      case "slots":
        if (this.#state === "ready") this.#options.onSlots?.(kind.value.stuck);
        return;
      case "pong":
        if (kind.value.seq !== this.#pingSeq) return;
        this.#serving = servingFromWire(kind.value.status);
        // A Pong for a Ping already answered: the worker's status changed (its shutdown began).
        if (!this.#pingOutstanding) return;
        this.#pingOutstanding = false;
        this.#options.onPong?.(Date.now() - this.#pingSentAt);
        // A late Pong (the worker stalled), or one answered after work came to a thinned session,
        // gets the next Ping at once: a worker that counted the gap before it as a stall holds its
        // new Assigns until that round trip, and should not wait a whole period for it.
        if (this.#pingOnPong || Date.now() - this.#pingSentAt >= this.#pingPeriodMs) {
          this.#pingOnPong = false;
          this.#ping();
        }
        return;
      case "progress": {
        const job = this.#inFlight.get(keyOf(kind.value.jobId, kind.value.attempt));
        if (!job) return;
        const { progress, message: text } = kind.value;
        safeEvent(job, text === "" ? { kind: "progress", progress } : { kind: "progress", progress, message: text });
        return;
      }
      case "log": {
        const job = this.#inFlight.get(keyOf(kind.value.jobId, kind.value.attempt));
        if (!job) return;
        const stream = logStreamFromWire(kind.value.stream);
        safeEvent(job, stream ? { kind: "log", line: kind.value.line, stream } : { kind: "log", line: kind.value.line });
        return;
      }
      case "result": {
        const { jobId, attempt, outcome } = kind.value;
        // A result for an attempt no longer in flight (cancelled, timed out, or sent by a worker
        // that was evicted and came back) is ignored: that attempt already has its outcome.
        const job = this.#settle(keyOf(jobId, attempt));
        if (!job) return;
        if (outcome.case === "value") {
          let value: unknown;
          try {
            value = decodeJson(outcome.value, `result of job ${jobId}`);
          } catch (error) {
            job.reject(OrchestratorError.from(error));
            return;
          }
          job.resolve(value);
        } else if (outcome.case === "error") {
          job.reject(fromWireError(outcome.value, this.#legacySdkErrors));
        } else {
          job.reject(new OrchestratorError("internal", `worker sent an empty result for job ${jobId}`));
        }
        return;
      }
      default:
        return;
    }
  }

  #settle(key: string): InFlight | undefined {
    const job = this.#inFlight.get(key);
    if (!job) return undefined;
    this.#inFlight.delete(key);
    clearTimeout(job.timer);
    job.signal.removeEventListener("abort", job.onAbort);
    return job;
  }

  #sendCancel(jobId: string, attempt: number, reason: OrchestratorError): void {
    if (this.#state === "closed" || !this.#inFlight.has(keyOf(jobId, attempt))) return;
    const value = { jobId, attempt, reason: cancelReasonToWire(cancelReasonOf(reason) ?? "requested"), message: reason.rawMessage };
    this.#batcher.push(create(OrchestratorMessageSchema, { kind: { case: "cancel", value } }), 96);
    // A cancel must reach the handler within milliseconds; don't let it wait for the batch.
    this.#batcher.flush();
  }

  #startPings(): void {
    const { pingTimeoutMs } = this.#options;
    this.#busyAt = Date.now();
    this.#pingTimer = setInterval(() => {
      if (this.#pingOutstanding) {
        if (Date.now() - this.#pingSentAt < pingTimeoutMs) return;
        // Read what the socket holds before judging: a busy orchestrator loop can fire this
        // timer before it has processed a pong that arrived in time (and sent the next ping).
        const seq = this.#pingSeq;
        setImmediate(() => {
          if (this.#pingOutstanding && this.#pingSeq === seq && this.#state === "ready") {
            this.close(new OrchestratorError("unavailable", `worker did not answer a ping within ${pingTimeoutMs} ms`));
          }
        });
        return;
      }
      if (this.#options.thinIdlePings && this.#idleSkip()) return;
      this.#ping();
    }, this.#pingPeriodMs);
    this.#pingTimer.unref();
  }

  /**
   * Whether this period's Ping can be skipped: no attempt in flight for `pingTimeoutMs`, and the
   * last Ping less than {@link IDLE_PING_PERIODS} periods ago. The connection's keepalive pings
   * cover the gap (a frozen or silent worker drops the connection within `pingTimeoutMs`).
   */
  #idleSkip(): boolean {
    const now = Date.now();
    if (this.#inFlight.size > 0) {
      this.#busyAt = now;
      return false;
    }
    if (now - this.#busyAt < this.#options.pingTimeoutMs) return false;
    // Half a period of slack: an interval timer fires a little early or late.
    if (now - this.#pingSentAt >= (IDLE_PING_PERIODS - 0.5) * this.#pingPeriodMs) return false;
    this.#thinned = true;
    return true;
  }

  /**
   * Work came to a thinned session: the worker counts the long gap before the next Ping as a
   * stall and holds the Assign until a fresh round trip (AssignGate), so a Ping goes ahead of the
   * Assign in its batch and the next one follows its Pong at once: one round trip of delay.
   */
  #resumePings(): void {
    this.#thinned = false;
    this.#pingOnPong = true;
    if (!this.#pingOutstanding) this.#ping();
  }

  /** Sends the next Ping; the worker relies on there being one unanswered Ping at most. */
  #ping(): void {
    this.#pingSeq = (this.#pingSeq + 1) >>> 0;
    this.#pingSentAt = Date.now();
    this.#pingOutstanding = true;
    this.#batcher.push(create(OrchestratorMessageSchema, { kind: { case: "ping", value: { seq: this.#pingSeq } } }), 16);
  }
}

function servingFromWire(status: ServingStatus): HealthStatus | undefined {
  if (status === ServingStatus.SERVING) return "serving";
  if (status === ServingStatus.NOT_SERVING) return "not_serving";
  return undefined;
}

function safeEvent(job: InFlight, event: Parameters<ExecuteOptions["onEvent"]>[0]): void {
  try {
    job.onEvent(event);
  } catch {
    // onEvent must not throw (contract); if it does, the job goes on and so do its other events.
  }
}
