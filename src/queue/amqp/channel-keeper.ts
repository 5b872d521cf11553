import type { Channel, ChannelModel } from "amqplib";
import { OrchestratorError } from "../../errors.ts";
import { backoffDelay } from "../../timers.ts";
import type { AmqpConnection } from "./amqp-connection.ts";
import { closeQuietly, fromAmqpError, isFatal } from "./errors.ts";

/** What a {@link ChannelKeeper} does with its channel. @internal */
export interface ChannelKeeperOptions {
  /** For error messages: `consumer of "jobs"`. */
  what: string;
  /** Runs on every new channel: declare private queues, set QoS, start consumers. */
  setup(channel: Channel): Promise<void>;
  /**
   * The channel is gone (connection lost, broker closed it, or `close()`); everything delivered
   * on it and not acked goes back to its queue. Called once per channel, synchronously.
   */
  lost(channel: Channel, error: OrchestratorError): void;
  /** Reports a failure no caller waits for (a setup that failed on a reopen). */
  report(error: OrchestratorError): void;
}

/**
 * Keeps one channel open on a managed {@link AmqpConnection}: opens it when the connection is
 * up, runs `setup` on it, and when it dies (the connection dropped, or the broker closed just this
 * channel, e.g. `consumer_timeout`) reports it lost and opens a new one with backoff. Error and
 * close listeners are attached before anything else: amqplib lets an unhandled channel `error`
 * take the whole connection down.
 * @internal
 */
export class ChannelKeeper {
  readonly #connection: AmqpConnection;
  readonly #options: ChannelKeeperOptions;
  #channel: Channel | undefined;
  #opening = false;
  #attempts = 0;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #unwatch: (() => void) | undefined;
  #closed = false;
  #started: { resolve: () => void; reject: (error: OrchestratorError) => void } | undefined;

  constructor(connection: AmqpConnection, options: ChannelKeeperOptions) {
    this.#connection = connection;
    this.#options = options;
  }

  /** The open channel, if any. */
  get channel(): Channel | undefined {
    return this.#channel;
  }

  /**
   * Starts keeping the channel; resolves after the first successful setup.
   * @throws {OrchestratorError} a fatal setup error (`precondition_failed`, `permission_denied`),
   * the connection's fatal error, or `queue_closed` when closed first.
   */
  start(): Promise<void> {
    const started = new Promise<void>((resolve, reject) => {
      this.#started = { resolve, reject };
    });
    this.#connection.ready().catch((error: unknown) => this.#fail(OrchestratorError.from(error)));
    this.#unwatch = this.#connection.watch((model) => {
      if (model) void this.#open(model);
    });
    return started;
  }

  /** Closes the channel (the broker requeues what it delivered and was not acked). Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#unwatch?.();
    if (this.#retry !== undefined) clearTimeout(this.#retry);
    this.#fail(new OrchestratorError("queue_closed", `${this.#options.what} closed`));
    const channel = this.#channel;
    if (channel) {
      this.#channel = undefined;
      this.#options.lost(channel, new OrchestratorError("queue_closed", `${this.#options.what} closed`, { details: { reason: "delivery_lost" } }));
      await closeQuietly(channel);
    }
  }

  async #open(model: ChannelModel): Promise<void> {
    if (this.#closed || this.#channel || this.#opening) return;
    this.#opening = true;
    let channel: Channel | undefined;
    let lastError: unknown;
    try {
      channel = await model.createChannel();
      const ch = channel;
      ch.on("error", (error: unknown) => {
        lastError = error;
      });
      ch.on("close", () => this.#onClose(ch, lastError));
      this.#channel = ch;
      await this.#options.setup(ch);
      if (this.#channel !== ch) return;
      this.#attempts = 0;
      this.#started?.resolve();
      this.#started = undefined;
    } catch (cause) {
      const error = fromAmqpError(lastError ?? cause, `opening the ${this.#options.what}`);
      if (isFatal(error)) {
        this.#fail(error);
        this.#closed = true;
        this.#unwatch?.();
      } else {
        this.#options.report(error);
        // A queue of the topology was deleted under us: declare it again before the retry.
        if (error.code === "not_found") void this.#connection.redeclare();
      }
      if (channel && this.#channel === channel) channel.close().catch(() => {});
    } finally {
      this.#opening = false;
    }
  }

  #onClose(channel: Channel, error: unknown): void {
    if (this.#channel !== channel) return;
    this.#channel = undefined;
    this.#options.lost(
      channel,
      error === undefined
        ? new OrchestratorError("queue_closed", `${this.#options.what}: the channel closed`, { details: { reason: "delivery_lost" } })
        : fromAmqpError(error, `${this.#options.what}: the broker closed the channel`),
    );
    if (this.#closed) return;
    // Connection still up (only this channel died): reopen with backoff. Otherwise the
    // connection's watcher reopens it once the connection is back.
    this.#attempts++;
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      const model = this.#connection.model;
      if (model) void this.#open(model);
    }, backoffDelay(this.#attempts, this.#connection.backoff));
  }

  #fail(error: OrchestratorError): void {
    this.#started?.reject(error);
    this.#started = undefined;
  }
}
