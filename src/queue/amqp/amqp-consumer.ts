import type { Channel, ConsumeMessage } from "amqplib";
import { OrchestratorError } from "../../errors.ts";
import { decodeEnvelope } from "../../job/envelope.ts";
import type { JobEnvelope } from "../../job/envelope.ts";
import { checkInteger } from "../../validate.ts";
import type { Consumer, Delivery } from "../types.ts";
import type { AmqpConnection } from "./amqp-connection.ts";
import { AmqpDelivery, alreadySettled, deliveryLost } from "./amqp-delivery.ts";
import type { AmqpSettleAction, HeldMessage } from "./amqp-delivery.ts";
import { ChannelKeeper } from "./channel-keeper.ts";
import { closeQuietly } from "./errors.ts";
import { holdMarginMs } from "./hold-limit.ts";

const ignore = (): void => {};

/** What a consumer needs from its {@link AmqpQueue}: a narrow port, so the two stay apart. @internal */
export interface ConsumerHost {
  readonly connection: AmqpConnection;
  readonly queueName: string;
  readonly maxEnvelopeBytes: number;
  readonly consumerTimeoutMs: number;
  readonly handlerErrorDelayMs: number;
  /**
   * Publishes `job` (confirmed) to the job queue, after `delayMs`: the next attempt of a retry
   * (`reason` set), or a delivery handed back unchanged (no reason).
   */
  republish(job: JobEnvelope, delayMs: number, reason: string | undefined): Promise<void>;
  /** Publishes `message` to the dead-letter queue with `reason` (confirmed). */
  deadLetter(message: ConsumeMessage, reason: string, job: JobEnvelope | undefined, attempt: number | undefined): Promise<void>;
  report(error: OrchestratorError, source: "consumer" | "accept" | "channel"): void;
  deliveryLost(job: JobEnvelope, attempt: number, error: OrchestratorError): void;
  removed(consumer: AmqpConsumer): void;
  /**
   * Optional: a delivery handed to the handler stopped counting against it, once: its first
   * settle call, its loss with the channel, or its dead-lettering at the consumer timeout.
   */
  done?(delivery: AmqpDelivery): void;
}

/**
 * One slot of the prefetch: a broker consumer of prefetch 1, or, once `retired`, the delivery
 * it still holds (it keeps counting against the prefetch until settled).
 */
interface PrefetchSlot {
  held: HeldMessage | undefined;
  /**
   * Its basic.cancel, sent only while it held an unsettled delivery (so no credit: nothing can be
   * on its way to it); settles at cancel-ok, or when the channel dies. Its delivery is acked (or
   * nacked) only after that, or the ack's credit could draw a delivery the broker would return.
   */
  retired: Promise<void> | undefined;
}

/**
 * Times a message was delivered before and not settled. Quorum queues count them in
 * `x-delivery-count`, but write that header only from the second delivery on (RabbitMQ 3.10: a
 * first delivery passes a producer's own `x-delivery-count` through untouched, measured), so it
 * is read only when the broker says the message is a redelivery; a first delivery counts 0
 * whatever its headers say.
 */
export function priorDeliveries(message: Pick<ConsumeMessage, "fields" | "properties">): number {
  if (!message.fields.redelivered) return 0;
  const count = message.properties.headers?.["x-delivery-count"];
  if (typeof count === "number" && Number.isInteger(count) && count >= 1) return count;
  return 1;
}

/** A held message read: its envelope and attempt, or why it must be dead-lettered (`refusal`). @internal */
export type ReadMessage = { job: JobEnvelope; attempt: number; refusal?: undefined } | { job?: JobEnvelope; attempt?: number; refusal: string };

/**
 * Reads a delivered message as every consumer of job messages does: decodes the envelope, counts
 * the broker's prior deliveries into the attempt, and asks `accept` (a throw is reported and
 * refuses). @internal
 */
