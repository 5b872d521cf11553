import { randomUUID } from "node:crypto";
import { EventEmitter } from "eventemitter3";
import { OrchestratorError } from "../errors.ts";
import { emitSafely, reportError } from "../events.ts";
import {
  checkEnvelopeSize, DEFAULT_MAX_ENVELOPE_BYTES, DEFAULT_PRIORITY, decodeEnvelope, encodeEnvelope, parseEnvelope, PRIORITY_LEVELS, priorityOf, redrivenEnvelope,
} from "../job/envelope.ts";
import type { JobEnvelope } from "../job/envelope.ts";
import { dueInMs, MAX_DELAY_MS } from "../job/due-time.ts";
import { throwIfAborted } from "../signals.ts";
import { MAX_TIMER_MS } from "../timers.ts";
import { checkFunction, checkInteger, checkKnownKeys, checkNumber, checkObject, checkSignal, knownKeys, optional } from "../validate.ts";
import { checkAgingPicks, DEFAULT_PRIORITY_AGING_PICKS, LanePicker, laneOf } from "./lanes.ts";
import { Deque } from "./deque.ts";
import { KeyHolders, notifyWaiting, type KeyHolder } from "./key-holders.ts";
import { keyWaitReason } from "../job/concurrency.ts";
import { MemoryDelivery } from "./memory-delivery.ts";
import type { SettleAction } from "./memory-delivery.ts";
import { MemoryEvents } from "./memory-events.ts";
import { checkDeadLetterIds, deadLettersLimit, resolveRedriveOptions } from "./redrive-options.ts";
import type { CancelCommand, JobEvent } from "../job/types.ts";
import { type ClientTelemetry, clientTelemetry } from "../telemetry/client-telemetry.ts";
import { type Logger, resolveLogger } from "../telemetry/logger.ts";
import type { TelemetryOptions } from "../telemetry/telemetry.ts";
import type {
  ConsumeOptions, Consumer, DeadLetterInfo, DeadLettersOptions, Delivery, EnqueueOptions, JobEvents, JobQueue, KeyHooks, PublishOptions, QueueDepth, RedriveOptions, RedriveResult,
  Subscription, WaitOptions,
} from "./types.ts";

/** Options of {@link MemoryQueue}. */
export interface MemoryQueueOptions {
  /**
   * Largest envelope accepted, in encoded bytes: a larger `enqueue` rejects with
   * `invalid_argument`, a larger raw message is dead-lettered.
   * @default 1 MiB
   */
  maxEnvelopeBytes?: number;
  /**
   * How many times a message may go back to the queue unsettled (its consumer stopped while
   * holding it) before it is dead-lettered instead, like RabbitMQ's `x-delivery-limit` on
   * quorum queues: a message returned more than `deliveryLimit` times is dead-lettered.
   * @default undefined (no limit)
   */
  deliveryLimit?: number;
  /**
   * How long cancel commands are kept and replayed to new cancel subscribers, in milliseconds.
   * @default 86_400_000 (24 hours)
   */
  cancelRetentionMs?: number;
  /**
   * When a consumer's handler throws, the delivery is retried after this many milliseconds
   * (with `attempt` raised), so a handler that always throws cannot spin the event loop.
   * @default 1000
   */
  handlerErrorDelayMs?: number;
  /**
   * Where errors the queue reports go (pino-shaped), besides its `error` listeners.
   * @default none
   */
  logger?: Logger;
  /**
   * OpenTelemetry providers and/or a Prometheus registry for the messaging figures of the job
   * events, cancels and redrives the queue carries (`messaging.client.sent.messages`,
   * `messaging.client.operation.duration`, `messaging.client.consumed.messages`; system `memory`,
   * destinations `jobs.events`, `jobs.cancels`, `jobs`). Jobs themselves are counted by
   * `JobClient` and `Dispatcher`.
   * @default the global OpenTelemetry providers when `@opentelemetry/api` is installed; else nothing
   */
  telemetry?: TelemetryOptions;
  /**
   * Picks after which a job of a lower priority level that has been waiting all along gets the
   * next free slot, so a steady stream of higher-priority jobs never starves it (see
   * `JobSpec.priority`). The same rule as `AmqpQueue`'s.
   * @default 10
   */
  priorityAgingPicks?: number;
}

