import { randomUUID } from "node:crypto";
import type { Options } from "amqplib";
import { EventEmitter } from "eventemitter3";
import { invalidArgument, OrchestratorError } from "../../errors.ts";
import { throwIfAborted } from "../../signals.ts";
import { checkFunction, checkInteger, checkObject, checkSignal, optional } from "../../validate.ts";
import { checkCancelCommand, checkJobEvent, checkJobId } from "../../job/event-checks.ts";
import type { CancelCommand, JobEvent } from "../../job/types.ts";
import type { JobEvents, PublishOptions, Subscription, WaitOptions } from "../types.ts";
import { connectionFrom } from "./amqp-connection.ts";
import { forwardConnectionEvents, reporter } from "./report.ts";
import type { AmqpConnection, AmqpConnectionOptions, AmqpNodeInfo } from "./amqp-connection.ts";
import { CANCEL_ID_HEADER, CancelSubscription } from "./cancel-subscription.ts";
import { DelayCascade } from "./delay-cascade.ts";
import { EventBatcher } from "./event-batcher.ts";
import { EventSubscriber } from "./event-subscriber.ts";
import type { EventRouting } from "./event-subscriber.ts";
import { declareEventTopology, eventRoutingKey, resolveTopologyNames } from "./topology.ts";
import type { AmqpTopologyNames } from "./topology.ts";
import { type ClientTelemetry, clientTelemetry } from "../../telemetry/client-telemetry.ts";
import { type Logger, resolveLogger } from "../../telemetry/logger.ts";

/** Options of {@link AmqpEvents}: its own, plus either `connection` or the connection options. */
export interface AmqpEventsOptions extends Partial<AmqpConnectionOptions> {
  /** A connection shared with an {@link AmqpQueue}; never closed by the events. Else give `url`. */
  connection?: AmqpConnection;
  /** The job queue name the deployment's names derive from. @default "blacktree.jobs" */
  queueName?: string;
  /** Overrides of single names. */
  names?: Partial<AmqpTopologyNames>;
  /**
   * How long cancel commands are retained (the cancel log's `x-max-age`) and replayed to new
   * cancel subscribers: longer than a job may wait in the queue. Part of the stream's identity.
   * @default 86_400_000 (24 hours)
   */
  cancelRetentionMs?: number;
  /**
   * How long this process's subscriber queues outlive its connection (`x-expires`): events
   * published while it reconnects wait for it that long.
   * @default 300_000
   */
  subscriberExpiresMs?: number;
  /**
   * Type of this process's subscriber queues (events, live cancels). A classic queue lives on the
   * node that declared it: when that node of a cluster dies, the events routed to it are lost and
   * it cannot be declared again elsewhere until the node is back. A quorum queue is replicated
   * (cost: a Raft write per event on a majority of nodes).
   * @default "quorum" when the connection lists several broker URLs (a cluster), else "classic"
   */
  subscriberQueueType?: "classic" | "quorum";
  /**
   * How `subscribe(jobId)` receives events:
   * - `"all"`: this process's queue is bound once to every event (`#`) and filtered locally —
   *   no broker round trip per subscription; best for one or a few producers at high rates;
   * - `"per-job"`: one binding per subscribed job (a broker round trip each; RabbitMQ 3.10 does
   *   about 2,400 transient / 800 durable bindings per second), so a process receives only the
   *   events it asked for; best for many producers each following a few jobs.
   * @default "all"
   */
  eventRouting?: EventRouting;
  /**
   * Send the job events this process publishes in one event-loop turn as one message (format
   * version 2: `{"v":2,"events":[…]}`, routed with every event's key through RabbitMQ's `BCC`
   * header, one publisher confirm for all): the broker's cost is per message, so this cuts its
   * work per job several times under load. A turn with one event sends it alone, as version 1
   * (the event object). Readers of this version read both; older readers drop version-2
   * messages, so turn this off while subscribers of an older version still run.
   * @default true
   */
  batchEvents?: boolean;
}

