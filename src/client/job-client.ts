import { EventEmitter } from "eventemitter3";
import { invalidArgument, OrchestratorError } from "../errors.ts";
import type { CancelReason, JobEvent } from "../job/types.ts";
import type { JobEvents, JobQueue, Subscription, WaitOptions } from "../queue/types.ts";
import { checkFunction, checkInteger, checkObject, optional } from "../validate.ts";
import { reportListenerError } from "../events.ts";
import type { JobEnvelope } from "../job/envelope.ts";
import { type Destination, destinationOf } from "../telemetry/destination.ts";
import { type Logger, resolveLogger } from "../telemetry/logger.ts";
import { beginSend, endSend, logSubmitted, runInSend } from "../telemetry/send-telemetry.ts";
import { resolveTelemetry, type Telemetry } from "../telemetry/telemetry.ts";
import { abandonHandle, deliverToHandle, JobHandle, type JobHandleLink } from "./job-handle.ts";
import { envelopeFromSpec, type SpecDefaults } from "./job-spec.ts";
import { MAX_TIMER_MS } from "../timers.ts";
import type { JobClientEvents, JobClientOptions, JobSpec, JobTypeMap } from "./types.ts";

interface KeyEntry {
  readonly type: string;
  readonly handle: Promise<JobHandle<unknown>>;
}

/**
 * Submits jobs and follows them: `submit()` resolves once the queue confirmed the job and gives
 * a {@link JobHandle} for its result, progress, logs and cancellation. Everything goes through
 * `JobQueue` and `JobEvents`, so the client, the dispatcher and the workers may live in three
 * processes.
 *
 * The client opens ONE subscription to every job's events (`"*"`) on the first submit and hands
 * each event to its job's handle, which keeps the per-job cost to a map lookup; events of jobs
 * it does not follow are dropped. Idempotency keys are remembered by this client only.
 *
 * @example
 * ```ts
 * type Jobs = { build: { payload: { tag: string }; result: { imageId: string } } };
 * const client = new JobClient<Jobs>({ queue, events: queue });
 * const handle = await client.submit({ type: "build", payload: { tag: "app:1" }, idempotencyKey: "app:1" });
 * for await (const event of handle) if (event.kind === "progress") console.log(event.progress);
 * const { imageId } = await handle.result();
 * ```
 */
export class JobClient<Jobs extends JobTypeMap = JobTypeMap> extends EventEmitter<JobClientEvents> {
  readonly #queue: JobQueue;
  readonly #events: JobEvents;
  readonly #defaults: SpecDefaults;
  readonly #retentionMs: number;
  /** Handles of jobs not finished yet, by id. */
  readonly #handles = new Map<string, JobHandle<unknown>>();
  /** Idempotency keys of jobs submitted, pending or known. */
  readonly #keys = new Map<string, KeyEntry>();
  /** Keys of finished jobs, in finish order, with when they finished: pruned from the front. */
  readonly #finishedKeys = new Map<string, number>();
  /** Idempotency key by job id, for the jobs that have one. */
  readonly #keyOf = new Map<string, string>();
  #subscription: Promise<Subscription> | undefined;
  #subscribed = false;
  #closed: Promise<void> | undefined;
  readonly #link: JobHandleLink;
  readonly #telemetry: Telemetry;
  readonly #destination: Destination;
  readonly #logger: Logger | undefined;

