import type { JobEnvelope } from "../job/envelope.ts";
import type { CancelCommand, JobEvent } from "../job/types.ts";

/** Options of every call that can wait. */
export interface WaitOptions {
  /** Aborts the wait; the call rejects with the signal's reason (an `OrchestratorError` `canceled`). */
  signal?: AbortSignal;
  /** Gives up after this long, rejecting with `deadline_exceeded`. */
  timeoutMs?: number;
}

/** Options of {@link JobQueue.enqueue}. */
export interface EnqueueOptions extends WaitOptions {
  /** Deliver no earlier than this many milliseconds from now. @default 0 */
  delayMs?: number;
}

/** Options of {@link JobQueue.consume}. */
export interface ConsumeOptions {
  /**
   * Most unsettled deliveries the consumer holds at once; 0 pauses delivery.
   * Changed later with {@link Consumer.setPrefetch}.
   */
  prefetch: number;
  /**
   * Extra check of each valid envelope before it reaches the handler (for example known job
   * types). Returning a string dead-letters the message with that reason instead.
   */
  accept?: (job: JobEnvelope) => string | undefined;
  /**
   * What the consumer does for concurrency keys (see {@link JobQueue}, "Concurrency keys"). A
   * consumer without it still gets keyed jobs only within their limits; `cancel_running` then
   * waits like `wait`.
   */
  keys?: KeyHooks;
}

/**
 * A consumer's part in concurrency keys. Each is called at most once per event, may not throw
 * (a throw is reported), and must not settle deliveries synchronously.
 */
export interface KeyHooks {
  /**
   * A keyed job went to wait for its key (it is over the key's limit, or its queue routes every
   * keyed job through the key's wait line): `reason` says so. The job is in no consumer's
   * prefetch while it waits. Called on the consumer that moved it (any consumer of the queue).
   */
  waiting?(job: JobEnvelope, reason: string): void;
  /**
   * Strategy `cancel_running`: `newer` arrived while its key was at its limit; the consumer
   * should stop the job `holderJobId` it holds (its delivery is one of this consumer's) with
   * `message`. `newer` is delivered once a holder of the key is settled.
   */
  supersede?(holderJobId: string, newer: JobEnvelope, message: string): void;
}

/**
 * Durable job intake (a RabbitMQ queue, or {@link MemoryQueue} in one process).
 *
 * Semantics every implementation keeps, and `describeQueueContract()` checks:
 * - at-least-once: a delivery not settled when its consumer stops (or its connection dies) is
 *   delivered again, with `redelivered: true` and a higher `deliveryCount`;
 * - a consumer never holds more unsettled deliveries than its prefetch, but for keyed ones (below);
 * - a message that is not a valid envelope never reaches a handler: it is dead-lettered with a
 *   reason that says what was wrong.
 *
 * Concurrency keys (jobs whose envelope has `concurrency: { key, limit, strategy }`):
 * - at most `limit` deliveries of one key are held unsettled at once, across every consumer of
 *   the queue (in every process); a delivery lost with its consumer (cancelled, channel or
 *   process dead) frees its place;
 * - a keyed job over its key's limit waits in the queue, first in first out per key (in the order
 *   the queue's consumers moved the jobs to their key's line: with several consumers, jobs
 *   enqueued within moments of each other may swap), in no consumer's prefetch, and is
 *   delivered when a delivery of its key is settled or lost;
 * - a keyed delivery held counts against its consumer's prefetch: the consumer takes that many
 *   fewer unkeyed jobs, so slots running keyed jobs are never filled twice and a higher-priority
 *   job arriving later is the next one taken. A keyed job whose key has room is delivered even
 *   to a consumer at its prefetch (never to one paused at 0): its key's place is held across
 *   consumers, and holding it back for one consumer's slot would hold its key's whole line.
 *   (`AmqpQueue` with `priorityLanes: false` does not count them: see that option);
 * - `drop_newest`: a job arriving while its key is full is delivered with `dropped` set;
 *   `cancel_running`: the consumer holding the key's oldest delivery is asked to stop it
 *   ({@link KeyHooks.supersede}), and the newer job is delivered in its place.
 */
export interface JobQueue {
  /**
   * Adds a job durably. Resolves once the queue has confirmed it (publisher confirm);
   * not idempotent: enqueueing the same envelope twice delivers it twice.
   * @throws {OrchestratorError} `queue_closed` after close, `unavailable` when the broker cannot
   * be reached in time, `unknown_outcome` when the connection died before the confirm,
   * `canceled` / `deadline_exceeded` from the options.
   */
  enqueue(job: JobEnvelope, options?: EnqueueOptions): Promise<void>;

  /**
   * Starts delivering jobs to `handler`, at most `prefetch` unsettled at a time. The handler
   * must not throw (a throw is reported and the delivery retried); it settles each delivery
   * exactly once, possibly much later.
   * @throws {OrchestratorError} `queue_closed` after close, `invalid_argument` for a bad prefetch.
   */
  consume(handler: (delivery: Delivery) => void, options: ConsumeOptions): Promise<Consumer>;

