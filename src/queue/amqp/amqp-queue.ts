import { randomUUID } from "node:crypto";
import type { Channel, ConsumeMessage, GetMessage, Options } from "amqplib";
import { EventEmitter } from "eventemitter3";
import { invalidArgument, OrchestratorError } from "../../errors.ts";
import {
  checkEnvelopeSize, DEFAULT_MAX_ENVELOPE_BYTES, DEFAULT_PRIORITY, encodeEnvelope, parseEnvelope, priorityOf, redrivenEnvelope, traceHeaders,
} from "../../job/envelope.ts";
import type { JobEnvelope } from "../../job/envelope.ts";
import { emitSafely } from "../../events.ts";
import { throwIfAborted } from "../../signals.ts";
import { dueInMs, MAX_DELAY_MS } from "../../job/due-time.ts";
import { MAX_TIMER_MS } from "../../timers.ts";
import { checkBoolean, checkFunction, checkInteger, checkObject, checkSignal, optional } from "../../validate.ts";
import { checkAgingPicks, DEFAULT_PRIORITY_AGING_PICKS } from "../lanes.ts";
import { AmqpLaneConsumer } from "./lane-consumer.ts";
import { checkDeadLetterIds, deadLettersLimit, resolveRedriveOptions } from "../redrive-options.ts";
import type { Consumer, ConsumeOptions, DeadLetterInfo, DeadLettersOptions, Delivery, EnqueueOptions, JobQueue, KeyHooks, QueueDepth, RedriveOptions, RedriveResult, WaitOptions } from "../types.ts";
import { connectionFrom } from "./amqp-connection.ts";
import { forwardConnectionEvents, reporter } from "./report.ts";
import type { AmqpConnection, AmqpConnectionOptions, AmqpNodeInfo } from "./amqp-connection.ts";
import { AmqpConsumer } from "./amqp-consumer.ts";
import type { ConsumerHost } from "./amqp-consumer.ts";
import { DEAD_LETTER_HEADERS, deadLetterCopy, readDeadLetter } from "./dead-letter-message.ts";
import { closeQuietly, fromAmqpError } from "./errors.ts";
import { holdLimitWarning } from "./hold-limit.ts";
import { DelayCascade } from "./delay-cascade.ts";
import {
  declareJobTopology, declareKeyLog, declareKeyQueue, KEY_LOG_RETENTION_MS, keyQueueName, laneQueueName, laneQueueNames, resolveTopologyNames,
} from "./topology.ts";
import { AmqpKeyConsumer, type KeyConsumerHost } from "./key-consumer.ts";
import { keyWaitReason, type JobConcurrency } from "../../job/concurrency.ts";
import { notifyWaiting } from "../key-holders.ts";
import type { AmqpTopologyNames } from "./topology.ts";
import { type ClientTelemetry, clientTelemetry } from "../../telemetry/client-telemetry.ts";
import { type Logger, logSafely, resolveLogger } from "../../telemetry/logger.ts";