export function readMessage(
  message: ConsumeMessage,
  maxEnvelopeBytes: number,
  accept: ((job: JobEnvelope) => string | undefined) | undefined,
  report: (error: OrchestratorError) => void,
): ReadMessage {
  let job: JobEnvelope;
  try {
    job = decodeEnvelope(message.content, { maxBytes: maxEnvelopeBytes });
  } catch (error) {
    return { refusal: `invalid envelope: ${OrchestratorError.from(error).rawMessage}` };
  }
  const attempt = job.attempt + priorDeliveries(message);
  if (accept === undefined) return { job, attempt };
  try {
    const verdict = accept(job);
    return typeof verdict === "string" ? { job, attempt, refusal: verdict } : { job, attempt };
  } catch (cause) {
    const error = OrchestratorError.from(cause);
    report(error);
    return { job, attempt, refusal: `accept() threw: ${error.rawMessage}` };
  }
}

/**
 * Hands `delivery` to the consumer's handler. A handler that throws is reported (`consumer`) and,
 * unless it settled the delivery first, the delivery is retried after `retryDelayMs`. @internal
 */
export function handOver(handler: (delivery: Delivery) => void, delivery: AmqpDelivery, report: (error: OrchestratorError) => void, retryDelayMs: number): void {
  try {
    handler(delivery);
  } catch (cause) {
    const error = OrchestratorError.from(cause);
    report(error);
    if (!delivery.settled) delivery.retry(retryDelayMs, `consumer handler threw: ${error.rawMessage}`).catch(ignore);
  }
}

/**
 * A consumption of an {@link AmqpQueue}: manual acks, one channel of its own (restored after
 * every loss), and a prefetch that can change at run time.
 *
 * Prefetch: RabbitMQ applies `basic.qos` (global=false) only to consumers created after it, and
 * quorum queues refuse global QoS (the broker closes the whole connection with 540). So the
 * prefetch is held as that many broker consumers of prefetch 1 each on one channel; raising it
 * adds consumers.
 *
 * Lowering it never cancels an idle consumer: on a quorum queue (3.10) a delivery that reaches a
 * consumer the channel is cancelling is handed back to the queue unseen, and counted in
 * `x-delivery-count` as if a consumer had died holding it, so every such cancel could cost a
 * job an attempt (and, cancelled one after another in the order the queue serves them, several,
 * up to the delivery limit). A consumer is cancelled only while it holds an unsettled delivery
 * (prefetch 1, so no credit: nothing can be on its way to it), and acked only after cancel-ok:
 * while there are more consumers than the prefetch, each one whose delivery arrives or is
 * settled retires. A delivery that arrives while as many as the prefetch are held is not handed
 * to the handler: a copy is published to the back of the queue (same attempt), then it is acked.
 * Throughput equals one consumer of the same prefetch (measured: docs/rabbitmq.md).
 * @internal
 */
export class AmqpConsumer implements Consumer {
  readonly #host: ConsumerHost;
  readonly #handler: (delivery: Delivery) => void;
  readonly #accept: ((job: JobEnvelope) => string | undefined) | undefined;
  /** Moves a keyed job to its concurrency key's queue (confirmed). */
  readonly #route: ((job: JobEnvelope) => Promise<void>) | undefined;
  readonly #keeper: ChannelKeeper;
  readonly #held = new Set<HeldMessage>();
  readonly #settleBound = (held: HeldMessage, action: AmqpSettleAction) => this.#settle(held, action);
  #prefetch: number;
  #channel: Channel | undefined;
  #slots = new Map<string, PrefetchSlot>();
  #serial: Promise<void> = Promise.resolve();
  #cancelled = false;
  #sweeper: ReturnType<typeof setInterval> | undefined;

