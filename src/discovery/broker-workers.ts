import type { Channel, ConsumeMessage } from "amqplib";
import { EventEmitter } from "eventemitter3";
import { OrchestratorError } from "../errors.ts";
import type { AmqpConnection } from "../queue/amqp/amqp-connection.ts";
import { ChannelKeeper } from "../queue/amqp/channel-keeper.ts";
import { connectionFrom } from "../queue/amqp/amqp-connection.ts";
import { checkInteger, checkObject, checkString, optional } from "../validate.ts";
import { DEFAULT_ANNOUNCE_EXCHANGE, parseAnnouncement } from "./announcement.ts";
import type { Announcement } from "./announcement.ts";
import type { DiscoveredWorker, WorkerSource, WorkerSourceEvents } from "./types.ts";

/** Options of {@link BrokerWorkers}. */
export interface BrokerWorkersOptions {
  /** The broker, as `amqp://user:pass@host/vhost`; or give `connection`. */
  url?: string;
  /** A shared connection instead of `url` (for example the `AmqpQueue`'s). */
  connection?: AmqpConnection;
  /** @default "blacktree.workers" */
  exchange?: string;
  /**
   * How many heartbeat intervals (as each worker announces its own) may pass without a word
   * before the worker counts as gone.
   * @default 3
   */
  missedHeartbeats?: number;
}

interface Seen {
  readonly worker: DiscoveredWorker;
  timer: NodeJS.Timeout;
}

/**
 * Workers that announce themselves through the broker (`announceWorker()`, or
 * `blacktree-worker --announce`): every orchestrator with a `BrokerWorkers` source reads every
 * announcement (a private queue bound to the fanout exchange), finds a worker at its first
 * heartbeat, loses it gracefully at its goodbye, and loses it as gone when it falls silent for
 * `missedHeartbeats` of its intervals.
 * @example
 * ```ts
 * const source = new BrokerWorkers({ url: "amqp://rabbit" });
 * const discovery = new WorkerDiscovery({ pool, sources: [source], transportFor: (w) => new GrpcTransport({ address: w.address }) });
 * ```
 */
export class BrokerWorkers extends EventEmitter<WorkerSourceEvents> implements WorkerSource {
  readonly #connection: AmqpConnection;
  readonly #owned: boolean;
  readonly #exchange: string;
  readonly #missed: number;
  readonly #keeper: ChannelKeeper;
  readonly #seen = new Map<string, Seen>();
  #started: Promise<void> | undefined;
  #closed = false;

  /** @throws {OrchestratorError} `invalid_argument` for bad options. */
  constructor(options: BrokerWorkersOptions) {
    super();
    const o = checkObject("options", options);
    const { connection, owned } = connectionFrom({ ...(o.url === undefined ? {} : { url: o.url }), ...(o.connection === undefined ? {} : { connection: o.connection }) });
    this.#connection = connection;
    this.#owned = owned;
    this.#exchange = optional(o.exchange, DEFAULT_ANNOUNCE_EXCHANGE, (v) => checkString("exchange", v, 255));
    this.#missed = optional(o.missedHeartbeats, 3, (v) => checkInteger("missedHeartbeats", v, 1, 1000));
    this.#keeper = new ChannelKeeper(connection, {
      what: `worker announcements on "${this.#exchange}"`,
      setup: (channel) => this.#setup(channel),
      lost: () => {},
      report: (error) => this.emit("error", { error }),
    });
  }

  /** The workers heard from and not yet gone. */
  get workers(): DiscoveredWorker[] {
    return Array.from(this.#seen.values(), (seen) => seen.worker);
  }

  /** Starts listening; resolves once subscribed (workers are found at their next heartbeat). Idempotent. */
  start(): Promise<void> {
    if (this.#closed) return Promise.reject(new OrchestratorError("precondition_failed", "the broker source is closed"));
    this.#started ??= this.#keeper.start();
    return this.#started;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const seen of this.#seen.values()) clearTimeout(seen.timer);
    this.#seen.clear();
    await this.#keeper.close();
    if (this.#owned) await this.#connection.close();
  }

  async #setup(channel: Channel): Promise<void> {
    await channel.assertExchange(this.#exchange, "fanout", { durable: true });
    // A private queue per orchestrator (and per channel): every orchestrator hears every worker.
    const { queue } = await channel.assertQueue("", { exclusive: true, autoDelete: true, durable: false });
    await channel.bindQueue(queue, this.#exchange, "");
    await channel.consume(queue, (message) => this.#onMessage(message), { noAck: true });
  }

  #onMessage(message: ConsumeMessage | null): void {
    if (message === null || this.#closed) return;
    const announcement = parseAnnouncement(message.content);
    if (announcement === undefined) return;
    if (announcement.kind === "goodbye") return this.#forget(announcement.id, "it said goodbye (shutting down)", true);
    this.#heard(announcement);
  }

  #heard(announcement: Announcement): void {
    const { id, address, description, intervalMs } = announcement;
    const silenceMs = intervalMs * this.#missed;
    const previous = this.#seen.get(id);
    if (previous !== undefined) clearTimeout(previous.timer);
    const timer = setTimeout(() => this.#forget(id, `it fell silent (no heartbeat for ${silenceMs} ms)`, false), silenceMs);
    timer.unref();
    const moved = previous !== undefined && previous.worker.address !== address;
    const worker: DiscoveredWorker = moved || previous === undefined ? { id, address, description } : previous.worker;
    this.#seen.set(id, { worker, timer });
    if (previous === undefined || moved) this.emit("workerFound", { worker });
  }

  #forget(id: string, reason: string, graceful: boolean): void {
    const seen = this.#seen.get(id);
    if (seen === undefined) return;
    clearTimeout(seen.timer);
    this.#seen.delete(id);
    this.emit("workerLost", { id, reason, graceful });
  }
}
