import { randomUUID } from "node:crypto";
import type { Channel, ConsumeMessage } from "amqplib";
import { EventEmitter } from "eventemitter3";
import { OrchestratorError } from "../../errors.ts";
import { reportListenerError } from "../../events.ts";
import { checkFunction, checkInteger, checkObject, checkString, optional } from "../../validate.ts";
import type { Candidacy, LeaderTerm, Leadership } from "../leadership.ts";
import { connectionFrom, type AmqpConnection, type AmqpConnectionOptions } from "./amqp-connection.ts";
import { ChannelKeeper } from "./channel-keeper.ts";
import { DEFAULT_QUEUE_NAME } from "./topology.ts";

/** Options of {@link AmqpLeadership}: its own, plus either `connection` or the connection options. */
export interface AmqpLeadershipOptions extends Partial<AmqpConnectionOptions> {
  /** A shared connection (the one of the process's `AmqpQueue`); else one is opened from the connection options. */
  connection?: AmqpConnection;
  /**
   * The deployment's queue name: an election `name` uses the quorum queue `${queueName}.${name}.leader`
   * (the scheduler's: `${queueName}.schedules.leader`).
   * @default "blacktree.jobs"
   */
  queueName?: string;
  /**
   * How often the leader swaps its lease token for a fresh one, in milliseconds, so it never
   * holds one delivery longer than RabbitMQ's `consumer_timeout` (30 min by default; a quorum
   * queue with single active consumer does not recover from a timed-out consumer on its own).
   * @default 60000
   */
  renewIntervalMs?: number;
}

/** Events of {@link AmqpLeadership}. */
export interface AmqpLeadershipEvents {
  /** A failure no call can report (a token that could not be renewed, a channel that could not open); the election goes on. */
  error: [{ error: OrchestratorError }];
}

/**
 * A {@link Leadership} on RabbitMQ: a durable quorum queue per election with single active
 * consumer, holding one lease token. Every candidate consumes it (prefetch 2, manual acks);
 * RabbitMQ delivers only to the active consumer, which holds the token unacknowledged and leads.
 * When its channel or connection dies (the process crashed, the network is gone), the broker
 * returns the token to the queue and makes the next consumer active, which receives it and
 * leads; no timeout to wait for, no clock to trust.
 *
 * Seeding: every candidate publishes a token when it joins (so a fresh queue gets one without
 * a race to decide who seeds). Extra tokens cannot make a second leader, since all tokens go to
 * the one active consumer; the leader acks (drops) every token beyond the one it holds. A
 * leader cut off from the broker while the broker already moved the token on leads until it
 * notices (heartbeats bound that); the scheduler's deterministic job ids keep that harmless.
 *
 * @example
 * ```ts
 * const leadership = new AmqpLeadership({ connection, queueName: "builds" });
 * const scheduler = new Scheduler({ queue, events, store, schedules, leadership });
 * ```
 */
export class AmqpLeadership extends EventEmitter<AmqpLeadershipEvents> implements Leadership {
  readonly #connection: AmqpConnection;
  readonly #owned: boolean;
  readonly #queueName: string;
  readonly #renewMs: number;
  readonly #candidates = new Set<AmqpCandidate>();
  #closed = false;

  /** Checks the options; does no I/O. @throws {OrchestratorError} `invalid_argument` naming the first bad option. */
  constructor(options: AmqpLeadershipOptions) {
    super();
    const o = checkObject("options", options);
    this.#queueName = optional(o.queueName, DEFAULT_QUEUE_NAME, (v) => checkString("queueName", v, 200));
    this.#renewMs = optional(o.renewIntervalMs, 60_000, (v) => checkInteger("renewIntervalMs", v, 10, 24 * 3_600_000));
    const { queueName: _q, renewIntervalMs: _r, ...connectionOptions } = o;
    const { connection, owned } = connectionFrom(connectionOptions);
    this.#connection = connection;
    this.#owned = owned;
  }

  /** The queue an election of `name` uses. */
  queueOf(name: string): string {
    return `${this.#queueName}.${name}.leader`;
  }

  async campaign(name: string, onTerm: (term: LeaderTerm) => void): Promise<Candidacy> {
    if (this.#closed) throw new OrchestratorError("queue_closed", "the leadership is closed");
    checkString("name", name, 200);
    checkFunction("onTerm", onTerm);
    const candidate = new AmqpCandidate(this.#connection, this.queueOf(name), this.#renewMs, onTerm, (error) => reportListenerError(this, error), () => {
      this.#candidates.delete(candidate);
    });
    this.#candidates.add(candidate);
    try {
      await candidate.start();
    } catch (error) {
      await candidate.resign();
      throw error;
    }
    return candidate;
  }