  constructor(
    host: ConsumerHost,
    handler: (delivery: Delivery) => void,
    prefetch: number,
    accept: ((job: JobEnvelope) => string | undefined) | undefined,
    route?: (job: JobEnvelope) => Promise<void>,
  ) {
    this.#host = host;
    this.#handler = handler;
    this.#prefetch = prefetch;
    this.#accept = accept;
    this.#route = route;
    this.#keeper = new ChannelKeeper(host.connection, {
      what: `consumer of "${host.queueName}"`,
      setup: (channel) => this.#setup(channel),
      lost: (channel, error) => this.#lost(channel, error),
      report: (error) => host.report(error, "channel"),
    });
  }

  get prefetch(): number {
    return this.#prefetch;
  }

  /** Unsettled deliveries held now (valid or not). */
  get held(): number {
    return this.#held.size;
  }

  /** Opens the channel and starts consuming. @internal */
  async start(): Promise<void> {
    await this.#keeper.start();
    if (this.#host.consumerTimeoutMs > 0) {
      const margin = holdMarginMs(this.#host.consumerTimeoutMs);
      this.#sweeper = setInterval(() => this.#sweepTimeouts(margin), Math.max(20, Math.min(30_000, Math.floor(margin / 2))));
      this.#sweeper.unref?.();
    }
  }

  async setPrefetch(prefetch: number): Promise<void> {
    this.#prefetch = checkInteger("prefetch", prefetch, 0, 65_535);
    await this.#serialize(() => this.#reconcile());
  }

  async cancel(): Promise<void> {
    if (this.#cancelled) return;
    this.#cancelled = true;
    if (this.#sweeper !== undefined) clearInterval(this.#sweeper);
    await this.#keeper.close();
    this.#host.removed(this);
  }

  async #setup(channel: Channel): Promise<void> {
    this.#channel = channel;
    this.#slots = new Map();
    await channel.prefetch(1);
    await this.#serialize(() => this.#reconcile());
  }

  /** Runs broker-consumer changes one at a time. */
  #serialize(task: () => Promise<void>): Promise<void> {
    const run = this.#serial.then(task);
    this.#serial = run.catch(() => {});
    return run;
  }

  /**
   * Raises the number of broker consumers to the prefetch. Lowering cancels nothing here: slots
   * over the prefetch retire when their next delivery arrives or is settled (see the class).
   */
  async #reconcile(): Promise<void> {
    const channel = this.#channel;
    if (!channel || this.#cancelled) return;
    const onMessage = (message: ConsumeMessage | null) => this.#onMessage(channel, message);
    try {
      while (this.#slots.size < this.#prefetch && channel === this.#channel) {
        const { consumerTag } = await channel.consume(this.#host.queueName, onMessage, { noAck: false });
        if (!this.#slots.has(consumerTag)) this.#slots.set(consumerTag, { held: undefined, retired: undefined });
      }
    } catch {
      // The channel died mid-change; the keeper reopens it and setup reconciles again.
    }
  }

  /**
   * Cancels the prefetch slot of `held` if there are more slots than the prefetch. Safe only
   * because the slot holds `held` unsettled (no credit); callers settle `held` after `slot.retired`.
   */
  #retireIfExcess(held: HeldMessage): PrefetchSlot | undefined {
    if (held.channel !== this.#channel) return undefined;
    const slot = this.#slots.get(held.consumerTag);
    if (!slot || slot.retired || this.#slots.size <= this.#prefetch) return slot;
    // A channel that dies first loses the delivery, which the settle checks next.
    slot.retired = held.channel.cancel(held.consumerTag).then(ignore, ignore);
    return slot;
  }

  #onMessage(channel: Channel, message: ConsumeMessage | null): void {
    if (message === null) {
      // The broker cancelled the consumer: the queue was deleted. Close this channel first (a
      // quorum queue re-created under the same name would otherwise be served to its stale
      // consumer), declare the queue again; the keeper then restores the consumers.
      this.#host.report(new OrchestratorError("unavailable", `the broker cancelled the consumer of "${this.#host.queueName}" (queue deleted?); re-declaring`), "channel");
      void closeQuietly(channel).then(() => this.#host.connection.redeclare());
      return;
    }
    if (channel !== this.#channel || this.#cancelled) return; // the channel is closing; the broker takes it back
    const tag = message.fields.consumerTag;
    let slot = this.#slots.get(tag);
    if (!slot) {
      slot = { held: undefined, retired: undefined };
      this.#slots.set(tag, slot);
    }
    const held: HeldMessage = { channel, message, consumerTag: tag, receivedAt: Date.now(), settled: false, lost: false };
    slot.held = held;
    this.#held.add(held);
    // The prefetch was lowered: this slot holds a delivery now, so it can be cancelled safely.
    this.#retireIfExcess(held);

    const read = readMessage(message, this.#host.maxEnvelopeBytes, this.#accept, (error) => this.#host.report(error, "accept"));
    if (read.refusal !== undefined) {
      void this.#deadLetterHeld(held, read.job, read.attempt, read.refusal);
      return;
    }
    const { job, attempt } = read;
    if (job.concurrency !== undefined && this.#route !== undefined) {
      void this.#routeHeld(held, { ...job, attempt });
      return;
    }
    const delivery = new AmqpDelivery(job, attempt, held, this.#settleBound);
    held.delivery = delivery;
    if (this.#held.size > this.#prefetch) {
      void this.#handBack(held, delivery);
      return;
    }
    handOver(this.#handler, delivery, (error) => this.#host.report(error, "consumer"), this.#host.handlerErrorDelayMs);
  }

  async #settle(held: HeldMessage, action: AmqpSettleAction): Promise<void> {
    const job = held.delivery?.job;
    const attempt = held.delivery?.attempt ?? 0;
    if (held.settled) throw alreadySettled(job, attempt);
    held.settled = true;
    if (held.delivery) this.#host.done?.(held.delivery);
    if (held.lost) throw deliveryLost(job, attempt, action.kind);
    if (action.kind !== "ack" && job) {
      try {
        if (action.kind === "retry") await this.#host.republish({ ...job, attempt: attempt + 1 }, action.delayMs, action.reason);
        else await this.#host.deadLetter(held.message, action.reason, job, attempt);
      } catch (error) {
        // Not moved: give the message back so it is delivered again rather than held forever.
        await this.#giveBack(held);
        throw error;
      }
      if (held.lost) throw deliveryLost(job, attempt, `ack after ${action.kind} (the new copy was published, so the job may run twice)`);
    }
    await this.#ack(held, job, attempt);
  }

  /**
   * Puts an unsettled delivery the handler never saw back at the back of its queue without
   * spending an attempt (see `#handBack`). @internal
   */
  release(delivery: AmqpDelivery): void {
    for (const held of this.#held) {
      if (held.delivery === delivery && !held.settled && !held.lost) void this.#handBack(held, delivery);
    }
  }

  /**
   * Puts back a delivery that arrived over the prefetch (it was lowered while slots were idle),
   * unseen by the handler: a copy with the same attempt goes to the back of the queue, then the
   * original is acked. Not a nack: the broker would count that as a failed delivery.
   */
  async #handBack(held: HeldMessage, delivery: AmqpDelivery): Promise<void> {
    held.settled = true;
    try {
      await this.#host.republish({ ...delivery.job, attempt: delivery.attempt }, 0, undefined);
    } catch (error) {
      this.#host.report(OrchestratorError.from(error), "consumer");
      await this.#giveBack(held);
      return;
    }
    await this.#ack(held, delivery.job, delivery.attempt).catch((error: unknown) => {
      // The channel died after the copy was published: the original went back too.
      this.#host.report(OrchestratorError.from(error), "channel");
    });
  }

  /**
   * Moves a keyed job to its concurrency key's queue: the copy (same attempt) is confirmed, then
   * the original acked. Like a hand-back, it never reaches the handler from here.
   */
  async #routeHeld(held: HeldMessage, job: JobEnvelope): Promise<void> {
    held.settled = true;
    try {
      await (this.#route as (job: JobEnvelope) => Promise<void>)(job);
    } catch (error) {
      this.#host.report(OrchestratorError.from(error), "consumer");
      await this.#giveBack(held);
      return;
    }
    await this.#ack(held, job, job.attempt).catch((error: unknown) => {
      // The channel died after the copy was published: the original went back too (a duplicate).
      this.#host.report(OrchestratorError.from(error), "channel");
    });
  }

  /**
   * Dead-letters a held message on the consumer's own initiative: one the handler never saw
   * (invalid, refused) or one it saw but held past the broker's `consumer_timeout`.
   */
  async #deadLetterHeld(held: HeldMessage, job: JobEnvelope | undefined, attempt: number | undefined, reason: string): Promise<void> {
    held.settled = true;
    try {
      await this.#host.deadLetter(held.message, reason, job, attempt);
    } catch (error) {
      this.#host.report(OrchestratorError.from(error), "consumer");
      await this.#giveBack(held);
      return;
    }
    if (held.lost) return;
    await this.#ack(held, job, held.delivery?.attempt ?? 0).catch(() => {});
  }

  async #ack(held: HeldMessage, job: JobEnvelope | undefined, attempt: number): Promise<void> {
    // Over the prefetch: cancel the slot's consumer before the ack, so it receives nothing new.
    await this.#retireIfExcess(held)?.retired;
    if (held.lost) throw deliveryLost(job, attempt, "ack");
    try {
      held.channel.ack(held.message);
    } catch (cause) {
      throw deliveryLost(job, attempt, "ack", cause);
    }
    this.#forget(held);
  }

  /** Nacks (requeue) a delivery that could not be moved; the broker counts it as delivered once. */
  async #giveBack(held: HeldMessage): Promise<void> {
    // A retiring slot must not regain credit before its cancel-ok (see PrefetchSlot.retired).
    if (held.channel === this.#channel) await this.#slots.get(held.consumerTag)?.retired;
    if (held.lost) return;
    try {
      held.channel.nack(held.message, false, true);
    } catch {
      // The channel is closed: the broker took it back already.
    }
    this.#forget(held);
  }

  #forget(held: HeldMessage): void {
    this.#held.delete(held);
    const slot = this.#slots.get(held.consumerTag);
    if (!slot || slot.held !== held) return;
    slot.held = undefined;
    if (!slot.retired) return;
    this.#slots.delete(held.consumerTag);
    // A raised prefetch may have been waiting for this slot.
    if (this.#slots.size < this.#prefetch) void this.#serialize(() => this.#reconcile());
  }

  #lost(channel: Channel, error: OrchestratorError): void {
    if (channel === this.#channel) this.#channel = undefined;
    // The broker's consumer_timeout fired before ours: it is lower than consumerTimeoutMs.
    if (error.details.reason === "consumer_timeout") this.#host.report(error, "channel");
    for (const held of [...this.#held]) {
      if (held.channel !== channel) continue;
      held.lost = true;
      this.#held.delete(held);
      const delivery = held.delivery;
      if (delivery && !held.settled) {
        const reason = deliveryLost(delivery.job, delivery.attempt, "settle", error);
        this.#host.done?.(delivery);
        delivery.abort(reason);
        this.#host.deliveryLost(delivery.job, delivery.attempt, reason);
      }
    }
  }

  /**
   * The broker closes a channel whose delivery stays unacked past its `consumer_timeout`, losing
   * every delivery on it. Before that happens, a delivery held that long is dead-lettered with
   * the reason and its signal aborted, so only that job fails.
   */
  #sweepTimeouts(marginMs: number): void {
    const limit = this.#host.consumerTimeoutMs - marginMs;
    const now = Date.now();
    for (const held of this.#held) {
      if (held.settled || held.lost || now - held.receivedAt < limit) continue;
      const delivery = held.delivery;
      const jobId = delivery?.job.id ?? "(invalid message)";
      const reason =
        `consumer_timeout: job ${jobId} was held ${now - held.receivedAt} ms without an ack, close to the broker's consumer_timeout ` +
        `(consumerTimeoutMs ${this.#host.consumerTimeoutMs}); raise consumer_timeout on the broker and consumerTimeoutMs (see docs/rabbitmq.md)`;
      void this.#deadLetterHeld(held, delivery?.job, delivery?.attempt, reason); // marks it settled before the signal fires
      if (delivery) this.#host.done?.(delivery);
      delivery?.abort(new OrchestratorError("deadline_exceeded", reason, { retryable: false, details: { reason: "consumer_timeout", jobId } }));
    }
  }
}