/** Options of {@link AmqpQueue}: its own, plus either `connection` or the connection options. */
export interface AmqpQueueOptions extends Partial<AmqpConnectionOptions> {
  /** A connection shared with an {@link AmqpEvents}; the queue never closes it. Else give `url`. */
  connection?: AmqpConnection;
  /** The job queue; every other name derives from it. @default "blacktree.jobs" */
  queueName?: string;
  /** Overrides of single names. */
  names?: Partial<AmqpTopologyNames>;
  /**
   * Quorum `x-delivery-limit`: how many times a message may go back to the queue unsettled (its
   * consumer's channel or connection died) before the broker dead-letters it, reason
   * `delivery_limit`. Guards against a job that crashes its orchestrator every time. Each
   * connection loss mid-job counts once. Part of the queue's identity: changing it needs a new queue.
   * @default 10
   */
  deliveryLimit?: number;
  /** Largest envelope accepted; larger enqueues reject, larger messages are dead-lettered. @default 1 MiB */
  maxEnvelopeBytes?: number;
  /**
   * The broker's `consumer_timeout` in ms (RabbitMQ 3.10 default 30 minutes; 0 if disabled). A
   * delivery held unacked this long makes the broker close the channel and lose every delivery
   * on it, so the queue dead-letters a delivery held close to it (a tenth, at most a minute,
   * before) with reason `consumer_timeout` and aborts its `signal`. Set it to what the broker uses.
   * @default 1_800_000
   */
  consumerTimeoutMs?: number;
  /** When a consumer's handler throws, its delivery is retried after this long. @default 1000 */
  handlerErrorDelayMs?: number;
  /**
   * Concurrency keys: how long a keyed job whose holder was lost (its dispatcher died or lost its
   * channel, so the broker gave the key's place back) waits before it starts elsewhere, so that
   * the lost holder's attempt has stopped on its worker first (a worker aborts the jobs of an
   * orchestrator whose session ends at once; the handler must honour its signal within this).
   * @default 1000
   */
  keyHandoverDelayMs?: number;
  /**
   * Concurrency keys: a dispatcher stops consuming a key's queue once the key has been idle this
   * long here (nothing of it held) and no process has announced it in the key log meanwhile (a
   * process routing the key, or holding its deliveries, announces it every third of this). A key
   * used again is consumed again at once.
   * @default 10_800_000 (3 hours)
   */
  keyIdleMs?: number;
  /**
   * Concurrency keys: the key queue's `x-expires`: the broker deletes it once it has had no
   * consumer (every dispatcher stopped consuming it, `keyIdleMs`) and no declaration this long,
   * so a queue per key does not pile up. Jobs waiting in it go with it, so this is also the longest
   * that every dispatcher of the deployment may be down while keyed jobs wait: keep it long.
   * Part of the key queue's identity: a key queue declared with another value (or before key
   * queues expired) is used as it is, and reported once.
   * @default 604_800_000 (7 days, the key log's retention)
   */
  keyQueueExpiresMs?: number;
  /**
   * Priority lanes (`JobSpec.priority`): one quorum queue per level, `${queueName}.p1` … `.p5`,
   * the default level 3 being `queueName` itself. A consumer takes the highest level first and
   * gives a lower level that waited `priorityAgingPicks` picks the next turn. With `false` only
   * `queueName` is declared and consumed, and a job of another priority is refused; keyed
   * deliveries held then do not count against the prefetch (the single queue's consumer cannot
   * hold a delivery back without sending it to the back of the queue), so a consumer holding
   * keyed jobs may take up to `prefetch` unkeyed ones besides.
   * @default true
   */
  priorityLanes?: boolean;
  /**
   * Picks after which a waiting job of a lower priority level gets the next turn (see
   * `priorityLanes`); the same rule as `MemoryQueue`'s.
   * @default 10
   */
  priorityAgingPicks?: number;
}

interface ResolvedQueueOptions {
  names: AmqpTopologyNames;
  deliveryLimit: number;
  maxEnvelopeBytes: number;
  consumerTimeoutMs: number;
  handlerErrorDelayMs: number;
  keyHandoverDelayMs: number;
  keyIdleMs: number;
  keyQueueExpiresMs: number;
  priorityLanes: boolean;
  priorityAgingPicks: number;
}

/** A key this queue routes is written to the key log again after this long at most (its retention is 7 days). */
const ANNOUNCE_AGAIN_MS = 60 * 60 * 1000;

/** How often a key in use is written to the key log again: well within `keyIdleMs`, so no dispatcher forgets it. */
function announceEveryMs(keyIdleMs: number): number {
  return Math.min(ANNOUNCE_AGAIN_MS, Math.floor(keyIdleMs / 3));
}

function resolveQueueOptions(o: Record<string, unknown>): ResolvedQueueOptions {
  if (o.delayLevelsMs !== undefined) {
    // Removed, not ignored: whoever set it expects rounded delays, and must learn they are exact now.
    throw new OrchestratorError("invalid_argument", "`delayLevelsMs` was removed: delays and retry backoffs are exact now (see docs/rabbitmq.md, \"Delays\"); remove the option", {
      details: { field: "delayLevelsMs" },
    });
  }
  return {
    names: resolveTopologyNames(o.queueName, o.names),
    deliveryLimit: optional(o.deliveryLimit, 10, (v) => checkInteger("deliveryLimit", v, 1, 10_000)),
    maxEnvelopeBytes: optional(o.maxEnvelopeBytes, DEFAULT_MAX_ENVELOPE_BYTES, (v) => checkInteger("maxEnvelopeBytes", v, 1024, 128 * 1024 * 1024)),
    consumerTimeoutMs: optional(o.consumerTimeoutMs, 1_800_000, (v) => checkInteger("consumerTimeoutMs", v, 0)),
    handlerErrorDelayMs: optional(o.handlerErrorDelayMs, 1000, (v) => checkInteger("handlerErrorDelayMs", v, 0)),
    keyHandoverDelayMs: optional(o.keyHandoverDelayMs, 1000, (v) => checkInteger("keyHandoverDelayMs", v, 0, MAX_TIMER_MS)),
    keyIdleMs: optional(o.keyIdleMs, 3 * 60 * 60 * 1000, (v) => checkInteger("keyIdleMs", v, 100, MAX_TIMER_MS)),
    keyQueueExpiresMs: optional(o.keyQueueExpiresMs, KEY_LOG_RETENTION_MS, (v) => checkInteger("keyQueueExpiresMs", v, 1000, 2 ** 31 - 1)),
    priorityLanes: optional(o.priorityLanes, true, (v) => checkBoolean("priorityLanes", v)),
    priorityAgingPicks: optional(o.priorityAgingPicks, DEFAULT_PRIORITY_AGING_PICKS, (v) => checkAgingPicks("priorityAgingPicks", v)),
  };
}

