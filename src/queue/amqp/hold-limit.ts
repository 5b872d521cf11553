import { OrchestratorError } from "../../errors.ts";

/**
 * How long a delivery may stay unacknowledged under RabbitMQ's `consumer_timeout`, and the check
 * that warns when a job's own timeout does not fit in it (docs/rabbitmq.md, "consumer_timeout").
 * @internal
 */

/** The margin before `consumerTimeoutMs` at which the consumer gives a held delivery up itself. */
export function holdMarginMs(consumerTimeoutMs: number): number {
  return Math.min(60_000, Math.ceil(consumerTimeoutMs / 10));
}

/** The longest a job can run before its delivery is given up (`Infinity` when the timeout is off). */
export function holdLimitMs(consumerTimeoutMs: number): number {
  return consumerTimeoutMs === 0 ? Infinity : consumerTimeoutMs - holdMarginMs(consumerTimeoutMs);
}

/**
 * The warning for a job whose `timeoutMs` exceeds what the broker lets a delivery be held, or
 * undefined when it fits. It names the fix: raise the broker's `consumer_timeout` and pass the
 * same value as `consumerTimeoutMs`, or lower the job's timeout.
 */
export function holdLimitWarning(job: { id: string; timeoutMs: number }, consumerTimeoutMs: number): OrchestratorError | undefined {
  const limit = holdLimitMs(consumerTimeoutMs);
  if (job.timeoutMs <= limit) return undefined;
  // A broker timeout that fits the job: its timeout plus the margin, rounded up to the minute.
  const suggested = Math.ceil((job.timeoutMs + holdMarginMs(job.timeoutMs) + 60_000) / 60_000) * 60_000;
  return new OrchestratorError(
    "precondition_failed",
    `job ${job.id} may run ${job.timeoutMs} ms (its timeoutMs), but a delivery can stay unacknowledged only ${limit} ms here ` +
      `(consumerTimeoutMs ${consumerTimeoutMs} minus a margin): if it runs that long it is dead-lettered with reason consumer_timeout. ` +
      `Fix: raise RabbitMQ's consumer_timeout (rabbitmq.conf: consumer_timeout = ${suggested}) and pass the same value as AmqpQueue's ` +
      `consumerTimeoutMs, or lower the job's timeoutMs (JobClient defaults.timeoutMs). See docs/rabbitmq.md, "consumer_timeout".`,
    { details: { reason: "consumer_timeout_too_low", jobId: job.id, timeoutMs: job.timeoutMs, consumerTimeoutMs, holdLimitMs: limit, suggestedConsumerTimeoutMs: suggested } },
  );
}
