import type { ConfirmChannel, Message, Options } from "amqplib";
import { OrchestratorError } from "../../errors.ts";
import { abortReason } from "../../signals.ts";

/** One publish as {@link ConfirmPublisher.publish} takes it. @internal */
export interface PublishRequest {
  exchange: string;
  routingKey: string;
  body: Buffer;
  /** AMQP properties (headers, persistent, contentType…). */
  properties?: Options.Publish;
  /** Resolve only once the broker confirmed the message; otherwise once it is written. */
  confirm: boolean;
  /** Fail with `not_found` when no queue is bound for the routing key (implies `confirm`). */
  mandatory?: boolean;
  signal?: AbortSignal | undefined;
  /** Overrides the publisher's default wait for the broker. */
  timeoutMs?: number | undefined;
}

type EntryState = "new" | "buffered" | "inflight" | "done";

interface Entry {
  readonly request: PublishRequest;
  readonly resolve: () => void;
  readonly reject: (error: OrchestratorError) => void;
  readonly deadline: number;
  state: EntryState;
  timer?: ReturnType<typeof setTimeout>;
  onAbort?: () => void;
  messageId?: string;
  returned?: string;
}

/**
 * Whether a throw of `channel.publish` means the channel is closed (amqplib's
 * IllegalOperationError), as opposed to a message it could not encode.
 */
function isChannelClosed(error: unknown): boolean {
  return error instanceof Error && error.name === "IllegalOperationError";
}

function unencodable(request: PublishRequest, cause: unknown): OrchestratorError {
  const why = cause instanceof Error ? cause.message : String(cause);
  return new OrchestratorError("invalid_argument", `publish to "${request.routingKey}" refused before sending: the message cannot be encoded (${why})`, {
    cause,
    retryable: false,
    details: { routingKey: request.routingKey },
  });
}

/** Options of {@link ConfirmPublisher}. @internal */
export interface ConfirmPublisherOptions {
  /** Most publishes waiting for a channel at once; more reject `resource_exhausted`. */
  bufferSize: number;
  /** Default longest wait for the broker (buffer plus confirm). */
  timeoutMs: number;
  /** Why nothing can be written now (the last connection error), for `unavailable` messages. */
  outage: () => string;
}

/**
 * Publishes on one confirm channel at a time, keeping order: while there is no channel (the
 * connection is down), the broker blocks publishing or the channel's write buffer is full,
 * publishes wait in a bounded FIFO buffer and are written in order once it can write again.
 *
 * Outcomes: confirmed → resolve; nacked → `unavailable`; returned unroutable (mandatory) →
 * `not_found`; a message amqplib cannot encode (oversized header table, bad property) →
 * `invalid_argument`, alone: the channel and every other publish go on; channel closed before the confirm → `unknown_outcome`; still buffered after the
 * timeout → `unavailable` (certainly not published); written but unconfirmed after it →
 * `unknown_outcome`; buffer full → `resource_exhausted`.
 * @internal
 */
export class ConfirmPublisher {
  readonly #options: ConfirmPublisherOptions;
  /** FIFO of buffered entries; timed-out ones stay as `done` and are skipped. */
  #buffer: Entry[] = [];
  #buffered = 0;
  readonly #inflight = new Set<Entry>();
  readonly #returns = new Map<string, Entry>();
  #channel: ConfirmChannel | undefined;
  #writable = false;
  #blocked: string | undefined;
  #seq = 0;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #idle: Array<() => void> = [];

  constructor(options: ConfirmPublisherOptions) {
    this.#options = options;
  }

  /** Publishes waiting in the buffer plus those awaiting their confirm. */
  get pending(): number {
    return this.#buffered + this.#inflight.size;
  }

