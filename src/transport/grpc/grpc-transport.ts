import { create } from "@bufbuild/protobuf";
import { Client, credentials as grpcCredentials, Metadata } from "@grpc/grpc-js";
import type { ChannelCredentials, ChannelOptions } from "@grpc/grpc-js";
import { invalidArgument, OrchestratorError } from "../../errors.ts";
import { DescribeRequestSchema, WorkerDescriptionSchema } from "../../gen/blacktree/orchestrator/v1/worker_pb.ts";
import type { DescribeRequest, DescribeResponse } from "../../gen/blacktree/orchestrator/v1/worker_pb.ts";
import { HealthCheckRequestSchema, HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.ts";
import type { HealthCheckRequest, HealthCheckResponse } from "../../gen/grpc/health/v1/health_pb.ts";
import { abortReason, throwIfAborted, waitSignal } from "../../signals.ts";
import { backoffDelay } from "../../timers.ts";
import { checkInteger, checkNumber, checkObject, checkSignal, checkString, optional } from "../../validate.ts";
import type { ExecuteOptions, ExecuteRequest, HealthStatus, TransportState, WorkerDescription, WorkerTransport } from "../types.ts";
import type { FlushMode } from "../../wire/batcher.ts";
import { ClientSession, pingPeriodFor } from "./client-session.ts";
import { fromGrpcError } from "../../wire/errors.ts";
import { checkFlushMode, checkPem, encodeJson, healthServiceDefinition, methodOf, resolveMaxMessageBytes, workerServiceDefinition } from "../../wire/wire.ts";
import { descriptionFromWire } from "../../wire/description.ts";
import { diagnoseConnection } from "./diagnose.ts";
import type { DiagnoseTarget } from "./diagnose.ts";
import { type ClientTelemetry, clientTelemetry } from "../../telemetry/client-telemetry.ts";
import { type Logger, logSafely, resolveLogger } from "../../telemetry/logger.ts";
import type { TelemetryOptions } from "../../telemetry/telemetry.ts";

/** TLS of a {@link GrpcTransport}; with `cert` and `key` it is mutual TLS. */
export interface GrpcTransportTlsOptions {
  /** PEM CA bundle the worker's certificate must chain to. */
  ca: string | Buffer;
  /** PEM client certificate chain (mutual TLS). */
  cert?: string | Buffer;
  /** PEM client private key (mutual TLS). */
  key?: string | Buffer;
  /**
   * Name the worker's certificate must carry, when it differs from the host in `address`.
   * @default the host of `address`
   */
  serverName?: string;
}

/** Options of {@link GrpcTransport}. */
export interface GrpcTransportOptions {
  /** The worker's `host:port` (what `serveWorker()` returns as `address`). */
  address: string;
  /** Speak TLS (mutual TLS with `cert` and `key`). @default plaintext */
  tls?: GrpcTransportTlsOptions;
  /** Bearer token sent as `authorization` metadata on every call (the worker's `auth.token`). */
  token?: string;
  /**
   * Largest gRPC message sent or received. An `execute` whose payload does not fit is refused with `invalid_argument`.
   * @default 16 MiB
   */
  maxMessageBytes?: number;
  /**
   * How long the worker may take to answer a new session before `execute` fails with `unavailable`.
   * @default 5000
   */
  connectTimeoutMs?: number;
  /**
   * Timeout of `check` and `describe` when the caller gives none.
   * @default 10000
   */
  callTimeoutMs?: number;
  /**
   * Interval of liveness pings on the job stream; no more than half of `pingTimeoutMs` (a longer
   * one is shortened to it), so a worker can tell a missed ping from the normal gap between two.
   * @default 1000
   */
  pingIntervalMs?: number;
  /**
   * A ping unanswered this long means the worker is lost (frozen, or its job stream died):
   * every job in flight rejects with `worker_lost` and `watch` reports `lost`.
   * @default 2000
   */
  pingTimeoutMs?: number;
  /**
   * HTTP/2 keepalive ping interval of the connection. By default one per ping period (see
   * `pingIntervalMs`): answered by the worker's HTTP/2 layer, these prove it alive while no job
   * runs, so an idle session pings on its stream only every tenth period. A longer interval, or a
   * `keepaliveTimeoutMs` over `pingTimeoutMs`, keeps the stream's Pings at every period. A worker
   * on another gRPC stack must permit it (grpc-go: `keepalive.EnforcementPolicy{MinTime}` below
   * it, `PermitWithoutStream: true`). One that refuses them (GOAWAY `too_many_pings`) drops the
   * connection with its jobs once; grpc-js then doubles the interval, idle sessions ping every period
   * from then on, and `logger` gets an error naming the fix (docs/wire.md, "Interop").
   * @default min(pingIntervalMs, pingTimeoutMs / 2)
   */
  keepaliveTimeMs?: number;
  /**
   * How long an HTTP/2 keepalive ping may go unanswered before the connection is dropped (every
   * job on it rejects with `worker_lost`, `watch` reports `lost`). It holds for busy connections
   * too (grpc-js sets it per connection, not per call), and grpc-js's timer does not re-read the
   * socket after a blocked event loop: a block longer than this can drop a connection whose PING
   * was in flight. Over `pingTimeoutMs` (e.g. 5000, the default before) it keeps that margin,
   * and idle sessions ping every period.
   * @default pingTimeoutMs
   */
  keepaliveTimeoutMs?: number;
  /**
   * Backoff between reconnects of a lost session while someone `watch`es the transport, and of
   * the underlying connection.
   * @default { baseDelayMs: 100, maxDelayMs: 10000, jitter: 0.2 }
   */
  reconnect?: { baseDelayMs?: number; maxDelayMs?: number; jitter?: number };
  /** @internal How session messages are batched (see docs/wire.md). @default "immediate" */
  flushMode?: FlushMode;
  /**
   * Where the transport's records go (pino-shaped): `warn` when the connection to its worker is
   * lost, `info` when it is ready again.
   * @default none
   */
  logger?: Logger;
  /**
   * OpenTelemetry providers and/or a Prometheus registry for the session's figures (kind `grpc`):
   * `blacktree.connections.open` (the session to this worker is open), `blacktree.connection.reconnects`
   * and `blacktree.connection.downtime` (a lost session opened again), and
   * `blacktree.transport.ping.duration` (round trips of the job stream's liveness pings).
   * @default the global OpenTelemetry providers when `@opentelemetry/api` is installed; else nothing
   */
  telemetry?: TelemetryOptions;
}

interface ResolvedOptions {
  logger: Logger | undefined;
  figures: ClientTelemetry;
  address: string;
  /** The TLS material as given to grpc-js, kept to diagnose a failed connection. */
  tls: DiagnoseTarget["tls"];
  channelCredentials: ChannelCredentials;
  channelOptions: ChannelOptions;
  token: string | undefined;
  maxMessageBytes: number;
  connectTimeoutMs: number;
  callTimeoutMs: number;
  pingIntervalMs: number;
  pingTimeoutMs: number;
  thinIdlePings: boolean;
  reconnect: { baseMs: number; maxMs: number; jitter: number };
  flushMode: FlushMode;
}

/** Room left in a message for everything but the payload. */
const ENVELOPE_OVERHEAD_BYTES = 4096;
const checkMethod = methodOf(healthServiceDefinition, "check");
const describeMethod = methodOf(workerServiceDefinition, "describe");

/**
 * The default remote {@link WorkerTransport}: talks to a worker started with `serveWorker()` (or
 * any server of the `blacktree.orchestrator.v1` protocol) over gRPC, on @grpc/grpc-js.
 *
 * All jobs to the worker travel on one long-lived bidirectional stream (a session) that also
 * carries cancels and liveness pings; a broken connection or a missed pong rejects every job in
 * flight with `worker_lost` at once and reports `lost` to `watch` listeners. Health checks use the
 * standard `grpc.health.v1` Check. The constructor does no I/O: the connection opens on first use.
 *
 * @example
 * ```ts
 * const transport = new GrpcTransport({ address: "worker-1:50051", token: process.env.WORKER_TOKEN });
 * pool.add({ id: "worker-1", transport, slots: 4 });
 * ```
 */
export class GrpcTransport implements WorkerTransport {
  readonly #options: ResolvedOptions;
  readonly #listeners = new Set<(state: TransportState) => void>();
  #client: Client | undefined;
  #session: ClientSession | undefined;
  #reported: TransportState | undefined;
  #reconnectAttempt = 0;
  #reconnectTimer: NodeJS.Timeout | undefined;
  #description: WorkerDescription | undefined;
  readonly #slotListeners = new Set<(stuck: number) => void>();
  /** `connect()` calls waiting for the current session to say hello or end. */
  readonly #sessionWaiters = new Set<() => void>();
  #stuck = 0;
  /** Why the latest session could not be opened, once diagnosed. */
  #connectFailure: Promise<OrchestratorError> | undefined;
  /**
   * Idle sessions send their own Ping only every tenth period, the keepalive covering the gap;
   * cleared for good once the worker refuses the keepalive (grpc-js then keeps it slower).
   */
  #thinIdlePings: boolean;
  #closed = false;

  /** @throws {OrchestratorError} `invalid_argument` for bad options. */
  constructor(options: GrpcTransportOptions) {
    this.#options = resolveOptions(options);
    this.#thinIdlePings = this.#options.thinIdlePings;
  }

  /** The worker's `host:port`. */
  get address(): string {
    return this.#options.address;
  }

  /** What the worker said about itself when the current session opened, if one is open. */
  get worker(): WorkerDescription | undefined {
    return this.#description;
  }

  /**
   * Runs one attempt on the worker's session (opened on first use) and resolves with the
   * handler's result; see {@link WorkerTransport.execute}. Aborting `options.signal` sends a
   * Cancel and rejects at once with the signal's reason; at `request.deadline` it rejects with
   * `deadline_exceeded` (the worker aborts the handler too).
   * @throws {OrchestratorError} `invalid_argument` for a bad request or a payload over
   * `maxMessageBytes`; `worker_lost` when the session breaks or a ping goes unanswered mid-job;
   * `unavailable` / `unauthenticated` (always `retryable`: the job did not start) when no
   * session could be opened; the worker's own codes.
   */
  execute(request: ExecuteRequest, options: ExecuteOptions): Promise<unknown> {
    try {
      if (this.#closed) throw new OrchestratorError("worker_lost", "transport is closed", { details: { reason: "worker_lost" } });
      checkObject("options", options);
      const signal = checkSignal("options.signal", options.signal) as AbortSignal;
      if (!signal) throw invalidArgument("options.signal", "an AbortSignal", options.signal);
      if (typeof options.onEvent !== "function") throw invalidArgument("options.onEvent", "a function", options.onEvent);
      throwIfAborted(signal);
      checkObject("request", request);
      checkString("request.jobId", request.jobId, 256);
      checkString("request.type", request.type, 256);
      checkInteger("request.attempt", request.attempt, 1, 2 ** 32 - 1);
      checkNumber("request.deadline", request.deadline, 0);
      if (request.deadline <= Date.now()) {
        throw new OrchestratorError("deadline_exceeded", `job ${request.jobId} attempt ${request.attempt} is past its deadline`, {
          details: { reason: "timeout" },
        });
      }
      const payload = encodeJson(request.payload, "request.payload");
      const limit = this.#options.maxMessageBytes - ENVELOPE_OVERHEAD_BYTES;
      if (payload.byteLength > limit) {
        throw new OrchestratorError("invalid_argument", `payload of ${payload.byteLength} bytes exceeds the limit of ${limit} bytes (maxMessageBytes)`, {
          details: { field: "payload" },
        });
      }
      return this.#ensureSession().execute(request, payload, options);
    } catch (error) {
      return Promise.reject(OrchestratorError.from(error));
    }
  }

  /**
   * Opens the session (if none is open) and resolves with what the worker announced in its hello:
   * id, slots, labels, job types, version and protocol. The pool admits a worker only after this.
   * @throws {OrchestratorError} `unavailable` (or `unauthenticated`) with a reason a person can act
   * on when no session opens: the message says what is wrong (refused, unreachable, unknown CA,
   * expired certificate, name mismatch, plaintext to a TLS port, client certificate refused, ...)
   * and `details.connectFailure` names it for code (see `ConnectFailure`); `deadline_exceeded`
   * after `timeoutMs` (default `connectTimeoutMs`); the signal's reason.
   */
  async connect(options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<WorkerDescription> {
    const o = checkObject("options", options);
    const signal = checkSignal("options.signal", o.signal);
    const timeoutMs = optional(o.timeoutMs, this.#options.connectTimeoutMs * 2, (v) => checkInteger("options.timeoutMs", v, 1));
    throwIfAborted(signal);
    if (this.#closed) throw new OrchestratorError("unavailable", "transport is closed");
    const session = this.#ensureSession();
    if (session.state === "ready" && this.#description) return this.#description;
    // The timer is cleared once the wait ends (AbortSignal.timeout would fire later regardless).
    const wait = waitSignal({ signal, timeoutMs }, `session with ${this.#options.address}`);
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        finish();
        reject(signal?.aborted ? abortReason(signal) : new OrchestratorError("deadline_exceeded", `no session with ${this.#options.address} within ${timeoutMs} ms`));
      };
      const settled = () => {
        finish();
        resolve();
      };
      const finish = () => {
        this.#sessionWaiters.delete(settled);
        wait.signal!.removeEventListener("abort", onAbort);
        wait.dispose();
      };
      this.#sessionWaiters.add(settled);
      wait.signal!.addEventListener("abort", onAbort, { once: true });
    });
    if (session.state === "ready" && this.#description) return this.#description;
    throw await (this.#connectFailure ?? Promise.resolve(new OrchestratorError("unavailable", `the session with ${this.#options.address} ended before the worker said hello`)));
  }

  /**
   * Reports how many of the worker's slots are stuck (held by handlers that were aborted and have
   * not returned, see `SlotReport`) whenever the number changes; 0 again when a new session opens
   * without a report. Returns the unsubscribe.
   */
  watchSlots(listener: (stuck: number) => void): () => void {
    if (typeof listener !== "function") throw invalidArgument("listener", "a function", listener);
    this.#slotListeners.add(listener);
    return () => {
      this.#slotListeners.delete(listener);
    };
  }

  /**
   * The standard `grpc.health.v1.Health/Check` of the whole server (service `""`).
   * @throws {OrchestratorError} `deadline_exceeded` after `timeoutMs` (default `callTimeoutMs`),
   * `unavailable` when the worker cannot be reached, the signal's reason when it fires.
   */
  check(options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<HealthStatus> {
    return this.#unary<HealthCheckRequest, HealthCheckResponse>(
      checkMethod,
      create(HealthCheckRequestSchema, { service: "" }),
      options,
      "health check",
    ).then((response) => (response.status === ServingStatus.SERVING ? "serving" : "not_serving"));
  }

  /**
   * The worker's health as its session shows it, without a call: the serving status its latest
   * Pong carried, while the session is open (a session whose ping, or whose connection's
   * keepalive ping, goes unanswered for `pingTimeoutMs` is closed and reported `lost`). An idle
   * session pings every tenth period, so the status can be that old (a worker of this SDK
   * announces its shutdown at once). `undefined` with no open
   * session, or from a worker that does not put its status in its Pongs; then ask with
   * {@link GrpcTransport.check}.
   */
  vouchedHealth(): HealthStatus | undefined {
    return this.#session?.serving;
  }

  /**
   * The worker's slots, labels, job types and version (the `Describe` RPC).
   * @throws {OrchestratorError} as {@link GrpcTransport.check}, and `unauthenticated` without the right token.
   */
  describe(options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<WorkerDescription> {
    return this.#unary<DescribeRequest, DescribeResponse>(describeMethod, create(DescribeRequestSchema, {}), options, "describe").then((response) => {
      return descriptionFromWire(response.worker ?? create(WorkerDescriptionSchema, {}));
    });
  }

  /**
   * Reports `lost` the moment the job stream breaks, a ping goes unanswered or a session cannot
   * be opened, and `ready` when a session is (re)established; each change once. Subscribing opens a session, so loss is noticed even while no job
   * runs; while anyone listens, a lost session is reopened with capped, jittered backoff.
   */
  watch(listener: (state: TransportState) => void): () => void {
    if (typeof listener !== "function") throw invalidArgument("listener", "a function", listener);
    this.#listeners.add(listener);
    if (!this.#closed && !this.#session && !this.#reconnectTimer) this.#ensureSession();
    return () => {
      this.#listeners.delete(listener);
      if (this.#listeners.size === 0) {
        clearTimeout(this.#reconnectTimer);
        this.#reconnectTimer = undefined;
      }
    };
  }

  /** Closes the session and the connection; running `execute` calls reject with `worker_lost`. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    this.#session?.close(new OrchestratorError("worker_lost", "transport closed", { details: { reason: "worker_lost" } }));
    this.#session = undefined;
    this.#listeners.clear();
    this.#client?.close();
    this.#client = undefined;
  }

  /** Same as `close()`, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #getClient(): Client {
    this.#client ??= new Client(this.#options.address, this.#options.channelCredentials, this.#options.channelOptions);
    return this.#client;
  }

  #metadata = (): Metadata => {
    const metadata = new Metadata();
    if (this.#options.token !== undefined) metadata.set("authorization", `Bearer ${this.#options.token}`);
    return metadata;
  };

  #ensureSession(): ClientSession {
    if (this.#session) return this.#session;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    const o = this.#options;
    const session = new ClientSession({
      client: this.#getClient(),
      metadata: this.#metadata,
      pingIntervalMs: o.pingIntervalMs,
      pingTimeoutMs: o.pingTimeoutMs,
      thinIdlePings: this.#thinIdlePings,
      connectTimeoutMs: o.connectTimeoutMs,
      flushMode: o.flushMode,
      maxMessageBytes: o.maxMessageBytes,
      onReady: (_session, worker) => {
        this.#reconnectAttempt = 0;
        this.#connectFailure = undefined;
        this.#description = descriptionFromWire(worker);
        this.#setStuck(0);
        o.figures.opened();
        for (const waiter of [...this.#sessionWaiters]) waiter();
        this.#report("ready");
      },
      onSlots: (stuck) => this.#setStuck(stuck),
      onPong: (rttMs) => o.figures.ping(rttMs),
      onPingsRefused: () => this.#pingsRefused(),
      onClosed: (closed, error, wasReady) => {
        if (wasReady) o.figures.closed(!this.#closed);
        if (this.#session === closed) this.#session = undefined;
        this.#description = undefined;
        if (!wasReady && !this.#closed) this.#connectFailure = this.#diagnose(error);
        for (const waiter of [...this.#sessionWaiters]) waiter();
        if (this.#closed) return;
        this.#report("lost");
        if (this.#listeners.size > 0) this.#scheduleReconnect();
      },
    });
    this.#session = session;
    session.open();
    return session;
  }

  /**
   * The worker closed the connection for excess keepalive pings (a gRPC-Go, gRPC-Java or C-core
   * server whose ping policy is stricter than the keepalive): its jobs failed with `worker_lost`,
   * and grpc-js doubles the keepalive interval on each refusal until the worker accepts it, which
   * no longer vouches for an idle worker every period. From the next session on, idle sessions
   * ping every period again (a silent worker is still caught within a period plus
   * `pingTimeoutMs`), and the error is logged once with the fix.
   */
  #pingsRefused(): void {
    if (!this.#thinIdlePings) return;
    this.#thinIdlePings = false;
    const { logger, address, channelOptions } = this.#options;
    if (logger === undefined) return;
    const keepaliveTimeMs = channelOptions["grpc.keepalive_time_ms"] as number;
    logSafely(
      logger,
      "error",
      { address, keepaliveTimeMs, code: "precondition_failed" },
      `GrpcTransport: worker at ${address} refused the connection's keepalive pings (every ${keepaliveTimeMs} ms; GOAWAY ENHANCE_YOUR_CALM, too_many_pings): ` +
        "the jobs on it failed with worker_lost, and grpc-js doubles the keepalive interval on each refusal; idle sessions now ping every period. " +
        `Fix: let the worker permit pings every ${keepaliveTimeMs} ms without calls (grpc-go: keepalive.EnforcementPolicy{MinTime: ${keepaliveTimeMs / 2} * time.Millisecond, PermitWithoutStream: true}), ` +
        "or give this GrpcTransport `keepaliveTimeMs: 30000` (docs/wire.md, \"Interop\")",
    );
  }

  #setStuck(stuck: number): void {
    if (stuck === this.#stuck) return;
    this.#stuck = stuck;
    for (const listener of [...this.#slotListeners]) {
      try {
        listener(stuck);
      } catch {
        // As for watch(): a throwing listener must not break the transport.
      }
    }
  }

  /** Turns a session that never opened into an error that says why, dialling the worker once more to find out. */
  async #diagnose(error: OrchestratorError): Promise<OrchestratorError> {
    if (error.code === "unauthenticated") {
      return new OrchestratorError("unauthenticated", `${this.#options.address} refused this orchestrator's credentials: check the transport's \`token\` against the worker's`, {
        cause: error,
        retryable: true,
        details: { connectFailure: "unauthenticated", started: false },
      });
    }
    const diagnosis = await diagnoseConnection({ address: this.#options.address, tls: this.#options.tls, timeoutMs: this.#options.connectTimeoutMs }).catch(() => undefined);
    if (diagnosis === undefined) {
      return new OrchestratorError(error.code, `${this.#options.address}: ${error.rawMessage}`, { cause: error, retryable: true, details: { ...error.details, connectFailure: "unknown", started: false } });
    }
    return new OrchestratorError("unavailable", diagnosis.reason, { cause: error, retryable: true, details: { connectFailure: diagnosis.failure, started: false } });
  }

  #scheduleReconnect(): void {
    if (this.#reconnectTimer || this.#closed) return;
    const { baseMs, maxMs, jitter } = this.#options.reconnect;
    const wait = backoffDelay(++this.#reconnectAttempt, { baseMs, maxMs, jitter });
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined;
      if (!this.#closed && this.#listeners.size > 0 && !this.#session) this.#ensureSession();
    }, wait);
    this.#reconnectTimer.unref();
  }

  #report(state: TransportState): void {
    // Each change once; a worker unreachable from the start is reported lost too, so a pool
    // evicts it at once instead of after its failed health checks.
    if (this.#reported === state) return;
    this.#reported = state;
    const { logger, address } = this.#options;
    if (logger !== undefined) logSafely(logger, state === "lost" ? "warn" : "info", { address, state }, `GrpcTransport: worker at ${address} ${state === "lost" ? "lost" : "ready"}`);
    for (const listener of [...this.#listeners]) {
      try {
        listener(state);
      } catch {
        // A throwing listener must not break the transport or the other listeners.
      }
    }
  }

  #unary<Req, Res>(
    method: ReturnType<typeof methodOf>,
    request: Req,
    options: { signal?: AbortSignal; timeoutMs?: number },
    what: string,
  ): Promise<Res> {
    try {
      if (this.#closed) throw new OrchestratorError("unavailable", "transport is closed");
      const o = checkObject("options", options);
      const signal = checkSignal("options.signal", o.signal);
      const timeoutMs = optional(o.timeoutMs, this.#options.callTimeoutMs, (v) => checkInteger("options.timeoutMs", v, 1));
      throwIfAborted(signal);
      const client = this.#getClient();
      return new Promise<Res>((resolve, reject) => {
        const call = client.makeUnaryRequest<Req, Res>(
          method.path,
          method.requestSerialize as (value: Req) => Buffer,
          method.responseDeserialize as (bytes: Buffer) => Res,
          request,
          this.#metadata(),
          { deadline: Date.now() + timeoutMs },
          (error, response) => {
            signal?.removeEventListener("abort", onAbort);
            if (signal?.aborted) reject(abortReason(signal));
            else if (error) reject(fromGrpcError(error, `${what} of ${this.#options.address}`));
            else resolve(response as Res);
          },
        );
        const onAbort = () => call.cancel();
        signal?.addEventListener("abort", onAbort, { once: true });
      });
    } catch (error) {
      return Promise.reject(OrchestratorError.from(error));
    }
  }
}

function resolveOptions(options: GrpcTransportOptions): ResolvedOptions {
  const o = checkObject("options", options);
  const address = checkString("address", o.address, 1024);
  const maxMessageBytes = resolveMaxMessageBytes(o.maxMessageBytes);
  const pingIntervalMs = optional(o.pingIntervalMs, 1000, (v) => checkInteger("pingIntervalMs", v, 10));
  const pingTimeoutMs = optional(o.pingTimeoutMs, 2000, (v) => checkInteger("pingTimeoutMs", v, 10));
  const pingPeriodMs = pingPeriodFor(pingIntervalMs, pingTimeoutMs);
  const keepaliveTimeMs = optional(o.keepaliveTimeMs, pingPeriodMs, (v) => checkInteger("keepaliveTimeMs", v, 10));
  const keepaliveTimeoutMs = optional(o.keepaliveTimeoutMs, pingTimeoutMs, (v) => checkInteger("keepaliveTimeoutMs", v, 10));
  const r = o.reconnect === undefined ? {} : checkObject("reconnect", o.reconnect);
  const reconnect = {
    baseMs: optional(r.baseDelayMs, 100, (v) => checkInteger("reconnect.baseDelayMs", v, 1)),
    maxMs: optional(r.maxDelayMs, 10_000, (v) => checkInteger("reconnect.maxDelayMs", v, 1)),
    jitter: optional(r.jitter, 0.2, (v) => checkNumber("reconnect.jitter", v, 0, 1)),
  };
  if (reconnect.maxMs < reconnect.baseMs) throw invalidArgument("reconnect.maxDelayMs", `>= reconnect.baseDelayMs (${reconnect.baseMs})`, reconnect.maxMs);
  const channelOptions: ChannelOptions = {
    "grpc.max_send_message_length": maxMessageBytes,
    "grpc.max_receive_message_length": maxMessageBytes,
    "grpc.keepalive_time_ms": keepaliveTimeMs,
    "grpc.keepalive_timeout_ms": keepaliveTimeoutMs,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.initial_reconnect_backoff_ms": reconnect.baseMs,
    "grpc.max_reconnect_backoff_ms": reconnect.maxMs,
    // One connection per transport: closing or losing one worker's transport touches no other.
    "grpc.use_local_subchannel_pool": 1,
    // Jobs are not idempotent by default: never let the channel replay a call.
    "grpc.enable_retries": 0,
  };
  let channelCredentials = grpcCredentials.createInsecure();
  let tls: ResolvedOptions["tls"];
  if (o.tls !== undefined) {
    const t = checkObject("tls", o.tls);
    const ca = checkPem("tls.ca", t.ca);
    if ((t.cert === undefined) !== (t.key === undefined)) throw invalidArgument(t.cert === undefined ? "tls.cert" : "tls.key", "given together with the other", undefined);
    const cert = t.cert === undefined ? null : checkPem("tls.cert", t.cert);
    const key = t.key === undefined ? null : checkPem("tls.key", t.key);
    channelCredentials = grpcCredentials.createSsl(ca, key, cert);
    tls = { ca, cert, key };
    if (t.serverName !== undefined) {
      const serverName = checkString("tls.serverName", t.serverName, 255);
      tls.serverName = serverName;
      channelOptions["grpc.ssl_target_name_override"] = serverName;
      channelOptions["grpc.default_authority"] = serverName;
    }
  }
  return {
    logger: resolveLogger(o.logger),
    figures: clientTelemetry(o.telemetry, "grpc"),
    address,
    tls,
    channelCredentials,
    channelOptions,
    token: o.token === undefined ? undefined : checkString("token", o.token, 4096),
    maxMessageBytes,
    connectTimeoutMs: optional(o.connectTimeoutMs, 5000, (v) => checkInteger("connectTimeoutMs", v, 1)),
    callTimeoutMs: optional(o.callTimeoutMs, 10_000, (v) => checkInteger("callTimeoutMs", v, 1)),
    pingIntervalMs,
    pingTimeoutMs,
    thinIdlePings: keepaliveTimeMs <= pingPeriodMs && keepaliveTimeoutMs <= pingTimeoutMs,
    reconnect,
    flushMode: optional(o.flushMode, "immediate" as FlushMode, checkFlushMode),
  };
}
