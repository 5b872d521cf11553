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
  queues: Array<{ name: string; ready?: number; unacked?: number; consumers?: number }>;
  jobs: { byState: Record<string, number> };
  throughput: Array<{ t: number; completed: number; failed: number }>;
  latency: { p50?: number; p95?: number };
  workers: { healthy: number; total: number };
  slots: { free: number; busy: number };
  deadLetters: number;
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
  record: ConsoleJobSummary & {
    payload?: unknown;
    payloadOmitted?: boolean;
    result?: unknown;
    cancel?: { reason: string; message?: string };
    labels?: Record<string, string>;
    idempotencyKey?: string;
    timeoutMs?: number;
    attempts: ConsoleAttempt[];
    progress?: { progress: number; message?: string; at?: number; attempt?: number };
  };
  logs: ConsoleLogLine[];
  traceId?: string;
}

/** A worker as every orchestrator reports it. */
export interface ConsoleWorker {
  id: string;
  state: string;
  reason?: string;
  labels: Record<string, string>;
  slots: { total: number; busy: number };
  running: string[];
  history?: Array<{ at: number; state: string; reason?: string }>;
  jobTypes?: string[];
  orchestrator?: string;
}

/** A job in the dead-letter queue. */
export interface ConsoleDeadLetter {
  jobId: string;
  type: string;
  reason: string;
  deadLetteredAt: number;
  redrives: number;
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
  filter?: ConsoleJobFilter;
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
