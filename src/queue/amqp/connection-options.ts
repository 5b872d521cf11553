import { OrchestratorError } from "../../errors.ts";
import { checkInteger, checkNumber, checkObject, checkString, optional } from "../../validate.ts";
import { redactUrl } from "./errors.ts";
import { type ClientTelemetry, clientTelemetry } from "../../telemetry/client-telemetry.ts";
import { type Logger, resolveLogger } from "../../telemetry/logger.ts";
import type { TelemetryOptions } from "../../telemetry/telemetry.ts";

/** Reconnect backoff: `baseDelayMs · factor^(n-1)`, capped at `maxDelayMs`, ± `jitter`. */
export interface AmqpReconnectOptions {
  /** @default 250 */
  baseDelayMs?: number;
  /** @default 30_000 */
  maxDelayMs?: number;
  /** @default 2 */
  factor?: number;
  /** Fraction of the delay added or removed at random, so many clients do not reconnect in step. @default 0.2 */
  jitter?: number;
}

/** Options of {@link AmqpConnection}. */
export interface AmqpConnectionOptions {
  /**
   * Broker URL, `amqp://user:pass@host:5672/vhost` or `amqps://…`, or the URLs of several nodes of
   * one RabbitMQ cluster: the connection opens to the first that answers, and every reconnect
   * starts with the node after the one it was on (so a lost node is not tried first again).
   */
  url: string | readonly string[];
  /**
   * AMQP heartbeat timeout in seconds: a link on which nothing arrives for this long (a
   * black-holed network, a frozen broker) is declared dead and reconnected; each side sends a
   * heartbeat every half of it when idle. 0 disables heartbeats.
   * @default 10
   */
  heartbeatSec?: number;
  /** Longest TCP + AMQP handshake of one connection attempt. @default 10_000 */
  connectTimeoutMs?: number;
  /** Backoff between connection (and channel) attempts. */
  reconnect?: AmqpReconnectOptions;
  /**
   * Most publishes that may wait for the broker at once (while disconnected, blocked by a broker
   * alarm, or behind a full socket); one more rejects with `resource_exhausted`.
   * @default 10_000
   */
  publishBufferSize?: number;
  /**
   * Longest wait of a publish for the broker unless the call gives its own `timeoutMs`: still
   * unsent after it → `unavailable`; sent but unconfirmed → `unknown_outcome`.
   * @default 30_000
   */
  publishTimeoutMs?: number;
  /** Shown by `rabbitmqctl list_connections client_properties`. @default "blacktree-orchestrator" */
  connectionName?: string;
  /**
   * Where the connection's records go (pino-shaped): `warn` when the link to the broker is lost
   * (it reconnects by itself), `info` when it is back, `error` for every error it reports.
   * An `AmqpQueue` or `AmqpEvents` that opens its own connection passes its `logger` on.
   * @default none
   */
  logger?: Logger;
  /**
   * OpenTelemetry providers and/or a Prometheus registry for the connection's figures:
   * `blacktree.connections.open`, `blacktree.connection.reconnects` and
   * `blacktree.connection.downtime` (kind `rabbitmq`). An `AmqpQueue` or `AmqpEvents` that opens
   * its own connection passes its `telemetry` on.
   * @default the global OpenTelemetry providers when `@opentelemetry/api` is installed; else nothing
   */
  telemetry?: TelemetryOptions;
}

/** @internal */
export interface ResolvedConnectionOptions {
  logger: Logger | undefined;
  telemetry: ClientTelemetry;
  urls: readonly string[];
  heartbeatSec: number;
  connectTimeoutMs: number;
  reconnect: { baseMs: number; maxMs: number; factor: number; jitter: number };
  publishBufferSize: number;
  publishTimeoutMs: number;
  connectionName: string;
}

/** The option keys of {@link AmqpConnectionOptions}, so queue options can tell them apart. @internal */
export const CONNECTION_OPTION_KEYS = ["url", "heartbeatSec", "connectTimeoutMs", "reconnect", "publishBufferSize", "publishTimeoutMs", "connectionName"] as const;

/** Checks and fills {@link AmqpConnectionOptions}. @internal */
export function resolveConnectionOptions(options: unknown): ResolvedConnectionOptions {
  const o = checkObject("options", options);
  const urls = resolveUrls(o.url);
  const r = o.reconnect === undefined ? {} : checkObject("reconnect", o.reconnect);
  const baseMs = optional(r.baseDelayMs, 250, (v) => checkInteger("reconnect.baseDelayMs", v, 1, 600_000));
  return {
    logger: resolveLogger(o.logger),
    telemetry: clientTelemetry(o.telemetry, "rabbitmq"),
    urls,
    heartbeatSec: optional(o.heartbeatSec, 10, (v) => checkInteger("heartbeatSec", v, 0, 3600)),
    connectTimeoutMs: optional(o.connectTimeoutMs, 10_000, (v) => checkInteger("connectTimeoutMs", v, 1)),
    reconnect: {
      baseMs,
      maxMs: optional(r.maxDelayMs, 30_000, (v) => checkInteger("reconnect.maxDelayMs", v, baseMs, 3_600_000)),
      factor: optional(r.factor, 2, (v) => checkNumber("reconnect.factor", v, 1, 100)),
      jitter: optional(r.jitter, 0.2, (v) => checkNumber("reconnect.jitter", v, 0, 1)),
    },
    publishBufferSize: optional(o.publishBufferSize, 10_000, (v) => checkInteger("publishBufferSize", v, 0)),
    publishTimeoutMs: optional(o.publishTimeoutMs, 30_000, (v) => checkInteger("publishTimeoutMs", v, 1)),
    connectionName: optional(o.connectionName, "blacktree-orchestrator", (v) => checkString("connectionName", v, 255)),
  };
}

function resolveUrls(value: unknown): readonly string[] {
  const list = Array.isArray(value) ? value : [value];
  if (Array.isArray(value) && (value.length === 0 || value.length > 64)) {
    throw new OrchestratorError("invalid_argument", `Expected \`url\` to be a URL or a list of 1 to 64 URLs, got a list of ${value.length}`, { details: { field: "url" } });
  }
  return list.map((item, i) => {
    const field = Array.isArray(value) ? `url[${i}]` : "url";
    const url = checkString(field, item, 4096);
    if (!/^amqps?:\/\//.test(url)) throw new OrchestratorError("invalid_argument", `Expected \`${field}\` to start with amqp:// or amqps://, got \`${redactUrl(url)}\``, { details: { field } });
    return url;
  });
}