interface ResolvedOptions {
  logger: Logger | undefined;
  figures: ClientTelemetry;
  maxEnvelopeBytes: number;
  deliveryLimit: number;
  cancelRetentionMs: number;
  handlerErrorDelayMs: number;
  priorityAgingPicks: number;
}

const optionKeys = knownKeys<MemoryQueueOptions>()(
  ["cancelRetentionMs", "deliveryLimit", "handlerErrorDelayMs", "logger", "maxEnvelopeBytes", "priorityAgingPicks", "telemetry"],
  true,
);

function resolveOptions(options: unknown): ResolvedOptions {
  const o = checkObject("options", options ?? {});
  checkKnownKeys("the MemoryQueue options", o, optionKeys);
  return {
    logger: resolveLogger(o.logger),
    figures: clientTelemetry(o.telemetry, "memory"),
    maxEnvelopeBytes: optional(o.maxEnvelopeBytes, DEFAULT_MAX_ENVELOPE_BYTES, (v) => checkInteger("maxEnvelopeBytes", v, 1)),
    deliveryLimit: optional(o.deliveryLimit, Infinity, (v) => checkInteger("deliveryLimit", v, 0)),
    cancelRetentionMs: optional(o.cancelRetentionMs, 24 * 60 * 60 * 1000, (v) => checkNumber("cancelRetentionMs", v, 0)),
    handlerErrorDelayMs: optional(o.handlerErrorDelayMs, 1000, (v) => checkInteger("handlerErrorDelayMs", v, 0)),
    priorityAgingPicks: optional(o.priorityAgingPicks, DEFAULT_PRIORITY_AGING_PICKS, (v) => checkAgingPicks("priorityAgingPicks", v)),
  };
}

/** Events of {@link MemoryQueue}. */
export interface MemoryQueueEvents {
  /** A message went to the dead-letter store (invalid, rejected by `accept`, `deadLetter()`, or over `deliveryLimit`). */
  deadLettered: [{ info: DeadLetterInfo }];
  /**
   * A consumer handler, an `accept` check or an event listener threw; the queue carried on.
   * Without a listener the first such error is logged once with `console.warn`.
   */
  error: [{ error: OrchestratorError; source: "consumer" | "accept" | "listener" }];
}

/** A snapshot of what a {@link MemoryQueue} holds. */
export interface MemoryQueueInfo {
  /** Messages waiting for a consumer. */
  ready: number;
  /** Messages waiting for their delay to pass. */
  delayed: number;
  /** Deliveries held by consumers and not yet settled. */
  unsettled: number;
  /** Active consumers. */
  consumers: number;
  /** Messages in the dead-letter store. */
  deadLettered: number;
  /** Keyed jobs waiting for their concurrency key (in no consumer's prefetch). */
  waitingForKeys: number;
}

/** A message as the queue stores it: encoded bytes, copied in and decoded per delivery. */
interface StoredMessage {
  readonly body: Uint8Array;
  /** Its priority lane (0 = priority 1). */
  readonly lane: number;
  /** Times it went back to the queue unsettled. */
  returns: number;
  /** Known to be no keyed job (decoded once while every slot was taken: see `#routeKeyedHeads`). */
  unkeyed?: true;
}

interface ConsumerState {
  readonly handler: (delivery: Delivery) => void;
  readonly accept: ((job: JobEnvelope) => string | undefined) | undefined;
  readonly keys: KeyHooks | undefined;
  prefetch: number;
  /** Unsettled deliveries in delivery order, each with its message (keyed ones count against the prefetch too). */
  readonly held: Map<MemoryDelivery, StoredMessage>;
  cancelled: boolean;
}

/** A keyed job in its key's line, decoded once. */
interface LineEntry {
  readonly message: StoredMessage;
  readonly job: JobEnvelope;
  /** Left the line (delivered, dropped or dead-lettered). */
  out: boolean;
}

/** One concurrency key: its places held, and the jobs waiting for one, in order. */
interface KeyLine {
  readonly key: string;
  readonly holders: KeyHolders;
  readonly line: Deque<LineEntry>;
}

