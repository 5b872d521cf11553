import { createHash } from "node:crypto";
import type { DeadLetterInfo, JobQueue } from "../queue/types.ts";
import { HttpError } from "./http.ts";
import type { ConsoleInvalidDeadLetter, ConsoleInvalidDeadLetterList, ConsoleMessageBody } from "./api-types.ts";

/**
 * The dead letters that are not valid job envelopes, as the console shows them. They have no
 * job record, so the job store cannot list them: the queue's own `deadLetters()` does, reading
 * the dead-letter queue oldest first (at most {@link DEAD_LETTER_SCAN} a request). @internal
 */

/** Most dead letters read for one request. */
export const DEAD_LETTER_SCAN = 1000;
/** Bytes of each message a list shows. */
export const LIST_BODY_BYTES = 2048;
/** Bytes of one message shown when it is opened. */
export const FULL_BODY_BYTES = 1 << 20;

/**
 * How much of a message the asker may see: `redact` is the console's hook (called with no
 * record: an invalid dead letter has none), `raw` whether the asker may `discard` dead letters
 * and so see bytes that are neither redacted nor an envelope.
 */
export interface BodyAccess {
  redact: (value: unknown) => unknown;
  raw: boolean;
}

/** The first `maxBytes` of `bytes`: text when they are UTF-8 (a character cut at the end is left out), else base64. */
function start(bytes: Uint8Array, maxBytes: number): Pick<ConsoleMessageBody, "encoding" | "data" | "cut"> {
  const cut = bytes.byteLength > maxBytes;
  const slice = bytes.subarray(0, maxBytes);
  try {
    // `stream` keeps a multi-byte character cut at the end out of the text instead of failing on it.
    return { encoding: "utf8", data: new TextDecoder("utf-8", { fatal: true }).decode(slice, { stream: cut }), cut };
  } catch {
    return { encoding: "base64", data: Buffer.from(slice).toString("base64"), cut };
  }
}

/** The message as a JSON object with a `payload` or `result` member (an envelope, maybe damaged), else undefined. */
function envelopeOf(bytes: Uint8Array): Record<string, unknown> | undefined {
  if (bytes.byteLength > FULL_BODY_BYTES) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const object = value as Record<string, unknown>;
  return Object.hasOwn(object, "payload") || Object.hasOwn(object, "result") ? object : undefined;
}

/**
 * What a reader sees of a message, at most `maxBytes`. An envelope's `payload` and `result` go
 * through the `redact` hook like every job's (the message is shown re-serialized, `shown:
 * "redacted"`); other bytes only to who may discard them (`shown: "raw"`), else nothing but size
 * and digest (`shown: "hidden"`). A throwing hook hides the message too (and is reported).
 */
export function messageBody(bytes: Uint8Array, maxBytes: number, access: BodyAccess, report: (error: unknown) => void): ConsoleMessageBody {
  const whole = { bytes: bytes.byteLength, sha256: createHash("sha256").update(bytes).digest("hex") };
  const hidden: ConsoleMessageBody = { encoding: "utf8", data: "", cut: false, ...whole, shown: "hidden" };
  const envelope = envelopeOf(bytes);
  if (envelope !== undefined) {
    let redacted: Record<string, unknown>;
    try {
      redacted = { ...envelope };
      if (Object.hasOwn(envelope, "payload")) redacted.payload = access.redact(envelope.payload);
      if (Object.hasOwn(envelope, "result")) redacted.result = access.redact(envelope.result);
    } catch (error) {
      report(error);
      return hidden;
    }
    return { ...start(new TextEncoder().encode(JSON.stringify(redacted) ?? ""), maxBytes), ...whole, shown: "redacted" };
  }
  return access.raw ? { ...start(bytes, maxBytes), ...whole, shown: "raw" } : hidden;
}

function view(info: DeadLetterInfo, body: ConsoleMessageBody): ConsoleInvalidDeadLetter {
  const at = Date.parse(info.at);
  return { id: info.id, reason: info.reason, deadLetteredAt: Number.isNaN(at) ? 0 : at, body };
}

async function scan(queue: JobQueue): Promise<{ letters: DeadLetterInfo[]; supported: boolean }> {
  if (queue.deadLetters === undefined) return { letters: [], supported: false };
  return { letters: await queue.deadLetters({ limit: DEAD_LETTER_SCAN }), supported: true };
}

/** The invalid dead letters among the oldest {@link DEAD_LETTER_SCAN}, each body as {@link messageBody} allows. */
export async function listInvalidDeadLetters(queue: JobQueue, access: BodyAccess, report: (error: unknown) => void): Promise<ConsoleInvalidDeadLetterList> {
  const { letters, supported } = await scan(queue);
  return {
    supported,
    discardable: queue.discardDeadLetters !== undefined,
    invalid: letters.filter((l) => l.job === undefined).map((l) => view(l, messageBody(l.body, LIST_BODY_BYTES, access, report))),
    scanned: letters.length,
    more: letters.length >= DEAD_LETTER_SCAN,
  };
}

/**
 * One invalid dead letter, its body up to {@link FULL_BODY_BYTES} (as {@link messageBody} allows).
 * @throws {HttpError} 404 when no invalid dead letter among those read has that id (a valid job's
 * dead letter is reached through its job), 409 when the queue cannot list dead letters.
 */
export async function findInvalidDeadLetter(queue: JobQueue, id: string, access: BodyAccess, report: (error: unknown) => void): Promise<ConsoleInvalidDeadLetter> {
  const { letters, supported } = await scan(queue);
  if (!supported) throw new HttpError(409, "not_supported", "This queue cannot list its dead letters");
  const found = letters.find((l) => l.id === id && l.job === undefined);
  if (found === undefined) throw new HttpError(404, "not_found", `No invalid dead letter ${id} among the oldest ${DEAD_LETTER_SCAN} dead letters`);
  return view(found, messageBody(found.body, FULL_BODY_BYTES, access, report));
}
