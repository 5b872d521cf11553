import { timingSafeEqual } from "node:crypto";
import { hostname } from "node:os";
import { Server, ServerCredentials } from "@grpc/grpc-js";
import type { Metadata } from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { invalidArgument, OrchestratorError } from "../errors.ts";
import { WorkerDescriptionSchema, WorkerService as WorkerServiceDesc } from "../gen/blacktree/orchestrator/v1/worker_pb.ts";
import { delay } from "../signals.ts";
import { MAX_TIMER_MS } from "../timers.ts";
import { checkBoolean, checkFunction, checkInteger, checkLabels, checkObject, checkString, optional } from "../validate.ts";
import type { FlushMode } from "../wire/batcher.ts";
import { checkFlushMode, checkPem, healthServiceDefinition, resolveMaxMessageBytes, workerServiceDefinition } from "../wire/wire.ts";
import { HealthService } from "./health-service.ts";
import { containHandlerFaults } from "./handler-safety.ts";
import { JobRunner } from "./job-runner.ts";
import { WORKER_PROTOCOL } from "../wire/protocol.ts";
import type { WorkerDescription as WorkerDescriptionInfo } from "../wire/description.ts";
import type { JobHandlers } from "./types.ts";
import { WorkerService } from "./worker-service.ts";
import { type HandleTelemetry, resolveHandleTelemetry } from "../telemetry/handle-telemetry.ts";
import type { Logger } from "../telemetry/logger.ts";
import type { TelemetryOptions } from "../telemetry/telemetry.ts";

/** Version a worker reports when `version` is not given. */
export const WORKER_SDK_VERSION = "@blacktree/orchestrator 0.1.0";

/** TLS of a worker; with `ca` and `requireClientCert` it is mutual TLS. */
export interface ServeWorkerTlsOptions {
  /** PEM certificate chain of the worker. */
  cert: string | Buffer;
  /** PEM private key of the worker. */
  key: string | Buffer;
  /** PEM CA bundle that client certificates must chain to. */
  ca?: string | Buffer;
  /**
   * Reject clients without a certificate signed by `ca` (expired ones included). Unlike grpc-js's
   * own default, this is on whenever `ca` is given.
   * @default true when `ca` is given, else false
   */
  requireClientCert?: boolean;
}

/** Options of {@link serveWorker}. */
export interface ServeWorkerOptions {
  /** Handlers by job type: `async (payload, ctx) => result`. */
  handlers: JobHandlers;
  /**
   * The worker's id, announced to every orchestrator (and in broker announcements): keep it
   * stable across restarts of the same worker.
   * @default "<hostname>:<port>"
   */
  id?: string;
  /**
   * TCP port to listen on; 0 picks a free one (read it from the returned `port`).
   * @default 0
   */
  port?: number;
  /**
   * Interface to listen on.
   * @default "0.0.0.0"
   */
  host?: string;
  /**
   * Jobs run at once; more are refused with `resource_exhausted`.
   * @default 1
   */
  slots?: number;
  /**
   * Labels the worker advertises (for example `{ arch: "arm64" }`).
   * @default {}
   */
  labels?: Record<string, string>;
  /** Serve TLS (or mutual TLS) instead of plaintext. */
  tls?: ServeWorkerTlsOptions;
  /**
   * Who may run and cancel jobs: a bearer token the orchestrator sends (`GrpcTransport`'s
   * `token`), or a function of the call's metadata. The Health service stays open so probes work.
   * @default everyone
   */
  auth?: { token: string } | ((metadata: Metadata) => boolean);
  /**
   * Version reported by Describe and Hello.
   * @default {@link WORKER_SDK_VERSION}
   */
  version?: string;
  /**
   * On shutdown, how long running jobs may take to finish before they are aborted with reason `shutdown`.
   * @default 30000
   */
  gracePeriodMs?: number;
  /**
   * Shut down gracefully on SIGTERM and SIGINT (a second signal kills the process as usual).
   * @default true
   */
  handleSignals?: boolean;
  /**
   * Deadline of a job that carries none (a plain `Execute` call without a timeout).
   * @default 3600000
   */
  defaultTimeoutMs?: number;
  /**
   * Largest gRPC message received or sent. A result too large fails its job with `resource_exhausted`.
   * @default 16 MiB
   */
  maxMessageBytes?: number;
  /**
   * Interval of HTTP/2 pings to each orchestrator; a dead one is noticed after this plus `keepaliveTimeoutMs`.
   * @default 10000
   */
  keepaliveTimeMs?: number;
  /**
   * How long a keepalive ping may go unanswered before the connection (and its jobs) is dropped.
   * @default 5000
   */
  keepaliveTimeoutMs?: number;
  /** @internal How session messages are batched (see docs/wire.md). @default "immediate" */
  flushMode?: FlushMode;
  /**
   * Spans: `handle {type}` per attempt, a child of the orchestrator's `execute {type}` whose
   * context comes in the assign message, and the active span while the handler runs, so the
   * handler's own spans nest under it. That needs a context manager, which the host registers
   * (`NodeSDK.start()` does; or `context.setGlobalContextManager(new
   * AsyncLocalStorageContextManager().enable())` from `@opentelemetry/context-async-hooks`).
   * @default the global OpenTelemetry providers when `@opentelemetry/api` is installed; else nothing
   */
  telemetry?: TelemetryOptions;
  /**
   * Where the worker's records go (pino-shaped): failed and aborted attempts, each with `jobId`,
   * `jobType`, `attempt`, `workerId` and `traceId`/`spanId`; with `logJobOutput`, every
   * `ctx.log()` line too.
   * @default none
   */
  logger?: Logger;
  /**
   * Also write each `ctx.log()` line to `logger` (level info, field `stream`), besides streaming it
   * to whoever follows the job.
   * @default false
   */
  logJobOutput?: boolean;
}