/** Events of {@link AmqpEvents}. */
export interface AmqpEventsEvents {
  disconnected: [{ error: OrchestratorError; node?: AmqpNodeInfo }];
  reconnected: [{ attempts: number; downtimeMs: number; node?: AmqpNodeInfo }];
  /** A listener threw, or a subscriber channel could not be restored. Without a listener the first is logged once. */
  error: [{ error: OrchestratorError; source: "listener" | "channel" | "connection" }];
}

const CLOSED = (what: string) => new OrchestratorError("queue_closed", `cannot ${what}: the AmqpEvents is closed`);

/** How long before a job's due time the cancel of a delayed job is announced again (see `cancel`). */
const REANNOUNCE_LEAD_MS = 60_000;

/**
 * {@link JobEvents} on RabbitMQ: job events on a topic exchange, cancel commands on a fanout
 * exchange retained in a stream.
 *
 * - `publish`: to `${queueName}.events`, routing key `${kind}.${jobId}`; result events (and any
 *   with `confirm: true`) are persistent and confirmed, progress and log fire-and-forget; all go
 *   out on one channel, so a job's events keep their order. Events of one event-loop turn share
 *   one message and one confirm (see `batchEvents`).
 * - `subscribe`: one durable, self-expiring queue per instance (see `eventRouting`).
 * - `cancel`: to the `${queueName}.cancels` fanout, which feeds the `${queueName}.cancels.log`
 *   stream (retained `cancelRetentionMs`) and every subscriber's live queue; confirmed. The cancel
 *   of a job due later than half the retention (`command.runAt`) also waits in the delay cascade
 *   and is announced again a minute (at most a quarter of the retention) before the job is due.
 * - `subscribeCancels`: replays the log from `now - cancelRetentionMs`, then follows both paths;
 *   resolves once the replay caught up, so a dispatcher that starts consuming after it knows every
 *   cancel sent before it started.
 *
 * @example
 * ```ts
 * const events = new AmqpEvents({ url: "amqp://localhost", queueName: "builds" });
 * await events.subscribeCancels((command) => dispatcher.cancel(command));
 * ```
 */
export class AmqpEvents extends EventEmitter<AmqpEventsEvents> implements JobEvents {
  readonly #names: AmqpTopologyNames;
  readonly #retentionMs: number;
  readonly #expiresMs: number;
  readonly #queueType: "classic" | "quorum";
  readonly #connection: AmqpConnection;
  readonly #owned: boolean;
  readonly #subscriber: EventSubscriber;
  readonly #batcher: EventBatcher | undefined;
  readonly #cancelSubscriptions = new Set<CancelSubscription>();
  readonly #cascade: DelayCascade;
  readonly #unlisten: () => void;
  readonly #report = reporter<AmqpEventsEvents["error"][0]["source"]>(this, "AmqpEvents", () => this.#logger);
  /** Where errors and warnings go besides the `error` listeners. */
  #logger: Logger | undefined;
  /** Figures of the events and cancels it sends and receives. */
  readonly #figures: ClientTelemetry;
  #topologyReady = false;
  #closed = false;