  /** Resigns every candidacy, then closes the connection if it opened it. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all([...this.#candidates].map((c) => c.resign()));
    if (this.#owned) await this.#connection.close();
  }
}

/** One candidate: a channel consuming the election queue, and the token it holds while it leads. @internal */
class AmqpCandidate implements Candidacy {
  readonly #connection: AmqpConnection;
  readonly #queue: string;
  readonly #renewMs: number;
  readonly #onTerm: (term: LeaderTerm) => void;
  readonly #report: (error: OrchestratorError) => void;
  readonly #gone: () => void;
  readonly #keeper: ChannelKeeper;
  /** The token held, on the channel it was delivered on. */
  #held: { channel: Channel; message: ConsumeMessage } | undefined;
  /** A fresh token was published; the next one delivered replaces the one held. */
  #swapping = false;
  #controller: AbortController | undefined;
  #term: LeaderTerm | undefined;
  #renew: ReturnType<typeof setInterval> | undefined;
  #resigned: Promise<void> | undefined;

  constructor(connection: AmqpConnection, queue: string, renewMs: number, onTerm: (term: LeaderTerm) => void, report: (error: OrchestratorError) => void, gone: () => void) {
    this.#connection = connection;
    this.#queue = queue;
    this.#renewMs = renewMs;
    this.#onTerm = onTerm;
    this.#report = report;
    this.#gone = gone;
    this.#keeper = new ChannelKeeper(connection, {
      what: `leader election "${queue}"`,
      setup: (channel) => this.#setup(channel),
      lost: (channel, error) => {
        if (this.#held?.channel === channel) this.#held = undefined;
        this.#swapping = false;
        this.#endTerm(error);
      },
      report,
    });
  }

  get term(): LeaderTerm | undefined {
    return this.#term;
  }

  start(): Promise<void> {
    return this.#keeper.start();
  }

  async #setup(channel: Channel): Promise<void> {
    await channel.assertQueue(this.#queue, { durable: true, arguments: { "x-queue-type": "quorum", "x-single-active-consumer": true } });
    // Two: the token held, and room to receive (and drop) an extra one or the renewed one.
    await channel.prefetch(2);
    await channel.consume(this.#queue, (message) => this.#onMessage(channel, message), { noAck: false });
    await this.#publishToken();
  }

  #publishToken(): Promise<void> {
    const body = Buffer.from(JSON.stringify({ token: randomUUID(), at: new Date().toISOString() }));
    return this.#connection.publish({ exchange: "", routingKey: this.#queue, body, properties: { persistent: true, contentType: "application/json" }, confirm: true });
  }

  #onMessage(channel: Channel, message: ConsumeMessage | null): void {
    if (message === null) {
      // The broker cancelled the consumer (the queue was deleted): a new channel declares it again.
      channel.close().catch(() => {});
      return;
    }
    if (this.#resigned !== undefined) return;
    const held = this.#held;
    if (held === undefined || held.channel !== channel) {
      this.#held = { channel, message };
      this.#beginTerm();
      return;
    }
    if (this.#swapping) {
      this.#swapping = false;
      this.#held = { channel, message };
      channel.ack(held.message);
      return;
    }
    // A token beyond the one held (seeded by a candidate that joined): dropped, so one remains.
    channel.ack(message);
  }

  #beginTerm(): void {
    if (this.#term !== undefined) return;
    this.#controller = new AbortController();
    this.#term = { signal: this.#controller.signal, since: Date.now() };
    this.#renew = setInterval(() => this.#renewToken(), this.#renewMs);
    this.#renew.unref?.();
    try {
      this.#onTerm(this.#term);
    } catch (error) {
      this.#report(OrchestratorError.from(error));
    }
  }

  #renewToken(): void {
    if (this.#swapping || this.#held === undefined) return;
    this.#swapping = true;
    this.#publishToken().catch((error: unknown) => {
      this.#swapping = false;
      this.#report(OrchestratorError.from(error));
    });
  }

  #endTerm(reason: OrchestratorError): void {
    clearInterval(this.#renew);
    this.#renew = undefined;
    const controller = this.#controller;
    this.#controller = undefined;
    this.#term = undefined;
    controller?.abort(new OrchestratorError("unavailable", `leadership lost: ${reason.rawMessage}`, { cause: reason, details: { reason: "leadership_lost" } }));
  }

  resign(): Promise<void> {
    this.#resigned ??= (async () => {
      // Closing the channel returns the token to the queue; the next candidate receives it.
      await this.#keeper.close();
      this.#gone();
    })();
    return this.#resigned;
  }
}