/** A keyed delivery held by a consumer. */
interface KeyedDelivery {
  readonly keyLine: KeyLine;
  readonly entry: LineEntry;
  /** Undefined for a dropped job's delivery, which holds no place. */
  readonly holder: KeyHolder | undefined;
}

/** The lane of raw bytes as a broker would route them: the envelope's priority, or the default lane. */
function rawLane(bytes: Uint8Array): number {
  try {
    return laneOf(priorityOf(decodeEnvelope(bytes, { maxBytes: Infinity })));
  } catch {
    return laneOf(DEFAULT_PRIORITY);
  }
}

const closedError = (what: string) => new OrchestratorError("queue_closed", `cannot ${what}: the memory queue is closed`);

/**
 * The embedded default queue: implements {@link JobQueue} and {@link JobEvents} in one process
 * with the semantics a broker gives, so everything built on the interfaces runs without RabbitMQ.
 *
 * - `enqueue` validates and encodes the envelope; messages are stored as bytes (copy semantics);
 * - competing consumers share messages round-robin, each never holding more than its prefetch
 *   (changeable at run time; 0 pauses); the highest priority level first (a level passed over
 *   `priorityAgingPicks` times gets a turn), FIFO within a level; returned messages go back to the head;
 * - delayed delivery (a job's `runAt`, `enqueue({ delayMs })`, `Delivery.retry(delayMs)`) runs
 *   on timers, to the millisecond and for up to `MAX_DELAY_MS` (90 days), so
 *   `vi.useFakeTimers()` controls it;
 * - invalid messages (see {@link MemoryQueue.publishRaw}) and those refused by `accept` are
 *   dead-lettered with a reason and never reach a handler; {@link MemoryQueue.deadLetters} lists them;
 * - unsettled deliveries go back to the queue when their consumer is cancelled (or the queue
 *   closes) and are delivered again with `redelivered: true` and a higher `attempt`;
 *   `deliveryLimit` bounds that; their `signal` aborts with `queue_closed`,
 *   `details.reason: "delivery_lost"`, as a broker's deliveries do when their channel dies;
 * - job events reach subscribers in publish order; cancel commands are retained for
 *   `cancelRetentionMs` and replayed to new cancel subscribers.
 *
 * Nothing survives the process: it is durable only as far as the process lives.
 *
 * @example
 * ```ts
 * const queue = new MemoryQueue();
 * const client = new JobClient({ queue, events: queue });
 * const dispatcher = new Dispatcher({ queue, events: queue, pool });
 * ```
 */
export class MemoryQueue extends EventEmitter<MemoryQueueEvents> implements JobQueue, JobEvents {
  readonly #options: ResolvedOptions;
  /** Ready messages, one FIFO per priority lane. */
  readonly #lanes = Array.from({ length: PRIORITY_LEVELS }, () => new Deque<StoredMessage>());
  readonly #laneWaiting = (lane: number): boolean => (this.#lanes[lane] as Deque<StoredMessage>).length > 0;
  #readyCount = 0;
  readonly #picker: LanePicker;
  readonly #delayed = new Set<ReturnType<typeof setTimeout>>();
  readonly #consumers: ConsumerState[] = [];
  readonly #deadLetters: DeadLetterInfo[] = [];
  readonly #events: MemoryEvents;
  readonly #keyLines = new Map<string, KeyLine>();
  readonly #keyed = new Map<MemoryDelivery, KeyedDelivery>();
  /** Keys whose next job waits for a consumer (none, or all paused), not for a place. */
  readonly #stalledKeys = new Set<KeyLine>();
  #nextConsumer = 0;
  #dispatchScheduled = false;
  #closed = false;

  /** @throws {OrchestratorError} `invalid_argument` for a bad option. */
  constructor(options: MemoryQueueOptions = {}) {
    super();
    this.#options = resolveOptions(options);
    this.#picker = new LanePicker(this.#options.priorityAgingPicks);
    this.#events = new MemoryEvents(this.#options.cancelRetentionMs, (error) => this.#report(error, "listener"));
  }

