/**
 * The JSON the console's API answers and its live stream sends, as types. This file imports
 * nothing, so the web page (compiled for the browser, without Node's types) can `import type`
 * from it; the server's routes build their answers with `satisfies` these types, and
 * `api-types-check.ts` keeps the mirrored ones equal to the SDK's own.
 */

/** What an operator asks the console to do. */
export type ConsoleActionKind = "cancel" | "retry" | "redrive" | "discard" | "drain" | "undrain" | "submit" | "bulk" | "filters";

/** Every {@link ConsoleActionKind}, in one place. */
export const CONSOLE_ACTIONS: readonly ConsoleActionKind[] = ["cancel", "retry", "redrive", "discard", "drain", "undrain", "submit", "bulk", "filters"];

/** Which jobs a list, a saved filter or a bulk action covers; every field narrows (AND). */
export interface ConsoleJobFilter {
  /** States (any of). */
  state?: string[];
  type?: string;
  /** Created at or after, epoch ms. */
  since?: number;
  /** Created before, epoch ms. */
  until?: number;
  idPrefix?: string;
  /** Every pair must be in the job's metadata. */
  metadata?: Record<string, string>;
  /** Case-insensitive text in the id, type, metadata values or the payload's strings and numbers. */
  q?: string;
  /** Only jobs in (true) or out of (false) the dead-letter queue. */
  deadLettered?: boolean;
}

/** Every error answer: 400, 403, 404, 405, 409, 413, 415, 5xx. */
export interface ConsoleErrorBody {
  error: { code: string; message: string; field?: string };
}

/** An error as a job record keeps it. */
export interface ConsoleErrorInfo {
  code: string;
  message: string;
  retryable: boolean;
  details?: Record<string, unknown>;
}

/** `GET api/session`. */
export interface ConsoleSession {
  /** True when no action is allowed. */
  readOnly: boolean;
  user: string;
  /** Send it as the `x-csrf-token` header of every POST and DELETE. */
  csrfToken: string;
  /** Which kinds of action the `authorize` hook allows this user. */
  actions: Record<ConsoleActionKind, boolean>;
  /** Whether the audit log and saved filters are kept by the job store (else in the console's memory). */
  persisted: boolean;
}

/** One broker queue's depth. */
export interface ConsoleQueueDepth {
  name: string;
  role: "jobs" | "dead" | "other";
  ready: number;
  consumers: number;
}

/** `GET api/overview`, and the `overview` event. */
export interface ConsoleOverview {
  /** Epoch ms. */
  at: number;
  queues: ConsoleQueueDepth[];
  /** Why the queue depth could not be read. */
  queueError?: string;
  jobs: { byState: Record<string, number> };
  /** Results per bucket over the last 15 minutes, oldest first (see `figuresFrom`). */
  throughput: { bucketMs: number; buckets: Array<{ t: number; completed: number; failed: number; cancelled: number }> };
  /**
   * Run time of the jobs that ended in the last 5 minutes (their last attempt's start to its end;
   * see `figuresFrom`). `capped` when more ended than the store reads (`JobStore.finishedSummary`'s
   * `sampleLimit`, 10,000): the figures then cover the newest 10,000 (`wait` likewise).
   */
  latency: { p50Ms: number | null; p95Ms: number | null; count: number; capped?: true };
  /**
   * How long the jobs that ended in the last 5 minutes waited to start (their due time to their
   * first attempt's start), from the job records; absent when `figuresFrom` is `console`.
   */
  wait?: { p50Ms: number | null; p95Ms: number | null; count: number; capped?: true };
  /**
   * Where throughput and run times come from: `store`, the job records (`JobStore.finishedSummary`,
   * whatever ran before the console started), or `console`, what this console saw on the event
   * stream since it started (a store without that method).
   */
  figuresFrom: "store" | "console";
  /** `known` is false when the console has no pool bus (no workers can be shown). */
  workers: { total: number; healthy: number; byState: Record<string, number>; known: boolean };
  /** Slots of the serving workers. */
  slots: { total: number; busy: number; free: number };
  /** Messages in the dead-letter queue, or null when the queue cannot tell. */
  deadLetters: number | null;
}