  /**
   * Checks the options; does no I/O (the event subscription opens on the first submit).
   * @throws {OrchestratorError} `invalid_argument` naming the first bad option.
   */
  constructor(options: JobClientOptions) {
    super();
    const o = checkObject("options", options);
    const queue = checkObject("queue", o.queue);
    checkFunction("queue.enqueue", queue.enqueue);
    const events = checkObject("events", o.events);
    for (const method of ["subscribe", "cancel"]) checkFunction(`events.${method}`, events[method]);
    const defaults = checkObject("defaults", o.defaults ?? {});
    this.#queue = o.queue as JobQueue;
    this.#events = o.events as JobEvents;
    this.#defaults = {
      timeoutMs: optional(defaults.timeoutMs, 3_600_000, (v) => checkInteger("defaults.timeoutMs", v, 1, MAX_TIMER_MS)),
      maxAttempts: optional(defaults.maxAttempts, 3, (v) => checkInteger("defaults.maxAttempts", v, 1, 1000)),
    };
    this.#telemetry = resolveTelemetry(o.telemetry);
    this.#destination = destinationOf(o.queue);
    this.#logger = resolveLogger(o.logger);
    this.#retentionMs = optional(o.idempotencyRetentionMs, 600_000, (v) => checkInteger("idempotencyRetentionMs", v, 0));
    this.#link = {
      cancel: (jobId, reason, message, waitOptions) => this.#cancel(jobId, reason, message, waitOptions),
      report: (error) => reportListenerError(this as unknown as EventEmitter, error),
    };
  }

  /** Jobs submitted by this client whose outcome it has not seen yet. */
  get pending(): number {
    return this.#handles.size;
  }

  /**
   * Queues one job and resolves with its handle once the queue has confirmed it. The client is
   * subscribed to the job's events before the job is queued, so no event is missed.
   *
   * With an `idempotencyKey` this client already knows (its job running, or finished less than
   * `idempotencyRetentionMs` ago), resolves with that job's handle and queues nothing.
   *
   * @throws {OrchestratorError} `invalid_argument` naming the bad field (type, payload, id,
   * timeoutMs, maxAttempts, idempotencyKey, labels, trace, signal), also for an id this client
   * already follows or a known key used with another type; `queue_closed` after `close()`;
   * whatever `JobQueue.enqueue` rejects with.
   */
  async submit<K extends keyof Jobs & string>(spec: JobSpec<Jobs, K>): Promise<JobHandle<Jobs[K]["result"]>> {
    if (this.#closed !== undefined) throw new OrchestratorError("queue_closed", "the job client is closed");
    const { envelope, signal } = envelopeFromSpec(spec, this.#defaults);
    const key = envelope.idempotencyKey;
    if (key === undefined) return (await this.#submit(envelope, signal)) as JobHandle<Jobs[K]["result"]>;
    this.#pruneKeys(Date.now());
    const known = this.#keys.get(key);
    if (known !== undefined) {
      if (known.type !== envelope.type) {
        throw invalidArgument("idempotencyKey", `a key not used by a job of another type (it belongs to a "${known.type}" job)`, key);
      }
      return (await known.handle) as JobHandle<Jobs[K]["result"]>;
    }
    const entry: KeyEntry = { type: envelope.type, handle: this.#submit(envelope, signal) };
    this.#keys.set(key, entry);
    try {
      const handle = await entry.handle;
      if (this.#handles.has(handle.id)) this.#keyOf.set(handle.id, key);
      else this.#keyFinished(key); // it finished before submit() returned
      return handle as JobHandle<Jobs[K]["result"]>;
    } catch (error) {
      if (this.#keys.get(key) === entry) this.#keys.delete(key);
      throw error;
    }
  }

  async #submit(envelope: JobEnvelope, signal: AbortSignal | undefined): Promise<JobHandle<unknown>> {
    if (!this.#subscribed) await this.#subscribe();
    if (this.#closed !== undefined) throw new OrchestratorError("queue_closed", "the job client is closed");
    if (this.#handles.has(envelope.id)) throw invalidArgument("id", "the id of no job this client still follows", envelope.id);
    const handle = new JobHandle<unknown>(envelope.id, envelope.type, this.#link);
    this.#handles.set(envelope.id, handle);
    const send = beginSend(this.#telemetry, envelope, this.#destination);
    try {
      await runInSend(this.#telemetry, send, () => this.#queue.enqueue(envelope, signal === undefined ? undefined : { signal }));
    } catch (error) {
      endSend(this.#telemetry, send, this.#destination, error);
      if (this.#handles.get(envelope.id) === handle) this.#handles.delete(envelope.id);
      throw error;
    }
    endSend(this.#telemetry, send, this.#destination);
    if (this.#logger !== undefined) logSubmitted(this.#logger, this.#telemetry, envelope, send);
    return handle;
  }

  #subscribe(): Promise<Subscription> {
    this.#subscription ??= this.#events.subscribe("*", this.#onEvent).then(
      (subscription) => {
        this.#subscribed = true;
        return subscription;
      },
      (error: unknown) => {
        this.#subscription = undefined; // the next submit tries again
        throw error;
      },
    );
    return this.#subscription;
  }

  readonly #onEvent = (event: JobEvent): void => {
    const handle = this.#handles.get(event.jobId);
    if (handle === undefined) return;
    deliverToHandle(handle, event);
    if (event.kind !== "result") return;
    this.#handles.delete(event.jobId);
    const key = this.#keyOf.get(event.jobId);
    if (key !== undefined) {
      this.#keyOf.delete(event.jobId);
      this.#keyFinished(key);
    }
  };

  #keyFinished(key: string): void {
    const now = Date.now();
    this.#finishedKeys.delete(key);
    this.#finishedKeys.set(key, now);
    this.#pruneKeys(now);
  }

  #pruneKeys(now: number): void {
    for (const [key, finishedAt] of this.#finishedKeys) {
      if (now - finishedAt < this.#retentionMs) return;
      this.#finishedKeys.delete(key);
      this.#keys.delete(key);
    }
  }

  async #cancel(jobId: string, reason: CancelReason, message: string | undefined, options: WaitOptions): Promise<void> {
    if (this.#closed !== undefined) throw new OrchestratorError("queue_closed", "the job client is closed");
    await this.#events.cancel({ jobId, reason, message, at: Date.now() }, options);
  }

  /**
   * Stops following jobs: closes the event subscription, and `result()` of every job not
   * finished yet rejects with `queue_closed` (the jobs themselves go on). Does not close the
   * queue or the events: they belong to the caller. Idempotent.
   */
  close(): Promise<void> {
    this.#closed ??= this.#close();
    return this.#closed;
  }

  /** Same as `close()`, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #close(): Promise<void> {
    const error = new OrchestratorError("queue_closed", "the job client was closed before the job ended");
    for (const handle of this.#handles.values()) abandonHandle(handle, error);
    this.#handles.clear();
    const subscription = await this.#subscription?.catch(() => undefined);
    await subscription?.close();
  }
}
