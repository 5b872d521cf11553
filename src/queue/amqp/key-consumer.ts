import type { Channel, ConsumeMessage } from "amqplib";
import { OrchestratorError } from "../../errors.ts";
import type { JobEnvelope } from "../../job/envelope.ts";
import { checkConcurrency, MAX_CONCURRENCY_KEY } from "../../job/concurrency.ts";
import { KeyHolders, type KeyHolder } from "../key-holders.ts";
import type { Delivery, KeyHooks } from "../types.ts";
import type { AmqpConnection } from "./amqp-connection.ts";
import { AmqpDelivery, alreadySettled, deliveryLost } from "./amqp-delivery.ts";
import type { AmqpSettleAction, HeldMessage } from "./amqp-delivery.ts";
import { handOver, readMessage } from "./amqp-consumer.ts";
import { ChannelKeeper } from "./channel-keeper.ts";
import { holdMarginMs } from "./hold-limit.ts";
import type { AmqpTopologyNames } from "./topology.ts";

const ignore = (): void => {};

/** How often a key consumer looks for the key log while no keyed job was ever routed. */
const KEY_LOG_POLL_MS = 5000;

/** What a key consumer needs from its {@link AmqpQueue}. @internal */
export interface KeyConsumerHost {
  readonly connection: AmqpConnection;
  readonly names: AmqpTopologyNames;
  readonly maxEnvelopeBytes: number;
  readonly consumerTimeoutMs: number;
  /** How long a key delivery that was delivered before (its holder lost it) waits before it is handed over. */
  readonly keyHandoverDelayMs: number;
  /** How long a key stays consumed here once idle (see `AmqpQueueOptions.keyIdleMs`). */
  readonly keyIdleMs: number;
  /** Declares the key's queue (once per connection, or since it was forgotten); resolves with its name. */
  declareKey(key: string): Promise<string>;
  /** Writes the key to the key log unless this queue did so recently: a key in use is announced within every third of `keyIdleMs`. */
  announce(key: string, limit: number): Promise<void>;
  /** This consumer stopped consuming `key` (idle): its queue may expire from now on. */
  forgetKey(key: string): void;
  /** Whether the key log stream exists (it is declared by the first keyed job routed). */
  keyLogExists(): Promise<boolean>;
  /** Whether the key's queue exists; `true` when that could not be learnt (the safe answer). */
  keyQueueExists(key: string): Promise<boolean>;
  /** Publishes `job` (confirmed) to the job queue after `delayMs` (a retry, `reason` set). */
  republish(job: JobEnvelope, delayMs: number, reason: string | undefined): Promise<void>;
  /** Publishes `job` (confirmed) to the back of its key's queue, attempt unchanged. */
  requeueKeyed(job: JobEnvelope): Promise<void>;
  deadLetter(message: ConsumeMessage, reason: string, job: JobEnvelope | undefined, attempt: number | undefined): Promise<void>;
  report(error: OrchestratorError, source: "consumer" | "accept" | "channel"): void;
  deliveryLost(job: JobEnvelope, attempt: number, error: OrchestratorError): void;
}

/** One key this consumer follows. */
interface KeyLane {
  readonly key: string;
  /** The broker prefetch of its consumer, less one: the most places it hands out. */
  readonly limit: number;
  readonly holders: KeyHolders;
  /** Received, not yet handed to the handler (the job next in line while the key is full). */
  readonly arrived: KeyMessage[];
  /** Consumer tag on the current channel. */
  tag: string | undefined;
  /** A subscribe of this lane queued or running (see `#subscribeLane`). */
  subscribing: Promise<void> | undefined;
  /** Pumps again once the job next in line may be handed over. */
  timer: ReturnType<typeof setTimeout> | undefined;
  /** When the key was last routed, announced, received or settled here (epoch ms). */
  lastActive: number;
  /** A higher limit learnt since the consumer started: applied once the lane holds nothing (see `#raise`). */
  raiseTo: number | undefined;
}

