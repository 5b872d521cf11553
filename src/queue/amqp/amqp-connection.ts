import { randomUUID } from "node:crypto";
import { connect } from "amqplib";
import type { Channel, ChannelModel, ConfirmChannel } from "amqplib";
import { EventEmitter } from "eventemitter3";
import { invalidArgument, OrchestratorError } from "../../errors.ts";
import { delay, raceSignal, throwIfAborted, waitSignal } from "../../signals.ts";
import { backoffDelay } from "../../timers.ts";
import type { WaitOptions } from "../types.ts";
import { ConfirmPublisher } from "./confirm-publisher.ts";
import type { PublishRequest } from "./confirm-publisher.ts";
import { CONNECTION_OPTION_KEYS, resolveConnectionOptions } from "./connection-options.ts";
import type { AmqpConnectionOptions, ResolvedConnectionOptions } from "./connection-options.ts";
import { emitSafely, reportError } from "../../events.ts";
import { closeQuietly, fromAmqpError, isFatal, redactUrl } from "./errors.ts";
import { coalesceWrites, watchLiveness } from "./socket-tuning.ts";
import { logConnectionEvent } from "./report.ts";

/**
 * Lifecycle of an {@link AmqpConnection}:
 * - `idle`: constructed, nothing opened yet;
 * - `connecting`: opening the first connection (retrying with backoff);
 * - `connected`: open, topology declared, publishing;
 * - `reconnecting`: the connection was lost; retrying with backoff, publishes wait in the buffer;
 * - `failed`: a fault retrying cannot fix (bad credentials, conflicting topology); every call rejects with it;
 * - `closed`: `close()` was called.
 */
export type { AmqpConnectionOptions, AmqpReconnectOptions } from "./connection-options.ts";

export type AmqpConnectionState = "idle" | "connecting" | "connected" | "reconnecting" | "failed" | "closed";

/** The broker node a connection is on: which of the `url` list, and that URL without its credentials. */
export interface AmqpNodeInfo {
  /** Position in the `url` option (0 for a single URL). */
  index: number;
  /** The node's URL with user and password hidden. */
  url: string;
}

/** Events of {@link AmqpConnection}. */
export interface AmqpConnectionEvents {
  /** The connection (re)opened and the topology is declared. `attempts`: tries it took; `node`: where. */
  connected: [{ attempts: number; node: AmqpNodeInfo }];
  /** The connection was lost; it is being re-established. `node`: the one it was on. */
  disconnected: [{ error: OrchestratorError; node?: AmqpNodeInfo }];
  /** A lost connection is back: topology re-declared; consumers restore themselves. `node`: where it is now. */
  reconnected: [{ attempts: number; downtimeMs: number; node?: AmqpNodeInfo }];
  /** Something failed that no call can report (a fatal failure, a failed reconnect attempt). */
  error: [{ error: OrchestratorError }];
  /** The broker blocked publishing (resource alarm); publishes wait in the buffer. */
  blocked: [{ reason: string }];
  unblocked: [{}];
}

/** Declares part of the topology on a channel; run on every (re)connect. @internal */
export type TopologyDeclarer = (channel: Channel) => Promise<void>;

/**
 * One managed RabbitMQ connection shared by {@link AmqpQueue} and {@link AmqpEvents}: connects
 * lazily, re-declares every registered part of the topology after each (re)connect, publishes on
 * a confirm channel through a bounded buffer, and reconnects with capped, jittered backoff.
 * Channels of consumers are restored by their owners (see `watch`).
 *
 * Share one between a queue and its events so a process holds one TCP connection:
 *
 * @example
 * ```ts
 * const connection = new AmqpConnection({ url: "amqp://localhost" });
 * const queue = new AmqpQueue({ connection });
 * const events = new AmqpEvents({ connection });
 * …
 * await queue.close(); await events.close(); await connection.close();
 * ```
 */
