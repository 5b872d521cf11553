import { EventEmitter } from "eventemitter3";
import { deserializeError, OrchestratorError } from "../errors.ts";
import { checkCancelReason } from "../job/event-checks.ts";
import { DEFAULT_PRIORITY } from "../job/envelope.ts";
import type { CancelReason, JobEvent, JobOutcome, JobState } from "../job/types.ts";
import type { WaitOptions } from "../queue/types.ts";
import { raceSignal, waitSignal } from "../signals.ts";
import { checkInteger, checkKnownKeys, checkObject, checkSignal, checkString, knownKeys, optional } from "../validate.ts";
import { emitSafely } from "../events.ts";
import { lastAttemptOf, outcomeOf } from "../store/record-rules.ts";
import type { JobAttemptRecord, JobRecord } from "../store/types.ts";
import type { JobHandleEvent, JobHandleEvents, JobHandleStateEvent } from "./types.ts";

/** What a handle needs of the client that made it; one object shared by all of a client's handles. @internal */
export interface JobHandleLink {
  cancel(jobId: string, reason: CancelReason, message: string | undefined, options: WaitOptions): Promise<void>;
  report(error: OrchestratorError): void;
}

/** Options of {@link JobHandle.cancel}. */
export interface CancelOptions extends WaitOptions {
  /** Said to whoever follows the job (the `cancelled` outcome's message). */
  message?: string;
}

const noop = (): void => {};
const waitOptionKeys = knownKeys<WaitOptions>()(["signal", "timeoutMs"], true);
const cancelOptionKeys = knownKeys<CancelOptions>()(["message", "signal", "timeoutMs"], true);

/** Feeds an event to a handle, and closes it; set in the class's static block so they stay private. @internal */
let deliver: (handle: JobHandle<unknown>, event: JobEvent) => void;
/** @internal */
let abandon: (handle: JobHandle<unknown>, error: OrchestratorError) => void;
/** @internal */
let apply: (handle: JobHandle<unknown>, record: JobRecord) => void;
/** @internal */
let deferred: (handle: JobHandle<unknown>) => number | undefined;

/** Passes one job event to its handle. @internal */
export function deliverToHandle(handle: JobHandle<unknown>, event: JobEvent): void {
  deliver(handle, event);
}

/** Brings a handle up to what a job's record says (state, attempts, and the outcome once final). @internal */
export function applyRecordToHandle(handle: JobHandle<unknown>, record: JobRecord): void {
  apply(handle, record);
}

/**
 * When a job a rate limit sent back to the queue comes back to a dispatcher (epoch ms, the
 * `unschedulable` event's `at` plus its `delayMs`), while that is the latest state seen; else
 * undefined. Meanwhile no dispatcher holds the job. @internal
 */
export function deferredUntil(handle: JobHandle<unknown>): number | undefined {
  return deferred(handle);
}

/** Ends a handle whose outcome this process will not learn (its client closed). @internal */
export function abandonHandle(handle: JobHandle<unknown>, error: OrchestratorError): void {
  abandon(handle, error);
}

/**
 * A submitted job, modelled on Temporal's `WorkflowHandle`: its `id`, its `state`, its `result()`,
 * `cancel()`, and its progress, log and state events (as events or by iterating it). Cheap: it
 * holds no connection; its client's one event subscription feeds it.
 *
 * Events of an attempt older than the latest one seen are dropped (a late log line of a failed
 * attempt); the first result wins (a duplicate run's result is ignored).
 *
 * @example
 * ```ts
 * const handle = await client.submit({ type: "build", payload });
 * handle.on("progress", ({ progress }) => bar.update(progress));
 * try { console.log(await handle.result({ timeoutMs: 600_000 })); }
 * catch (err) { if (err instanceof OrchestratorError && err.code === "canceled") … }
 * ```
 */
export class JobHandle<R = unknown> extends EventEmitter<JobHandleEvents> implements AsyncIterable<JobHandleEvent> {
  /** The job id. */
  readonly id: string;
  /** The job type. */
  readonly type: string;
  /** The job's priority level, 1 (highest) to 5 (`JobSpec.priority`; 3 by default). */
  readonly priority: number;
  readonly #link: JobHandleLink;
  #state: JobState;
  #runAt: number | undefined;
  #attempt = 1;
  #attempts: readonly JobAttemptRecord[] = [];
  #reason: string | undefined;
  /** See {@link deferredUntil}. */
  #deferredUntil: number | undefined;
  #final: JobHandleStateEvent | undefined;
  #iterators: Set<HandleIterator> | undefined;
  readonly #result: Promise<R>;
  #resolve!: (value: R) => void;
  #reject!: (error: OrchestratorError) => void;

