import type { Options } from "amqplib";
import { invalidArgument, OrchestratorError } from "../../errors.ts";
import { MAX_DELAY_MS } from "../../job/due-time.ts";
import type { AmqpConnection } from "./amqp-connection.ts";
import {
  declareDelayDestination, declareDelayLevel, delayDueExchangeName, delayEntryLevel, delayExchangeName, delayRoutingKey,
} from "./topology.ts";
import type { AmqpTopologyNames } from "./topology.ts";

/** Where a delayed message goes once due: a queue (jobs, a lane) or an exchange (cancels). @internal */
export type DelayDestination = { queue: string; exchange?: never } | { exchange: string; queue?: never };

/** One message to delay. @internal */
export interface DelayedPublish {
  destination: DelayDestination;
  /** When the message is due, epoch ms: at most `MAX_DELAY_MS` ahead. */
  dueAt: number;
  body: Buffer;
  properties: Options.Publish;
  signal?: AbortSignal | undefined;
  timeoutMs?: number | undefined;
}

/**
 * Delays messages exactly, without a consumer process and without head-of-line blocking, on
 * RabbitMQ 3.10 (no delayed-message plugin; per-message TTL only expires at the head of a queue):
 * a binary cascade of fixed-TTL levels, the design of NServiceBus's "delayed delivery" v2.
 *
 * Level `n` is a topic exchange and a quorum queue whose every message lives `2^n` ms (one TTL
 * per queue, so messages expire in the order they came: FIFO, nothing blocks anything). A
 * message's routing key holds its delay in binary (33 words of `0`/`1`, highest first) and its
 * destination. It enters at the exchange of its highest set bit; each level's exchange sends it
 * into its queue when its bit is set (it waits `2^n` ms, then is dead-lettered, routing key kept,
 * to the next level down) and straight to the next level when clear. Level 0 hands it to the
 * `due` exchange, which routes it by destination. The wait is the sum of the set bits' TTLs, the
 * delay to the millisecond, plus a few milliseconds per set bit (docs/rabbitmq.md has the
 * measured figures). Everything is durable: quorum queues, persistent messages, dead-lettering
 * at least once; a broker restart resumes the waits where they were.
 *
 * Levels are declared on first use, up to the highest one a delay needs (and re-declared after a
 * reconnect by the connection). @internal
 */
export class DelayCascade {
  readonly #connection: AmqpConnection;
  readonly #names: AmqpTopologyNames;
  /** Levels 0 to this - 1 are declared. */
  #declaredLevels = 0;

  constructor(connection: AmqpConnection, names: AmqpTopologyNames) {
    this.#connection = connection;
    this.#names = names;
  }

  /**
   * Publishes one message due at `dueAt`, confirmed and mandatory. The delay is taken from the
   * clock right before the publish, after any declaration, so that time is not added to it; a
   * message already due leaves by the `due` exchange at once.
   * @throws {OrchestratorError} `invalid_argument` for a `dueAt` that is not an integer at most
   * `MAX_DELAY_MS` ahead; what the publish rejects with (`not_found` when a level queue was
   * deleted under us: the connection is recycled, which declares it again).
   */
  async publish(request: DelayedPublish): Promise<void> {
    const { dueAt, destination, signal, timeoutMs } = request;
    if (!Number.isInteger(dueAt) || dueAt - Date.now() > MAX_DELAY_MS) throw invalidArgument("dueAt", `an integer (epoch ms) at most ${MAX_DELAY_MS} ms ahead`, dueAt);
    const target = destination.queue ?? destination.exchange;
    await this.#connection.declare(
      `delay-destination:${delayDueExchangeName(this.#names)}:${destination.queue === undefined ? "exchange" : "queue"}:${target}`,
      (channel) => declareDelayDestination(channel, this.#names, destination),
      { signal, timeoutMs: timeoutMs ?? this.#connection.publishTimeoutMs },
    );
    const planned = dueAt - Date.now();
    if (planned > 0) await this.#levels(delayEntryLevel(planned) + 1, signal, timeoutMs);
    const delayMs = Math.max(0, dueAt - Date.now());
    try {
      await this.#connection.publish({
        exchange: delayMs === 0 ? delayDueExchangeName(this.#names) : delayExchangeName(this.#names, delayEntryLevel(delayMs)),
        routingKey: delayRoutingKey(delayMs, target),
        body: request.body,
        properties: { ...request.properties, persistent: true },
        confirm: true,
        mandatory: true,
        signal,
        timeoutMs,
      });
    } catch (error) {
      if (error instanceof OrchestratorError && error.code === "not_found") this.#connection.recycle(`a queue of the delay cascade "${this.#names.delayPrefix}" is gone`);
      throw error;
    }
  }

  /**
   * Declares levels 0 to `count - 1`, all at once (each declares the exchange below it too, so
   * none waits for another; creating a quorum queue is the slow part). The connection runs each
   * declaration once, however many publishes ask, and again after reconnects.
   */
  async #levels(count: number, signal: AbortSignal | undefined, timeoutMs: number | undefined): Promise<void> {
    if (this.#declaredLevels >= count) return;
    const names = this.#names;
    const options = { signal, timeoutMs: timeoutMs ?? this.#connection.publishTimeoutMs };
    const levels = Array.from({ length: count - this.#declaredLevels }, (_, i) => this.#declaredLevels + i);
    await Promise.all(levels.map((level) => this.#connection.declare(`delay-level:${delayExchangeName(names, level)}`, (channel) => declareDelayLevel(channel, names, level), options)));
    this.#declaredLevels = Math.max(this.#declaredLevels, count);
  }
}
