import { EventEmitter } from "eventemitter3";
import { invalidArgument, OrchestratorError } from "../errors.ts";
import type { CancelCommand, CancelReason, JobEvent, JobOutcome } from "../job/types.ts";
import type { JobEvents, JobQueue, Subscription, WaitOptions } from "../queue/types.ts";
import { checkFunction, checkInteger, checkKnownKeys, checkObject, knownKeys, optional } from "../validate.ts";
import { reportListenerError } from "../events.ts";
import { priorityOf, type JobEnvelope } from "../job/envelope.ts";
import { type Destination, destinationOf } from "../telemetry/destination.ts";
import { type Logger, resolveLogger } from "../telemetry/logger.ts";
import { beginSend, endSend, logSubmitted, runInSend } from "../telemetry/send-telemetry.ts";
import { resolveTelemetry, type Telemetry } from "../telemetry/telemetry.ts";
import { checkJobId } from "../job/event-checks.ts";
import type { JobCounts, JobPage, JobRecord, JobStore, ListOptions } from "../store/types.ts";
import { abandonHandle, applyRecordToHandle, deferredUntil, deliverToHandle, JobHandle, type JobHandleLink } from "./job-handle.ts";
import { RecordPoller } from "./record-poller.ts";
import { redriveDeadLetters, type JobRedriveOptions, type JobRedriveResult, type RedriveTarget } from "./redrive.ts";
import { envelopeFromSpec, type SpecDefaults } from "./job-spec.ts";
import { MAX_TIMER_MS } from "../timers.ts";
import type { ScheduleStore } from "../schedule/types.ts";
import { ScheduleClient } from "./schedule-client.ts";
import type { JobClientEvents, JobClientOptions, JobSpec, JobTypeMap } from "./types.ts";

const clientOptionKeys = knownKeys<JobClientOptions>()(
  ["defaults", "events", "idempotencyRetentionMs", "logger", "queue", "schedules", "store", "storePollIntervalMs", "telemetry"],
  true,
);
const defaultKeys = knownKeys<NonNullable<JobClientOptions["defaults"]>>()(["maxAttempts", "startTimeoutMs", "timeoutMs"], true);

const noSchedules = (): Promise<never> =>
  Promise.reject(new OrchestratorError("precondition_failed", "JobClient.schedules needs a schedule store: pass `schedules` (MemoryScheduleStore, PostgresScheduleStore) to the JobClient"));

/** The schedule store of a client given none: every call rejects, saying what to pass. */
const missingScheduleStore: ScheduleStore = { create: noSchedules, get: noSchedules, list: noSchedules, replace: noSchedules, delete: noSchedules, close: () => Promise.resolve() };

/**
 * Without a store, a scheduled job cancelled less than this long before it is due (and, with or
 * without one, a job a rate limit sent back, less than this long before it comes back) is left
 * for the dispatcher that takes it to report as cancelled: the cancel command must reach every
 * dispatcher before the job does.
 */
