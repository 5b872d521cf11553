import type { Channel, ConsumeMessage } from "amqplib";
import { EventEmitter } from "eventemitter3";
import { OrchestratorError } from "../errors.ts";
import type { Subscription } from "../queue/types.ts";
import type { AmqpConnection } from "../queue/amqp/amqp-connection.ts";
import { connectionFrom } from "../queue/amqp/amqp-connection.ts";
import { ChannelKeeper } from "../queue/amqp/channel-keeper.ts";
import { resolveTopologyNames } from "../queue/amqp/topology.ts";
import { checkFunction, checkObject, checkString } from "../validate.ts";
import { reportListenerError } from "../events.ts";

/**
 * The topics of the pool bus: orchestrators publish `snapshot` (their pool's workers) and
 * `goodbye`, consoles send `command` (drain, undrain) and orchestrators answer with `reply`.
 */
export type PoolTopic = "snapshot" | "goodbye" | "command" | "reply";

const TOPICS: ReadonlySet<string> = new Set<PoolTopic>(["snapshot", "goodbye", "command", "reply"]);

/**
 * Fan-out of worker-pool snapshots and operator commands between orchestrator processes (each
 * running a {@link PoolReporter}) and consoles. Every subscriber of a topic gets every message
 * published on it after its `subscribe` resolved; messages are small JSON objects and may be
 * lost while a process reconnects (snapshots repeat, commands are answered or time out).
 */
export interface PoolBus {
  /** Publishes one message on `topic`; resolves once it is handed to the transport. */
  publish(topic: PoolTopic, message: object, options?: { expirationMs?: number }): Promise<void>;
  /** Calls `listener` with every message of the topics; a throwing listener is reported, nothing else. */
  subscribe(topics: readonly PoolTopic[], listener: (topic: PoolTopic, message: unknown) => void): Promise<Subscription>;
  /** Stops every subscription. Idempotent. */
  close(): Promise<void>;
}

function checkTopics(topics: unknown): PoolTopic[] {
  if (!Array.isArray(topics) || topics.length === 0 || topics.some((t) => typeof t !== "string" || !TOPICS.has(t))) {
    throw new OrchestratorError("invalid_argument", `Expected \`topics\` to be a non-empty array of ${[...TOPICS].join(", ")}`, { details: { field: "topics" } });
  }
  return topics as PoolTopic[];
}

/** A {@link PoolBus} inside one process: a console and the reporters of the same process. */
export class MemoryPoolBus extends EventEmitter<{ error: [{ error: OrchestratorError }] }> implements PoolBus {
  readonly #listeners = new Set<{ topics: ReadonlySet<PoolTopic>; listener: (topic: PoolTopic, message: unknown) => void }>();
  #closed = false;

