/**
 * The shapes of the console API's answers, as the page reads them (see /api routes in
 * docs/console.md). Types only: nothing here reaches the bundle.
 */

/** `GET api/session`: what this user may do here. */
export interface ConsoleSession {
  readOnly: boolean;
  actions: Partial<Record<"cancel" | "retry" | "redrive" | "drain" | "undrain" | "submit" | "bulk" | "filters", boolean>>;
  csrfToken?: string;
  user?: string;
  /** Whether the audit log and saved filters outlive the process (a persistent store). */
  persisted?: boolean;
}

/** Which jobs a list, a saved filter or a bulk action covers; every field narrows (AND). */
export interface ConsoleJobFilter {
  state?: string[];
  type?: string;
  /** Created at or after, epoch ms. */
  since?: number;
  /** Created before, epoch ms. */
  until?: number;
  idPrefix?: string;
  metadata?: Record<string, string>;
  /** Text in the id, type, metadata or payload. */
  q?: string;
  deadLettered?: boolean;
}

/** An error as records keep it. */
export interface ConsoleError {
  code: string;
  message: string;
  details?: unknown;
}

/** `GET api/overview`. */
export interface ConsoleOverview {
  at: number;
  /** Depth of each queue the job queue reports (jobs, dead letters, delays, lanes). */
  queues: Array<{ name: string; role: "jobs" | "dead" | "other"; ready: number; consumers: number }>;
  /** Why the depth is missing, when the broker could not tell. */
  queueError?: string;
  jobs: { byState: Record<string, number> };
  /** Results per bucket over the last minutes, oldest first. */
  throughput: { bucketMs: number; buckets: Array<{ t: number; completed: number; failed: number; cancelled: number }> };
  /** Run times of the attempts that ended in the last minutes. */
  latency: { p50Ms: number | null; p95Ms: number | null; count: number };
  workers: { healthy: number; total: number; byState?: Record<string, number>; known?: boolean };
  slots: { total: number; free: number; busy: number };
  /** Messages in the dead-letter queue; null when the queue cannot tell. */
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
  attempt: number;
  maxAttempts: number;
  workerId?: string;
  progress?: { progress: number; message?: string };
  metadata: Record<string, string>;
  deadLetter?: { reason: string; at: number };
  error?: ConsoleError;
  reason?: string;
  redrives: number;
}

/** One attempt of a job. */
export interface ConsoleAttempt {
  number: number;
  round: number;
  workerId?: string;
  startedAt?: number;
  endedAt?: number;
  outcome?: string;
  error?: ConsoleError;
}

/** A log line of a job. */
export interface ConsoleLogLine {
  at: number;
  attempt: number;
  line: string;
  stream?: "stdout" | "stderr";
}

/** `GET api/jobs/:id`. */
export interface ConsoleJobDetail {
  job: Omit<ConsoleJobSummary, "progress"> & {
    payload?: unknown;
    payloadOmitted?: boolean;
    result?: unknown;
    cancel?: { reason: string; message?: string };
    labels?: Record<string, string>;
    idempotencyKey?: string;
    traceId?: string;
    timeoutMs?: number;
    progress?: { progress: number; message?: string; at?: number; attempt?: number };
  };
  attempts: ConsoleAttempt[];
  logs: ConsoleLogLine[];
}

/** A worker as every orchestrator reports it. */
export interface ConsoleWorker {
  id: string;
  state: string;
  reason?: string;
  labels: Record<string, string>;
  slots: { total: number; busy: number };
  running: string[];
  /** State changes across its pools, oldest first. */
  history?: Array<{ at: number; from: string; to: string; reason?: string; orchestratorId?: string }>;
  jobTypes?: string[];
  /** Each orchestrator pool holding it. */
  orchestrators?: Array<{ id: string; state: string; reason?: string; busy: number }>;
  /** Epoch ms of the latest report that listed it. */
  lastSeenAt?: number;
}

/** A job in the dead-letter queue. */
export interface ConsoleDeadLetter {
  jobId: string;
  type: string;
  reason: string;
  deadLetteredAt: number;
  redrives: number;
  createdAt?: number;
  metadata?: Record<string, string>;
  attempts?: ConsoleAttempt[];
  error?: ConsoleError;
}

/** One line of the audit log. */
export interface ConsoleAuditEntry {
  id?: string;
  at: number;
  who: string;
  action: string;
  target?: string;
  filter?: Record<string, unknown>;
  count?: number;
  outcome: string;
  detail?: string;
}

/** A saved job filter. */
export interface ConsoleSavedFilter {
  name: string;
  filter: ConsoleJobFilter;
}

/** A job event from the live stream (`job`). */
export interface ConsoleJobEvent {
  kind: "state" | "progress" | "log" | "result";
  jobId: string;
  attempt: number;
  at: number;
  type?: string;
  state?: string;
  workerId?: string;
  progress?: number;
  message?: string;
  line?: string;
  stream?: "stdout" | "stderr";
  outcome?: { status: string; error?: ConsoleError; reason?: string; message?: string };
}