export class AmqpConnection extends EventEmitter<AmqpConnectionEvents> {
  /** A random id naming this client's broker objects (subscriber queues). */
  readonly id: string = randomUUID().slice(0, 12);
  readonly #options: ResolvedConnectionOptions;
  readonly #publisher: ConfirmPublisher;
  readonly #declarers = new Map<string, TopologyDeclarer>();
  /** Declarations done on the current connection, by key. */
  #declared = new Map<string, Promise<void>>();
  readonly #watchers = new Set<(model: ChannelModel | undefined) => void>();
  readonly #stop = new AbortController();
  #state: AmqpConnectionState = "idle";
  #model: ChannelModel | undefined;
  #lastError: OrchestratorError | undefined;
  /** Whether a connection was ever established (until then a failed attempt fails the waiting calls). */
  #connectedOnce = false;
  #fatal: OrchestratorError | undefined;
  #waiters = new Set<{ resolve: () => void; reject: (error: OrchestratorError) => void }>();
  #loop: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  /** The node of the open connection, and where the next connection attempt starts. */
  #node: AmqpNodeInfo | undefined;
  #nextUrl = 0;

  /** @throws {OrchestratorError} `invalid_argument` for a bad option. */
  constructor(options: AmqpConnectionOptions) {
    super();
    this.#options = resolveConnectionOptions(options);
    this.#publisher = new ConfirmPublisher({
      bufferSize: this.#options.publishBufferSize,
      timeoutMs: this.#options.publishTimeoutMs,
      outage: () => this.#outage(),
    });
  }

  /** The current {@link AmqpConnectionState}. */
  get state(): AmqpConnectionState {
    return this.#state;
  }

  /**
   * The broker node this connection is on (which of the `url` list), or `undefined` while not
   * connected.
   */
  get node(): AmqpNodeInfo | undefined {
    return this.#state === "connected" ? this.#node : undefined;
  }

  /** How many broker URLs it was given (more than one: the nodes of a cluster). @internal */
  get urlCount(): number {
    return this.#options.urls.length;
  }

  /** The reconnect backoff in force (used by channel owners too). @internal */
  get backoff(): { baseMs: number; maxMs: number; factor: number; jitter: number } {
    return this.#options.reconnect;
  }

  /** The default longest wait of a publish for the broker. @internal */
  get publishTimeoutMs(): number {
    return this.#options.publishTimeoutMs;
  }

  /** The open amqplib connection, when connected. @internal */
  get model(): ChannelModel | undefined {
    return this.#state === "connected" ? this.#model : undefined;
  }

  /**
   * Connects (once; later calls join) and resolves when connected with the topology declared.
   * @throws {OrchestratorError} the fatal error (`unauthenticated`, `permission_denied`,
   * `precondition_failed`), `queue_closed` after close, `unavailable` (with the last error as
   * cause) when `timeoutMs` passes first, or the signal's reason.
   */
  ready(options: WaitOptions = {}): Promise<void> {
    if (this.#fatal) return Promise.reject(this.#fatal);
    if (this.#state === "closed") return Promise.reject(this.#closedError("connect"));
    this.#start();
    if (this.#state === "connected") return Promise.resolve();
    throwIfAborted(options.signal);
    let waiter: { resolve: () => void; reject: (error: OrchestratorError) => void } | undefined;
    const wait = new Promise<void>((resolve, reject) => {
      waiter = { resolve, reject };
      this.#waiters.add(waiter);
    });
    const { signal, dispose } = waitSignal(options, "connecting to RabbitMQ");
    return raceSignal(wait, signal)
      .catch((error: unknown) => {
        const e = OrchestratorError.from(error);
        if (e.code === "deadline_exceeded" && options.timeoutMs !== undefined) {
          throw new OrchestratorError("unavailable", `RabbitMQ not reachable within ${options.timeoutMs} ms: ${this.#outage()}`, { cause: this.#lastError });
        }
        throw e;
      })
      .finally(() => {
        dispose();
        if (waiter) this.#waiters.delete(waiter);
      });
  }

  /**
   * Registers part of the topology under `key`: declared now (on the current connection, once
   * per key) and again after every reconnect. Resolves when declared on the current connection.
   * @throws {OrchestratorError} `precondition_failed` when an existing object has other arguments.
   * @internal
   */
  async declare(key: string, declarer: TopologyDeclarer, options: WaitOptions = {}): Promise<void> {
    let model: ChannelModel | undefined;
    while (!model) {
      await this.ready(options);
      model = this.#model;
    }
    let done = this.#declared.get(key);
    if (!done) {
      done = this.#runDeclarer(model, declarer);
      this.#declared.set(key, done);
      done.then(
        () => this.#declarers.set(key, declarer),
        () => {
          if (this.#declared.get(key) === done) this.#declared.delete(key);
        },
      );
    }
    return raceSignal(done, options.signal);
  }

  /**
   * Publishes one message; see {@link PublishRequest}. Waits in the bounded buffer while the
   * connection is down. Starts connecting if idle.
   * @internal
   */
  publish(request: PublishRequest): Promise<void> {
    if (this.#fatal) return Promise.reject(this.#fatal);
    if (this.#state === "closed") return Promise.reject(this.#closedError("publish"));
    this.#start();
    return this.#publisher.publish(request);
  }

  /**
   * Calls `listener` with the open connection whenever one is ready (now, if connected) and
   * with `undefined` when it is lost, so channel owners restore their channels. Returns the
   * unsubscribe function.
   * @internal
   */
  watch(listener: (model: ChannelModel | undefined) => void): () => void {
    this.#watchers.add(listener);
    if (this.#state === "connected") listener(this.#model);
    return () => this.#watchers.delete(listener);
  }

  /**
   * Declares every registered part of the topology again on the current connection, for when a
   * queue was deleted under us (a consumer cancelled by the broker, an unroutable job). Failures
   * are reported, not thrown.
   * @internal
   */
  async redeclare(): Promise<void> {
    const model = this.model;
    if (!model) return; // a reconnect declares everything anyway
    for (const [key, declarer] of this.#declarers) {
      const done = this.#runDeclarer(model, declarer);
      this.#declared.set(key, done);
      await done.catch((error: unknown) => {
        this.#emit("error", { error: fromAmqpError(error, "re-declaring the topology") });
      });
    }
  }

  /**
   * Forgets a declaration made with `key`: the next `declare(key, …)` runs its declarer again, and
   * reconnects no longer do (for objects that may go away, like an idle key queue that expires).
   * @internal
   */
  forget(key: string): void {
    this.#declared.delete(key);
    this.#declarers.delete(key);
  }

  /** Drops the current connection so it is re-established (a dead publish channel). @internal */
  recycle(reason: string): void {
    const model = this.#model;
    if (this.#state !== "connected" || !model) return;
    this.#lastError = new OrchestratorError("unavailable", reason);
    model.close().catch(() => {});
  }

  /**
   * Closes the connection: buffered publishes reject `queue_closed`, in-flight ones get up to a
   * second for their confirm, channels close (the broker requeues unacked deliveries). Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #close(): Promise<void> {
    const closed = this.#closedError("publish");
    this.#publisher.failBuffered(closed);
    if (this.#state === "connected") await raceSignal(this.#publisher.idle(), AbortSignal.timeout(1000)).catch(() => {});
    this.#setState("closed");
    this.#stop.abort(closed);
    for (const waiter of this.#waiters) waiter.reject(closed);
    this.#waiters.clear();
    const model = this.#model;
    this.#model = undefined;
    if (model) await closeQuietly(model);
    // A connect attempt in flight cannot be aborted; the loop closes what it opens once it returns.
    if (this.#loop) await raceSignal(this.#loop, AbortSignal.timeout(1000)).catch(() => {});
    this.#publisher.failAll(closed);
  }

  #start(): void {
    if (this.#loop) return;
    this.#setState("connecting");
    this.#loop = this.#run();
  }

  /** The connect → serve → reconnect loop; ends on close or a fatal failure. */
  async #run(): Promise<void> {
    let attempts = 0;
    let lostAt: number | undefined;
    while (!this.#stop.signal.aborted) {
      attempts++;
      let model: ChannelModel | undefined;
      try {
        model = await this.#open();
        const lost = this.#serve(model);
        await this.#setup(model);
        if (this.#stop.signal.aborted) {
          await closeQuietly(model);
          return;
        }
        this.#setState("connected");
        this.#connectedOnce = true;
        // Listeners and watchers run through #emit / #notify: nothing they throw reaches this loop,
        // which would take it for a failed connect and close a healthy connection.
        const node = this.#node as AmqpNodeInfo;
        this.#emit("connected", { attempts, node });
        if (lostAt !== undefined) this.#options.telemetry.reconnected(Date.now() - lostAt);
        if (lostAt !== undefined) this.#emit("reconnected", { attempts, downtimeMs: Date.now() - lostAt, node });
        for (const waiter of this.#waiters) waiter.resolve();
        this.#waiters.clear();
        this.#notify(model);
        attempts = 0;
        const error = await lost;
        if (this.#stop.signal.aborted) return;
        lostAt = Date.now();
        this.#lastError = error;
        this.#setState("reconnecting");
        this.#emit("disconnected", { error, ...(this.#node ? { node: this.#node } : {}) });
        this.#notify(undefined);
      } catch (cause) {
        if (model) void closeQuietly(model);
        if (this.#stop.signal.aborted) return;
        const error = fromAmqpError(cause, `connecting to RabbitMQ at ${this.#options.urls.map(redactUrl).join(", ")}`);
        this.#lastError = error;
        if (isFatal(error)) {
          this.#fail(error);
          return;
        }
        // Never connected yet: most likely a wrong URL. Calls waiting for the first connection
        // fail now with the reason rather than at their timeout; the loop keeps trying.
        if (!this.#connectedOnce) this.#failWaiting(error);
        this.#emit("error", { error });
      }
      try {
        await delay(attempts === 0 ? 0 : backoffDelay(attempts, this.#options.reconnect), { signal: this.#stop.signal });
      } catch {
        return;
      }
    }
  }

  /**
   * Opens a connection to the first node that answers, trying each URL once in turn from the one
   * after the node last used (a reconnect rotates away from the node that was lost). A fatal
   * answer (bad credentials, no such vhost) stops the round: every node of a cluster shares users.
   */
  async #open(): Promise<ChannelModel> {
    const { urls } = this.#options;
    let last: unknown;
    for (let tried = 0; tried < urls.length; tried++) {
      if (this.#stop.signal.aborted) break;
      const index = (this.#nextUrl + tried) % urls.length;
      try {
        const model = await this.#openOne(urls[index] as string);
        this.#node = { index, url: redactUrl(urls[index] as string) };
        this.#nextUrl = (index + 1) % urls.length;
        return model;
      } catch (error) {
        last = error;
        if (isFatal(fromAmqpError(error, "connecting to RabbitMQ"))) break;
        if (tried < urls.length - 1) this.#emit("error", { error: fromAmqpError(error, `connecting to RabbitMQ node ${redactUrl(urls[index] as string)}`) });
      }
    }
    throw last ?? new Error("connection closed");
  }

  async #openOne(address: string): Promise<ChannelModel> {
    const url = new URL(address);
    url.searchParams.set("heartbeat", String(this.#options.heartbeatSec));
    const model = await connect(url.toString(), {
      timeout: this.#options.connectTimeoutMs,
      noDelay: true,
      clientProperties: { connection_name: this.#options.connectionName },
    });
    coalesceWrites(model);
    return model;
  }

  /** Listens to one connection; resolves with the error that ended it. */
  #serve(model: ChannelModel): Promise<OrchestratorError> {
    this.#model = model;
    watchLiveness(model, this.#options.heartbeatSec);
    this.#declared = new Map();
    let last: unknown;
    model.on("error", (error: unknown) => {
      last = error;
    });
    model.on("blocked", (reason: string) => {
      this.#publisher.setBlocked(reason || "resource alarm");
      this.#emit("blocked", { reason });
    });
    model.on("unblocked", () => {
      this.#publisher.setBlocked(undefined);
      this.#emit("unblocked", {});
    });
    return new Promise((resolve) => {
      model.on("close", (error?: unknown) => {
        if (this.#model === model) this.#model = undefined;
        this.#publisher.detach();
        this.#publisher.setBlocked(undefined);
        resolve(fromAmqpError(error ?? last ?? new Error("connection closed"), "RabbitMQ connection lost"));
      });
    });
  }

  /** Declares the registered topology and opens the publish channel. */
  async #setup(model: ChannelModel): Promise<void> {
    for (const [key, declarer] of this.#declarers) {
      const done = this.#runDeclarer(model, declarer);
      this.#declared.set(key, done);
      await done;
    }
    const channel: ConfirmChannel = await model.createConfirmChannel({ highWaterMark: 16_384 });
    channel.on("error", (error: unknown) => {
      this.#lastError = fromAmqpError(error, "publish channel closed");
    });
    channel.on("close", () => {
      this.#publisher.detach();
      // A publish channel closed while the connection lives (e.g. a publish to a deleted
      // exchange): start over on a new connection, which re-declares the topology.
      if (this.#model === model && !this.#stop.signal.aborted) this.recycle(this.#lastError?.rawMessage ?? "publish channel closed");
    });
    this.#publisher.attach(channel);
  }

  /** Runs one declarer on its own channel, so a 406 closes only that channel. */
  async #runDeclarer(model: ChannelModel, declarer: TopologyDeclarer): Promise<void> {
    const channel = await model.createChannel().catch((error: unknown) => {
      throw fromAmqpError(error, "opening a channel");
    });
    let broken = false;
    channel.on("error", () => {
      broken = true;
    });
    channel.on("close", () => {
      broken = true;
    });
    try {
      await declarer(channel);
    } finally {
      if (!broken) await closeQuietly(channel);
    }
  }

  /** Rejects what waits for the first connection: `ready()` callers and buffered publishes. */
  #failWaiting(cause: OrchestratorError): void {
    const error = new OrchestratorError("unavailable", `${cause.rawMessage} (no connection yet; it keeps retrying in the background)`, {
      cause,
      details: cause.details,
    });
    for (const waiter of this.#waiters) waiter.reject(error);
    this.#waiters.clear();
    this.#publisher.failBuffered(error);
  }

  #fail(error: OrchestratorError): void {
    this.#fatal = error;
    this.#setState("failed");
    for (const waiter of this.#waiters) waiter.reject(error);
    this.#waiters.clear();
    this.#publisher.failAll(error);
    this.#notify(undefined);
    this.#emit("error", { error });
  }

  /** Emits without letting a listener throw into the caller; a throw is reported (`error`, else warned once). */
  #emit<E extends keyof AmqpConnectionEvents>(event: E, ...args: AmqpConnectionEvents[E]): void {
    if (this.#options.logger !== undefined) logConnectionEvent(this.#options.logger, event, args[0]);
    emitSafely(this, this.#onListenerError, event, ...args);
  }

  readonly #onListenerError = (error: OrchestratorError): void => reportError(this, error, {}, "AmqpConnection", this.#options.logger);

  /** Tells the channel owners about a new connection (or its loss); one that throws cannot stop the others. */
  #notify(model: ChannelModel | undefined): void {
    for (const watcher of [...this.#watchers]) {
      try {
        watcher(model);
      } catch (cause) {
        this.#emit("error", { error: OrchestratorError.from(cause) });
      }
    }
  }

  #setState(state: AmqpConnectionState): void {
    if (this.#state === "closed") return;
    if ((this.#state === "connected") !== (state === "connected")) this.#options.telemetry.connection(state === "connected");
    this.#state = state;
  }

  #outage(): string {
    if (this.#state === "connected") return "the broker is blocking or slow to confirm";
    return this.#lastError ? this.#lastError.rawMessage : `connection ${this.#state}`;
  }

  #closedError(what: string): OrchestratorError {
    return new OrchestratorError("queue_closed", `cannot ${what}: the RabbitMQ connection is closed`);
  }
}

/**
 * The connection a queue or events object uses: the shared `connection` option, or an owned one
 * built from the connection options given beside the queue's own (never both).
 * @internal
 */
export function connectionFrom(o: Record<string, unknown>): { connection: AmqpConnection; owned: boolean } {
  if (o.connection !== undefined) {
    if (!(o.connection instanceof AmqpConnection)) throw invalidArgument("connection", "an AmqpConnection", o.connection);
    const extra = CONNECTION_OPTION_KEYS.find((key) => o[key] !== undefined);
    if (extra) throw invalidArgument(extra, "absent when `connection` is given (set it on the AmqpConnection)", o[extra]);
    return { connection: o.connection, owned: false };
  }
  const picked: Record<string, unknown> = {};
  for (const key of CONNECTION_OPTION_KEYS) if (o[key] !== undefined) picked[key] = o[key];
  if (o.logger !== undefined) picked.logger = o.logger;
  if (o.telemetry !== undefined) picked.telemetry = o.telemetry;
  return { connection: new AmqpConnection(picked as unknown as AmqpConnectionOptions), owned: true };
}

