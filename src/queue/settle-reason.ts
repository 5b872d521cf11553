import { invalidArgument } from "../errors.ts";

/** Longest settle reason a queue keeps, in characters; a longer one is cut, never refused. */
export const MAX_SETTLE_REASON = 16 * 1024;

/**
 * The reason of a `Delivery.retry()` / `deadLetter()` as every queue keeps it: a non-empty string,
 * cut to {@link MAX_SETTLE_REASON} characters (saying so) rather than refused, because refusing
 * would leave the delivery unsettled: a handler's 200 KB error message would then hold its job
 * (and a prefetch slot) until the broker's consumer_timeout.
 * @throws {OrchestratorError} `invalid_argument` for anything but a non-empty string.
 * @internal
 */
export function settleReason(reason: unknown): string {
  if (typeof reason !== "string" || reason.length === 0) throw invalidArgument("reason", "a non-empty string", reason);
  if (reason.length <= MAX_SETTLE_REASON) return reason;
  const note = ` … (cut from ${reason.length} characters)`;
  return `${reason.slice(0, MAX_SETTLE_REASON - note.length)}${note}`;
}