/** Events of {@link AmqpQueue}. */
export interface AmqpQueueEvents {
  /** The connection was lost; deliveries held on it are lost too (see `deliveryLost`). */
  disconnected: [{ error: OrchestratorError; node?: AmqpNodeInfo }];
  /** The connection is back; topology re-declared, consumers restore themselves. */
  reconnected: [{ attempts: number; downtimeMs: number; node?: AmqpNodeInfo }];
  /**
   * A delivery was taken back before it was settled (its channel died or its consumer stopped);
   * its `signal` aborted with `error`, and the job will be delivered again.
   */
  deliveryLost: [{ jobId: string; attempt: number; error: OrchestratorError }];
  /** This process moved a message to the dead-letter queue (the broker's own moves are not seen here). */
  deadLettered: [{ info: DeadLetterInfo }];
  /**
   * Something failed that no call can report: a consumer handler or `accept` threw, a channel
   * could not be restored, the connection failed. Without a listener the first is logged once.
   * Source `config`: the first job enqueued or delivered whose `timeoutMs` exceeds what
   * `consumerTimeoutMs` lets a delivery be held (`details.reason: "consumer_timeout_too_low"`,
   * the message names the fix); without a listener it is logged with `console.warn`.
   */
  error: [{ error: OrchestratorError; source: "consumer" | "accept" | "channel" | "connection" | "listener" | "config" }];
}

/** Options of {@link AmqpQueue.deadLetters}. */
const CLOSED = (what: string) => new OrchestratorError("queue_closed", `cannot ${what}: the AmqpQueue is closed`);

/**
 * A {@link JobQueue} on RabbitMQ (amqplib), for many orchestrator processes competing on one
 * durable queue.
 *
 * Topology (declared on first use and after every reconnect; names from `queueName`):
 * - `queueName`: durable quorum queue, `x-delivery-limit` = `deliveryLimit`, dead-lettering (at
 *   least once) to `${queueName}.dead`;
 * - `${queueName}.dead`: dead letters. Those this SDK moves carry `x-blacktree-reason`; those the
 *   broker moves (delivery limit) carry `x-death`. A copy carries only headers this SDK writes
 *   (never the original table: its `CC`/`BCC` would route the copy back). {@link AmqpQueue.deadLetters} reads both;
 * - the delay cascade (`DelayCascade`): quorum queues `${queueName}.delay.<2^n>ms` (TTL `2^n`
 *   ms) and topic exchanges `${queueName}.delay.level.<n>` and `${queueName}.delay.due`, declared
 *   on first use up to the level a delay needs. A job due later (`runAt`), a delayed enqueue and
 *   a retry's backoff wait there exactly as long as asked (plus a few ms per set bit of the
 *   delay), then enter the job queue.
 * - `${queueName}.p1`, `.p2`, `.p4`, `.p5` (unless `priorityLanes: false`): the priority lanes, quorum
 *   queues with the job queue's arguments; `queueName` itself is level 3 (see `JobSpec.priority`).
 *
 * Publishes use publisher confirms and `mandatory` (an unroutable job rejects `not_found`);
 * consumers ack manually, hold at most their prefetch (changeable at run time), and never hand
 * an invalid envelope to a handler. Connection and channel losses are recovered with backoff;
 * a delivery lost with its channel aborts its `signal` and its settles reject `queue_closed`.
 *
 * @example
 * ```ts
 * const connection = new AmqpConnection({ url: process.env.AMQP_URL! });
 * const queue = new AmqpQueue({ connection, queueName: "builds" });
 * const events = new AmqpEvents({ connection, queueName: "builds" });
 * const dispatcher = new Dispatcher({ queue, events, pool });
 * ```
 */
export class AmqpQueue extends EventEmitter<AmqpQueueEvents> implements JobQueue {
  readonly #options: ResolvedQueueOptions;
  readonly #connection: AmqpConnection;
  readonly #owned: boolean;
  readonly #consumers = new Set<AmqpConsumer | AmqpLaneConsumer>();
  readonly #keyConsumers = new Set<AmqpKeyConsumer>();
  /** When this queue last wrote each concurrency key to the key log. */
  readonly #announced = new Map<string, { at: number; limit: number }>();
  readonly #keyHost: KeyConsumerHost;
  readonly #cascade: DelayCascade;
  readonly #host: ConsumerHost;
  readonly #unlisten: () => void;
  readonly #report = reporter<AmqpQueueEvents["error"][0]["source"]>(this, "AmqpQueue", () => this.#logger);
  /** Where errors and warnings go besides the `error` listeners. */
  #logger: Logger | undefined;
  /** Figures of what the queue sends itself (redrives); submits and settles are the client's and dispatcher's. */
  readonly #figures: ClientTelemetry;
  /** The job topology was declared once; reconnects re-declare it by themselves. */
  #topologyReady = false;
  #closed = false;
  /** Whether the consumer_timeout warning was given (once per queue). */
  #holdLimitWarned = false;
  /** Whether a key queue with other arguments was reported (once per queue). */
  #keyArgumentsWarned = false;

