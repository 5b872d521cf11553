import { createHash } from "node:crypto";
import type { Message, Options } from "amqplib";
import { decodeEnvelope } from "../../job/envelope.ts";
import type { DeadLetterInfo } from "../types.ts";

/**
 * The one place that decides what a dead-letter copy carries (when this SDK moves a message)
 * and how a dead letter is read back (whoever moved it).
 *
 * A copy carries only headers we write, never the original table: a `CC` or `BCC` header would
 * route the copy back to the job queue (RabbitMQ honours them on every publish), forged `x-death`
 * or `x-blacktree-*` headers would lie about its history, and a table near amqplib's 64 KiB
 * encoding buffer would make the publish throw. The original headers are kept, for inspection
 * only, as one JSON string, trimmed; every trim is named in `x-blacktree-trimmed`.
 * @internal
 */

/** Headers this SDK writes on a dead-letter copy. */
export const DEAD_LETTER_HEADERS = {
  reason: "x-blacktree-reason",
  at: "x-blacktree-dead-lettered-at",
  sourceQueue: "x-blacktree-source-queue",
  attempt: "x-blacktree-attempt",
  originalHeaders: "x-blacktree-original-headers",
  trimmed: "x-blacktree-trimmed",
  id: "x-blacktree-dead-letter-id",
} as const;

/** Most UTF-8 bytes of the reason a copy carries. */
export const MAX_REASON_BYTES = 8 * 1024;
/** Most UTF-8 bytes of the original headers (as JSON) a copy carries. */
export const MAX_ORIGINAL_HEADERS_BYTES = 16 * 1024;
const MAX_CONTENT_TYPE_BYTES = 200;

/** What {@link deadLetterCopy} needs about the message it moves. */
export interface DeadLetterSource {
  readonly content: Buffer;
  readonly properties: { readonly headers?: unknown; readonly contentType?: unknown };
}

/** Cuts `text` to at most `maxBytes` UTF-8 bytes on a character boundary; reports whether it cut. */
export function truncateUtf8(text: string, maxBytes: number): { text: string; bytes: number; cut: boolean } {
  const bytes = Buffer.byteLength(text, "utf8");
  if (bytes <= maxBytes) return { text, bytes, cut: false };
  let cut = Buffer.from(text, "utf8").subarray(0, maxBytes).toString("utf8");
  // A character split at the end decodes as U+FFFD; drop it.
  if (cut.endsWith("\uFFFD")) cut = cut.slice(0, -1);
  return { text: cut, bytes, cut: true };
}

/** The original header table as JSON text, whatever amqplib decoded (Buffers, int64 boxes, nested tables). */
function headersAsJson(headers: unknown): string {
  try {
    return (
      JSON.stringify(headers, (_key, value: unknown) => {
        if (typeof value === "bigint") return value.toString();
        if (value instanceof Uint8Array) return { bytes: Buffer.from(value).toString("base64") };
        return value;
      }) ?? "null"
    );
  } catch (error) {
    return JSON.stringify({ unreadable: error instanceof Error ? error.message : "unserialisable header table" });
  }
}

/** Options of {@link deadLetterCopy}. */
export interface DeadLetterCopyOptions {
  reason: string;
  at: string;
  sourceQueue: string;
  /** The attempt the delivery ran as (absent for a message that was not a valid envelope). */
  attempt: number | undefined;
  /** The dead letter's id ({@link DeadLetterInfo.id}): a fresh random one. */
  id: string;
}

