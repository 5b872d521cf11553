import { OrchestratorError } from "../errors.ts";
import type { JobEnvelope } from "../job/envelope.ts";
import { checkInteger, checkString } from "../validate.ts";
import type { Delivery } from "./types.ts";

/** What the first settle call of a {@link MemoryDelivery} asks the queue to do. @internal */
export type SettleAction = { kind: "ack" } | { kind: "retry"; delayMs: number; reason: string } | { kind: "deadLetter"; reason: string };

/** Longest settle reason accepted, in characters. */
const MAX_REASON_LENGTH = 64 * 1024;

/**
 * One delivery of a {@link MemoryQueue}: settled exactly once, its first settle call handed to
 * the queue; a second one rejects `already_settled`, one after the delivery went back to the
 * queue rejects `queue_closed` and is dropped.
 * @internal
 */
export class MemoryDelivery implements Delivery {
  readonly job: JobEnvelope;
  readonly attempt: number;
  readonly redelivered: boolean;
  readonly #onSettle: (delivery: MemoryDelivery, action: SettleAction) => void;
  #settled = false;
  #returned = false;

  constructor(job: JobEnvelope, attempt: number, redelivered: boolean, onSettle: (delivery: MemoryDelivery, action: SettleAction) => void) {
    this.job = job;
    this.attempt = attempt;
    this.redelivered = redelivered;
    this.#onSettle = onSettle;
  }

  get settled(): boolean {
    return this.#settled;
  }

  async ack(): Promise<void> {
    this.#settle({ kind: "ack" });
  }

  async retry(delayMs: number, reason: string): Promise<void> {
    this.#settle({
      kind: "retry",
      delayMs: checkInteger("delayMs", delayMs, 0),
      reason: checkString("reason", reason, MAX_REASON_LENGTH),
    });
  }

  async deadLetter(reason: string): Promise<void> {
    this.#settle({ kind: "deadLetter", reason: checkString("reason", reason, MAX_REASON_LENGTH) });
  }

  /** The queue took the delivery back (its consumer stopped): later settles are dropped. */
  markReturned(): void {
    this.#returned = true;
  }

  #settle(action: SettleAction): void {
    if (this.#settled) {
      throw new OrchestratorError("already_settled", `delivery of job ${this.job.id} (attempt ${this.attempt}) was already settled`, {
        retryable: false,
        details: { jobId: this.job.id },
      });
    }
    this.#settled = true;
    if (this.#returned) {
      throw new OrchestratorError(
        "queue_closed",
        `delivery of job ${this.job.id} (attempt ${this.attempt}) went back to the queue when its consumer stopped; ${action.kind} dropped`,
        { retryable: false, details: { jobId: this.job.id } },
      );
    }
    this.#onSettle(this, action);
  }
}
