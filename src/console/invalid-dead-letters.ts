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

/** The first `maxBytes` of a message: text when they are UTF-8 (a character cut at the end is left out), else base64. */
export function messageBody(bytes: Uint8Array, maxBytes: number): ConsoleMessageBody {
  const cut = bytes.byteLength > maxBytes;
  const slice = bytes.subarray(0, maxBytes);
  try {
    // `stream` keeps a multi-byte character cut at the end out of the text instead of failing on it.
    const data = new TextDecoder("utf-8", { fatal: true }).decode(slice, { stream: cut });
    return { encoding: "utf8", data, bytes: bytes.byteLength, cut };
  } catch {
    return { encoding: "base64", data: Buffer.from(slice).toString("base64"), bytes: bytes.byteLength, cut };
  }
}

function view(info: DeadLetterInfo, maxBytes: number): ConsoleInvalidDeadLetter {
  const at = Date.parse(info.at);
  return { id: info.id, reason: info.reason, deadLetteredAt: Number.isNaN(at) ? 0 : at, body: messageBody(info.body, maxBytes) };
}

async function scan(queue: JobQueue): Promise<{ letters: DeadLetterInfo[]; supported: boolean }> {
  if (queue.deadLetters === undefined) return { letters: [], supported: false };
  return { letters: await queue.deadLetters({ limit: DEAD_LETTER_SCAN }), supported: true };
}

/** The invalid dead letters among the oldest {@link DEAD_LETTER_SCAN}. */
export async function listInvalidDeadLetters(queue: JobQueue): Promise<ConsoleInvalidDeadLetterList> {
  const { letters, supported } = await scan(queue);
  return {
    supported,
    discardable: queue.discardDeadLetters !== undefined,
    invalid: letters.filter((l) => l.job === undefined).map((l) => view(l, LIST_BODY_BYTES)),
    scanned: letters.length,
    more: letters.length >= DEAD_LETTER_SCAN,
  };
}

/**
 * One invalid dead letter, its body up to {@link FULL_BODY_BYTES}.
 * @throws {HttpError} 404 when no invalid dead letter among those read has that id (a valid job's
 * dead letter is reached through its job), 409 when the queue cannot list dead letters.
 */
export async function findInvalidDeadLetter(queue: JobQueue, id: string): Promise<ConsoleInvalidDeadLetter> {
  const { letters, supported } = await scan(queue);
  if (!supported) throw new HttpError(409, "not_supported", "This queue cannot list its dead letters");
  const found = letters.find((l) => l.id === id && l.job === undefined);
  if (found === undefined) throw new HttpError(404, "not_found", `No invalid dead letter ${id} among the oldest ${DEAD_LETTER_SCAN} dead letters`);
  return view(found, FULL_BODY_BYTES);
}