  /**
   * Optional: moves dead letters back to the queue to run again, each with a fresh attempt
   * count (`attempt` 1) and its history kept in the envelope (`redrives`, `priorAttempts`; see
   * `redrivenEnvelope`). Only valid envelopes move, oldest first, up to `limit`, optionally only
   * those of `jobIds`; the others stay where they are, unchanged. Each job is enqueued
   * (confirmed) before its dead letter is removed, so a failure mid-way can leave a job both
   * requeued and still dead-lettered, never neither. Not idempotent: a second call moves what
   * arrived since.
   * @throws {OrchestratorError} `queue_closed` after close, `unavailable` when the broker cannot
   * be reached, `invalid_argument` for bad options, `canceled` / `deadline_exceeded` from them.
   */
  redrive?(options?: RedriveOptions): Promise<RedriveResult>;

  /**
   * Optional: reads up to `limit` dead letters, oldest first, without removing or changing them:
   * valid jobs and messages that were not valid envelopes alike, each with its `id`, reason and
   * bytes. (`MemoryQueue` answers at once, without a promise.)
   * @throws {OrchestratorError} `queue_closed` after close, `unavailable` when the broker cannot
   * be reached, `invalid_argument` for bad options, `canceled` / `deadline_exceeded` from them.
   */
  deadLetters?(options?: DeadLettersOptions): Promise<DeadLetterInfo[]> | DeadLetterInfo[];

  /**
   * Optional: removes the dead letters whose {@link DeadLetterInfo.id} is in `ids`, for good (a
   * message that could not be redriven, such as one that is not a valid envelope, once it has been
   * looked at). It looks among the oldest `limit` dead letters only (default 1000, as
   * `deadLetters()` reads): ids not found there are left out of `discarded`; the other dead
   * letters stay where they are, unchanged. Idempotent.
   * @throws {OrchestratorError} `queue_closed` after close, `unavailable` when the broker cannot
   * be reached, `invalid_argument` for bad ids or options, `canceled` / `deadline_exceeded` from them.
   */
  discardDeadLetters?(ids: readonly string[], options?: DeadLettersOptions): Promise<{ discarded: string[] }>;

  /**
   * Optional: how many messages wait in the queue's broker queues (the job queue, its dead
   * letters, and any other it counts) and how many consumers read each, as the broker says now.
   * @throws {OrchestratorError} `queue_closed` after close, `unavailable` when the broker cannot
   * be reached, `canceled` / `deadline_exceeded` from the options.
   */
  depth?(options?: WaitOptions): Promise<QueueDepth[]>;

  /**
   * Closes the queue: consumers stop (their unsettled deliveries go back to the queue) and
   * later calls reject with `queue_closed`. Idempotent.
   */
  close(): Promise<void>;
}

/** One broker queue's depth, as {@link JobQueue.depth} reports it. */
export interface QueueDepth {
  name: string;
  /** `jobs`: jobs waiting to run; `dead`: dead letters; `other`: any other queue the queue counts (delays, lanes). */
  role: "jobs" | "dead" | "other";
  /** Messages ready for delivery (not counting those delivered and not yet settled). */
  ready: number;
  /** Consumers reading it. */
  consumers: number;
}

/** Options of {@link JobQueue.redrive}. */
export interface RedriveOptions extends WaitOptions {
  /** Only dead letters of these job ids move. @default every valid dead letter */
  jobIds?: readonly string[];
  /** Most dead letters moved by one call. @default 1000 */
  limit?: number;
}

/** What {@link JobQueue.redrive} did. */
export interface RedriveResult {
  /** The envelopes put back on the queue, in the order they were dead-lettered. */
  redriven: JobEnvelope[];
}

/** A running consumption started by {@link JobQueue.consume}. */
export interface Consumer {
  /** The prefetch in force. */
  readonly prefetch: number;
  /**
   * Changes how many unsettled deliveries the consumer may hold; takes effect for the next
   * delivery. Lowering it below the number held settles nothing. 0 pauses.
   * @throws {OrchestratorError} `invalid_argument` unless an integer >= 0.
   */
  setPrefetch(prefetch: number): Promise<void>;
  /**
   * Stops delivering. Deliveries still unsettled go back to the queue and are delivered again
   * (to this or another consumer); their later settle calls are dropped. Idempotent.
   */
  cancel(): Promise<void>;
}

/** Options of {@link JobQueue.deadLetters}. */
export interface DeadLettersOptions extends WaitOptions {
  /** Most messages read (1 to 1,000,000): `deadLetters()` returns them, `discardDeadLetters()` looks among them. @default 1000 */
  limit?: number;
}

/** Why a delivery ended up in the dead-letter queue. */
export interface DeadLetterInfo {
  /**
   * Names this dead letter while it stays in the dead-letter queue (for
   * {@link JobQueue.discardDeadLetters}); the same on every read. Not a job id: a message that is
   * not a valid envelope has none.
   */
  id: string;
  reason: string;
  /** The raw message bytes, kept for inspection (for messages that were not valid envelopes). */
  body: Uint8Array;
  /** The parsed job, when the message was a valid envelope. */
  job?: JobEnvelope;
  /** When it was dead-lettered, ISO 8601. */
  at: string;
  /**
   * The attempt the job had reached when it was dead-lettered, as this SDK recorded it (absent
   * for a message that was not a valid envelope).
   */
  attempt?: number;
}

