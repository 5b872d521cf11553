import type { Channel, ConsumeMessage } from "amqplib";
import { OrchestratorError } from "../../errors.ts";
import type { JobEvent } from "../../job/types.ts";
import type { Subscription } from "../types.ts";
import type { AmqpConnection } from "./amqp-connection.ts";
import { ChannelKeeper } from "./channel-keeper.ts";
import { decodeEvents } from "./event-batcher.ts";
import { jobBindingKey } from "./topology.ts";

/**
 * Acks consumed messages in batches: one `basic.ack` with `multiple` per event-loop turn,
 * covering everything handled in it.
 * @internal
 */
export class AckBatcher {
  readonly #channel: Channel;
  #last: ConsumeMessage | undefined;
  #scheduled = false;

  constructor(channel: Channel) {
    this.#channel = channel;
  }

  add(message: ConsumeMessage): void {
    this.#last = message;
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      const last = this.#last;
      this.#last = undefined;
      try {
        if (last) this.#channel.ack(last, true);
      } catch {
        // The channel closed: the broker redelivers what was not acked.
      }
    });
  }
}

/** How an {@link EventSubscriber} binds its queue; see `AmqpEventsOptions.eventRouting`. @internal */
export type EventRouting = "all" | "per-job";

/** Options of {@link EventSubscriber}. @internal */
export interface EventSubscriberOptions {
  connection: AmqpConnection;
  exchange: string;
  queue: string;
  expiresMs: number;
  /** Classic, or quorum (replicated: survives the loss of a cluster node). */
  queueType: "classic" | "quorum";
  routing: EventRouting;
  report(error: OrchestratorError, source: "listener" | "channel"): void;
}

type Listener = (event: JobEvent) => void;

/**
 * The receiving side of job events in one process: one queue bound to the events exchange,
 * consumed on its own channel, fanned out to local listeners by job id.
 *
 * The queue is durable with `x-expires` rather than exclusive, so it outlives a dropped
 * connection (events published meanwhile wait in it, results persistently) and disappears
 * `expiresMs` after its process is gone.
 * @internal
 */
export class EventSubscriber {
  readonly #options: EventSubscriberOptions;
  readonly #keeper: ChannelKeeper;
  readonly #listeners = new Map<string, Set<Listener>>();
  /** Binding keys in force, with how many subscriptions need each. */
  readonly #bindings = new Map<string, { count: number; bound: Promise<void> }>();
  #started: Promise<void> | undefined;
  #setups: Array<() => void> = [];

  constructor(options: EventSubscriberOptions) {
    this.#options = options;
    this.#keeper = new ChannelKeeper(options.connection, {
      what: `event subscriber "${options.queue}"`,
      setup: (channel) => this.#setup(channel),
      lost: () => {},
      report: (error) => options.report(error, "channel"),
    });
  }

  async subscribe(jobId: string, listener: Listener): Promise<Subscription> {
    this.#started ??= this.#keeper.start();
    try {
      await this.#started;
    } catch (error) {
      this.#started = undefined;
      throw error;
    }
    let set = this.#listeners.get(jobId);
    if (!set) {
      set = new Set();
      this.#listeners.set(jobId, set);
    }
    set.add(listener);
    const key = jobId === "*" || this.#options.routing === "all" ? "#" : jobBindingKey(jobId);
    try {
      await this.#bind(key);
    } catch (error) {
      set.delete(listener);
      throw error;
    }
    let closed = false;
    return {
      close: async () => {
        if (closed) return;
        closed = true;
        const listeners = this.#listeners.get(jobId);
        listeners?.delete(listener);
        if (listeners?.size === 0) this.#listeners.delete(jobId);
        this.#unbind(key);
      },
    };
  }

  /** Stops delivering and deletes the queue (when connected; else `x-expires` removes it). */
  async close(): Promise<void> {
    this.#listeners.clear();
    // Bound to every event, an abandoned queue would fill until it expires.
    await this.#keeper.channel?.deleteQueue(this.#options.queue).catch(() => {});
    await this.#keeper.close();
  }

  async #setup(channel: Channel): Promise<void> {
    const { queue, exchange, expiresMs, queueType } = this.#options;
    await channel.assertQueue(queue, { durable: true, arguments: subscriberQueueArguments(queueType, expiresMs) });
    for (const key of this.#bindings.keys()) await channel.bindQueue(queue, exchange, key);
    await channel.prefetch(1000);
    const acks = new AckBatcher(channel);
    await channel.consume(queue, (message) => this.#onMessage(channel, message, acks), { noAck: false });
    const setups = this.#setups;
    this.#setups = [];
    for (const resolve of setups) resolve();
  }

  /** Binds `key` once for all subscriptions needing it; resolves once the broker bound it. */
  #bind(key: string): Promise<void> {
    const existing = this.#bindings.get(key);
    if (existing) {
      existing.count++;
      return existing.bound;
    }
    const entry = { count: 1, bound: this.#bindNow(key) };
    this.#bindings.set(key, entry);
    entry.bound.catch(() => {
      if (this.#bindings.get(key) === entry) this.#bindings.delete(key);
    });
    return entry.bound;
  }

  async #bindNow(key: string): Promise<void> {
    for (;;) {
      const channel = this.#keeper.channel;
      if (channel) {
        try {
          await channel.bindQueue(this.#options.queue, this.#options.exchange, key);
          return;
        } catch {
          // The channel died under the bind; the next setup binds every key again.
        }
      }
      // Wait for the next setup, which binds every key in #bindings.
      await new Promise<void>((resolve) => this.#setups.push(resolve));
      if (this.#keeper.channel) return;
    }
  }

  #unbind(key: string): void {
    const entry = this.#bindings.get(key);
    if (!entry) return;
    entry.count--;
    // "#" stays bound for the subscriber's life: a producer subscribing job after job would
    // otherwise bind and unbind it around every one.
    if (entry.count > 0 || key === "#") return;
    this.#bindings.delete(key);
    this.#keeper.channel?.unbindQueue(this.#options.queue, this.#options.exchange, key).catch(() => {});
  }

  #onMessage(channel: Channel, message: ConsumeMessage | null, acks: AckBatcher): void {
    if (message === null) {
      // The broker cancelled us (the queue was deleted): a new channel declares it again.
      channel.close().catch(() => {});
      return;
    }
    acks.add(message);
    let events: JobEvent[];
    try {
      events = decodeEvents(message.content);
    } catch (error) {
      this.#options.report(OrchestratorError.from(error), "channel");
      return;
    }
    for (const event of events) {
      this.#dispatch(this.#listeners.get(event.jobId), event);
      this.#dispatch(this.#listeners.get("*"), event);
    }
  }

  #dispatch(listeners: Set<Listener> | undefined, event: JobEvent): void {
    if (!listeners) return;
    for (const listener of listeners) {
      try {
        listener(event);
      } catch (cause) {
        this.#options.report(OrchestratorError.from(cause), "listener");
      }
    }
  }
}

/**
 * Arguments of a subscriber queue of one process: it expires `expiresMs` after its last consumer
 * left; a quorum one survives the loss of a cluster node. @internal
 */
export function subscriberQueueArguments(queueType: "classic" | "quorum", expiresMs: number): Record<string, unknown> {
  return queueType === "quorum" ? { "x-queue-type": "quorum", "x-expires": expiresMs } : { "x-expires": expiresMs };
}