  static {
    deliver = (handle, event) => handle.#onEvent(event);
    abandon = (handle, error) => handle.#abandon(error);
    apply = (handle, record) => handle.#applyRecord(record);
    deferred = (handle) => (handle.#state === "unschedulable" ? handle.#deferredUntil : undefined);
  }

  /** Made by {@link JobClient.submit}; not meant to be constructed by users. @internal */
  constructor(id: string, type: string, link: JobHandleLink, priority = DEFAULT_PRIORITY, runAt?: number) {
    super();
    this.id = id;
    this.type = type;
    this.priority = priority;
    this.#link = link;
    this.#runAt = runAt;
    this.#state = runAt !== undefined && runAt > Date.now() ? "scheduled" : "queued";
    this.#result = new Promise<R>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    // Nobody has to ask for the result: a failed job must not become an unhandled rejection.
    this.#result.catch(noop);
  }

  /**
   * The latest known state: `scheduled` while a job submitted with `runAt` / `delayMs` waits for
   * its due time, then `queued` until a dispatcher reports otherwise.
   */
  get state(): JobState {
    return this.#state;
  }

  /**
   * When the job is due, in epoch milliseconds, for a job submitted with `runAt` or `delayMs`
   * (also once it has run); undefined for a job due at once.
   */
  get runAt(): number | undefined {
    return this.#runAt;
  }

  /** The latest attempt seen (1-based). */
  get attempt(): number {
    return this.#attempt;
  }

  /**
   * Every attempt as the job's record listed it when this handle last read it (with a store:
   * `client.get(id)` reads it again), oldest first, across redrives. Empty without a store.
   */
  get attempts(): readonly JobAttemptRecord[] {
    return this.#attempts;
  }

  /**
   * Why the job waits: while `unschedulable`, why no healthy worker can run it; while `queued`,
   * what it waits for when known (its concurrency key at its limit).
   */
  get reason(): string | undefined {
    return this.#state === "unschedulable" || this.#state === "queued" ? this.#reason : undefined;
  }

  /** How the job ended, once it has. */
  get outcome(): JobOutcome | undefined {
    return this.#final?.outcome;
  }

  /**
   * Resolves with the job's result once it completed.
   * @throws {OrchestratorError} `canceled` (`details.reason`) when the job was cancelled; the
   * job's own error (code, message, `retryable`, `details`) when it failed; `queue_closed` when
   * the client was closed first; `canceled` / `deadline_exceeded` from the options (the job
   * itself goes on).
   */
  result(options: WaitOptions = {}): Promise<R> {
    let signal: AbortSignal | undefined;
    let timeoutMs: number | undefined;
    try {
      const o = checkObject("options", options);
      checkKnownKeys("the options of result()", o, waitOptionKeys);
      signal = checkSignal("signal", o.signal);
      timeoutMs = optional(o.timeoutMs, undefined, (v) => checkInteger("timeoutMs", v, 0));
    } catch (error) {
      return Promise.reject(error as Error); // a bad option rejects like any other failure
    }
    if (signal === undefined && timeoutMs === undefined) return this.#result;
    const wait = waitSignal({ signal, timeoutMs }, `result() of job ${this.id}`);
    return raceSignal(this.#result, wait.signal).finally(wait.dispose);
  }

  /**
   * Asks whichever dispatcher holds the job to cancel it: a queued or scheduled job never starts,
   * a running one's worker sees its signal fire. A `scheduled` job ends `cancelled` at once (with
   * a store, its record says so first; without one, when it is not due within a second), and
   * never runs when it comes due. Resolves once the command is accepted (not when the job
   * has stopped: await `result()` for that). Does nothing once the job has ended.
   * @throws {OrchestratorError} `invalid_argument` for a bad reason or message; `queue_closed`
   * when the client was closed; what `JobEvents.cancel` rejects with.
   */
  async cancel(reason: CancelReason = "requested", options: CancelOptions = {}): Promise<void> {
    checkCancelReason("reason", reason);
    const o = checkObject("options", options);
    checkKnownKeys("the options of cancel()", o, cancelOptionKeys);
    const message = optional(o.message, undefined, (v) => checkString("message", v, 1024));
    if (this.#final !== undefined) return;
    await this.#link.cancel(this.id, reason, message, options);
  }

  /**
   * Yields the job's state, progress and log events from now on, ending after its final state
   * event (yielded too). On a job that already ended it yields only the final state. Breaking
   * out of the loop stops the buffering.
   */
  [Symbol.asyncIterator](): AsyncIterableIterator<JobHandleEvent> {
    const iterator = new HandleIterator(this.#iterators ??= new Set());
    if (this.#final !== undefined) {
      iterator.push(this.#final);
      iterator.end();
    }
    return iterator;
  }

  #onEvent(event: JobEvent): void {
    if (this.#final !== undefined) return;
    if (event.kind === "result") return this.#finish(event.attempt, event.at, event.outcome);
    if (event.attempt < this.#attempt) return;
    // A wait announced by the process that routed the job to its key's line may arrive after the
    // attempt's start, published by another process: it does not take `running` back.
    if (event.kind === "state" && event.state === "queued" && this.#state === "running" && event.attempt === this.#attempt) return;
    this.#attempt = event.attempt;
    if (event.kind === "state") {
      this.#state = event.state;
      this.#reason = event.reason;
      this.#deferredUntil = event.state === "unschedulable" && event.delayMs !== undefined ? event.at + event.delayMs : undefined;
      this.#emit("state", event);
    } else if (event.kind === "progress") {
      this.#emit("progress", event);
    } else if (event.kind === "log") {
      this.#emit("log", event);
    }
  }

  #finish(attempt: number, at: number, outcome: JobOutcome): void {
    const state = outcome.status;
    if (attempt > this.#attempt) this.#attempt = attempt;
    this.#state = state;
    this.#final = { kind: "state", jobId: this.id, state, attempt, at, outcome };
    if (outcome.status === "completed") this.#resolve(outcome.result as R);
    else if (outcome.status === "failed") this.#reject(deserializeError(outcome.error));
    else {
      const text = outcome.message ?? (outcome.reason === "requested" ? "cancelled" : `cancelled (${outcome.reason})`);
      this.#reject(new OrchestratorError("canceled", `job ${this.id} ${text}`, { retryable: false, details: { reason: outcome.reason, jobId: this.id } }));
    }
    this.#emit("state", this.#final);
    this.#endIterators();
  }

  #applyRecord(record: JobRecord): void {
    this.#attempts = record.attempts;
    if (record.runAt !== undefined) this.#runAt = record.runAt;
    if (this.#final !== undefined) return;
    const outcome = outcomeOf(record);
    const attempt = Math.max(1, lastAttemptOf(record));
    if (outcome !== undefined) return this.#finish(attempt, record.finishedAt ?? record.updatedAt, outcome);
    if (attempt < this.#attempt) return;
    this.#attempt = attempt;
    this.#reason = record.reason;
    if (this.#state === record.state) return;
    this.#state = record.state;
    this.#deferredUntil = undefined;
    this.#emit("state", {
      kind: "state", jobId: this.id, state: record.state, attempt, at: record.updatedAt, ...(record.reason === undefined ? {} : { reason: record.reason }),
    });
  }

  #abandon(error: OrchestratorError): void {
    if (this.#final !== undefined) return;
    this.#reject(error);
    this.#endIterators();
  }

  #emit<K extends keyof JobHandleEvents & string>(event: K, payload: JobHandleEvents[K][0]): void {
    const iterators = this.#iterators;
    if (iterators !== undefined) for (const iterator of iterators) iterator.push(payload);
    if (this.listenerCount(event) === 0) return;
    emitSafely(this as unknown as EventEmitter, this.#link.report, event, payload);
  }

  #endIterators(): void {
    const iterators = this.#iterators;
    if (iterators === undefined) return;
    for (const iterator of iterators) iterator.end();
  }
}

/** A buffered async iterator over one handle's events. */
class HandleIterator implements AsyncIterableIterator<JobHandleEvent> {
  readonly #owner: Set<HandleIterator>;
  #buffer: JobHandleEvent[] = [];
  #head = 0;
  #waiter: ((result: IteratorResult<JobHandleEvent>) => void) | undefined;
  #done = false;

  constructor(owner: Set<HandleIterator>) {
    this.#owner = owner;
    owner.add(this);
  }

  push(event: JobHandleEvent): void {
    if (this.#done) return;
    const waiter = this.#waiter;
    if (waiter !== undefined) {
      this.#waiter = undefined;
      waiter({ value: event, done: false });
    } else {
      this.#buffer.push(event);
    }
  }

  end(): void {
    if (this.#done) return;
    this.#done = true;
    this.#owner.delete(this);
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.({ value: undefined, done: true });
  }

  next(): Promise<IteratorResult<JobHandleEvent>> {
    if (this.#head < this.#buffer.length) {
      const value = this.#buffer[this.#head++] as JobHandleEvent;
      if (this.#head === this.#buffer.length) {
        this.#buffer = [];
        this.#head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.#done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => (this.#waiter = resolve));
  }

  return(): Promise<IteratorResult<JobHandleEvent>> {
    this.end();
    this.#buffer = [];
    this.#head = 0;
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<JobHandleEvent> {
    return this;
  }
}