  /** Whether {@link MemoryQueue.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Counts of ready, delayed, unsettled and dead-lettered messages. */
  info(): MemoryQueueInfo {
    let unsettled = 0;
    for (const consumer of this.#consumers) unsettled += consumer.held.size;
    let waitingForKeys = 0;
    for (const keyLine of this.#keyLines.values()) waitingForKeys += keyLine.line.length;
    return {
      ready: this.#readyCount,
      delayed: this.#delayed.size,
      unsettled,
      consumers: this.#consumers.length,
      deadLettered: this.#deadLetters.length,
      waitingForKeys,
    };
  }

  /**
   * Adds a job. Resolves once it is stored (the in-memory "confirm").
   * @throws {OrchestratorError} `invalid_argument` for an invalid envelope, one larger than
   * `maxEnvelopeBytes` or a bad option; `queue_closed` after close; the signal's reason.
   */
  async enqueue(job: JobEnvelope, options: EnqueueOptions = {}): Promise<void> {
    const o = checkObject("options", options);
    throwIfAborted(checkSignal("options.signal", o.signal));
    if (o.timeoutMs !== undefined) checkNumber("options.timeoutMs", o.timeoutMs, 0);
    const delayMs = optional(o.delayMs, 0, (v) => checkInteger("options.delayMs", v, 0, MAX_DELAY_MS));
    if (this.#closed) throw closedError("enqueue");
    const parsed = parseEnvelope(job);
    const body = encodeEnvelope(parsed);
    checkEnvelopeSize(body, this.#options.maxEnvelopeBytes);
    this.#store({ body, lane: laneOf(priorityOf(parsed)), returns: 0 }, Math.max(delayMs, dueInMs(parsed)));
  }

  /**
   * Stores raw message bytes as a producer outside this SDK might, without validation; an
   * invalid message is dead-lettered with a reason when it reaches the head of the queue. Test aid.
   * @throws {OrchestratorError} `invalid_argument` unless `bytes` is a Uint8Array; `queue_closed` after close.
   */
  async publishRaw(bytes: Uint8Array, options: { delayMs?: number } = {}): Promise<void> {
    if (!(bytes instanceof Uint8Array)) throw new OrchestratorError("invalid_argument", "Expected `bytes` to be a Uint8Array");
    const delayMs = optional(checkObject("options", options).delayMs, 0, (v) => checkInteger("options.delayMs", v, 0));
    if (this.#closed) throw closedError("publish");
    this.#store({ body: new Uint8Array(bytes), lane: rawLane(bytes), returns: 0 }, delayMs);
  }

  /** {@inheritDoc JobQueue.depth} Ready jobs (delayed ones count as `other`) and dead letters. */
  async depth(_options: WaitOptions = {}): Promise<QueueDepth[]> {
    if (this.#closed) throw closedError("read the queue depth");
    const info = this.info();
    return [
      { name: "jobs", role: "jobs", ready: info.ready, consumers: info.consumers },
      { name: "jobs.delayed", role: "other", ready: info.delayed, consumers: 0 },
      { name: "jobs.dead", role: "dead", ready: info.deadLettered, consumers: 0 },
    ];
  }

  /** {@inheritDoc JobQueue.deadLetters} In the order they were dead-lettered, at once (no promise). */
  deadLetters(options?: DeadLettersOptions): DeadLetterInfo[] {
    const limit = deadLettersLimit(options);
    return this.#deadLetters.slice(0, limit).map((info) => ({ ...info }));
  }

  /** {@inheritDoc JobQueue.discardDeadLetters} */
  async discardDeadLetters(ids: readonly string[], options: DeadLettersOptions = {}): Promise<{ discarded: string[] }> {
    const wanted = checkDeadLetterIds(ids);
    const limit = deadLettersLimit(options);
    throwIfAborted(options.signal);
    if (this.#closed) throw closedError("discard dead letters");
    const discarded: string[] = [];
    const kept = this.#deadLetters.filter((info, index) => {
      if (index >= limit || !wanted.delete(info.id)) return true;
      discarded.push(info.id);
      return false;
    });
    this.#deadLetters.splice(0, this.#deadLetters.length, ...kept);
    return { discarded };
  }

  /** {@inheritDoc JobQueue.redrive} */
  redrive(options: RedriveOptions = {}): Promise<RedriveResult> {
    return this.#options.figures.sent("jobs", "redrive", () => this.#redrive(options), (r) => r.redriven.length);
  }

  async #redrive(options: RedriveOptions): Promise<RedriveResult> {
    const { jobIds, limit, signal } = resolveRedriveOptions(options);
    throwIfAborted(signal);
    if (this.#closed) throw new OrchestratorError("queue_closed", "cannot redrive: the MemoryQueue is closed");
    const redriven: JobEnvelope[] = [];
    const kept: DeadLetterInfo[] = [];
    for (const info of this.#deadLetters) {
      if (redriven.length >= limit || !info.job || (jobIds && !jobIds.has(info.job.id))) {
        kept.push(info);
        continue;
      }
      const job = redrivenEnvelope(info.job, { attempts: info.attempt, reason: info.reason, deadLetteredAt: info.at });
      this.#store({ body: encodeEnvelope(job), lane: laneOf(priorityOf(job)), returns: 0 }, 0);
      redriven.push(job);
    }
    this.#deadLetters.splice(0, this.#deadLetters.length, ...kept);
    return { redriven };
  }

  /**
   * Starts delivering jobs to `handler`; see {@link JobQueue.consume}. A throwing handler is
   * reported (`error` event) and its delivery retried after `handlerErrorDelayMs`.
   * @throws {OrchestratorError} `invalid_argument` for a bad handler or options; `queue_closed` after close.
   */
  async consume(handler: (delivery: Delivery) => void, options: ConsumeOptions): Promise<Consumer> {
    checkFunction("handler", handler);
    const o = checkObject("options", options);
    const state: ConsumerState = {
      handler,
      accept: optional(o.accept, undefined, (v) => checkFunction<(job: JobEnvelope) => string | undefined>("options.accept", v)),
      keys: optional(o.keys, undefined, (v) => checkObject("options.keys", v) as KeyHooks),
      prefetch: checkInteger("options.prefetch", o.prefetch, 0),
      held: new Map(),
      cancelled: false,
    };
    if (this.#closed) throw closedError("consume");
    this.#consumers.push(state);
    this.#scheduleDispatch();
    return {
      get prefetch() {
        return state.prefetch;
      },
      setPrefetch: async (prefetch: number) => {
        state.prefetch = checkInteger("prefetch", prefetch, 0);
        this.#scheduleDispatch();
      },
      cancel: async () => this.#cancelConsumer(state),
    };
  }

  /** {@inheritDoc JobEvents.publish} */
  publish(event: JobEvent, options: PublishOptions = {}): Promise<void> {
    return this.#options.figures.sent("jobs.events", "publish", async () => {
      throwIfAborted(checkSignal("options.signal", checkObject("options", options).signal));
      if (this.#closed) throw closedError("publish");
      this.#events.publish(event);
    });
  }

  /** {@inheritDoc JobEvents.subscribe} */
  async subscribe(jobId: string, listener: (event: JobEvent) => void): Promise<Subscription> {
    if (this.#closed) throw closedError("subscribe");
    return this.#events.subscribe(jobId, this.#options.figures.consumed("jobs.events", "receive", listener));
  }

  /** {@inheritDoc JobEvents.cancel} */
  cancel(command: CancelCommand, options: WaitOptions = {}): Promise<void> {
    return this.#options.figures.sent("jobs.cancels", "cancel", async () => {
      throwIfAborted(checkSignal("options.signal", checkObject("options", options).signal));
      if (this.#closed) throw closedError("send a cancel");
      this.#events.cancel(command);
    });
  }

  /** {@inheritDoc JobEvents.subscribeCancels} */
  async subscribeCancels(listener: (command: CancelCommand) => void): Promise<Subscription> {
    if (this.#closed) throw closedError("subscribe");
    return this.#events.subscribeCancels(this.#options.figures.consumed("jobs.cancels", "receive", listener));
  }

  /**
   * Closes the queue and the events: consumers stop (their unsettled deliveries go back to the
   * queue, later settles reject `queue_closed`), delayed messages are dropped with their timers,
   * subscriptions end, later calls reject `queue_closed`. Ready messages stay countable in
   * {@link MemoryQueue.info}. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const consumer of [...this.#consumers]) this.#cancelConsumer(consumer);
    for (const timer of this.#delayed) clearTimeout(timer);
    this.#delayed.clear();
    this.#events.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #store(message: StoredMessage, delayMs: number): void {
    if (delayMs <= 0) {
      this.#ready(message);
      return;
    }
    this.#holdUntil(message, Date.now() + delayMs);
  }

  /** Holds `message` back until `due` (epoch ms), in timer steps no longer than `MAX_TIMER_MS` (a delay may be weeks). */
  #holdUntil(message: StoredMessage, due: number): void {
    const timer = setTimeout(() => {
      this.#delayed.delete(timer);
      if (Date.now() < due) return this.#holdUntil(message, due);
      this.#ready(message);
    }, Math.min(due - Date.now(), MAX_TIMER_MS));
    this.#delayed.add(timer);
  }

  /** Makes `message` ready at the back of its lane. */
  #ready(message: StoredMessage): void {
    (this.#lanes[message.lane] as Deque<StoredMessage>).push(message);
    this.#readyCount++;
    this.#scheduleDispatch();
  }

  #scheduleDispatch(): void {
    if (this.#dispatchScheduled || this.#closed) return;
    this.#dispatchScheduled = true;
    // Deliver on a microtask, as a broker delivers asynchronously: a handler that settles
    // synchronously never re-enters the loop that called it.
    queueMicrotask(() => {
      this.#dispatchScheduled = false;
      this.#dispatch();
    });
  }

  #dispatch(): void {
    if (this.#stalledKeys.size > 0) {
      const stalled = [...this.#stalledKeys];
      this.#stalledKeys.clear();
      for (const keyLine of stalled) this.#pumpKey(keyLine);
    }
    while (this.#readyCount > 0 && !this.#closed) {
      const consumer = this.#pickConsumer();
      if (!consumer) return this.#routeKeyedHeads();
      // The free slot takes the highest-priority message waiting, unless a lower lane's turn came.
      const message = (this.#lanes[this.#picker.pick(this.#laneWaiting)] as Deque<StoredMessage>).shift() as StoredMessage;
      this.#readyCount--;
      let job: JobEnvelope;
      try {
        job = decodeEnvelope(message.body, { maxBytes: this.#options.maxEnvelopeBytes });
      } catch (error) {
        this.#deadLetter(message, undefined, `invalid envelope: ${OrchestratorError.from(error).rawMessage}`);
        continue;
      }
      if (job.concurrency !== undefined) {
        this.#joinLine(consumer, message, job);
        continue;
      }
      const refusal = this.#accepts(consumer, job);
      if (refusal !== undefined) {
        this.#deadLetter(message, job, refusal, job.attempt + message.returns);
        continue;
      }
      this.#deliver(consumer, message, job, undefined);
    }
  }

  /**
   * Every slot is taken: keyed jobs at the head of a lane still go to their key's line (a keyed
   * job waits for its key, never for a slot, as on RabbitMQ, where a lane's consumer moves them
   * as they arrive), so a key with room is served at once.
   */
  #routeKeyedHeads(): void {
    for (const lane of this.#lanes) {
      for (;;) {
        const message = lane.peek();
        if (message === undefined || message.unkeyed) break;
        let job: JobEnvelope;
        try {
          job = decodeEnvelope(message.body, { maxBytes: this.#options.maxEnvelopeBytes });
        } catch {
          break; // dead-lettered when a slot takes it
        }
        if (job.concurrency === undefined) {
          // Each settle while the slots are full comes here: decode a head once.
          message.unkeyed = true;
          break;
        }
        const consumer = this.#pickKeyConsumer();
        if (consumer === undefined) break;
        lane.shift();
        this.#readyCount--;
        this.#joinLine(consumer, message, job);
      }
    }
  }

  /** Hands `job` to `consumer`; `keyed` for a job of a concurrency key (held, it counts against the prefetch). */
  #deliver(consumer: ConsumerState, message: StoredMessage, job: JobEnvelope, keyed: { entry: KeyedDelivery; dropped: string | undefined } | undefined): void {
    const delivery = new MemoryDelivery(job, job.attempt + message.returns, message.returns > 0, (d, action) => this.#settle(consumer, d, action), keyed?.dropped);
    consumer.held.set(delivery, message);
    if (keyed !== undefined) {
      this.#keyed.set(delivery, keyed.entry);
    }
    try {
      consumer.handler(delivery);
    } catch (cause) {
      const error = OrchestratorError.from(cause);
      this.#report(error, "consumer");
      if (!delivery.settled) {
        delivery.retry(this.#options.handlerErrorDelayMs, `consumer handler threw: ${error.rawMessage}`).catch(() => {});
      }
    }
  }

  /**
   * A keyed job leaves the queue for its key's line (the routing consumer is told, through its
   * `waiting` hook, when it cannot be delivered at once).
   */
  #joinLine(consumer: ConsumerState, message: StoredMessage, job: JobEnvelope): void {
    const key = (job.concurrency as NonNullable<JobEnvelope["concurrency"]>).key;
    let keyLine = this.#keyLines.get(key);
    if (keyLine === undefined) {
      keyLine = { key, holders: new KeyHolders(), line: new Deque() };
      this.#keyLines.set(key, keyLine);
    }
    const entry: LineEntry = { message, job, out: false };
    keyLine.line.push(entry);
    this.#pumpKey(keyLine);
    if (!entry.out) notifyWaiting(consumer.keys, job, keyWaitReason(job.concurrency as NonNullable<JobEnvelope["concurrency"]>), (e) => this.#report(OrchestratorError.from(e), "consumer"));
  }

  /** Delivers the jobs next in `keyLine`'s line while the key's rule lets them go. */
  #pumpKey(keyLine: KeyLine): void {
    const report = (error: unknown) => this.#report(OrchestratorError.from(error), "consumer");
    while (keyLine.line.length > 0 && !this.#closed) {
      const entry = keyLine.line.peek() as LineEntry;
      const verdict = keyLine.holders.decide(entry.job, report);
      if (verdict.kind === "wait") return;
      const consumer = this.#pickKeyConsumer();
      if (consumer === undefined) {
        this.#stalledKeys.add(keyLine);
        return;
      }
      keyLine.line.shift();
      entry.out = true;
      const { message, job } = entry;
      const refusal = this.#accepts(consumer, job);
      if (refusal !== undefined) {
        this.#deadLetter(message, job, refusal, job.attempt + message.returns);
        continue;
      }
      const holder = verdict.kind === "deliver" ? keyLine.holders.hold(job, consumer.keys) : undefined;
      this.#deliver(consumer, message, job, { entry: { keyLine, entry, holder }, dropped: verdict.kind === "drop" ? verdict.message : undefined });
    }
    if (keyLine.line.length === 0 && keyLine.holders.size === 0) this.#keyLines.delete(keyLine.key);
  }

  /**
   * Next consumer that is not paused, round-robin: a keyed job whose key has room is delivered
   * even to a consumer at its prefetch (its key's place is held across consumers, and waiting for
   * one consumer's slot would hold the key's line); it then counts against that prefetch, so the
   * consumer takes no unkeyed job until it is below it again.
   */
  #pickKeyConsumer(): ConsumerState | undefined {
    const count = this.#consumers.length;
    for (let i = 0; i < count; i++) {
      const index = (this.#nextConsumer + i) % count;
      const consumer = this.#consumers[index] as ConsumerState;
      if (consumer.prefetch > 0) {
        this.#nextConsumer = (index + 1) % count;
        return consumer;
      }
    }
    return undefined;
  }

  /** Next consumer with a free prefetch slot, round-robin. O(consumers). */
  #pickConsumer(): ConsumerState | undefined {
    const count = this.#consumers.length;
    for (let i = 0; i < count; i++) {
      const index = (this.#nextConsumer + i) % count;
      const consumer = this.#consumers[index] as ConsumerState;
      // Keyed deliveries count: a consumer whose slots run keyed jobs takes no more unkeyed ones
      // than it has slots left, so a higher-priority job arriving later is the next one it takes.
      if (consumer.held.size < consumer.prefetch) {
        this.#nextConsumer = (index + 1) % count;
        return consumer;
      }
    }
    return undefined;
  }

  /** The consumer's `accept` verdict: undefined to deliver, a reason to dead-letter. */
  #accepts(consumer: ConsumerState, job: JobEnvelope): string | undefined {
    if (!consumer.accept) return undefined;
    try {
      const verdict = consumer.accept(job);
      return typeof verdict === "string" ? verdict : undefined;
    } catch (cause) {
      const error = OrchestratorError.from(cause);
      this.#report(error, "accept");
      return `accept() threw: ${error.rawMessage}`;
    }
  }

  /** Called by a delivery's first settle call while it is still held. */
  #settle(consumer: ConsumerState, delivery: MemoryDelivery, action: SettleAction): void {
    const message = consumer.held.get(delivery) as StoredMessage;
    consumer.held.delete(delivery);
    const keyed = this.#keyed.get(delivery);
    if (keyed !== undefined) {
      this.#keyed.delete(delivery);
      if (keyed.holder !== undefined) keyed.keyLine.holders.release(keyed.holder);
      this.#pumpKey(keyed.keyLine);
    }
    if (action.kind === "retry") {
      const next = { ...decodeEnvelope(message.body, { maxBytes: Infinity }), attempt: delivery.attempt + 1 };
      this.#store({ body: encodeEnvelope(next), lane: message.lane, returns: 0 }, action.delayMs);
    } else if (action.kind === "deadLetter") {
      this.#deadLetter(message, decodeEnvelope(message.body, { maxBytes: Infinity }), action.reason, delivery.attempt);
    }
    this.#scheduleDispatch();
  }

  /**
   * Stops a consumer. Its unsettled deliveries are marked returned (their settles are dropped)
   * and go back to the head of the queue in delivery order, or to the dead letters once
   * returned more than `deliveryLimit` times; then their signals abort with `delivery_lost`.
   */
  #cancelConsumer(consumer: ConsumerState): void {
    if (consumer.cancelled) return;
    consumer.cancelled = true;
    const index = this.#consumers.indexOf(consumer);
    this.#consumers.splice(index, 1);
    if (this.#nextConsumer > index) this.#nextConsumer--;
    const back: StoredMessage[] = [];
    const keyedBack: KeyedDelivery[] = [];
    for (const [delivery, message] of consumer.held) {
      delivery.markReturned();
      message.returns++;
      const keyed = this.#keyed.get(delivery);
      if (keyed !== undefined) {
        // Its place of the key is free again; it goes back to the front of its key's line.
        this.#keyed.delete(delivery);
        if (keyed.holder !== undefined) keyed.keyLine.holders.release(keyed.holder);
      }
      if (message.returns > this.#options.deliveryLimit) {
        const reason = `delivery limit of ${this.#options.deliveryLimit} exceeded: returned unsettled ${message.returns} times`;
        this.#deadLetter(message, decodeEnvelope(message.body, { maxBytes: Infinity }), reason, delivery.attempt);
      } else if (keyed !== undefined) {
        keyedBack.push(keyed);
      } else {
        back.push(message);
      }
    }
    const returned = [...consumer.held.keys()];
    consumer.held.clear();
    for (let i = back.length - 1; i >= 0; i--) {
      const message = back[i] as StoredMessage;
      (this.#lanes[message.lane] as Deque<StoredMessage>).unshift(message);
      this.#readyCount++;
    }
    for (let i = keyedBack.length - 1; i >= 0; i--) {
      const { keyLine, entry } = keyedBack[i] as KeyedDelivery;
      if (!this.#keyLines.has(keyLine.key)) this.#keyLines.set(keyLine.key, keyLine);
      keyLine.line.unshift({ message: entry.message, job: entry.job, out: false });
    }
    for (const { keyLine } of keyedBack) this.#stalledKeys.add(keyLine);
    this.#scheduleDispatch();
    // Last: a listener may call back into the queue, which is consistent by now.
    for (const delivery of returned) delivery.abortReturned();
  }

  #deadLetter(message: StoredMessage, job: JobEnvelope | undefined, reason: string, attempt?: number): void {
    const info: DeadLetterInfo = { id: randomUUID(), reason, body: message.body, at: new Date().toISOString() };
    if (job) info.job = job;
    if (attempt !== undefined) info.attempt = attempt;
    this.#deadLetters.push(info);
    emitSafely(this, (error) => this.#report(error, "listener"), "deadLettered", { info: { ...info } });
  }

  #report(error: OrchestratorError, source: "consumer" | "accept" | "listener"): void {
    reportError(this, error, { source }, "MemoryQueue", this.#options.logger);
  }
}