  async publish(topic: PoolTopic, message: object): Promise<void> {
    checkTopics([topic]);
    checkObject("message", message);
    if (this.#closed) throw new OrchestratorError("queue_closed", "the pool bus is closed");
    // A copy through JSON, as a broker would carry it; delivered after the caller's turn.
    const copy = JSON.parse(JSON.stringify(message)) as unknown;
    queueMicrotask(() => {
      for (const entry of [...this.#listeners]) {
        if (!entry.topics.has(topic)) continue;
        try {
          entry.listener(topic, copy);
        } catch (error) {
          reportListenerError(this as unknown as EventEmitter, OrchestratorError.from(error));
        }
      }
    });
  }

  async subscribe(topics: readonly PoolTopic[], listener: (topic: PoolTopic, message: unknown) => void): Promise<Subscription> {
    const entry = { topics: new Set(checkTopics(topics)), listener: checkFunction<typeof listener>("listener", listener) };
    if (this.#closed) throw new OrchestratorError("queue_closed", "the pool bus is closed");
    this.#listeners.add(entry);
    return { close: async () => void this.#listeners.delete(entry) };
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#listeners.clear();
  }
}

/** Options of {@link AmqpPoolBus}. */
export interface AmqpPoolBusOptions {
  /** The broker, as `amqp://user:pass@host/vhost`; or give `connection`. */
  url?: string;
  /** A shared connection (for example the `AmqpQueue`'s); never closed by the bus. */
  connection?: AmqpConnection;
  /** The job queue name the exchange's name derives from. @default "blacktree.jobs" */
  queueName?: string;
  /** The topic exchange. @default `${queueName}.pool` */
  exchange?: string;
}

/**
 * A {@link PoolBus} on RabbitMQ: a durable topic exchange `${queueName}.pool`, routing key = the
 * topic; each subscription reads a private exclusive queue (deleted with its connection). Messages
 * are transient; snapshots expire after their `expirationMs`.
 */
export class AmqpPoolBus extends EventEmitter<{ error: [{ error: OrchestratorError }] }> implements PoolBus {
  readonly #connection: AmqpConnection;
  readonly #owned: boolean;
  readonly #exchange: string;
  readonly #keepers = new Set<ChannelKeeper>();
  #declared: Promise<void> | undefined;
  #closed = false;

  /** @throws {OrchestratorError} `invalid_argument` for bad options. */
  constructor(options: AmqpPoolBusOptions) {
    super();
    const o = checkObject("options", options);
    const { connection, owned } = connectionFrom({ ...(o.url === undefined ? {} : { url: o.url }), ...(o.connection === undefined ? {} : { connection: o.connection }) });
    this.#connection = connection;
    this.#owned = owned;
    this.#exchange = o.exchange === undefined ? resolveTopologyNames(o.queueName, undefined).pool : checkString("exchange", o.exchange, 255);
  }

  /** The exchange the bus uses. */
  get exchange(): string {
    return this.#exchange;
  }

  async publish(topic: PoolTopic, message: object, options: { expirationMs?: number } = {}): Promise<void> {
    checkTopics([topic]);
    checkObject("message", message);
    if (this.#closed) throw new OrchestratorError("queue_closed", "the pool bus is closed");
    await this.#declare();
    const expiration = options.expirationMs === undefined ? {} : { expiration: String(Math.max(1, Math.round(options.expirationMs))) };
    await this.#connection.publish({
      exchange: this.#exchange,
      routingKey: topic,
      body: Buffer.from(JSON.stringify(message)),
      properties: { contentType: "application/json", ...expiration },
      confirm: topic === "command" || topic === "goodbye",
    });
  }

  async subscribe(topics: readonly PoolTopic[], listener: (topic: PoolTopic, message: unknown) => void): Promise<Subscription> {
    const wanted = checkTopics(topics);
    checkFunction("listener", listener);
    if (this.#closed) throw new OrchestratorError("queue_closed", "the pool bus is closed");
    const onMessage = (message: ConsumeMessage | null): void => {
      if (message === null || this.#closed) return;
      const topic = message.fields.routingKey;
      if (!TOPICS.has(topic)) return;
      let body: unknown;
      try {
        body = JSON.parse(message.content.toString("utf8"));
      } catch {
        return; // not ours
      }
      try {
        listener(topic as PoolTopic, body);
      } catch (error) {
        reportListenerError(this as unknown as EventEmitter, OrchestratorError.from(error));
      }
    };
    const keeper = new ChannelKeeper(this.#connection, {
      what: `pool bus on "${this.#exchange}"`,
      setup: async (channel: Channel) => {
        await channel.assertExchange(this.#exchange, "topic", { durable: true });
        const { queue } = await channel.assertQueue("", { exclusive: true, autoDelete: true, durable: false });
        for (const topic of wanted) await channel.bindQueue(queue, this.#exchange, topic);
        await channel.consume(queue, onMessage, { noAck: true });
      },
      lost: () => {},
      report: (error) => reportListenerError(this as unknown as EventEmitter, error),
    });
    this.#keepers.add(keeper);
    try {
      await keeper.start();
    } catch (error) {
      this.#keepers.delete(keeper);
      await keeper.close();
      throw error;
    }
    return {
      close: async () => {
        this.#keepers.delete(keeper);
        await keeper.close();
      },
    };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all([...this.#keepers].map((keeper) => keeper.close()));
    this.#keepers.clear();
    if (this.#owned) await this.#connection.close();
  }

  #declare(): Promise<void> {
    this.#declared ??= this.#connection
      .declare(`pool:${this.#exchange}`, async (channel) => {
        await channel.assertExchange(this.#exchange, "topic", { durable: true });
      })
      .catch((error: unknown) => {
        this.#declared = undefined;
        throw error;
      });
    return this.#declared;
  }
}