/** A running worker returned by {@link serveWorker}. */
export interface WorkerServer {
  /** The id it announces. */
  readonly id: string;
  /** What it announces to orchestrators on connect: id, slots, labels, job types, version, protocol. */
  readonly description: WorkerDescriptionInfo;
  /** The port it listens on. */
  readonly port: number;
  /** `host:port` to give a `GrpcTransport`. */
  readonly address: string;
  /** Jobs running now. */
  readonly running: number;
  /**
   * Shuts down gracefully: reports NOT_SERVING, refuses new jobs, fires every job's `shuttingDown`
   * signal, lets running jobs finish within `gracePeriodMs` (or until `signal` fires), then aborts
   * them with reason `shutdown` (the orchestrator gets `worker_lost` and retries them elsewhere),
   * and stops the server. Idempotent.
   */
  close(options?: { signal?: AbortSignal }): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

interface ResolvedOptions {
  handlers: JobHandlers;
  id: string | undefined;
  port: number;
  host: string;
  slots: number;
  labels: Record<string, string>;
  tls: { cert: Buffer; key: Buffer; ca: Buffer | null; requireClientCert: boolean } | undefined;
  authorize: (metadata: Metadata) => boolean;
  version: string;
  gracePeriodMs: number;
  handleSignals: boolean;
  defaultTimeoutMs: number;
  maxMessageBytes: number;
  keepaliveTimeMs: number;
  keepaliveTimeoutMs: number;
  flushMode: FlushMode;
  telemetry: HandleTelemetry | undefined;
}

/** How long aborted handlers get to return before the server stops anyway. */
const ABORT_WIND_DOWN_MS = 1000;
const SIGNALS = ["SIGTERM", "SIGINT"] as const;

/**
 * Serves job handlers over gRPC: the `blacktree.orchestrator.v1.WorkerService` protocol
 * (multiplexed sessions for `GrpcTransport`, plain Execute/Cancel/Describe for any gRPC client)
 * and the standard `grpc.health.v1.Health` service.
 *
 * A handler that throws fails its job with the message (throw `nonRetryable()` to stop retries),
 * never the worker. While it serves, the worker also contains what a handler's code raises
 * outside the handler's promise: an unhandled rejection or an uncaught exception (a throw in a
 * timer) is traced to the job whose handler started it (an `AsyncLocalStorage`), which fails
 * with `handler_failed` and has its signal aborted; the process keeps running. One raised after
 * that job ended is dropped. One no handler raised keeps Node's default (the process exits)
 * unless the host listens for it itself. When an orchestrator's session breaks, the jobs it started are aborted with
 * reason `worker_lost`: that orchestrator has already failed them over to another worker.
 *
 * @throws {OrchestratorError} `invalid_argument` for bad options; `unavailable` when the port cannot be bound.
 * @example
 * ```ts
 * const worker = await serveWorker({
 *   port: 50051,
 *   slots: 4,
 *   handlers: {
 *     async build(payload: { tag: string }, ctx) {
 *       ctx.log(`building ${payload.tag}`);
 *       await runBuild(payload, { signal: ctx.signal });
 *       return { ok: true };
 *     },
 *   },
 * });
 * ```
 */
export async function serveWorker(options: ServeWorkerOptions): Promise<WorkerServer> {
  const o = resolveOptions(options);
  let service: WorkerService | undefined;
  const runner = new JobRunner({
    handlers: o.handlers,
    slots: o.slots,
    defaultTimeoutMs: o.defaultTimeoutMs,
    onStuckChange: (stuck) => service?.reportStuck(stuck),
    telemetry: o.telemetry,
  });
  const unobserveSlots = o.telemetry?.observeSlots(o.slots, () => runner) ?? (() => {});
  const description = create(WorkerDescriptionSchema, {
    slots: o.slots,
    labels: o.labels,
    jobTypes: Object.keys(o.handlers),
    version: o.version,
    protocol: WORKER_PROTOCOL,
  });
  const health = new HealthService(["", WorkerServiceDesc.typeName]);
  service = new WorkerService({ runner, description, authorize: o.authorize, maxMessageBytes: o.maxMessageBytes, flushMode: o.flushMode });
  const server = new Server({
    "grpc.max_receive_message_length": o.maxMessageBytes,
    "grpc.max_send_message_length": o.maxMessageBytes,
    "grpc.keepalive_time_ms": o.keepaliveTimeMs,
    "grpc.keepalive_timeout_ms": o.keepaliveTimeoutMs,
    "grpc.keepalive_permit_without_calls": 1,
  });
  server.addService(workerServiceDefinition, service.implementation());
  server.addService(healthServiceDefinition, health.implementation());
  const credentials = o.tls
    ? ServerCredentials.createSsl(o.tls.ca, [{ cert_chain: o.tls.cert, private_key: o.tls.key }], o.tls.requireClientCert)
    : ServerCredentials.createInsecure();
  const target = `${o.host.includes(":") ? `[${o.host}]` : o.host}:${o.port}`;
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(target, credentials, (error, bound) => {
      if (error) reject(new OrchestratorError("unavailable", `cannot listen on ${target}: ${error.message}`, { cause: error }));
      else resolve(bound);
    });
  });

  // A handler's unhandled rejection or uncaught exception fails its job instead of the process.
  const releaseFaults = containHandlerFaults();
  let closing: Promise<void> | undefined;
  const onSignal = () => void close().catch(() => {});
  const close = (closeOptions: { signal?: AbortSignal } = {}): Promise<void> => {
    closing ??= (async () => {
      if (o.handleSignals) for (const name of SIGNALS) process.removeListener(name, onSignal);
      runner.beginShutdown();
      health.setAll(false);
      service.announceStatus();
      const grace = AbortSignal.any([AbortSignal.timeout(o.gracePeriodMs), ...(closeOptions.signal ? [closeOptions.signal] : [])]);
      if (!grace.aborted) await raceAbort(runner.onIdle(), grace);
      runner.abortAll("shutdown", "worker shut down before the job finished");
      await raceAbort(runner.onIdle(), AbortSignal.timeout(ABORT_WIND_DOWN_MS));
      service.endSessions();
      health.endWatches();
      await shutdown(server);
      releaseFaults();
      unobserveSlots();
    })();
    return closing;
  };
  if (o.handleSignals) for (const name of SIGNALS) process.once(name, onSignal);

  const host = o.host === "0.0.0.0" || o.host === "::" ? "127.0.0.1" : o.host;
  // Known only now that the port is bound; no session can have read it yet.
  description.workerId = o.id ?? `${hostname()}:${port}`;
  const info: WorkerDescriptionInfo = Object.freeze({
    workerId: description.workerId,
    slots: o.slots,
    labels: { ...o.labels },
    jobTypes: [...description.jobTypes],
    version: o.version,
    protocol: WORKER_PROTOCOL,
  });
  return {
    id: description.workerId,
    description: info,
    port,
    address: `${host.includes(":") ? `[${host}]` : host}:${port}`,
    get running() {
      return runner.running;
    },
    close,
    [Symbol.asyncDispose]: () => close(),
  };
}

