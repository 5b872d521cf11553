import type { JobEnvelope } from "./envelope.ts";

/**
 * The fencing token of one attempt of `job`: the attempts of its earlier lives (before each
 * redrive, `priorAttempts`) plus this attempt's number. It only grows over a job's whole history:
 *
 * - a retry is published by the dispatcher with `attempt + 1` in the envelope;
 * - a delivery the broker takes back unsettled (connection lost, consumer or dispatcher dead) comes
 *   again with a higher attempt: our envelope's plus the redeliveries the broker counted, which a
 *   producer cannot set (the first delivery ignores any `x-delivery-count` it carries);
 * - a redriven job starts again at attempt 1 but carries its dead attempts in `priorAttempts`, so
 *   its first new attempt outranks the last dead one.
 *
 * So when two attempts of a job overlap (the old one still running on a worker the orchestrator
 * lost, the redelivered one already started elsewhere), the newer one always holds the larger
 * token: a store or an external system that keeps the largest token it has seen and refuses
 * smaller ones cannot take the stale attempt's word. Handlers see it as `ctx.fencingToken`; the
 * `JobStore` refuses transitions carrying a smaller one.
 *
 * Two runs of one attempt (a producer that enqueued the same envelope twice) share a token: a
 * fence refuses only smaller tokens, and idempotency keys cover that case.
 */
export function fencingToken(job: Pick<JobEnvelope, "priorAttempts">, attempt: number): number {
  return (job.priorAttempts ?? 0) + attempt;
}