/** A message of a key queue held by this consumer. */
interface KeyMessage {
  readonly lane: KeyLane;
  readonly held: HeldMessage;
  readonly job: JobEnvelope;
  readonly attempt: number;
  /** Not handed over before this time (epoch ms). */
  readonly notBefore: number;
  holder: KeyHolder | undefined;
  /** Handed to the handler and counted in {@link AmqpKeyConsumer}'s load until its first settle call or its loss. */
  counted: boolean;
}

/**
 * The concurrency-key side of one consumption of an {@link AmqpQueue}: consumes the queue of
 * every key in use (learnt from the keys this process routes and from the key log stream, which
 * every process reads from its start), on one channel of its own, until the key is idle (see
 * `#sweepIdle`: its queue then expires).
 *
 * Every key queue has a single active consumer: of all the processes consuming it, one receives
 * its messages, at most its prefetch (`limit + 1`) unacked; the broker moves that role to another
 * consumer when the channel of the active one closes, and returns its unacked messages to the
 * queue. So the places of a key are held across every process, and freed when their holder dies.
 * The extra delivery is the job next in line: {@link KeyHolders} decides when it is handed to the
 * handler (a place is free), dropped (`drop_newest`), or stops the oldest holder first
 * (`cancel_running`). A job waiting for its key holds no slot of the job queue's prefetch; once
 * handed over it takes one (`load` tells the job queue's consumer, which then takes that many
 * fewer jobs), though a key with room hands its job over even when every slot is taken (the
 * key's place is this process's, and holding it back would hold the key's whole line here).
 * While that prefetch is 0 (a dispatcher closing) nothing new is handed over.
 *
 * A delivery that arrives redelivered (its holder's process or channel died, so the broker gave
 * its place back) is handed over only `keyHandoverDelayMs` after it arrived: the attempt the lost
 * holder ran may still be running on its worker until the abort reaches the handler (at once
 * when the holder's process died: the worker sees its session end).
 *
 * The job next in line may wait as long as the holders run; before it has been held for the
 * broker's `consumer_timeout` (which would close the channel and every delivery on it) a copy goes
 * to the back of the key's queue and it is acked.
 * @internal
 */
export class AmqpKeyConsumer {
  readonly #host: KeyConsumerHost;
  readonly #handler: (delivery: Delivery) => void;
  readonly #accept: ((job: JobEnvelope) => string | undefined) | undefined;
  readonly #hooks: KeyHooks | undefined;
  readonly #paused: () => boolean;
  readonly #load: ((handed: number) => void) | undefined;
  /** Deliveries handed to the handler and not settled or lost. */
  #handed = 0;
  readonly #keeper: ChannelKeeper;
  readonly #lanes = new Map<string, KeyLane>();
  readonly #held = new Set<KeyMessage>();
  #channel: Channel | undefined;
  #serial: Promise<void> = Promise.resolve();
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #idleSweeper: ReturnType<typeof setInterval> | undefined;
  #lastLogOffset: number | undefined;
  /** Whether the key log is consumed on the current channel. */
  #logFollowed = false;
  #logTimer: ReturnType<typeof setTimeout> | undefined;
  /** Key log entries, handled in their order (an idle key's waits for a look at its queue). */
  #logEntries: Promise<void> = Promise.resolve();
  #cancelled = false;