function raceAbort(promise: Promise<void>, signal: AbortSignal): Promise<void> {
  return Promise.race([promise, new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }))]);
}

/** `tryShutdown`, then `forceShutdown` if calls linger. */
async function shutdown(server: Server): Promise<void> {
  const graceful = new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  const done = await Promise.race([graceful.then(() => true), delay(ABORT_WIND_DOWN_MS, { unref: true }).then(() => false)]);
  if (!done) server.forceShutdown();
}

function resolveOptions(options: ServeWorkerOptions): ResolvedOptions {
  const o = checkObject("options", options);
  const handlers = checkObject("handlers", o.handlers) as JobHandlers;
  if (Object.keys(handlers).length === 0) throw invalidArgument("handlers", "an object with at least one handler", handlers);
  for (const [type, handler] of Object.entries(handlers)) checkFunction(`handlers.${type}`, handler);
  let tls: ResolvedOptions["tls"];
  if (o.tls !== undefined) {
    const t = checkObject("tls", o.tls);
    const ca = t.ca === undefined ? null : checkPem("tls.ca", t.ca);
    const requireClientCert = optional(t.requireClientCert, ca !== null, (v) => checkBoolean("tls.requireClientCert", v));
    if (requireClientCert && ca === null) throw invalidArgument("tls.ca", "a PEM CA bundle when `tls.requireClientCert` is true", t.ca);
    tls = { cert: checkPem("tls.cert", t.cert), key: checkPem("tls.key", t.key), ca, requireClientCert };
  }
  return {
    handlers,
    id: o.id === undefined ? undefined : checkString("id", o.id, 256),
    port: optional(o.port, 0, (v) => checkInteger("port", v, 0, 65535)),
    host: optional(o.host, "0.0.0.0", (v) => checkString("host", v, 255)),
    slots: optional(o.slots, 1, (v) => checkInteger("slots", v, 1, 100_000)),
    labels: optional(o.labels, {}, (v) => checkLabels("labels", v)),
    tls,
    authorize: resolveAuth(o.auth),
    version: optional(o.version, WORKER_SDK_VERSION, (v) => checkString("version", v, 256)),
    gracePeriodMs: optional(o.gracePeriodMs, 30_000, (v) => checkInteger("gracePeriodMs", v, 0)),
    handleSignals: optional(o.handleSignals, true, (v) => checkBoolean("handleSignals", v)),
    defaultTimeoutMs: optional(o.defaultTimeoutMs, 3_600_000, (v) => checkInteger("defaultTimeoutMs", v, 1, MAX_TIMER_MS)),
    maxMessageBytes: resolveMaxMessageBytes(o.maxMessageBytes),
    keepaliveTimeMs: optional(o.keepaliveTimeMs, 10_000, (v) => checkInteger("keepaliveTimeMs", v, 1000)),
    keepaliveTimeoutMs: optional(o.keepaliveTimeoutMs, 5_000, (v) => checkInteger("keepaliveTimeoutMs", v, 100)),
    flushMode: optional(o.flushMode, "immediate" as FlushMode, checkFlushMode),
    telemetry: resolveHandleTelemetry(o),
  };
}

function resolveAuth(auth: unknown): (metadata: Metadata) => boolean {
  if (auth === undefined) return () => true;
  if (typeof auth === "function") return auth as (metadata: Metadata) => boolean;
  const token = checkString("auth.token", checkObject("auth", auth).token, 4096);
  const expected = Buffer.from(`Bearer ${token}`);
  return (metadata) => {
    const value = metadata.get("authorization")[0];
    if (typeof value !== "string") return false;
    const given = Buffer.from(value);
    return given.length === expected.length && timingSafeEqual(given, expected);
  };
}