/** The AMQP properties of the copy of `message` this SDK publishes to the dead-letter queue. */
export function deadLetterCopy(message: DeadLetterSource, options: DeadLetterCopyOptions): Options.Publish {
  const trimmed: string[] = [];
  const reason = truncateUtf8(options.reason, MAX_REASON_BYTES);
  if (reason.cut) trimmed.push(`reason cut from ${reason.bytes} to ${MAX_REASON_BYTES} bytes`);
  const headers: Record<string, unknown> = {
    [DEAD_LETTER_HEADERS.reason]: reason.text,
    [DEAD_LETTER_HEADERS.at]: options.at,
    [DEAD_LETTER_HEADERS.sourceQueue]: options.sourceQueue,
    [DEAD_LETTER_HEADERS.id]: options.id,
  };
  if (options.attempt !== undefined) headers[DEAD_LETTER_HEADERS.attempt] = options.attempt;
  const original = message.properties.headers;
  if (original !== undefined && original !== null && (typeof original !== "object" || Object.keys(original).length > 0)) {
    const json = truncateUtf8(headersAsJson(original), MAX_ORIGINAL_HEADERS_BYTES);
    if (json.cut) trimmed.push(`original headers (JSON) cut from ${json.bytes} to ${MAX_ORIGINAL_HEADERS_BYTES} bytes`);
    headers[DEAD_LETTER_HEADERS.originalHeaders] = json.text;
  }
  if (trimmed.length > 0) headers[DEAD_LETTER_HEADERS.trimmed] = trimmed.join("; ");
  const contentType = message.properties.contentType;
  return {
    persistent: true,
    contentType: typeof contentType === "string" && Buffer.byteLength(contentType) <= MAX_CONTENT_TYPE_BYTES ? contentType : "application/octet-stream",
    headers,
  };
}

const text = (value: unknown): string | undefined => (typeof value === "string" ? value : Buffer.isBuffer(value) ? value.toString("utf8") : undefined);

/**
 * Reads one dead letter. Copies this SDK made carry `x-blacktree-*` headers and never `x-death`;
 * those the broker moved (delivery limit) carry `x-death`, whose newest entry gives the reason:
 * the broker's own record wins over any `x-blacktree-*` header a producer may have forged.
 */
export function readDeadLetter(message: Message, deliveryLimit: number): DeadLetterInfo {
  const headers = (message.properties.headers ?? {}) as Record<string, unknown>;
  const deaths = Array.isArray(headers["x-death"]) ? (headers["x-death"] as unknown[]).filter((d): d is Record<string, unknown> => typeof d === "object" && d !== null) : [];
  const newest = deaths[0];
  let reason: string;
  let at: string | undefined;
  let attempt: number | undefined;
  if (newest === undefined) {
    reason = text(headers[DEAD_LETTER_HEADERS.reason]) ?? "unknown (no x-blacktree-reason or x-death header)";
    at = text(headers[DEAD_LETTER_HEADERS.at]);
    const recorded = headers[DEAD_LETTER_HEADERS.attempt];
    if (typeof recorded === "number" && Number.isInteger(recorded) && recorded >= 1) attempt = recorded;
  } else {
    const why = text(newest.reason) ?? "unknown";
    const queue = text(newest.queue) ?? "?";
    reason =
      why === "delivery_limit"
        ? `delivery limit exceeded: delivered more than ${deliveryLimit} + 1 times from "${queue}" without being settled (its consumer, channel or connection died each time) (x-death reason=delivery_limit)`
        : why === "expired"
          ? `expired in "${queue}" (x-death reason=expired)`
          : why === "rejected"
            ? `rejected without requeue by a consumer of "${queue}" (x-death reason=rejected)`
            : `dead-lettered by the broker from "${queue}" (x-death reason=${why})`;
    const time = newest.time as { value?: unknown } | number | undefined;
    const seconds = typeof time === "number" ? time : typeof time?.value === "number" ? time.value : undefined;
    if (seconds !== undefined) at = new Date(seconds * 1000).toISOString();
  }
  // Our copies carry their id; a message the broker moved (its headers are its producer's) gets
  // one from what it holds, the same on every read, since a browse leaves it unchanged.
  const written = newest === undefined ? text(headers[DEAD_LETTER_HEADERS.id]) : undefined;
  const id = written ?? `h-${createHash("sha256").update(message.content).update(headersAsJson(headers)).digest("hex").slice(0, 32)}`;
  const info: DeadLetterInfo = { id, reason, body: new Uint8Array(message.content), at: at ?? new Date().toISOString() };
  try {
    info.job = decodeEnvelope(message.content, { maxBytes: Infinity });
  } catch {
    // Not a valid envelope: that is often why it is here.
  }
  if (attempt === undefined && info.job && newest !== undefined) {
    // Moved by the broker after deliveries that never settled: each one ran (or began) an attempt.
    const returned = headers["x-delivery-count"];
    attempt = info.job.attempt + (typeof returned === "number" && Number.isInteger(returned) && returned >= 0 ? returned : 0);
  }
  if (attempt !== undefined) info.attempt = attempt;
  return info;
}
