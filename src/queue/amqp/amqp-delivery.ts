import type { Channel, ConsumeMessage } from "amqplib";
import { OrchestratorError } from "../../errors.ts";
import type { JobEnvelope } from "../../job/envelope.ts";
import { checkInteger } from "../../validate.ts";
import type { Delivery } from "../types.ts";
import { settleReason } from "../settle-reason.ts";

/** What the first settle call of a delivery asks its consumer to do. @internal */
export type AmqpSettleAction = { kind: "ack" } | { kind: "retry"; delayMs: number; reason: string } | { kind: "deadLetter"; reason: string };

/**
 * One message held by a consumer, valid envelope or not, until it is acked or lost.
 * @internal
 */
export interface HeldMessage {
  readonly channel: Channel;
  readonly message: ConsumeMessage;
  readonly consumerTag: string;
  readonly receivedAt: number;
  /** Acked, or being settled. */
  settled: boolean;
  /** Its channel died (or its consumer was cancelled) before the ack: the broker took it back. */
  lost: boolean;
  /** The public face, for valid envelopes. */
  delivery?: AmqpDelivery;
}

/**
 * A {@link Delivery} of an {@link AmqpQueue}: a job received on one channel, settled exactly
 * once on that same channel. Its {@link AmqpDelivery.signal} aborts when the channel dies first.
 * @internal
 */
export class AmqpDelivery implements Delivery {
  readonly job: JobEnvelope;
  readonly attempt: number;
  readonly redelivered: boolean;
  readonly dropped: string | undefined;
  readonly #held: HeldMessage;
  readonly #settle: (held: HeldMessage, action: AmqpSettleAction) => Promise<void>;
  #controller: AbortController | undefined;
  #abortReason: OrchestratorError | undefined;

  constructor(job: JobEnvelope, attempt: number, held: HeldMessage, settle: (held: HeldMessage, action: AmqpSettleAction) => Promise<void>, dropped?: string) {
    this.job = job;
    this.attempt = attempt;
    this.redelivered = held.message.fields.redelivered;
    this.dropped = dropped;
    this.#held = held;
    this.#settle = settle;
  }

  get settled(): boolean {
    return this.#held.settled;
  }

  /** Aborted when the queue takes the delivery away; see {@link Delivery.signal}. Created on first read. */
  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (this.#abortReason) this.#controller.abort(this.#abortReason);
    }
    return this.#controller.signal;
  }

  /** Fires {@link AmqpDelivery.signal} with `reason` (once). @internal */
  abort(reason: OrchestratorError): void {
    if (this.#abortReason) return;
    this.#abortReason = reason;
    this.#controller?.abort(reason);
  }

  ack(): Promise<void> {
    return this.#settle(this.#held, { kind: "ack" });
  }

  async retry(delayMs: number, reason: string): Promise<void> {
    const action: AmqpSettleAction = {
      kind: "retry",
      delayMs: checkInteger("delayMs", delayMs, 0),
      reason: settleReason(reason),
    };
    return this.#settle(this.#held, action);
  }

  async deadLetter(reason: string): Promise<void> {
    return this.#settle(this.#held, { kind: "deadLetter", reason: settleReason(reason) });
  }
}

/** The error a settle of an already settled delivery rejects with. @internal */
export function alreadySettled(job: JobEnvelope | undefined, attempt: number): OrchestratorError {
  return new OrchestratorError("already_settled", `delivery of job ${job?.id ?? "(invalid message)"} (attempt ${attempt}) was already settled`, {
    retryable: false,
    details: job ? { jobId: job.id } : {},
  });
}

/** The error a settle of a lost delivery rejects with. @internal */
export function deliveryLost(job: JobEnvelope | undefined, attempt: number, action: string, cause?: unknown): OrchestratorError {
  return new OrchestratorError(
    "queue_closed",
    `delivery of job ${job?.id ?? "(invalid message)"} (attempt ${attempt}) was lost (its channel closed or its consumer stopped) and went back to the queue; ${action} dropped`,
    { retryable: false, cause, details: { reason: "delivery_lost", ...(job ? { jobId: job.id } : {}) } },
  );
}
