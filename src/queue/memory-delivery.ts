import { OrchestratorError } from "../errors.ts";
import type { JobEnvelope } from "../job/envelope.ts";
import { checkInteger } from "../validate.ts";
import type { Delivery } from "./types.ts";
import { settleReason } from "./settle-reason.ts";

/** What the first settle call of a {@link MemoryDelivery} asks the queue to do. @internal */
export type SettleAction = { kind: "ack" } | { kind: "retry"; delayMs: number; reason: string } | { kind: "deadLetter"; reason: string };


/**
 * One delivery of a {@link MemoryQueue}: settled exactly once, its first settle call handed to
 * the queue; a second one rejects `already_settled`, one after the delivery went back to the
 * queue rejects `queue_closed` and is dropped. Its {@link MemoryDelivery.signal} aborts when the
 * queue takes it back unsettled.
 * @internal
 */
export class MemoryDelivery implements Delivery {
  readonly job: JobEnvelope;
  readonly attempt: number;
  readonly redelivered: boolean;
  readonly dropped: string | undefined;
  readonly #onSettle: (delivery: MemoryDelivery, action: SettleAction) => void;
  #settled = false;
  /** Set when the queue took the delivery back: the `delivery_lost` error. */
  #lost: OrchestratorError | undefined;
  /** Created on the first read of `signal`, so a consumer that never reads it pays nothing. */
  #controller: AbortController | undefined;

  constructor(job: JobEnvelope, attempt: number, redelivered: boolean, onSettle: (delivery: MemoryDelivery, action: SettleAction) => void, dropped?: string) {
    this.job = job;
    this.attempt = attempt;
    this.redelivered = redelivered;
    this.dropped = dropped;
    this.#onSettle = onSettle;
  }

  get settled(): boolean {
    return this.#settled;
  }

  /**
   * Aborted with an `OrchestratorError` `queue_closed`, `details.reason: "delivery_lost"`, when
   * the queue takes this delivery back before it was settled (its consumer was cancelled or the
   * queue closed); see {@link Delivery.signal}. Never aborted once settled.
   */
  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.#lost !== undefined) this.#controller.abort(this.#lost);
    }
    return this.#controller.signal;
  }

  async ack(): Promise<void> {
    this.#settle({ kind: "ack" });
  }

  async retry(delayMs: number, reason: string): Promise<void> {
    this.#settle({
      kind: "retry",
      delayMs: checkInteger("delayMs", delayMs, 0),
      reason: settleReason(reason),
    });
  }

  async deadLetter(reason: string): Promise<void> {
    this.#settle({ kind: "deadLetter", reason: settleReason(reason) });
  }

  /** The queue took the delivery back (its consumer stopped): later settles are dropped. */
  markReturned(): void {
    this.#lost = new OrchestratorError(
      "queue_closed",
      `delivery of job ${this.job.id} (attempt ${this.attempt}) went back to the queue unsettled: its consumer stopped`,
      { retryable: false, details: { reason: "delivery_lost", jobId: this.job.id } },
    );
  }

  /**
   * Aborts the signal of a returned delivery. Called by the queue once its own bookkeeping is
   * done, since abort listeners may call back into it.
   */
  abortReturned(): void {
    if (this.#lost !== undefined) this.#controller?.abort(this.#lost);
  }

  #settle(action: SettleAction): void {
    if (this.#settled) {
      throw new OrchestratorError("already_settled", `delivery of job ${this.job.id} (attempt ${this.attempt}) was already settled`, {
        retryable: false,
        details: { jobId: this.job.id },
      });
    }
    this.#settled = true;
    if (this.#lost !== undefined) {
      throw new OrchestratorError(
        "queue_closed",
        `delivery of job ${this.job.id} (attempt ${this.attempt}) went back to the queue when its consumer stopped; ${action.kind} dropped`,
        { retryable: false, details: { reason: "delivery_lost", jobId: this.job.id } },
      );
    }
    this.#onSettle(this, action);
  }
}