const SCHEDULED_CANCEL_MARGIN_MS = 1000;

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
 * it does not follow are dropped.
 *
 * With a `store` (`MemoryJobStore`, `PostgresJobStore`), every job has a record that any client of
 * the store can read: `get(id)` gives a handle for a job submitted anywhere, `list()` and
 * `counts()` query them, `deadLetters()` and `redrive()` act on failed jobs, and idempotency
 * keys hold across every client of the store. Without one, idempotency keys are remembered by
 * this client only.
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
  readonly #store: JobStore | undefined;
  readonly #poller: RecordPoller | undefined;
  /** Events of jobs whose record `get()` is reading, replayed onto the handle it makes. */
  readonly #reading = new Map<string, JobEvent[]>();
  #subscription: Promise<Subscription> | undefined;
  #subscribed = false;
  #closed: Promise<void> | undefined;
  readonly #link: JobHandleLink;
  readonly #telemetry: Telemetry;
  readonly #destination: Destination;
  readonly #logger: Logger | undefined;
  readonly #schedules: ScheduleClient<Jobs>;

  /**
   * Checks the options; does no I/O (the event subscription opens on the first submit).
   * @throws {OrchestratorError} `invalid_argument` naming the first bad option.
   */
  constructor(options: JobClientOptions) {
    super();
    const o = checkObject("options", options);
    checkKnownKeys("the JobClient options", o, clientOptionKeys);
    const queue = checkObject("queue", o.queue);
    checkFunction("queue.enqueue", queue.enqueue);
    const events = checkObject("events", o.events);
    for (const method of ["subscribe", "cancel"]) checkFunction(`events.${method}`, events[method]);
    const defaults = checkObject("defaults", o.defaults ?? {});
    checkKnownKeys("the JobClient options", defaults, defaultKeys, "defaults.");
    this.#queue = o.queue as JobQueue;
    this.#events = o.events as JobEvents;
    this.#defaults = {
      timeoutMs: optional(defaults.timeoutMs, 3_600_000, (v) => checkInteger("defaults.timeoutMs", v, 1, MAX_TIMER_MS)),
      maxAttempts: optional(defaults.maxAttempts, 3, (v) => checkInteger("defaults.maxAttempts", v, 1, 1000)),
      startTimeoutMs: optional(defaults.startTimeoutMs, 3_600_000, (v) => checkInteger("defaults.startTimeoutMs", v, 1, MAX_TIMER_MS)),
    };
    this.#telemetry = resolveTelemetry(o.telemetry);
    this.#destination = destinationOf(o.queue);
    this.#logger = resolveLogger(o.logger);
    if (o.store !== undefined) {
      const store = checkObject("store", o.store);
      for (const method of ["create", "record", "get", "list", "counts", "expireUnstarted"]) checkFunction(`store.${method}`, store[method]);
      this.#store = o.store as JobStore;
      const intervalMs = optional(o.storePollIntervalMs, 5000, (v) => checkInteger("storePollIntervalMs", v, 10, MAX_TIMER_MS));
      this.#poller = new RecordPoller(this.#store, this.#events, intervalMs, {
        followed: () => this.#handles.keys(),
        apply: (record) => this.#applyRecord(record),
        report: (error) => reportListenerError(this as unknown as EventEmitter, error),
      });
    }
    let schedules: ScheduleStore = missingScheduleStore;
    if (o.schedules !== undefined) {
      const store = checkObject("schedules", o.schedules);
      for (const method of ["create", "get", "list", "replace", "delete"]) checkFunction(`schedules.${method}`, store[method]);
      schedules = o.schedules as ScheduleStore;
    }
    this.#schedules = new ScheduleClient<Jobs>(schedules, this.#defaults, { queue: this.#queue, store: this.#store });
    this.#retentionMs = optional(o.idempotencyRetentionMs, 600_000, (v) => checkInteger("idempotencyRetentionMs", v, 0));
    this.#link = {
      cancel: (jobId, reason, message, waitOptions) => this.#cancel(jobId, reason, message, waitOptions),
      report: (error) => reportListenerError(this as unknown as EventEmitter, error, this.#logger),
    };
  }

  /**
   * Recurring schedules (cron with a time zone, or an interval), stored in the `schedules` store
   * and fired by a `Scheduler` in the orchestrators: `create`, `upsert`, `getHandle`, `list`, and
   * on a handle `describe`, `update`, `pause`, `resume`, `trigger`, `delete`. Their jobs are
   * `client.list({ schedule: id })`.
   */
  get schedules(): ScheduleClient<Jobs> {
    return this.#schedules;
  }

  /** Jobs submitted by this client whose outcome it has not seen yet. */
  get pending(): number {
    return this.#handles.size;
  }

  /**
   * Queues one job and resolves with its handle once the queue has confirmed it. The client is
   * subscribed to the job's events before the job is queued, so no event is missed.
   *
   * With a `store`, the job's record is created first: an id or `idempotencyKey` the store
   * already has (from any client, in any process) resolves with that job's handle and queues
   * nothing. Without one, an `idempotencyKey` this client already knows (its job running, or
   * finished less than `idempotencyRetentionMs` ago) does the same.
   *
   * @throws {OrchestratorError} `invalid_argument` naming the bad field (type, payload, id,
   * timeoutMs, maxAttempts, idempotencyKey, labels, trace, signal), also for an id this client
   * already follows or a known key used with another type; `queue_closed` after `close()`;
   * whatever `JobQueue.enqueue` rejects with.
   */
  async submit<K extends keyof Jobs & string>(spec: JobSpec<Jobs, K>): Promise<JobHandle<Jobs[K]["result"]>> {
    if (this.#closed !== undefined) throw new OrchestratorError("queue_closed", "the job client is closed");
    const { envelope, signal, metadata } = envelopeFromSpec(spec, this.#defaults);
    if (this.#store !== undefined) return (await this.#submitRecorded(this.#store, envelope, metadata, signal)) as JobHandle<Jobs[K]["result"]>;
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
    const handle = new JobHandle<unknown>(envelope.id, envelope.type, this.#link, priorityOf(envelope), envelope.runAt);
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

  async #submitRecorded(store: JobStore, envelope: JobEnvelope, metadata: Record<string, string> | undefined, signal: AbortSignal | undefined): Promise<JobHandle<unknown>> {
    if (!this.#subscribed) await this.#subscribe();
    const { created, record } = await store.create(
      {
        id: envelope.id, type: envelope.type, payload: envelope.payload, maxAttempts: envelope.maxAttempts, timeoutMs: envelope.timeoutMs,
        startTimeoutMs: envelope.startTimeoutMs ?? this.#defaults.startTimeoutMs, createdAt: Date.parse(envelope.createdAt),
        ...(metadata === undefined ? {} : { metadata }),
        ...(envelope.idempotencyKey === undefined ? {} : { idempotencyKey: envelope.idempotencyKey }),
        ...(envelope.labels === undefined ? {} : { labels: envelope.labels }),
        ...traceIdOf(envelope),
        ...(envelope.priority === undefined ? {} : { priority: envelope.priority }),
        ...(envelope.runAt === undefined ? {} : { runAt: envelope.runAt }),
      },
      signal === undefined ? undefined : { signal },
    );
    if (this.#closed !== undefined) throw new OrchestratorError("queue_closed", "the job client is closed");
    if (!created) {
      if (record.type !== envelope.type) {
        const field = record.id === envelope.id ? "id" : "idempotencyKey";
        throw invalidArgument(field, `one not used by a job of another type (it belongs to a "${record.type}" job)`, field === "id" ? envelope.id : envelope.idempotencyKey);
      }
      return this.#follow(record);
    }
    const handle = this.#follow(record);
    try {
      await this.#queue.enqueue(envelope, signal === undefined ? undefined : { signal });
    } catch (error) {
      await this.#enqueueFailed(store, envelope, OrchestratorError.from(error));
      throw error;
    }
    return handle;
  }

  /**
   * The job's record exists but the job may not be queued. When the queue surely refused it,
   * the record says so (`failed`, with the queue's error); after `unknown_outcome` it may be
   * queued, and its start timeout settles it if not.
   */
  async #enqueueFailed(store: JobStore, envelope: JobEnvelope, error: OrchestratorError): Promise<void> {
    if (error.code === "unknown_outcome") return;
    const failure = new OrchestratorError(error.code, `the job could not be queued: ${error.rawMessage}`, { retryable: false, details: { reason: "enqueue_failed" } });
    const outcome = { status: "failed", error: failure.toJSON() } as const;
    try {
      await store.record({ kind: "finished", jobId: envelope.id, attempt: 1, fencingToken: 0, at: Date.now(), started: false, outcome });
    } catch (cause) {
      reportListenerError(this as unknown as EventEmitter, OrchestratorError.from(cause));
    }
    const handle = this.#handles.get(envelope.id);
    if (handle !== undefined) this.#onEvent({ kind: "result", jobId: envelope.id, attempt: 1, at: Date.now(), outcome });
  }

  /** The handle of a job known by its record: the one followed already, or a new one brought up to the record. */
  #follow(record: JobRecord): JobHandle<unknown> {
    let handle = this.#handles.get(record.id);
    if (handle === undefined) {
      handle = new JobHandle<unknown>(record.id, record.type, this.#link, priorityOf(record), record.state === "scheduled" ? record.runAt : undefined);
      this.#handles.set(record.id, handle);
      this.#poller?.start();
    }
    this.#applyRecord(record);
    return handle;
  }

  #applyRecord(record: JobRecord): void {
    const handle = this.#handles.get(record.id);
    if (handle === undefined) return;
    applyRecordToHandle(handle, record);
    if (handle.outcome !== undefined) this.#handles.delete(record.id);
  }

  /**
   * A handle for any job of the store, submitted by any client in any process, or undefined when
   * the store has no record of it. Its `state`, `attempt`, `attempts` and `reason` are the
   * record's; `result()` resolves (or rejects) at once for a finished job, otherwise when the job
   * finishes: the handle follows its events from now on, and the record is read again every
   * `storePollIntervalMs` in case an event is missed. A job this client follows already gets
   * the same handle, brought up to date.
   * @throws {OrchestratorError} `precondition_failed` without a `store`; `invalid_argument` for a
   * bad id; `queue_closed` after `close()`; what the store or the event subscription rejects with.
   */
  async get(id: string, options: WaitOptions = {}): Promise<JobHandle<unknown> | undefined> {
    const store = this.#needStore("get");
    checkJobId("id", id);
    if (!this.#subscribed) await this.#subscribe();
    // Events that arrive while the record is read are kept and replayed onto the handle.
    const buffered: JobEvent[] = this.#reading.get(id) ?? [];
    this.#reading.set(id, buffered);
    let record: JobRecord | undefined;
    try {
      record = await store.get(id, options);
    } finally {
      if (this.#reading.get(id) === buffered) this.#reading.delete(id);
    }
    if (this.#closed !== undefined) throw new OrchestratorError("queue_closed", "the job client is closed");
    if (record === undefined) return this.#handles.get(id);
    const handle = this.#follow(record);
    for (const event of buffered) this.#onEvent(event);
    return handle;
  }

  /**
   * One page of job records matching `filter`, newest first; pass `nextCursor` back as `cursor`
   * for the next page.
   * @throws {OrchestratorError} `precondition_failed` without a `store`; `invalid_argument` for a bad filter.
   */
  list(filter: ListOptions = {}): Promise<JobPage> {
    return this.#withStore("list", (store) => store.list(filter));
  }

  /**
   * How many jobs are in each state (of one type when given).
   * @throws {OrchestratorError} `precondition_failed` without a `store`.
   */
  counts(filter: { type?: string } = {}, options: WaitOptions = {}): Promise<JobCounts> {
    return this.#withStore("counts", (store) => store.counts(filter, options));
  }

  /**
   * One page of the jobs in the dead-letter queue, newest first, each with its dead-letter
   * `reason`, its error and every attempt; narrowed by `filter` as {@link JobClient.list} is.
   * @throws {OrchestratorError} `precondition_failed` without a `store`.
   */
  deadLetters(filter: Omit<ListOptions, "deadLettered" | "state"> = {}): Promise<JobPage> {
    return this.#withStore("deadLetters", (store) => store.list({ ...filter, deadLettered: true }));
  }

  /**
   * Runs dead-lettered jobs again: one by id, every one a filter matches (with a `store`), or
   * all (`{ all: true }`). Each goes back to the queue with a fresh attempt count (attempt 1
   * against its `maxAttempts`) and its history kept: in its envelope (`redrives`,
   * `priorAttempts`) and, with a store, in its record (every earlier attempt stays in
   * `attempts`, `redrives` counts the lives). Handles got before the redrive stay settled with
   * the old outcome; `client.get(id)` gives one that follows the new life.
   * @throws {OrchestratorError} `precondition_failed` when the queue has no `redrive()`, or for a
   * filter without a store; `invalid_argument` for a bad target or option; what the queue or the
   * store rejects with.
   */
  redrive(target: RedriveTarget, options: JobRedriveOptions = {}): Promise<JobRedriveResult> {
    if (this.#closed !== undefined) return Promise.reject(new OrchestratorError("queue_closed", "the job client is closed"));
    return redriveDeadLetters(this.#queue, this.#store, target, options);
  }

  #withStore<T>(method: string, fn: (store: JobStore) => Promise<T>): Promise<T> {
    try {
      return fn(this.#needStore(method));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  #needStore(method: string): JobStore {
    if (this.#closed !== undefined) throw new OrchestratorError("queue_closed", "the job client is closed");
    if (this.#store === undefined) {
      throw new OrchestratorError("precondition_failed", `JobClient.${method}() needs a job store: pass \`store\` (MemoryJobStore, PostgresJobStore) to the JobClient`);
    }
    return this.#store;
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
    if (handle === undefined) {
      this.#reading.get(event.jobId)?.push(event);
      return;
    }
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
    const handle = this.#handles.get(jobId);
    const runAt = handle?.runAt;
    const now = Date.now();
    // A job a rate limit sent back to the queue is away, held by no dispatcher, until it comes back.
    const backAt = handle === undefined ? undefined : deferredUntil(handle);
    const keepUntil = handle?.state === "scheduled" && runAt !== undefined ? runAt : backAt;
    const command: CancelCommand = { jobId, reason, at: now, ...(message === undefined ? {} : { message }), ...(keepUntil !== undefined && keepUntil > now ? { runAt: keepUntil } : {}) };
    // Every dispatcher hears it (and keeps it until the job is due or back): the job never starts.
    await this.#events.cancel(command, options);
    if (handle !== undefined && backAt !== undefined) return this.#cancelDeferred(handle, backAt, reason, message, options);
    if (handle?.state !== "scheduled" || runAt === undefined) return;
    // A job still waiting for its due time is held by no dispatcher, so nobody else would say it
    // ended until it comes due, maybe weeks from now: it ends here, now.
    const outcome: JobOutcome = { status: "cancelled", reason, ...(message === undefined ? {} : { message }) };
    if (this.#store !== undefined) {
      // The record decides: fenced with token 0, the cancel applies only while no dispatcher took
      // the job (one that did records with a higher token first, and the command stops its run).
      const recorded = await this.#store.record({ kind: "finished", jobId, attempt: 1, fencingToken: 0, at: now, started: false, outcome }, { signal: options.signal, timeoutMs: options.timeoutMs });
      if (recorded.status !== "applied") return;
    } else if (runAt - Date.now() < SCHEDULED_CANCEL_MARGIN_MS) {
      // Due too soon to be sure the command reaches the dispatchers first: the dispatcher that
      // takes the job reports how it ended.
      return;
    }
    await this.#announceEnd({ kind: "result", jobId, attempt: 1, at: now, outcome }, options);
  }

  /** Ends the job's handle here and tells every other follower (confirmed). */
  async #announceEnd(result: JobEvent, options: WaitOptions): Promise<void> {
    this.#onEvent(result);
    await this.#events.publish(result, { signal: options.signal, timeoutMs: options.timeoutMs, confirm: true });
  }

  /**
   * Ends at once a job a rate limit sent back to the queue until `backAt`: nobody else would say
   * it ended before it comes back. Only while it is away for longer than the margin, so that the
   * command reaches every dispatcher before the job does (else the dispatcher that takes it says
   * how it ended). With a store the record says so first, written over the record's own token
   * only while the record still shows the job away (`unschedulable`).
   */
  async #cancelDeferred(handle: JobHandle<unknown>, backAt: number, reason: CancelReason, message: string | undefined, options: WaitOptions): Promise<void> {
    if (backAt - Date.now() < SCHEDULED_CANCEL_MARGIN_MS) return;
    const now = Date.now();
    const outcome: JobOutcome = { status: "cancelled", reason, ...(message === undefined ? {} : { message }) };
    const jobId = handle.id;
    if (this.#store !== undefined) {
      const record = await this.#store.get(jobId, { signal: options.signal, timeoutMs: options.timeoutMs });
      if (record?.state !== "unschedulable") return;
      const transition = { kind: "finished", jobId, attempt: handle.attempt, fencingToken: record.fencingToken, at: now, started: false, outcome } as const;
      const recorded = await this.#store.record(transition, { signal: options.signal, timeoutMs: options.timeoutMs });
      if (recorded.status !== "applied") return;
    }
    await this.#announceEnd({ kind: "result", jobId, attempt: handle.attempt, at: now, outcome }, options);
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
    this.#poller?.stop();
    const error = new OrchestratorError("queue_closed", "the job client was closed before the job ended");
    for (const handle of this.#handles.values()) abandonHandle(handle, error);
    this.#handles.clear();
    const subscription = await this.#subscription?.catch(() => undefined);
    await subscription?.close();
  }
}

/** The record's `traceId`: the trace id of the envelope's W3C `traceparent`, when it has a valid one. */
function traceIdOf(envelope: JobEnvelope): { traceId?: string } {
  const traceId = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}/.exec(envelope.trace?.traceparent ?? "")?.[1];
  return traceId === undefined || /^0+$/.test(traceId) ? {} : { traceId };
}