  /** Starts writing on `channel` (a fresh one after each reconnect) and flushes the buffer. */
  attach(channel: ConfirmChannel): void {
    this.#channel = channel;
    this.#writable = true;
    channel.on("drain", () => {
      if (this.#channel !== channel) return;
      this.#writable = true;
      this.#flush();
    });
    channel.on("return", (message: Message) => {
      const id = message.properties.messageId as string | undefined;
      const entry = id === undefined ? undefined : this.#returns.get(id);
      if (entry) entry.returned = `${message.fields.exchange === "" ? "default exchange" : `exchange "${message.fields.exchange}"`} returned it: ${String((message.fields as { replyText?: string }).replyText ?? "unroutable")}`;
    });
    this.#flush();
  }

  /**
   * Stops writing: the channel is gone. amqplib fails its unconfirmed publishes itself
   * ("channel closed"), which become `unknown_outcome`.
   */
  detach(): void {
    this.#channel = undefined;
    this.#writable = false;
  }

  /** The broker blocked (`reason`) or unblocked (undefined) publishing on the connection. */
  setBlocked(reason: string | undefined): void {
    this.#blocked = reason;
    if (reason === undefined) this.#flush();
  }

  publish(request: PublishRequest): Promise<void> {
    const { signal } = request;
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    return new Promise<void>((resolve, reject) => {
      const timeoutMs = request.timeoutMs ?? this.#options.timeoutMs;
      const entry: Entry = { request, resolve, reject, deadline: Date.now() + timeoutMs, state: "new" };
      if (request.timeoutMs !== undefined) {
        entry.timer = setTimeout(() => this.#expire(entry), timeoutMs);
      }
      if (signal) {
        entry.onAbort = () => this.#finish(entry, abortReason(signal));
        signal.addEventListener("abort", entry.onAbort, { once: true });
      }
      if (this.#canWrite() && this.#buffered === 0 && this.#write(entry)) return;
      if (this.#buffered >= this.#options.bufferSize) {
        this.#finish(
          entry,
          new OrchestratorError("resource_exhausted", `publish buffer full (${this.#options.bufferSize} messages wait for the broker: ${this.#options.outage()})`, {
            details: { bufferSize: this.#options.bufferSize },
          }),
        );
        return;
      }
      entry.state = "buffered";
      this.#buffer.push(entry);
      this.#buffered++;
      this.#armSweeper();
    });
  }

  /** Rejects every buffered publish with `error` (close, fatal failure); in-flight ones keep waiting. */
  failBuffered(error: OrchestratorError): void {
    const buffer = this.#buffer;
    this.#buffer = [];
    this.#buffered = 0;
    for (const entry of buffer) this.#finish(entry, error);
  }

  /** Rejects everything still pending with `error`. */
  failAll(error: OrchestratorError): void {
    this.failBuffered(error);
    for (const entry of [...this.#inflight]) this.#finish(entry, error);
  }

  /** Resolves once nothing is pending (or at once). */
  idle(): Promise<void> {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  #canWrite(): boolean {
    return this.#channel !== undefined && this.#writable && this.#blocked === undefined;
  }

  /** Writes one entry; false when the channel turned out to be closed (the entry stays buffered). */
  #write(entry: Entry): boolean {
    const channel = this.#channel as ConfirmChannel;
    const { exchange, routingKey, body, confirm, mandatory } = entry.request;
    let properties = entry.request.properties;
    if (mandatory) {
      entry.messageId = `bt-${++this.#seq}`;
      properties = { ...properties, mandatory: true, messageId: entry.messageId };
      this.#returns.set(entry.messageId, entry);
    }
    let writable: boolean;
    try {
      writable = confirm || mandatory
        ? channel.publish(exchange, routingKey, body, properties, (error: unknown) => this.#confirmed(entry, error))
        : channel.publish(exchange, routingKey, body, properties);
    } catch (error) {
      if (entry.messageId !== undefined) this.#returns.delete(entry.messageId);
      if (isChannelClosed(error)) {
        // The channel closed under us: not written; keep it for the next channel.
        this.#writable = false;
        return false;
      }
      // amqplib refused to encode this one message (a header table over its 64 KiB buffer, a
      // property of the wrong type, a routing key over 255 bytes). It throws before writing a
      // byte or registering a confirm, so the channel is untouched: fail this publish alone.
      this.#finish(entry, unencodable(entry.request, error));
      return true;
    }
    if (!writable) this.#writable = false;
    if (confirm || mandatory) {
      entry.state = "inflight";
      this.#inflight.add(entry);
      this.#armSweeper();
    } else {
      this.#finish(entry, undefined);
    }
    return true;
  }

  #confirmed(entry: Entry, error: unknown): void {
    if (entry.messageId !== undefined) this.#returns.delete(entry.messageId);
    if (entry.state !== "inflight") return;
    if (error) {
      const closed = error instanceof Error && /closed/i.test(error.message);
      this.#finish(
        entry,
        closed
          ? new OrchestratorError("unknown_outcome", `publish to "${entry.request.routingKey}": the channel closed before the broker confirmed it; it may or may not have been published`, { cause: error })
          : new OrchestratorError("unavailable", `publish to "${entry.request.routingKey}": the broker refused it (basic.nack)`, { cause: error }),
      );
    } else if (entry.returned !== undefined) {
      this.#finish(
        entry,
        new OrchestratorError("not_found", `publish to "${entry.request.routingKey}" is unroutable: no queue is bound for it (${entry.returned})`, {
          retryable: false,
          details: { exchange: entry.request.exchange, routingKey: entry.request.routingKey },
        }),
      );
    } else {
      this.#finish(entry, undefined);
    }
  }

  #flush(): void {
    while (this.#buffered > 0 && this.#canWrite()) {
      const entry = this.#buffer[0] as Entry;
      if (entry.state !== "buffered") {
        this.#buffer.shift();
        continue;
      }
      entry.state = "new";
      this.#buffered--;
      if (!this.#write(entry)) {
        entry.state = "buffered";
        this.#buffered++;
        return;
      }
      this.#buffer.shift();
    }
    if (this.#buffered === 0 && this.#buffer.length > 0) this.#buffer = [];
  }

  #expire(entry: Entry): void {
    if (entry.state === "buffered" || entry.state === "new") {
      this.#finish(entry, new OrchestratorError("unavailable", `publish to "${entry.request.routingKey}" not sent: ${this.#options.outage()}`));
    } else if (entry.state === "inflight") {
      this.#finish(
        entry,
        new OrchestratorError("unknown_outcome", `publish to "${entry.request.routingKey}": no confirm from the broker in time; it may or may not have been published`),
      );
    }
  }