  /** @throws {OrchestratorError} `invalid_argument` for a bad option, or `connection` beside connection options. */
  constructor(options: AmqpEventsOptions) {
    super();
    const o = checkObject("options", options);
    this.#logger = resolveLogger(o.logger);
    this.#figures = clientTelemetry(o.telemetry, "rabbitmq");
    this.#names = resolveTopologyNames(o.queueName, o.names);
    this.#retentionMs = optional(o.cancelRetentionMs, 86_400_000, (v) => checkInteger("cancelRetentionMs", v, 1000));
    this.#expiresMs = optional(o.subscriberExpiresMs, 300_000, (v) => checkInteger("subscriberExpiresMs", v, 1000));
    const routing = optional<EventRouting>(o.eventRouting, "all", (v) => {
      if (v !== "all" && v !== "per-job") throw new OrchestratorError("invalid_argument", `Expected \`eventRouting\` to be "all" or "per-job", got \`${String(v)}\``, { details: { field: "eventRouting" } });
      return v;
    });
    const batch = optional(o.batchEvents, true, (v) => {
      if (typeof v !== "boolean") throw invalidArgument("batchEvents", "a boolean", v);
      return v;
    });
    const { connection, owned } = connectionFrom(o);
    this.#queueType = optional(o.subscriberQueueType, connection.urlCount > 1 ? "quorum" : "classic", (v) => {
      if (v !== "classic" && v !== "quorum") throw new OrchestratorError("invalid_argument", `Expected \`subscriberQueueType\` to be "classic" or "quorum", got \`${String(v)}\``, { details: { field: "subscriberQueueType" } });
      return v;
    });
    this.#connection = connection;
    this.#owned = owned;
    this.#cascade = new DelayCascade(connection, this.#names);
    this.#batcher = batch ? new EventBatcher({ exchange: this.#names.events, publish: (request) => connection.publish(request) }) : undefined;
    this.#subscriber = new EventSubscriber({
      connection,
      exchange: this.#names.events,
      queue: `${this.#names.events}.sub.${connection.id}.${randomUUID().slice(0, 8)}`,
      expiresMs: this.#expiresMs,
      queueType: this.#queueType,
      routing,
      report: (error, source) => this.#report(error, source),
    });
    this.#unlisten = forwardConnectionEvents(connection, this, (error, source) => this.#report(error, source), owned);
  }

  /** The connection these events use. */
  get connection(): AmqpConnection {
    return this.#connection;
  }

  /** The broker objects these events use. */
  get names(): Readonly<AmqpTopologyNames> {
    return this.#names;
  }

  /**
   * Connects and declares the exchanges and the cancel log; other calls do it on first use.
   * @throws {OrchestratorError} `precondition_failed` when the cancel log exists with another
   * retention, `unavailable` after `timeoutMs`, `queue_closed`.
   */
  async ready(options: WaitOptions = {}): Promise<void> {
    if (this.#closed) throw CLOSED("connect");
    await this.#declareTopology(options);
  }

  /** {@inheritDoc JobEvents.publish} */
  publish(event: JobEvent, options: PublishOptions = {}): Promise<void> {
    return this.#figures.sent(this.#names.events, "publish", () => this.#publish(event, options));
  }

  async #publish(event: JobEvent, options: PublishOptions): Promise<void> {
    const { jobId, kind } = checkJobEvent(event);
    const o = checkObject("options", options);
    const signal = checkSignal("options.signal", o.signal);
    throwIfAborted(signal);
    if (this.#closed) throw CLOSED("publish");
    const confirm = o.confirm === undefined ? kind === "result" : o.confirm === true;
    const timeoutMs = optional(o.timeoutMs, undefined, (v) => checkInteger("options.timeoutMs", v, 1));
    if (!this.#topologyReady) await this.#declareTopology({ signal, timeoutMs: timeoutMs ?? this.#connection.publishTimeoutMs });
    if (this.#closed) throw CLOSED("publish");
    const routingKey = eventRoutingKey(kind, jobId);
    if (this.#batcher !== undefined) return this.#batcher.add(event, routingKey, confirm, signal, timeoutMs);
    await this.#connection.publish({
      exchange: this.#names.events,
      routingKey,
      body: Buffer.from(JSON.stringify(event)),
      properties: { contentType: "application/json", persistent: confirm },
      confirm,
      signal,
      timeoutMs,
    });
  }

  /** {@inheritDoc JobEvents.subscribe} */
  async subscribe(jobId: string, listener: (event: JobEvent) => void): Promise<Subscription> {
    checkJobId("jobId", jobId);
    checkFunction("listener", listener);
    if (this.#closed) throw CLOSED("subscribe");
    if (!this.#topologyReady) await this.#declareTopology({ timeoutMs: this.#connection.publishTimeoutMs });
    const subscription = await this.#subscriber.subscribe(jobId, this.#figures.consumed(this.#names.events, "receive", listener));
    if (this.#closed) {
      await subscription.close();
      throw CLOSED("subscribe");
    }
    return subscription;
  }

  /** {@inheritDoc JobEvents.cancel} */
  cancel(command: CancelCommand, options: WaitOptions = {}): Promise<void> {
    return this.#figures.sent(this.#names.cancels, "cancel", () => this.#cancel(command, options));
  }

  async #cancel(command: CancelCommand, options: WaitOptions): Promise<void> {
    const clean = checkCancelCommand(command);
    const o = checkObject("options", options);
    const signal = checkSignal("options.signal", o.signal);
    throwIfAborted(signal);
    if (this.#closed) throw CLOSED("send a cancel");
    const timeoutMs = optional(o.timeoutMs, undefined, (v) => checkInteger("options.timeoutMs", v, 1));
    if (!this.#topologyReady) await this.#declareTopology({ signal, timeoutMs: timeoutMs ?? this.#connection.publishTimeoutMs });
    const body = Buffer.from(JSON.stringify(clean));
    const properties = (): Options.Publish => ({ contentType: "application/json", persistent: true, headers: { [CANCEL_ID_HEADER]: randomUUID() } });
    await this.#connection.publish({ exchange: this.#names.cancels, routingKey: "", body, properties: properties(), confirm: true, mandatory: true, signal, timeoutMs });
    // The log keeps a command `cancelRetentionMs`; the cancel of a job due later than that would
    // be gone from it when the job comes due, for a dispatcher (re)started in between. So a copy
    // waits in the delay cascade and is announced again shortly before the job is due: logged
    // afresh, it holds for another retention from then.
    const runAt = clean.runAt;
    if (runAt !== undefined && runAt - Date.now() > this.#retentionMs / 2) {
      const dueAt = runAt - Math.min(REANNOUNCE_LEAD_MS, Math.floor(this.#retentionMs / 4));
      await this.#cascade.publish({ destination: { exchange: this.#names.cancels }, dueAt, body, properties: properties(), signal, timeoutMs });
    }
  }

  /** {@inheritDoc JobEvents.subscribeCancels} */
  async subscribeCancels(listener: (command: CancelCommand) => void): Promise<Subscription> {
    checkFunction("listener", listener);
    if (this.#closed) throw CLOSED("subscribe to cancels");
    if (!this.#topologyReady) await this.#declareTopology({ timeoutMs: this.#connection.publishTimeoutMs });
    const subscription = new CancelSubscription({
      connection: this.#connection,
      names: this.#names,
      retentionMs: this.#retentionMs,
      expiresMs: this.#expiresMs,
      queueType: this.#queueType,
      listener: this.#figures.consumed(this.#names.cancels, "receive", listener),
      report: (error, source) => this.#report(error, source),
    });
    this.#cancelSubscriptions.add(subscription);
    try {
      await subscription.start();
    } catch (error) {
      this.#cancelSubscriptions.delete(subscription);
      await subscription.close();
      throw this.#closed ? CLOSED("subscribe to cancels") : error;
    }
    if (this.#closed) throw CLOSED("subscribe to cancels");
    return {
      close: async () => {
        this.#cancelSubscriptions.delete(subscription);
        await subscription.close();
      },
    };
  }

  /** Closes every subscription (and the connection if owned); later calls reject `queue_closed`. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // Events accepted before close() go out, and settle with their outcome.
    this.#batcher?.flush();
    await Promise.all([this.#subscriber.close(), ...[...this.#cancelSubscriptions].map((s) => s.close())]);
    this.#cancelSubscriptions.clear();
    this.#unlisten();
    if (this.#owned) await this.#connection.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #declareTopology(options: WaitOptions): Promise<void> {
    const names = this.#names;
    const retention = this.#retentionMs;
    const key = `events:${names.events}:${names.cancels}:${names.cancelLog}:${retention}`;
    await this.#connection.declare(key, (channel) => declareEventTopology(channel, names, retention), options);
    this.#topologyReady = true;
  }
}
