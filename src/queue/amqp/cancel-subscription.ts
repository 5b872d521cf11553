import { randomUUID } from "node:crypto";
import type { Channel, ConsumeMessage } from "amqplib";
import { OrchestratorError } from "../../errors.ts";
import type { CancelCommand } from "../../job/types.ts";
import type { Subscription } from "../types.ts";
import type { AmqpConnection } from "./amqp-connection.ts";
import { ChannelKeeper } from "./channel-keeper.ts";
import { AckBatcher, subscriberQueueArguments } from "./event-subscriber.ts";
import type { AmqpTopologyNames } from "./topology.ts";

/** Header carrying a cancel command's id, so the live and the retained copy are delivered once. @internal */
export const CANCEL_ID_HEADER = "x-blacktree-cancel-id";
/** Header of the marker a new subscriber appends to the log to know when its replay caught up. */
const SYNC_HEADER = "x-blacktree-sync";
/** How long ids of delivered commands are remembered for de-duplication. */
const SEEN_MS = 10 * 60_000;

/** Options of {@link CancelSubscription}. @internal */
export interface CancelSubscriptionOptions {
  connection: AmqpConnection;
  names: AmqpTopologyNames;
  retentionMs: number;
  expiresMs: number;
  /** Of the live queue: classic, or quorum (survives the loss of a cluster node). */
  queueType: "classic" | "quorum";
  listener: (command: CancelCommand) => void;
  report(error: OrchestratorError, source: "listener" | "channel"): void;
}

/** Parses a cancel command from a message body; undefined when it is not one. */
function parseCommand(content: Buffer): CancelCommand | undefined {
  const value = JSON.parse(content.toString("utf8")) as Record<string, unknown>;
  if (typeof value !== "object" || value === null || typeof value.jobId !== "string" || typeof value.reason !== "string" || typeof value.at !== "number") return undefined;
  const command: CancelCommand = { jobId: value.jobId, reason: value.reason as CancelCommand["reason"], at: value.at };
  if (typeof value.message === "string") command.message = value.message;
  if (typeof value.runAt === "number" && Number.isInteger(value.runAt)) command.runAt = value.runAt;
  return command;
}

/**
 * One `subscribeCancels()`: replays the retained cancel commands, then follows new ones.
 *
 * Two paths. A stream hands a record to its AMQP 0-9-1 consumers only once it is committed and
 * in chunks; a classic queue delivers as soon as the message is routed. Measured on 3.10
 * (`bench/amqp-queue.ts`, cancel() → listener on another connection): p50 0.8 / p99 3.8 ms live
 * against 1.4 / 3.9 ms from the stream on an idle broker, 1.7 / 11.8 against 3.7 / 15.2 ms under
 * load; so the live path is what a running job's cancel waits for, the stream what makes it last:
 * - the cancel log (a stream with `x-max-age` retention) is read from `now - retention` and then
 *   followed, so commands sent before this subscriber existed still hold; after a reconnect it
 *   resumes from the last offset seen, so nothing is missed;
 * - a live queue of its own bound to the cancel fanout delivers new commands at once.
 * Each command travels with an id header; a command seen on one path is not delivered again.
 * `start()` resolves once the replay reached a marker this subscriber appended to the log.
 * @internal
 */
export class CancelSubscription implements Subscription {
  readonly #options: CancelSubscriptionOptions;
  readonly #id = randomUUID();
  readonly #liveQueue: string;
  readonly #keeper: ChannelKeeper;
  readonly #seen = new Map<string, number>();
  #lastOffset: number | undefined;
  #markerSent = false;
  #caughtUp: (() => void) | undefined;
  #closed = false;

  constructor(options: CancelSubscriptionOptions) {
    this.#options = options;
    this.#liveQueue = `${options.names.cancels}.live.${options.connection.id}.${this.#id.slice(0, 8)}`;
    this.#keeper = new ChannelKeeper(options.connection, {
      what: `cancel subscriber "${this.#liveQueue}"`,
      setup: (channel) => this.#setup(channel),
      lost: () => {},
      report: (error) => options.report(error, "channel"),
    });
  }

  /** Starts both paths; resolves once every retained command was handed to the listener. */
  async start(): Promise<void> {
    const caughtUp = new Promise<void>((resolve) => {
      this.#caughtUp = resolve;
    });
    await this.#keeper.start();
    await caughtUp;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#caughtUp?.();
    await this.#keeper.channel?.deleteQueue(this.#liveQueue).catch(() => {});
    await this.#keeper.close();
  }

  async #setup(channel: Channel): Promise<void> {
    const { names, connection, retentionMs, expiresMs, queueType } = this.#options;
    await channel.assertQueue(this.#liveQueue, { durable: true, arguments: subscriberQueueArguments(queueType, expiresMs) });
    await channel.bindQueue(this.#liveQueue, names.cancels, "");
    // Streams require a prefetch; it applies to both consumers of this channel.
    await channel.prefetch(500);
    const acks = new AckBatcher(channel);
    await channel.consume(this.#liveQueue, (message) => this.#onLive(message, acks), { noAck: false });
    if (!this.#markerSent) {
      await connection.publish({
        exchange: "",
        routingKey: names.cancelLog,
        body: Buffer.from("{}"),
        properties: { persistent: true, headers: { [SYNC_HEADER]: this.#id } },
        confirm: true,
        mandatory: true,
      });
      this.#markerSent = true;
    }
    const offset = this.#lastOffset !== undefined ? this.#lastOffset + 1 : { "!": "timestamp", value: Math.floor((Date.now() - retentionMs) / 1000) };
    await channel.consume(names.cancelLog, (message) => this.#onLog(message, acks), { noAck: false, arguments: { "x-stream-offset": offset } });
  }

  #onLive(message: ConsumeMessage | null, acks: AckBatcher): void {
    if (message === null) return;
    acks.add(message);
    this.#deliver(message);
  }

  #onLog(message: ConsumeMessage | null, acks: AckBatcher): void {
    if (message === null) return;
    acks.add(message);
    const headers = message.properties.headers ?? {};
    const offset = headers["x-stream-offset"];
    if (typeof offset === "number") {
      if (this.#lastOffset !== undefined && offset <= this.#lastOffset) return;
      this.#lastOffset = offset;
    }
    const sync = headers[SYNC_HEADER];
    if (sync !== undefined) {
      if (sync === this.#id) {
        this.#caughtUp?.();
        this.#caughtUp = undefined;
      }
      return;
    }
    this.#deliver(message);
  }

  #deliver(message: ConsumeMessage): void {
    if (this.#closed) return;
    const id = message.properties.headers?.[CANCEL_ID_HEADER];
    if (typeof id === "string") {
      if (this.#seen.has(id)) return;
      this.#remember(id);
    }
    let command: CancelCommand | undefined;
    try {
      command = parseCommand(message.content);
    } catch (cause) {
      this.#options.report(new OrchestratorError("invalid_argument", `cancel command is not valid JSON: ${(cause as Error).message}`, { cause }), "channel");
      return;
    }
    // Stale past the retention, counted from its due time for the cancel of a job due later.
    if (!command || Date.now() - Math.max(command.at, command.runAt ?? 0) > this.#options.retentionMs) return;
    try {
      this.#options.listener(command);
    } catch (cause) {
      this.#options.report(OrchestratorError.from(cause), "listener");
    }
  }

  #remember(id: string): void {
    const now = Date.now();
    this.#seen.set(id, now);
    if (this.#seen.size % 1024 !== 0) return;
    for (const [key, at] of this.#seen) {
      if (now - at < SEEN_MS) break; // insertion order is time order
      this.#seen.delete(key);
    }
  }
}
