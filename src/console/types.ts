import type { IncomingMessage } from "node:http";
import type { JobEvents, JobQueue } from "../queue/types.ts";
import type { JobRecord, JobStore } from "../store/types.ts";
import type { Logger } from "../telemetry/logger.ts";
import type { PoolBus } from "./pool-bus.ts";
import type { ConsoleActionKind, ConsoleJobFilter } from "./api-types.ts";

/**
 * One action, as {@link ConsoleOptions.authorize} sees it. `GET api/session` asks with `kind`
 * alone (may this user do this kind of thing at all?) to show or hide the page's buttons; the
 * action itself is asked again with its target.
 */
export interface ConsoleAction {
  kind: ConsoleActionKind;
  /** The job id (cancel, retry), worker id (drain, undrain), job type (submit), filter name (filters). */
  target?: string;
  /** For `bulk`: which action on which jobs. */
  bulk?: { action: "cancel" | "retry"; filter: ConsoleJobFilter; count: number };
}

/** Options of {@link createConsole}. */
export interface ConsoleOptions {
  /** Where submitted jobs go and dead letters come back from (`AmqpQueue`, `MemoryQueue`). Its depth is read when it can tell. */
  queue: JobQueue;
  /** Job events (the live stream) and cancel commands. */
  events: JobEvents;
  /** Job records: every list and job page. A store with console records (both stores here) also keeps the audit log and saved filters. */
  store: JobStore;
  /**
   * Where workers are seen and drained: the bus every orchestrator's {@link PoolReporter}
   * publishes its pool on (`new AmqpPoolBus({ connection, queueName })`, or one `MemoryPoolBus`
   * shared with the reporter in the same process).
   * @default none: the workers view is empty and drain is refused
   */
  poolBus?: PoolBus;
  /**
   * The path the console is mounted at (`"/admin/jobs"`), stripped from each request's URL. Not
   * needed when the framework strips it (Express sets `req.baseUrl`, Koa/Fastify mounts rewrite
   * `req.url`).
   * @default ""
   */
  basePath?: string;
  /**
   * Decides whether the request may run `action`. Without it the console is read-only: every
   * mutating request is refused 403. A throw counts as a refusal.
   */
  authorize?: (request: IncomingMessage, action: ConsoleAction) => boolean | Promise<boolean>;
  /**
   * Who is asking, as the audit log records it (a user name from the session your app keeps).
   * @default "anonymous"
   */
  identify?: (request: IncomingMessage) => string | undefined | Promise<string | undefined>;
  /**
   * Applied to each payload and result before it leaves the console (the store's own
   * `redactPayload` already ran at submit). Return what may be shown. `record` is undefined for
   * the `payload`/`result` of an invalid dead letter (a damaged envelope: it has no record).
   * @default shows them as stored
   */
  redact?: (payload: unknown, record: JobRecord | undefined) => unknown;
  /**
   * Key of the CSRF tokens. Give the same secret to every console instance behind one address
   * (and across restarts), else a page's token is only good for the instance that issued it.
   * @default 32 random bytes per console
   */
  secret?: string | Uint8Array;
  /**
   * Believe `x-forwarded-proto` (cookies get `Secure` behind a TLS-terminating proxy).
   * @default false
   */
  trustProxy?: boolean;
  /**
   * Largest request body accepted, in bytes.
   * @default 1048576
   */
  maxBodyBytes?: number;
  /**
   * How often the live stream sends the overview.
   * @default 5000
   */
  overviewIntervalMs?: number;
  /**
   * Where the page's files are (`index.html`, `console.js`, `console.css`).
   * @default the page shipped in the package
   */
  uiDir?: string;
  /** Where the console reports what went wrong (pino-shaped). @default none */
  logger?: Logger;
}