/** A job as the lists show it. */
export interface ConsoleJobSummary {
  id: string;
  type: string;
  state: string;
  createdAt: number;
  updatedAt: number;
  finishedAt?: number;
  /** The latest attempt's number (0 before the first). */
  attempt: number;
  maxAttempts: number;
  /** The worker of the latest attempt. */
  workerId?: string;
  progress?: { progress: number; message?: string };
  metadata: Record<string, string>;
  deadLetter?: { reason: string; at: number };
  error?: { code: string; message: string };
  /** Why no worker can run it (`unschedulable`). */
  reason?: string;
  redrives: number;
}

/** `GET api/jobs`. */
export interface ConsoleJobList {
  jobs: ConsoleJobSummary[];
  /** Pass as `cursor` for the next page. */
  nextCursor?: string;
}

/** One attempt of a job. */
export interface ConsoleAttempt {
  number: number;
  round: number;
  fencingToken: number;
  workerId?: string;
  dispatcherId?: string;
  startedAt?: number;
  endedAt?: number;
  outcome?: "completed" | "failed" | "cancelled" | "retrying" | "lost";
  error?: ConsoleErrorInfo;
}

/** One log line the console saw go by. */
export interface ConsoleLogLine {
  at: number;
  attempt: number;
  line: string;
  stream?: "stdout" | "stderr";
}

/** `GET api/jobs/:id`. */
export interface ConsoleJobPage {
  job: Omit<ConsoleJobSummary, "error" | "progress"> & {
    /** Through the console's `redact` hook. */
    payload?: unknown;
    payloadOmitted?: true;
    /** The store's `redactPayload` hook changed the payload: a retry cannot submit it again (409 `payload_redacted`). */
    payloadRedacted?: true;
    result?: unknown;
    error?: ConsoleErrorInfo;
    cancel?: { reason: string; message?: string };
    labels?: Record<string, string>;
    idempotencyKey?: string;
    traceId?: string;
    progress?: { progress: number; message?: string; at: number; attempt: number };
    timeoutMs: number;
    startTimeoutMs: number;
  };
  attempts: ConsoleAttempt[];
  /**
   * The job's log: the latest lines the job store keeps (`JobStore.logs`, 1000 by default), or
   * those this console saw on the stream (the latest 500) when they are more or the store keeps none.
   */
  logs: ConsoleLogLine[];
}

/** One change of a worker's state, as its pool saw it. */
export interface ConsoleWorkerHistoryEntry {
  at: number;
  from: string;
  to: string;
  reason?: string;
}

/** One worker: what every orchestrator's pool says of it, together (`api/workers`, `worker` events). */
export interface ConsoleWorker {
  id: string;
  /** The state that matters most among its pools: draining, unhealthy, saturated, busy, idle, joining; `removed` in an event when gone. */
  state: string;
  reason?: string;
  labels: Record<string, string>;
  jobTypes?: string[];
  slots: { total: number; busy: number };
  /** Ids of the jobs running on it (from the job store; empty in `worker` events). */
  running: string[];
  /** State changes across its pools, oldest first (the latest 50). */
  history: Array<ConsoleWorkerHistoryEntry & { orchestratorId: string }>;
  orchestrators: Array<{ id: string; state: string; reason?: string; busy: number }>;
  /** Epoch ms of the latest snapshot that listed it. */
  lastSeenAt: number;
}

/** `GET api/dead-letters`. */
export interface ConsoleDeadLetterList {
  deadLetters: Array<{
    jobId: string;
    type: string;
    reason: string;
    deadLetteredAt: number;
    redrives: number;
    createdAt: number;
    metadata: Record<string, string>;
    error?: ConsoleErrorInfo;
    attempts: ConsoleAttempt[];
  }>;
  nextCursor?: string;
}