  #finish(entry: Entry, error: OrchestratorError | undefined): void {
    if (entry.state === "done") return;
    if (entry.state === "buffered") this.#buffered--;
    else if (entry.state === "inflight") this.#inflight.delete(entry);
    entry.state = "done";
    if (entry.timer !== undefined) clearTimeout(entry.timer);
    if (entry.onAbort) entry.request.signal?.removeEventListener("abort", entry.onAbort);
    if (error) entry.reject(error);
    else entry.resolve();
    if (this.pending === 0 && this.#idle.length > 0) {
      const idle = this.#idle;
      this.#idle = [];
      for (const resolve of idle) resolve();
    }
  }

  /** One coarse timer enforces the default timeout of buffered and unconfirmed publishes. */
  #armSweeper(): void {
    if (this.#sweeper !== undefined) return;
    this.#sweeper = setInterval(() => {
      const now = Date.now();
      for (const entry of this.#buffer) if (entry.state === "buffered" && entry.timer === undefined && entry.deadline <= now) this.#expire(entry);
      for (const entry of this.#inflight) if (entry.timer === undefined && entry.deadline <= now) this.#expire(entry);
      if (this.pending === 0) {
        clearInterval(this.#sweeper);
        this.#sweeper = undefined;
      }
    }, Math.min(1000, Math.max(10, this.#options.timeoutMs / 4)));
    this.#sweeper.unref?.();
  }
}