/**
 * One delivery of a job to a consumer. It is settled exactly once, by `ack`, `retry` or
 * `deadLetter`; a second settle rejects with `already_settled`. A settle after the delivery was
 * lost (consumer cancelled, channel died) is dropped and rejects with `queue_closed`: the job
 * has already gone back to the queue.
 */
export interface Delivery {
  /** The validated job. */
  readonly job: JobEnvelope;
  /**
   * The attempt this delivery runs: `job.attempt` plus the times it was delivered before and not
   * settled (a crash mid-job). A duplicate run always shows a higher attempt.
   */
  readonly attempt: number;
  /** Whether the queue delivered this message before (it was not settled). */
  readonly redelivered: boolean;
  /** Whether a settle call has been made. */
  readonly settled: boolean;
  /**
   * Optional: set on a delivery of a keyed job with strategy `drop_newest` that arrived while
   * its key was at its limit: the job must not run. The consumer finishes it `cancelled` with
   * this message and acks it; the delivery does not count against the key's limit.
   */
  readonly dropped?: string;
  /**
   * Optional: aborted when the queue takes this delivery away before the consumer settled it.
   * The reason is an `OrchestratorError` whose `details.reason` says why:
   * - `"delivery_lost"` (code `queue_closed`): the delivery's channel or connection died, or its
   *   consumer was cancelled. The job is back in the queue and will be delivered again, here or to
   *   another consumer, with a higher `attempt`; settle calls now reject `queue_closed`. A
   *   dispatcher aborts the attempt it runs for this delivery, so that it does not keep running
   *   beside the redelivery (`Dispatcher` states the window that remains), and publishes no
   *   outcome for it (the redelivery will).
   * - `"consumer_timeout"` (code `deadline_exceeded`): the delivery was held longer than the broker
   *   lets a delivery stay unacknowledged (RabbitMQ's `consumer_timeout`, which would close the
   *   channel and lose every other delivery on it). The queue has already dead-lettered the job
   *   with that reason (`settled` is true). A dispatcher aborts the attempt and publishes a
   *   `failed` outcome carrying this error.
   *
   * Queues that never take a delivery away (an in-process queue without faults) may leave it
   * undefined.
   */
  readonly signal?: AbortSignal;
  /** Removes the job from the queue: it is done (completed, cancelled, or failed for good and recorded). */
  ack(): Promise<void>;
  /**
   * Puts the job back with `attempt` raised by one, deliverable after `delayMs`, and removes this
   * delivery, as one step as far as the queue allows (the new copy is confirmed before the ack).
   * A `reason` longer than 16,384 characters is cut (saying so), never refused.
   */
  retry(delayMs: number, reason: string): Promise<void>;
  /** Moves the job to the dead-letter queue, keeping `reason`. */
  deadLetter(reason: string): Promise<void>;
}

/** A running subscription; `close()` is idempotent. */
export interface Subscription {
  close(): Promise<void>;
}

/** Options of {@link JobEvents.publish}. */
export interface PublishOptions extends WaitOptions {
  /**
   * Wait until the event is durably accepted (publisher confirm). Used for `result` events, which
   * settle a job; progress and log events may be fire-and-forget.
   * @default true for `result` events, false otherwise
   */
  confirm?: boolean;
}

/**
 * Fan-out of job events and cancel commands across processes.
 *
 * Semantics every implementation keeps:
 * - events of one job published by one process reach each subscriber in publish order;
 * - a subscriber sees events published after its `subscribe` resolved;
 * - cancel commands are retained for at least `cancelRetentionMs` and replayed to every new
 *   cancel subscriber, so a cancel for a job still queued holds even on a dispatcher that starts
 *   after it was sent; a command with `runAt` (the cancel of a job due later) is retained
 *   past its `runAt`, for about `cancelRetentionMs` more, however far ahead it was sent.
 */
export interface JobEvents {
  /**
   * Publishes a job event.
   * @throws {OrchestratorError} `queue_closed`, `unavailable`, `unknown_outcome`.
   */
  publish(event: JobEvent, options?: PublishOptions): Promise<void>;
  /**
   * Calls `listener` with every event of `jobId` (or of every job for `"*"`). A throwing
   * listener is reported, never breaks the subscription.
   */
  subscribe(jobId: string | "*", listener: (event: JobEvent) => void): Promise<Subscription>;
  /**
   * Sends a cancel command to every cancel subscriber, now and (while retained) later.
   * Resolves once it is durably accepted.
   */
  cancel(command: CancelCommand, options?: WaitOptions): Promise<void>;
  /** Calls `listener` with every retained cancel command, then with each new one. */
  subscribeCancels(listener: (command: CancelCommand) => void): Promise<Subscription>;
  /** Closes every subscription; later calls reject with `queue_closed`. Idempotent. */
  close(): Promise<void>;
}