  /** @throws {OrchestratorError} `invalid_argument` for a bad option, or `connection` beside connection options. */
  constructor(options: AmqpQueueOptions) {
    super();
    const o = checkObject("options", options);
    this.#logger = resolveLogger(o.logger);
    this.#figures = clientTelemetry(o.telemetry, "rabbitmq");
    this.#options = resolveQueueOptions(o);
    const { connection, owned } = connectionFrom(o);
    this.#connection = connection;
    this.#owned = owned;
    this.#cascade = new DelayCascade(connection, this.#options.names);
    this.#host = this.#makeHost();
    this.#keyHost = this.#makeKeyHost();
    this.#unlisten = forwardConnectionEvents(connection, this, (error, source) => this.#report(error, source), owned);
  }

  /** The connection this queue uses. */
  get connection(): AmqpConnection {
    return this.#connection;
  }

  /** The broker objects this queue uses. */
  get names(): Readonly<AmqpTopologyNames> {
    return this.#options.names;
  }

  /**
   * Connects and declares the job queue and dead-letter queue; other calls do it on first use.
   * @throws {OrchestratorError} `precondition_failed` when a queue exists with other arguments,
   * `unauthenticated`, `unavailable` after `timeoutMs`, `queue_closed`.
   */
  async ready(options: WaitOptions = {}): Promise<void> {
    if (this.#closed) throw CLOSED("connect");
    await this.#declareTopology(options);
  }

  /** {@inheritDoc JobQueue.enqueue} */
  async enqueue(job: JobEnvelope, options: EnqueueOptions = {}): Promise<void> {
    const o = checkObject("options", options);
    const signal = checkSignal("options.signal", o.signal);
    throwIfAborted(signal);
    const timeoutMs = optional(o.timeoutMs, undefined, (v) => checkInteger("options.timeoutMs", v, 1));
    const delayMs = optional(o.delayMs, 0, (v) => checkInteger("options.delayMs", v, 0, MAX_DELAY_MS));
    if (this.#closed) throw CLOSED("enqueue");
    const parsed = parseEnvelope(job);
    if (!this.#options.priorityLanes && priorityOf(parsed) !== DEFAULT_PRIORITY) {
      throw invalidArgument("priority", `${DEFAULT_PRIORITY} (this AmqpQueue was built with \`priorityLanes: false\`)`, parsed.priority);
    }
    this.#checkHoldLimit(parsed);
    const body = encodeEnvelope(parsed);
    checkEnvelopeSize(body, this.#options.maxEnvelopeBytes);
    // The first enqueue also waits for the connection: bounded like a publish.
    if (!this.#topologyReady) await this.#declareTopology({ signal, timeoutMs: timeoutMs ?? this.#connection.publishTimeoutMs });
    // The W3C context also travels as headers, where broker-side tools and AMQP instrumentations look.
    // Due at its runAt or after the delay asked, whichever is later (dueInMs refuses a runAt too far ahead).
    const dueAt = Date.now() + Math.max(delayMs, dueInMs(parsed));
    await this.#publishJob(body, priorityOf(parsed), dueAt, traceHeaders(job), signal, timeoutMs);
  }

  /** Warns once when a job's timeout does not fit in what the broker lets a delivery be held. */
  #checkHoldLimit(job: JobEnvelope): void {
    if (this.#holdLimitWarned) return;
    const warning = holdLimitWarning(job, this.#options.consumerTimeoutMs);
    if (warning === undefined) return;
    this.#holdLimitWarned = true;
    if (this.listenerCount("error") > 0) this.#report(warning, "config");
    else if (this.#logger !== undefined) logSafely(this.#logger, "warn", { ...warning.details, code: warning.code }, `AmqpQueue: ${warning.message}`);
    else console.warn(`AmqpQueue: ${warning.message}`);
  }

  /** {@inheritDoc JobQueue.consume} */
  async consume(handler: (delivery: Delivery) => void, options: ConsumeOptions): Promise<Consumer> {
    checkFunction("handler", handler);
    const o = checkObject("options", options);
    const prefetch = checkInteger("options.prefetch", o.prefetch, 0, 65_535);
    const accept = optional(o.accept, undefined, (v) => checkFunction<(job: JobEnvelope) => string | undefined>("options.accept", v));
    if (this.#closed) throw CLOSED("consume");
    await this.#declareTopology({});
    const checked = (delivery: Delivery): void => {
      this.#checkHoldLimit(delivery.job);
      handler(delivery);
    };
    const hooks = optional(o.keys, undefined, (v) => checkObject("options.keys", v) as KeyHooks);
    let consumer: AmqpConsumer | AmqpLaneConsumer | undefined;
    // Keyed deliveries take slots of the prefetch: the lanes hand over only the slots left.
    // (`priorityLanes: false`: the single queue's consumer cannot hold a delivery back without
    // sending it to the back of its queue, so there keyed deliveries are not counted.)
    const load = (handed: number) => {
      if (consumer instanceof AmqpLaneConsumer) consumer.setKeyed(handed);
    };
    const keys = new AmqpKeyConsumer(this.#keyHost, checked, { accept, hooks, paused: () => (consumer?.prefetch ?? 0) === 0, load });
    const route = (job: JobEnvelope) => this.#routeKeyed(job, keys);
    const { names, priorityLanes, priorityAgingPicks } = this.#options;
    consumer = priorityLanes
      ? new AmqpLaneConsumer(this.#host, laneQueueNames(names), checked, prefetch, accept, priorityAgingPicks, route)
      : new AmqpConsumer(this.#host, checked, prefetch, accept, route);
    const main = consumer;
    this.#consumers.add(main);
    this.#keyConsumers.add(keys);
    try {
      await main.start();
      await keys.start();
    } catch (error) {
      this.#consumers.delete(main);
      this.#keyConsumers.delete(keys);
      await Promise.all([main.cancel().catch(() => {}), keys.cancel().catch(() => {})]);
      throw this.#closed ? CLOSED("consume") : error;
    }
    return {
      get prefetch() {
        return main.prefetch;
      },
      setPrefetch: async (next: number) => {
        await main.setPrefetch(next);
        keys.resume();
      },
      cancel: async () => {
        this.#keyConsumers.delete(keys);
        await Promise.all([main.cancel(), keys.cancel()]);
      },
    };
  }

  /**
   * Moves a keyed job from the job queue to its key's queue (declared on first use), writing the
   * key to the key log first when this queue has not done so for an hour, so that every
   * dispatcher, in any process, consumes the key's queue before (or soon after) the job is in it.
   */
  async #routeKeyed(job: JobEnvelope, keys: AmqpKeyConsumer): Promise<void> {
    const c = job.concurrency as JobConcurrency;
    // Announced before the job is in the key's queue: every dispatcher that stopped consuming
    // the key (idle) consumes it again, so the queue never holds a job with no consumer at all.
    await this.#announce(c);
    await this.#publishKeyed(c.key, encodeEnvelope(job), { persistent: true, contentType: "application/json", ...(job.trace ? { headers: traceHeaders(job) } : {}) });
    for (const keyConsumer of this.#keyConsumers) {
      keyConsumer.learn(c.key, c.limit).catch((error: unknown) => this.#report(OrchestratorError.from(error), "channel"));
    }
    notifyWaiting(keys.hooks, job, keyWaitReason(c), (error) => this.#report(OrchestratorError.from(error), "consumer"));
  }

  /** The declaration key of a key queue on the connection (see `AmqpConnection.declare`). */
  #keyDeclaration(key: string): string {
    const { names, deliveryLimit, keyQueueExpiresMs } = this.#options;
    return `key:${keyQueueName(names, key)}:${deliveryLimit}:${keyQueueExpiresMs}`;
  }

  /**
   * Declares the key's queue (once per connection, and again once forgotten: it may have
   * expired). A key queue that exists with other arguments (declared before key queues expired,
   * or with another `keyQueueExpiresMs`) is used as it is, reported once.
   */
  async #declareKey(key: string): Promise<string> {
    const { names, deliveryLimit, keyQueueExpiresMs } = this.#options;
    const name = keyQueueName(names, key);
    // Registered with the connection and run again on every reconnect: a 406 (the queue exists
    // with other arguments) means it is there, used as it is; a queue deleted since is declared
    // anew, with expiry (a passive check instead would fail every reconnect on the 404).
    let refused: OrchestratorError | undefined;
    await this.#connection.declare(this.#keyDeclaration(key), (channel) =>
      declareKeyQueue(channel, names, key, deliveryLimit, keyQueueExpiresMs).then(
        () => {},
        (error: unknown) => {
          if (!(error instanceof OrchestratorError) || error.code !== "precondition_failed") throw error;
          refused = error;
        },
      ),
    );
    if (refused !== undefined && !this.#keyArgumentsWarned) {
      this.#keyArgumentsWarned = true;
      this.#report(new OrchestratorError("precondition_failed", `${refused.rawMessage} (it is used as it is: it does not expire; delete it when empty to have it declared anew)`, { cause: refused, details: refused.details }), "config");
    }
    return name;
  }

  /**
   * Publishes to the key's queue, confirmed and mandatory. A queue that is gone (it expired while
   * this connection still had it declared) is declared again and the publish retried once: the
   * broker returned the message, so nothing was enqueued.
   */
  async #publishKeyed(key: string, body: Buffer, properties: Options.Publish): Promise<void> {
    const publish = async () => this.#connection.publish({ exchange: "", routingKey: await this.#declareKey(key), body, properties, confirm: true, mandatory: true });
    try {
      await publish();
    } catch (error) {
      if (!(error instanceof OrchestratorError) || error.code !== "not_found") throw error;
      this.#connection.forget(this.#keyDeclaration(key));
      await publish();
    }
  }

  /** A key consumer stopped consuming an idle key: its queue may expire, so its declaration and announcement are stale. */
  #forgetKey(key: string): void {
    this.#connection.forget(this.#keyDeclaration(key));
    this.#announced.delete(key);
  }

  async #announce(c: JobConcurrency): Promise<void> {
    // A raised limit is announced at once: every dispatcher consuming the key raises its own.
    const last = this.#announced.get(c.key);
    if (last !== undefined && Date.now() - last.at < announceEveryMs(this.#options.keyIdleMs) && c.limit <= last.limit) return;
    await this.#connection.declare(`keylog:${this.#options.names.keyLog}`, (channel) => declareKeyLog(channel, this.#options.names));
    await this.#publish(this.#options.names.keyLog, Buffer.from(JSON.stringify({ key: c.key, limit: c.limit, at: Date.now() })), { persistent: true, contentType: "application/json" });
    if (this.#announced.size > 10_000) this.#announced.clear();
    this.#announced.set(c.key, { at: Date.now(), limit: c.limit });
  }

  /**
   * {@inheritDoc JobQueue.deadLetters}
   * Reasons: `x-blacktree-reason` for those this SDK moved, a sentence built from the newest
   * `x-death` entry for those the broker moved. Ids: the `x-blacktree-dead-letter-id` this SDK
   * wrote, else a hash of the message's bytes and headers. Read with `basic.get` and handed back,
   * so the whole queue up to `limit` is read each call. (The dead-letter queue is a classic queue
   * because a quorum queue counts every read-and-return in `x-delivery-count`.)
   */
  async deadLetters(options: DeadLettersOptions = {}): Promise<DeadLetterInfo[]> {
    const limit = deadLettersLimit(options);
    const o = options as WaitOptions;
    const infos: DeadLetterInfo[] = [];
    await this.#browseDeadLetters("read dead letters", o as WaitOptions, async (message) => {
      infos.push(readDeadLetter(message, this.#options.deliveryLimit));
      return infos.length < limit;
    });
    return infos;
  }

  /**
   * {@inheritDoc JobQueue.discardDeadLetters}
   * Walks the dead-letter queue (oldest first) until every id is found or `limit` were read,
   * acknowledging those found. The messages it holds meanwhile (unacked, until its channel
   * closes) are not ready: a concurrent `deadLetters()` or `redrive()` does not see them.
   */
  async discardDeadLetters(ids: readonly string[], options: DeadLettersOptions = {}): Promise<{ discarded: string[] }> {
    const wanted = checkDeadLetterIds(ids);
    const limit = deadLettersLimit(options);
    const o = options as WaitOptions;
    const discarded: string[] = [];
    if (wanted.size === 0) return { discarded };
    let read = 0;
    await this.#browseDeadLetters("discard dead letters", o, async (message, channel) => {
      const { id } = readDeadLetter(message, this.#options.deliveryLimit);
      read++;
      if (wanted.delete(id)) {
        channel.ack(message);
        discarded.push(id);
      }
      return wanted.size > 0 && read < limit;
    });
    return { discarded };
  }

  /**
   * {@inheritDoc JobQueue.depth}
   * Read with a passive declare (`checkQueue`) of the job queue, its other priority lanes and the
   * dead-letter queue on a channel of its own: no management plugin needed. `ready` is the broker's message count.
   */
  async depth(options: WaitOptions = {}): Promise<QueueDepth[]> {
    if (this.#closed) throw CLOSED("read the queue depth");
    const o = checkObject("options", options) as WaitOptions;
    throwIfAborted(o.signal);
    await this.#declareTopology(o);
    const model = this.#connection.model;
    if (!model) throw new OrchestratorError("unavailable", "cannot read the queue depth: not connected");
    const channel = await model.createChannel().catch((error: unknown) => {
      throw fromAmqpError(error, "opening a channel to read the queue depth");
    });
    channel.on("error", () => {});
    try {
      const depths: QueueDepth[] = [];
      const { names, priorityLanes } = this.#options;
      // The other priority lanes count as `other` (JobQueue.depth), after the job queue (level 3).
      const lanes = priorityLanes ? laneQueueNames(names).filter((name) => name !== names.jobs).map((name) => [name, "other"] as const) : [];
      for (const [name, role] of [[names.jobs, "jobs"], ...lanes, [names.deadLetters, "dead"]] as const) {
        const { messageCount, consumerCount } = await channel.checkQueue(name);
        depths.push({ name, role, ready: messageCount, consumers: consumerCount });
      }
      return depths;
    } catch (error) {
      throw fromAmqpError(error, "reading the queue depth");
    } finally {
      await closeQuietly(channel);
    }
  }

  /** {@inheritDoc JobQueue.redrive} */
  redrive(options: RedriveOptions = {}): Promise<RedriveResult> {
    return this.#figures.sent(this.#options.names.jobs, "redrive", () => this.#redrive(options), (r) => r.redriven.length);
  }

  async #redrive(options: RedriveOptions): Promise<RedriveResult> {
    const { jobIds, limit, signal, timeoutMs } = resolveRedriveOptions(options);
    const redriven: JobEnvelope[] = [];
    await this.#browseDeadLetters("redrive", { signal, timeoutMs }, async (message, channel) => {
      const info = readDeadLetter(message, this.#options.deliveryLimit);
      if (!info.job || (jobIds && !jobIds.has(info.job.id))) return true; // stays, unchanged
      const job = redrivenEnvelope(info.job, { attempts: info.attempt, reason: info.reason, deadLetteredAt: info.at });
      await this.#publishJob(encodeEnvelope(job), priorityOf(job), undefined, undefined, signal);
      // Enqueued (confirmed) first: a failure from here on leaves a duplicate, never a loss.
      channel.ack(message);
      redriven.push(job);
      return redriven.length < limit;
    });
    return { redriven };
  }

  /**
   * Walks the dead-letter queue oldest first on a channel of its own, with `basic.get` (manual
   * ack), until `visit` returns false or the queue has no more. Closing the channel hands every
   * message not acked back to the classic queue, in place and unchanged (only its `redelivered`
   * flag is set).
   */
  async #browseDeadLetters(what: string, options: WaitOptions, visit: (message: GetMessage, channel: Channel) => Promise<boolean>): Promise<void> {
    if (this.#closed) throw CLOSED(what);
    throwIfAborted(options.signal);
    await this.#declareTopology(options);
    const model = this.#connection.model;
    if (!model) throw new OrchestratorError("unavailable", `cannot ${what}: not connected`);
    const channel = await model.createChannel().catch((error: unknown) => {
      throw fromAmqpError(error, `opening a channel to ${what}`);
    });
    channel.on("error", () => {});
    try {
      for (;;) {
        throwIfAborted(options.signal);
        const message = await channel.get(this.#options.names.deadLetters, { noAck: false });
        if (message === false || !(await visit(message, channel))) break;
      }
    } catch (error) {
      throw fromAmqpError(error, `${what} from "${this.#options.names.deadLetters}"`);
    } finally {
      await closeQuietly(channel);
    }
  }

  /**
   * Stops every consumer (their unsettled deliveries go back to the queue; later settles reject
   * `queue_closed`), then closes the connection if the queue owns it. Later calls reject
   * `queue_closed`. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all([...this.#consumers].map((consumer) => consumer.cancel()));
    await Promise.all([...this.#keyConsumers].map((consumer) => consumer.cancel()));
    this.#keyConsumers.clear();
    this.#unlisten();
    if (this.#owned) await this.#connection.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #declareTopology(options: WaitOptions): Promise<void> {
    const { names, deliveryLimit } = this.#options;
    // Keyed by the arguments too: a second queue object declaring the same name differently
    // must reach the broker (and get its 406), not reuse the first one's declaration.
    const { priorityLanes } = this.#options;
    const key = `jobs:${names.jobs}:${names.deadLetters}:${deliveryLimit}:${priorityLanes}`;
    await this.#connection.declare(key, (channel) => declareJobTopology(channel, names, deliveryLimit, priorityLanes), options);
    this.#topologyReady = true;
  }

  /**
   * Publishes a job to the lane of its priority, through the delay cascade when it is due later
   * (`dueAt`, epoch ms): it comes due straight into its lane.
   */
  async #publishJob(body: Buffer, priority: number, dueAt: number | undefined, headers: Record<string, unknown> | undefined, signal?: AbortSignal, timeoutMs?: number): Promise<void> {
    const properties: Options.Publish = { persistent: true, contentType: "application/json", ...(headers ? { headers } : {}) };
    const queue = laneQueueName(this.#options.names, priority);
    if (dueAt !== undefined && dueAt > Date.now()) return this.#cascade.publish({ destination: { queue }, dueAt, body, properties, signal, timeoutMs });
    await this.#publish(queue, body, properties, signal, timeoutMs);
  }

  /** Publishes to one of our queues, confirmed and mandatory. */
  async #publish(routingKey: string, body: Buffer, properties: Options.Publish, signal?: AbortSignal, timeoutMs?: number): Promise<void> {
    try {
      await this.#connection.publish({ exchange: "", routingKey, body, properties, confirm: true, mandatory: true, signal, timeoutMs });
    } catch (error) {
      // Unroutable: the queue was deleted under us. Start over on a new connection, which declares
      // it again: consumers of the deleted queue must not stay on their channels (RabbitMQ 3.10
      // may serve a quorum queue re-created under the same name to such a stale consumer).
      if (error instanceof OrchestratorError && error.code === "not_found") this.#connection.recycle(`queue "${routingKey}" is gone`);
      throw error;
    }
  }

  /**
   * Whether `queue` exists (a passive declare, on a throwaway channel: a missing queue closes it
   * with 404): `false` only on that 404, `undefined` when it could not be asked.
   */
  async #queueExists(queue: string): Promise<boolean | undefined> {
    const model = this.#connection.model;
    if (!model) return undefined;
    const channel = await model.createChannel().catch(() => undefined);
    if (channel === undefined) return undefined;
    channel.on("error", () => {});
    try {
      await channel.checkQueue(queue);
      return true;
    } catch (error) {
      return (error as { code?: unknown }).code === 404 ? false : undefined;
    } finally {
      await closeQuietly(channel);
    }
  }

  #makeKeyHost(): KeyConsumerHost {
    const o = this.#options;
    return {
      connection: this.#connection,
      names: o.names,
      maxEnvelopeBytes: o.maxEnvelopeBytes,
      consumerTimeoutMs: o.consumerTimeoutMs,
      keyHandoverDelayMs: o.keyHandoverDelayMs,
      keyIdleMs: o.keyIdleMs,
      declareKey: (key) => this.#declareKey(key),
      announce: (key, limit) => this.#announce({ key, limit, strategy: "wait" }),
      forgetKey: (key) => this.#forgetKey(key),
      keyLogExists: () => this.#queueExists(o.names.keyLog).then((exists) => exists === true),
      keyQueueExists: (key) => this.#queueExists(keyQueueName(o.names, key)).then((exists) => exists !== false),
      republish: (job, delayMs, reason) => this.#host.republish(job, delayMs, reason),
      requeueKeyed: (job) => this.#publishKeyed((job.concurrency as JobConcurrency).key, encodeEnvelope(job), { persistent: true, contentType: "application/json" }),
      deadLetter: (message, reason, job, attempt) => this.#deadLetter(message, reason, job, attempt),
      report: (error, source) => this.#report(error, source),
      deliveryLost: (job, attempt, error) => this.#emitSafely("deliveryLost", { jobId: job.id, attempt, error }),
    };
  }

  #makeHost(): ConsumerHost {
    const o = this.#options;
    return {
      connection: this.#connection,
      queueName: o.names.jobs,
      maxEnvelopeBytes: o.maxEnvelopeBytes,
      consumerTimeoutMs: o.consumerTimeoutMs,
      handlerErrorDelayMs: o.handlerErrorDelayMs,
      republish: (job, delayMs, reason) =>
        this.#publishJob(encodeEnvelope(job), priorityOf(job), Date.now() + Math.min(delayMs, MAX_DELAY_MS), reason === undefined ? undefined : { "x-blacktree-retry-reason": reason }),
      deadLetter: (message, reason, job, attempt) => this.#deadLetter(message, reason, job, attempt),
      report: (error, source) => this.#report(error, source),
      deliveryLost: (job, attempt, error) => this.#emitSafely("deliveryLost", { jobId: job.id, attempt, error }),
      removed: (consumer) => this.#consumers.delete(consumer),
    };
  }

  async #deadLetter(message: ConsumeMessage, reason: string, job: JobEnvelope | undefined, attempt: number | undefined): Promise<void> {
    const at = new Date().toISOString();
    const id = randomUUID();
    const properties = deadLetterCopy(message, { reason, at, sourceQueue: this.#options.names.jobs, attempt, id });
    await this.#publish(this.#options.names.deadLetters, message.content, properties);
    const info: DeadLetterInfo = { id, reason: properties.headers?.[DEAD_LETTER_HEADERS.reason] as string, body: new Uint8Array(message.content), at };
    if (job) info.job = job;
    if (attempt !== undefined) info.attempt = attempt;
    this.#emitSafely("deadLettered", { info });
  }

  /** Emits without letting a listener throw into the queue; a throw is reported with source `listener`. */
  #emitSafely<E extends "deliveryLost" | "deadLettered">(event: E, payload: AmqpQueueEvents[E][0]): void {
    emitSafely(this, (error) => this.#report(error, "listener"), event, payload);
  }

}
