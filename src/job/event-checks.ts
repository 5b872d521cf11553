import { invalidArgument } from "../errors.ts";
import { checkInteger, checkNumber, checkObject, checkString } from "../validate.ts";
import { CANCEL_REASONS, type CancelCommand, type CancelReason, type JobEvent } from "./types.ts";

/**
 * The checks every {@link JobEvents} implementation (and every producer) applies to job ids,
 * job events and cancel commands, so an in-process queue and RabbitMQ accept exactly the same
 * values.
 * @internal
 */

/** The longest job id: the envelope's limit, so every id a queue accepts can carry events. */
export const MAX_JOB_ID_LENGTH = 256;

/** The longest cancel message. */
export const MAX_CANCEL_MESSAGE_LENGTH = 16 * 1024;

/** The `kind`s of {@link JobEvent}. */
export const JOB_EVENT_KINDS: readonly JobEvent["kind"][] = ["state", "progress", "log", "result"];

const reasons: ReadonlySet<string> = new Set(CANCEL_REASONS);
const kinds: ReadonlySet<string> = new Set(JOB_EVENT_KINDS);

/** Whether `value` is one of {@link CANCEL_REASONS}. */
export function isCancelReason(value: unknown): value is CancelReason {
  return typeof value === "string" && reasons.has(value);
}

/** A cancel reason, or `invalid_argument` naming `field`. */
export function checkCancelReason(field: string, value: unknown): CancelReason {
  if (!isCancelReason(value)) throw invalidArgument(field, `one of ${CANCEL_REASONS.join(", ")}`, value);
  return value;
}

/** A job id (non-empty, at most {@link MAX_JOB_ID_LENGTH} characters), or `invalid_argument` naming `field`. */
export function checkJobId(field: string, value: unknown): string {
  return checkString(field, value, MAX_JOB_ID_LENGTH);
}

/**
 * Checks what every publisher of a job event must get right (an object with a known `kind` and
 * a valid `jobId`) and returns its job id.
 * @throws {OrchestratorError} `invalid_argument` naming the field.
 */
export function checkJobEvent(event: unknown): { jobId: string; kind: JobEvent["kind"] } {
  const e = checkObject("event", event);
  const jobId = checkJobId("event.jobId", e.jobId);
  if (typeof e.kind !== "string" || !kinds.has(e.kind)) throw invalidArgument("event.kind", `one of ${JOB_EVENT_KINDS.join(", ")}`, e.kind);
  return { jobId, kind: e.kind as JobEvent["kind"] };
}

/**
 * A cancel command checked and copied with only its known fields, as it goes on the wire.
 * @throws {OrchestratorError} `invalid_argument` naming the field.
 */
export function checkCancelCommand(command: unknown): CancelCommand {
  const c = checkObject("command", command);
  const clean: CancelCommand = {
    jobId: checkJobId("command.jobId", c.jobId),
    reason: checkCancelReason("command.reason", c.reason),
    at: checkNumber("command.at", c.at, 0),
  };
  if (c.message !== undefined) clean.message = checkString("command.message", c.message, MAX_CANCEL_MESSAGE_LENGTH);
  if (c.runAt !== undefined) clean.runAt = checkInteger("command.runAt", c.runAt, 0);
  return clean;
}
