import { OrchestratorError } from "../errors.ts";
import { ATTR, OPERATION } from "./names.ts";
import type { Labels } from "./prometheus.ts";
import { resolveTelemetry, type Telemetry } from "./telemetry.ts";

/**
 * The figures of the I/O classes below the dispatcher and the client: the semconv messaging
 * client metrics of what a queue or event bus sends and delivers itself (job events, cancels,
 * redrives; never jobs: `JobClient` counts submits and `Dispatcher` deliveries and settles), and
 * connection figures of `AmqpConnection` and `GrpcTransport` (open connections, reconnects with
 * their downtime, job-stream ping round trips). Each call site is one line.
 * @internal
 */
export class ClientTelemetry {
  readonly #t: Telemetry;
  readonly #system: string;
  readonly #on: boolean;
  /** When the open connection was lost (not closed), until it is open again. */
  #lostAt: number | undefined;

  constructor(telemetry: Telemetry, system: string) {
    this.#t = telemetry;
    this.#system = system;
    this.#on = telemetry.api !== undefined || telemetry.registry !== undefined;
  }

  /**
   * Runs a send to `destination` and records it: `messaging.client.sent.messages` (`count` of
   * the result, else 1) and `messaging.client.operation.duration` (operation type `send`), with
   * `error.type` when it failed.
   */
  async sent<T>(destination: string, operation: string, send: () => Promise<T>, count?: (result: T) => number): Promise<T> {
    if (!this.#on || !this.#t.metrics.on) return send();
    const startedAt = performance.now();
    const labels: Labels = { [ATTR.messagingSystem]: this.#system, [ATTR.messagingDestination]: destination, [ATTR.messagingOperationName]: operation };
    const m = this.#t.metrics.instruments;
    try {
      const result = await send();
      const n = count === undefined ? 1 : count(result);
      if (n > 0) m.sentMessages.record(n, labels);
      m.operationDuration.record((performance.now() - startedAt) / 1000, { ...labels, [ATTR.messagingOperationType]: OPERATION.send });
      return result;
    } catch (error) {
      const failed = { ...labels, [ATTR.errorType]: OrchestratorError.from(error).code };
      m.sentMessages.record(1, failed);
      m.operationDuration.record((performance.now() - startedAt) / 1000, { ...failed, [ATTR.messagingOperationType]: OPERATION.send });
      throw error;
    }
  }

  /** `listener`, counting each message it is given in `messaging.client.consumed.messages`. */
  consumed<A>(destination: string, operation: string, listener: (message: A) => void): (message: A) => void {
    if (!this.#on) return listener;
    const labels: Labels = { [ATTR.messagingSystem]: this.#system, [ATTR.messagingDestination]: destination, [ATTR.messagingOperationName]: operation };
    const consumed = this.#t.metrics.instruments.consumedMessages;
    return (message) => {
      consumed.record(1, labels);
      listener(message);
    };
  }

  /** The connection opened (`open` true) or stopped being open: `blacktree.connections.open`. */
  connection(open: boolean): void {
    if (this.#on) this.#t.metrics.instruments.connectionsOpen.record(open ? 1 : -1, { [ATTR.connectionKind]: this.#system });
  }

  /** A lost connection is back after `downtimeMs`: `blacktree.connection.reconnects` and `.downtime`. */
  reconnected(downtimeMs: number): void {
    if (!this.#on) return;
    const m = this.#t.metrics.instruments;
    const labels = { [ATTR.connectionKind]: this.#system };
    m.reconnects.record(1, labels);
    m.downtime.record(Math.max(0, downtimeMs) / 1000, labels);
  }

  /** A session opened; one opening after a loss also counts as a reconnect with its downtime. */
  opened(): void {
    this.connection(true);
    if (this.#lostAt !== undefined) this.reconnected(performance.now() - this.#lostAt);
    this.#lostAt = undefined;
  }

  /** An open session ended; `lost`: not closed by its owner, so the next opening is a reconnect. */
  closed(lost: boolean): void {
    this.connection(false);
    if (lost) this.#lostAt = performance.now();
  }

  /** A ping on the job stream was answered after `rttMs`: `blacktree.transport.ping.duration`. */
  ping(rttMs: number): void {
    if (this.#on) this.#t.metrics.instruments.pingDuration.record(Math.max(0, rttMs) / 1000, { [ATTR.connectionKind]: this.#system });
  }
}

/**
 * Resolves a class's `telemetry` option for {@link ClientTelemetry}; `system` is `rabbitmq`,
 * `memory` or `grpc`.
 * @throws {OrchestratorError} `invalid_argument` naming the bad field.
 * @internal
 */
export function clientTelemetry(value: unknown, system: string): ClientTelemetry {
  return new ClientTelemetry(resolveTelemetry(value), system);
}