  constructor(
    host: KeyConsumerHost,
    handler: (delivery: Delivery) => void,
    options: {
      accept?: (job: JobEnvelope) => string | undefined;
      hooks?: KeyHooks;
      paused: () => boolean;
      /** Told how many keyed deliveries the handler holds, each time it changes (they take slots of the job queue's prefetch). */
      load?: (handed: number) => void;
    },
  ) {
    this.#host = host;
    this.#handler = handler;
    this.#accept = options.accept;
    this.#hooks = options.hooks;
    this.#paused = options.paused;
    this.#load = options.load;
    this.#keeper = new ChannelKeeper(host.connection, {
      what: `concurrency key consumer of "${host.names.jobs}"`,
      setup: (channel) => this.#setup(channel),
      lost: (channel, error) => this.#lost(channel, error),
      report: (error) => host.report(error, "channel"),
    });
  }

  /** The hooks the job queue's consumer calls for a job it routed. */
  get hooks(): KeyHooks | undefined {
    return this.#hooks;
  }

  async start(): Promise<void> {
    await this.#keeper.start();
    if (this.#host.consumerTimeoutMs > 0) {
      const margin = holdMarginMs(this.#host.consumerTimeoutMs);
      this.#sweeper = setInterval(() => this.#sweep(margin), Math.max(20, Math.min(30_000, Math.floor(margin / 2))));
      this.#sweeper.unref?.();
    }
    this.#idleSweeper = setInterval(() => this.#sweepIdle(), Math.max(25, Math.min(60_000, Math.floor(this.#host.keyIdleMs / 4))));
    this.#idleSweeper.unref?.();
  }

  /**
   * Keys in use are announced again (so no other dispatcher stops consuming them); a key idle
   * here for `keyIdleMs`, holding nothing and announced by nobody meanwhile, stops being consumed
   * here, so that its queue, once no dispatcher consumes it, expires (`x-expires`).
   *
   * Why that loses no job: a key's queue with jobs in it has an active consumer holding some of
   * them (its prefetch is at least 2), which announces the key, so every other dispatcher keeps
   * consuming it and takes over if the active one dies. A job routed to a key no one consumes any
   * more is announced first (every dispatcher consumes the key again) and its router consumes it
   * itself right after the publish. So a key queue has no consumer only when it is empty, or when
   * every dispatcher is down (the expiry bounds that outage: `keyQueueExpiresMs`).
   */
  #sweepIdle(): void {
    const now = Date.now();
    for (const lane of [...this.#lanes.values()]) {
      if (lane.arrived.length > 0 || lane.holders.size > 0) {
        lane.lastActive = now;
        void this.#host.announce(lane.key, Math.max(lane.limit, lane.raiseTo ?? 0)).catch((error: unknown) => this.#host.report(OrchestratorError.from(error), "channel"));
        continue;
      }
      if (now - lane.lastActive < this.#host.keyIdleMs || this.#heldOf(lane)) {
        void this.#raise(lane).catch((error: unknown) => this.#host.report(OrchestratorError.from(error), "channel"));
        continue;
      }
      this.#drop(lane);
    }
  }

  /**
   * Applies a raised limit to the key's consumer here, once the lane holds nothing of the key:
   * the broker fixes a consumer's prefetch (`limit + 1`) when it starts (RabbitMQ 3.10 applies
   * `basic.qos` to later consumers only, and refuses global QoS on quorum queues), so a raise
   * needs a new consumer, and the old one may only be cancelled holding nothing. Cancelling it
   * while it held deliveries would hand the single-active role to the next consumer in line,
   * often another process's, which would take more jobs of the key while these still run: over
   * the limit. So the lane goes (its consumer cancelled) and comes back with the new limit,
   * queued behind the key's other consumers. Resolves once re-subscribed (at once if not yet).
   */
  #raise(lane: KeyLane): Promise<void> {
    const limit = lane.raiseTo;
    if (limit === undefined || lane.arrived.length > 0 || lane.holders.size > 0 || this.#heldOf(lane) || this.#lanes.get(lane.key) !== lane) return Promise.resolve();
    this.#drop(lane);
    return this.learn(lane.key, limit);
  }

  /** Whether a message of `lane` is still held here (being settled). */
  #heldOf(lane: KeyLane): boolean {
    for (const keyed of this.#held) if (keyed.lane === lane) return true;
    return false;
  }

  /**
   * Stops consuming an idle key. The lane leaves the map first: a job of the key routed from now
   * on makes a new lane and a new consumer.
   */
  #drop(lane: KeyLane): void {
    this.#lanes.delete(lane.key);
    clearTimeout(lane.timer);
    this.#host.forgetKey(lane.key);
    const channel = this.#channel;
    const tag = lane.tag;
    lane.tag = undefined;
    if (channel === undefined || tag === undefined) return;
    void this.#serialize(async () => {
      if (channel === this.#channel) await channel.cancel(tag);
    }).catch(ignore);
  }

  /** Closes the channel: every key delivery held goes back to its queue, and its places with it. Idempotent. */
  async cancel(): Promise<void> {
    if (this.#cancelled) return;
    this.#cancelled = true;
    if (this.#sweeper !== undefined) clearInterval(this.#sweeper);
    clearInterval(this.#idleSweeper);
    for (const lane of this.#lanes.values()) clearTimeout(lane.timer);
    clearTimeout(this.#logTimer);
    await this.#keeper.close();
  }

  /**
   * Follows `key` (when followed already, only notes it in use); resolves once its queue is
   * consumed here. `activeAt`: when the key was last known in use (epoch ms, a key log entry's time).
   */
  learn(key: string, limit: number, activeAt = Date.now()): Promise<void> {
    const known = this.#lanes.get(key);
    if (known !== undefined) {
      known.lastActive = Math.max(known.lastActive, activeAt);
      if (limit > Math.max(known.limit, known.raiseTo ?? 0)) known.raiseTo = limit;
      // Known but not consumed on the live channel (revived by a stray delivery, see
      // `#onMessage`, or its subscribe failed): subscribe it, or the key's jobs wait unconsumed.
      const channel = this.#channel;
      if (known.tag === undefined && channel !== undefined && !this.#cancelled) return this.#subscribeLane(channel, known);
      return this.#raise(known);
    }
    if (this.#cancelled) return Promise.resolve();
    const lane: KeyLane = { key, limit, holders: new KeyHolders(), arrived: [], tag: undefined, subscribing: undefined, timer: undefined, lastActive: Math.min(activeAt, Date.now()), raiseTo: undefined };
    this.#lanes.set(key, lane);
    const channel = this.#channel;
    if (channel === undefined) return Promise.resolve();
    // A key routed here means the key log exists now: follow it without waiting for the next look.
    if (!this.#logFollowed) void this.#serialize(() => this.#followLog(channel)).catch(ignore);
    return this.#subscribeLane(channel, lane);
  }

  /** Subscribes `lane` on `channel` after the tasks queued before it; one subscribe at a time per lane. */
  #subscribeLane(channel: Channel, lane: KeyLane): Promise<void> {
    if (lane.subscribing !== undefined) return lane.subscribing;
    const run = this.#serialize(() => this.#subscribe(channel, lane)).finally(() => {
      if (lane.subscribing === run) lane.subscribing = undefined;
    });
    lane.subscribing = run;
    return run;
  }

  /** The job queue's prefetch rose from 0: hand over what waits for a place that is free. */
  resume(): void {
    for (const lane of this.#lanes.values()) this.#pump(lane);
  }

  #serialize(task: () => Promise<void>): Promise<void> {
    const run = this.#serial.then(task);
    this.#serial = run.catch(ignore);
    return run;
  }

  async #setup(channel: Channel): Promise<void> {
    this.#channel = channel;
    this.#logFollowed = false;
    await this.#serialize(async () => {
      await this.#followLog(channel);
      for (const lane of this.#lanes.values()) await this.#subscribe(channel, lane);
    });
  }

  /**
   * Consumes the key log from its start (or where this consumer left it), once it exists: a
   * deployment that never used a key has none, and only looks for it every few seconds.
   */
  async #followLog(channel: Channel): Promise<void> {
    if (this.#logFollowed || channel !== this.#channel || this.#cancelled) return;
    clearTimeout(this.#logTimer);
    this.#logTimer = undefined;
    if (!(await this.#host.keyLogExists())) {
      if (channel !== this.#channel || this.#cancelled) return;
      this.#logTimer = setTimeout(() => void this.#serialize(() => this.#followLog(channel)).catch(ignore), KEY_LOG_POLL_MS);
      this.#logTimer.unref?.();
      return;
    }
    if (channel !== this.#channel || this.#logFollowed) return;
    // Streams need a prefetch; key consumers set their own before they start.
    await channel.prefetch(200);
    const offset = this.#lastLogOffset === undefined ? "first" : this.#lastLogOffset + 1;
    await channel.consume(this.#host.names.keyLog, (message) => this.#onLog(channel, message), { noAck: false, arguments: { "x-stream-offset": offset } });
    this.#logFollowed = true;
  }

  async #subscribe(channel: Channel, lane: KeyLane): Promise<void> {
    if (channel !== this.#channel || this.#cancelled || lane.tag !== undefined || this.#lanes.get(lane.key) !== lane) return;
    const queue = await this.#host.declareKey(lane.key);
    await channel.prefetch(lane.limit + 1);
    const { consumerTag } = await channel.consume(queue, (message) => this.#onMessage(channel, lane, message), { noAck: false });
    // Dropped as idle while subscribing: this consumer goes too.
    if (this.#lanes.get(lane.key) !== lane) await channel.cancel(consumerTag);
    else lane.tag = consumerTag;
  }

  #onLog(channel: Channel, message: ConsumeMessage | null): void {
    if (message === null || channel !== this.#channel) return;
    try {
      channel.ack(message);
    } catch {
      return; // the channel is closing
    }
    const offset = message.properties.headers?.["x-stream-offset"];
    if (typeof offset === "number") this.#lastLogOffset = offset;
    let entry: { key: string; limit: number; at: number };
    try {
      const value = JSON.parse(message.content.toString("utf8")) as Record<string, unknown>;
      const checked = checkConcurrency("keyLog", { key: value.key, limit: value.limit });
      // Entries written before they carried their time count as written now.
      const at = typeof value.at === "number" && Number.isFinite(value.at) ? Math.min(value.at, Date.now()) : Date.now();
      entry = { key: checked.key, limit: checked.limit, at };
    } catch {
      return; // not ours: ignored
    }
    if (entry.key.length > MAX_CONCURRENCY_KEY) return;
    const { key, limit, at } = entry;
    const report = (error: unknown) => this.#host.report(OrchestratorError.from(error), "channel");
    this.#logEntries = this.#logEntries.then(async () => {
      // Announced last longer than keyIdleMs ago (an entry of a key in use is at most a third of
      // that old when its next one comes): idle everywhere, so not consumed again, and its queue,
      // if expired, not declared again (a restart reads a week of the log). Unless its queue is
      // still there: it may hold jobs that waited while every dispatcher was down.
      if (Date.now() - at >= this.#host.keyIdleMs && !this.#lanes.has(key) && !(await this.#host.keyQueueExists(key))) return;
      void this.learn(key, limit, at).catch(report);
    }).catch(report);
  }

  #onMessage(channel: Channel, arrivedOn: KeyLane, message: ConsumeMessage | null): void {
    let lane = arrivedOn;
    if (message === null) {
      // The key's queue was deleted: a new channel declares it again and consumes anew.
      this.#host.report(new OrchestratorError("unavailable", `the broker cancelled the consumer of concurrency key "${lane.key}" (queue deleted?)`), "channel");
      void channel.close().catch(ignore);
      return;
    }
    if (channel !== this.#channel || this.#cancelled) return; // the channel is closing: the broker takes it back
    // Sent before the broker saw the cancel of a lane dropped as idle: the key is in use again,
    // in the key's current lane if a new job made one (one count of its places), else in this one,
    // which consumes the key again at once (its consumer is being cancelled): a job of the key
    // routed from now on finds the lane known and would otherwise wait with no consumer.
    const current = this.#lanes.get(lane.key);
    if (current === undefined) {
      this.#lanes.set(lane.key, lane);
      if (lane.tag === undefined) void this.#subscribeLane(channel, lane).catch((error: unknown) => this.#host.report(OrchestratorError.from(error), "channel"));
    } else lane = current;
    const held: HeldMessage = { channel, message, consumerTag: message.fields.consumerTag, receivedAt: Date.now(), settled: false, lost: false };
    const read = readMessage(message, this.#host.maxEnvelopeBytes, this.#accept, (error) => this.#host.report(error, "accept"));
    if (read.refusal !== undefined) {
      void this.#deadLetterHeld(held, read.job, read.attempt, read.refusal);
      return;
    }
    const { job, attempt } = read;
    // A delivery its holder lost (that holder's process or channel died) may still be running
    // there until the abort reaches its worker's handler: it waits before it is handed over.
    const notBefore = message.fields.redelivered ? held.receivedAt + this.#host.keyHandoverDelayMs : 0;
    const keyed: KeyMessage = { lane, held, job, attempt, notBefore, holder: undefined, counted: false };
    lane.lastActive = held.receivedAt;
    this.#held.add(keyed);
    lane.arrived.push(keyed);
    this.#pump(lane);
  }

  /** Hands over the jobs next in `lane` while the key's rule lets them go. */
  #pump(lane: KeyLane): void {
    const report = (error: unknown) => this.#host.report(OrchestratorError.from(error), "consumer");
    while (lane.arrived.length > 0 && !this.#paused() && !this.#cancelled) {
      const next = lane.arrived[0] as KeyMessage;
      const wait = next.notBefore - Date.now();
      if (wait > 0) {
        lane.timer ??= setTimeout(() => {
          lane.timer = undefined;
          this.#pump(lane);
        }, wait);
        return;
      }
      // A job without a key here (written by hand) takes a place all the same.
      const verdict = next.job.concurrency === undefined ? { kind: "deliver" as const } : lane.holders.decide(next.job, report, lane.limit);
      if (verdict.kind === "wait") return;
      lane.arrived.shift();
      if (verdict.kind === "deliver") next.holder = lane.holders.hold(next.job, this.#hooks);
      const delivery = new AmqpDelivery(next.job, next.attempt, next.held, (held, action) => this.#settle(next, action), verdict.kind === "drop" ? verdict.message : undefined);
      next.held.delivery = delivery;
      this.#count(next, 1);
      handOver(this.#handler, delivery, (error) => this.#host.report(error, "consumer"), 1000);
    }
  }

  async #settle(keyed: KeyMessage, action: AmqpSettleAction): Promise<void> {
    const { held, job, attempt } = keyed;
    if (held.settled) throw alreadySettled(job, attempt);
    held.settled = true;
    this.#count(keyed, -1);
    if (held.lost) throw deliveryLost(job, attempt, action.kind);
    if (action.kind !== "ack") {
      try {
        if (action.kind === "retry") await this.#host.republish({ ...job, attempt: attempt + 1 }, action.delayMs, action.reason);
        else await this.#host.deadLetter(held.message, action.reason, job, attempt);
      } catch (error) {
        // Not moved: give it back to its key's queue rather than hold it forever.
        this.#release(keyed, (channel) => channel.nack(held.message, false, true));
        throw error;
      }
      if (held.lost) throw deliveryLost(job, attempt, `ack after ${action.kind} (the new copy was published, so the job may run twice)`);
    }
    if (held.lost) throw deliveryLost(job, attempt, "ack");
    this.#release(keyed, (channel) => channel.ack(held.message));
  }

  /** Acks (or nacks) a held message on its channel, frees its place and hands over the next. */
  #release(keyed: KeyMessage, settle: (channel: Channel) => void): void {
    const { held, lane } = keyed;
    if (!held.lost) {
      try {
        settle(held.channel);
      } catch (cause) {
        throw deliveryLost(keyed.job, keyed.attempt, "ack", cause);
      } finally {
        this.#forget(keyed);
      }
    }
    this.#pump(lane);
    // The last delivery of the key held here settled: a raised limit can take effect now.
    void this.#raise(lane).catch((error: unknown) => this.#host.report(OrchestratorError.from(error), "channel"));
  }

  /** Counts a handed-over delivery in (`1`) or out (`-1`, once) of the load the handler holds. */
  #count(keyed: KeyMessage, change: 1 | -1): void {
    if (keyed.counted === (change === 1)) return;
    keyed.counted = change === 1;
    this.#handed += change;
    try {
      this.#load?.(this.#handed);
    } catch (error) {
      this.#host.report(OrchestratorError.from(error), "consumer");
    }
  }

  #forget(keyed: KeyMessage): void {
    this.#held.delete(keyed);
    keyed.lane.lastActive = Date.now();
    if (keyed.holder !== undefined) keyed.lane.holders.release(keyed.holder);
    keyed.holder = undefined;
    const index = keyed.lane.arrived.indexOf(keyed);
    if (index >= 0) keyed.lane.arrived.splice(index, 1);
  }

  async #deadLetterHeld(held: HeldMessage, job: JobEnvelope | undefined, attempt: number | undefined, reason: string): Promise<void> {
    held.settled = true;
    try {
      await this.#host.deadLetter(held.message, reason, job, attempt);
      if (!held.lost) held.channel.ack(held.message);
    } catch (error) {
      this.#host.report(OrchestratorError.from(error), "consumer");
      if (!held.lost) {
        try {
          held.channel.nack(held.message, false, true);
        } catch {
          // closed: the broker took it back
        }
      }
    }
  }

  #lost(channel: Channel, error: OrchestratorError): void {
    if (channel === this.#channel) this.#channel = undefined;
    for (const keyed of [...this.#held]) {
      if (keyed.held.channel !== channel) continue;
      keyed.held.lost = true;
      this.#forget(keyed);
      this.#count(keyed, -1);
      const delivery = keyed.held.delivery;
      if (delivery && !keyed.held.settled) {
        const reason = deliveryLost(delivery.job, delivery.attempt, "settle", error);
        delivery.abort(reason);
        this.#host.deliveryLost(delivery.job, delivery.attempt, reason);
      }
    }
    for (const lane of this.#lanes.values()) lane.tag = undefined;
    this.#logFollowed = false;
  }

  /**
   * Before the broker's `consumer_timeout` closes the channel: a job next in line held that long
   * goes to the back of its key's queue (attempt unchanged); a handed-over delivery held that long
   * is dead-lettered and its signal aborted, as the job queue's consumer does.
   */
  #sweep(marginMs: number): void {
    const limit = this.#host.consumerTimeoutMs - marginMs;
    const now = Date.now();
    for (const keyed of [...this.#held]) {
      const { held } = keyed;
      if (held.settled || held.lost || now - held.receivedAt < limit) continue;
      if (held.delivery === undefined) {
        held.settled = true;
        this.#forget(keyed);
        void this.#host.requeueKeyed({ ...keyed.job, attempt: keyed.attempt }).then(
          () => {
            if (!held.lost) held.channel.ack(held.message);
          },
          (error: unknown) => {
            this.#host.report(OrchestratorError.from(error), "consumer");
            if (!held.lost) held.channel.nack(held.message, false, true);
          },
        ).catch(ignore);
        continue;
      }
      const delivery = held.delivery;
      const reason =
        `consumer_timeout: job ${keyed.job.id} was held ${now - held.receivedAt} ms without an ack, close to the broker's consumer_timeout ` +
        `(consumerTimeoutMs ${this.#host.consumerTimeoutMs}); raise consumer_timeout on the broker and consumerTimeoutMs (see docs/rabbitmq.md)`;
      held.settled = true;
      this.#count(keyed, -1);
      void this.#host.deadLetter(held.message, reason, keyed.job, keyed.attempt).then(
        () => this.#release(keyed, (channel) => channel.ack(held.message)),
        (error: unknown) => {
          this.#host.report(OrchestratorError.from(error), "consumer");
          this.#release(keyed, (channel) => channel.nack(held.message, false, true));
        },
      ).catch(ignore);
      delivery.abort(new OrchestratorError("deadline_exceeded", reason, { retryable: false, details: { reason: "consumer_timeout", jobId: keyed.job.id } }));
    }
  }
}