/** A message's bytes as the console shows them: UTF-8 text, or base64 when they are not valid UTF-8. */
export interface ConsoleMessageBody {
  encoding: "utf8" | "base64";
  data: string;
  /** The whole message is `bytes` long; `cut` when `data` holds only its start. */
  bytes: number;
  cut: boolean;
  /** SHA-256 of the whole message, hex. */
  sha256: string;
  /**
   * What `data` is: `"redacted"`, a JSON envelope re-serialized with its `payload`/`result`
   * passed through the console's `redact` hook; `"raw"`, the message's bytes (only to who may
   * `discard`); `"hidden"`, nothing (`data` empty: other bytes, for who may not discard).
   */
  shown: "redacted" | "raw" | "hidden";
}

/**
 * A dead letter that is not a valid job envelope (a foreign or damaged message the queue moved
 * aside): it has no job, no record, and cannot be redriven; it can be read and discarded.
 */
export interface ConsoleInvalidDeadLetter {
  /** The queue's id of it (`JobQueue.deadLetters`), for `GET`/`DELETE api/dead-letters/invalid/:id`. */
  id: string;
  reason: string;
  deadLetteredAt: number;
  /** In the list, the first 2 KiB; from `GET api/dead-letters/invalid/:id`, up to 1 MiB. */
  body: ConsoleMessageBody;
}

/** `GET api/dead-letters/invalid`. */
export interface ConsoleInvalidDeadLetterList {
  /** False when the queue cannot list its dead letters (it has no `deadLetters()`). */
  supported: boolean;
  /** Whether the queue can discard them (`discardDeadLetters()`). */
  discardable: boolean;
  invalid: ConsoleInvalidDeadLetter[];
  /** Dead letters read to find these, oldest first: at most 1000 a request. */
  scanned: number;
  /** True when the dead-letter queue holds more than were read. */
  more: boolean;
}

/** One line of the audit log (`api/audit`, `audit` events). */
export interface ConsoleAuditEntry {
  id: string;
  at: number;
  who: string;
  action: string;
  target?: string;
  filter?: Record<string, unknown>;
  count?: number;
  outcome: "ok" | "denied" | "failed";
  detail?: string;
}

/** A saved filter (`api/filters`). */
export interface ConsoleSavedFilter {
  name: string;
  filter: Record<string, unknown>;
  createdAt: number;
  createdBy: string;
}

/** `POST api/bulk/preview`. */
export interface ConsoleBulkPreview {
  action: "cancel" | "retry";
  filter: ConsoleJobFilter;
  count: number;
  /** The first ids covered. */
  sample: string[];
  /**
   * Jobs the filter matches that the action leaves out: for a retry, failed or cancelled jobs
   * whose record does not hold their own payload (redacted or too large) and that are not dead
   * letters, which a retry would refuse.
   */
  excluded: number;
}

/** `POST api/bulk`. */
export interface ConsoleBulkResult {
  action: "cancel" | "retry";
  done: string[];
  failed: Array<{ id: string; error: { code: string; message: string } }>;
}

/** A `job` event of the live stream: a job's state change, progress, log line or result (without a completed job's value). */
export type ConsoleJobEvent =
  | { kind: "state"; jobId: string; attempt: number; at: number; state: string; workerId?: string; error?: ConsoleErrorInfo; delayMs?: number; reason?: string }
  | { kind: "progress"; jobId: string; attempt: number; at: number; progress: number; message?: string }
  | { kind: "log"; jobId: string; attempt: number; at: number; line: string; stream?: "stdout" | "stderr" }
  | {
      kind: "result";
      jobId: string;
      attempt: number;
      at: number;
      outcome: { status: "completed" } | { status: "failed"; error: ConsoleErrorInfo } | { status: "cancelled"; reason: string; message?: string };
    };

/** The events of `GET api/events`, by name, with their `data`. */
export interface ConsoleStreamEvents {
  job: ConsoleJobEvent;
  worker: ConsoleWorker;
  overview: ConsoleOverview;
  audit: ConsoleAuditEntry;
}
