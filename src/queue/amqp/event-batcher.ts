import { OrchestratorError } from "../../errors.ts";
import { abortReason } from "../../signals.ts";
import type { JobEvent } from "../../job/types.ts";
import type { PublishRequest } from "./confirm-publisher.ts";

/**
 * Version of a message carrying several job events: `{"v":2,"events":[…]}`. A message carrying one
 * event is the event object itself (no `v`: version 1), as before batching existed.
 * @internal
 */
export const EVENT_BATCH_VERSION = 2;

/** Most events in one message. */
const MAX_EVENTS = 256;
/** Most body bytes in one message (one event larger than this goes alone). */
const MAX_BODY_BYTES = 256 * 1024;
/** Most bytes of routing keys in one message's BCC header, which must fit one AMQP frame (128 KiB). */
const MAX_KEY_BYTES = 16 * 1024;

interface Entry {
  readonly json: string;
  readonly routingKey: string;
  readonly resolve: () => void;
  readonly reject: (error: OrchestratorError) => void;
  readonly signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  /** Settled (its outcome given, or its signal fired): later outcomes are ignored. */
  done: boolean;
  /** Handed to the publisher: an abort no longer keeps it out of the message. */
  sent: boolean;
}

interface Batch {
  readonly entries: Entry[];
  readonly timeoutMs: number | undefined;
  confirm: boolean;
  bytes: number;
  keyBytes: number;
}

/** Options of {@link EventBatcher}. @internal */
export interface EventBatcherOptions {
  exchange: string;
  /** The connection's publish (confirm channel, bounded buffer). */
  publish(request: PublishRequest): Promise<void>;
}

/**
 * Coalesces the job events one process publishes in one event-loop turn into one AMQP message:
 * the broker's cost is per message (about 60 µs of its CPU each on a 2-core machine, however small
 * the message, durable or not), so a dispatcher finishing 20 jobs in a turn pays once, not 40 times.
 *
 * - Routing: the message goes out with the first event's routing key and every other event's key
 *   in RabbitMQ's `BCC` header (sender-selected distribution), so each queue bound for any of the
 *   events gets the message once: `#` subscribers, per-job (`*.<jobKey>`) subscribers and queues
 *   bound by kind (`result.#`) alike. Readers take the events they want from it.
 * - Order: messages are written in the order of their first event, events in publish order, on the
 *   connection's one confirm channel: a job's events keep their order.
 * - Confirms: a message carrying any event that asked for a confirm is persistent and confirmed;
 *   every publish in it settles with that one confirm. Otherwise it is transient and resolves
 *   once written.
 * - A publish whose signal fires before its message is written is left out of it (certainly not
 *   published); after that, it rejects with the signal's reason at once, like a single publish.
 *   Publishes with different `timeoutMs` do not share a message.
 * @internal
 */
export class EventBatcher {
  readonly #options: EventBatcherOptions;
  #batch: Batch | undefined;
  #scheduled = false;

  constructor(options: EventBatcherOptions) {
    this.#options = options;
  }

  /** Queues `event` for the message of this turn; settles with that message's outcome. */
  add(event: JobEvent, routingKey: string, confirm: boolean, signal: AbortSignal | undefined, timeoutMs: number | undefined): Promise<void> {
    const json = JSON.stringify(event);
    return new Promise<void>((resolve, reject) => {
      const entry: Entry = { json, routingKey, resolve, reject, signal, onAbort: undefined, done: false, sent: false };
      let batch = this.#batch;
      const bytes = Buffer.byteLength(json);
      const keyBytes = Buffer.byteLength(routingKey) + 5;
      if (
        batch !== undefined &&
        (batch.timeoutMs !== timeoutMs ||
          batch.entries.length >= MAX_EVENTS ||
          batch.bytes + bytes > MAX_BODY_BYTES ||
          batch.keyBytes + keyBytes > MAX_KEY_BYTES)
      ) {
        this.flush();
        batch = undefined;
      }
      if (batch === undefined) {
        batch = { entries: [], timeoutMs, confirm: false, bytes: 0, keyBytes: 0 };
        this.#batch = batch;
      }
      batch.entries.push(entry);
      batch.confirm ||= confirm;
      batch.bytes += bytes + 1;
      batch.keyBytes += keyBytes;
      if (signal !== undefined) {
        entry.onAbort = () => this.#settle(entry, abortReason(signal));
        signal.addEventListener("abort", entry.onAbort, { once: true });
      }
      if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => {
          this.#scheduled = false;
          this.flush();
        });
      }
    });
  }

  /** Hands the pending message (if any) to the publisher now. */
  flush(): void {
    const batch = this.#batch;
    this.#batch = undefined;
    if (batch === undefined) return;
    const entries = batch.entries.filter((entry) => !entry.done);
    if (entries.length === 0) return;
    for (const entry of entries) entry.sent = true;
    const first = entries[0] as Entry;
    let body: string;
    let bcc: string[] | undefined;
    if (entries.length === 1) {
      body = first.json;
    } else {
      body = `{"v":${EVENT_BATCH_VERSION},"events":[${entries.map((entry) => entry.json).join(",")}]}`;
      const keys = new Set<string>();
      for (const entry of entries) if (entry.routingKey !== first.routingKey) keys.add(entry.routingKey);
      if (keys.size > 0) bcc = [...keys];
    }
    this.#options
      .publish({
        exchange: this.#options.exchange,
        routingKey: first.routingKey,
        body: Buffer.from(body),
        properties: { contentType: "application/json", persistent: batch.confirm, ...(bcc === undefined ? {} : { BCC: bcc }) },
        confirm: batch.confirm,
        timeoutMs: batch.timeoutMs,
      })
      .then(
        () => {
          for (const entry of entries) this.#settle(entry, undefined);
        },
        (error: unknown) => {
          const e = OrchestratorError.from(error);
          for (const entry of entries) this.#settle(entry, e);
        },
      );
  }

  #settle(entry: Entry, error: OrchestratorError | undefined): void {
    if (entry.done) return;
    entry.done = true;
    if (entry.onAbort !== undefined) entry.signal?.removeEventListener("abort", entry.onAbort);
    if (error === undefined) entry.resolve();
    else entry.reject(error);
  }
}

/**
 * The job events in one message body: one event (version 1, the event object) or several
 * (version 2, `{"v":2,"events":[…]}`).
 * @throws {OrchestratorError} `invalid_argument` when the body is not a JSON object, or names a
 * format version this reader does not know (a newer writer: the message says to upgrade).
 * @internal
 */
export function decodeEvents(content: Buffer): JobEvent[] {
  let value: unknown;
  try {
    value = JSON.parse(content.toString("utf8"));
  } catch (cause) {
    throw new OrchestratorError("invalid_argument", `job event is not valid JSON: ${(cause as Error).message}`, { cause });
  }
  if (typeof value !== "object" || value === null) throw new OrchestratorError("invalid_argument", "job event message is not a JSON object");
  const message = value as { v?: unknown; events?: unknown; jobId?: unknown };
  if (message.v === undefined) return typeof message.jobId === "string" ? [value as JobEvent] : [];
  if (message.v !== EVENT_BATCH_VERSION || !Array.isArray(message.events)) {
    throw new OrchestratorError(
      "invalid_argument",
      `job event message of format version ${JSON.stringify(message.v)} is not understood by this reader (it reads versions 1 and ${EVENT_BATCH_VERSION}); upgrade it`,
      { details: { version: message.v } },
    );
  }
  return (message.events as unknown[]).filter((e): e is JobEvent => typeof e === "object" && e !== null && typeof (e as { jobId?: unknown }).jobId === "string");
}
