import type { OrchestratorError } from "../errors.ts";
import type { JobEnvelope } from "../job/envelope.ts";
import type { CancelCommand } from "../job/types.ts";
import { fencingToken } from "../job/fencing.ts";
import type { Delivery } from "../queue/types.ts";
import type { Lease } from "../worker-pool/types.ts";
import type { Needs } from "./placement.ts";
import type { Refusal } from "./rate-limiter.ts";

/**
 * Why a run was stopped before it could end by itself; the first stop wins.
 * - `cancel`: a cancel command for its job arrived;
 * - `timeout`: its attempt ran past the job's `timeoutMs`;
 * - `lost`: its worker's lease was lost (worker unhealthy or removed);
 * - `closing`: the dispatcher is closing and the run had not started: it goes back to the queue;
 * - `forced_close`: the dispatcher's close was forced while the run ran: its delivery is left
 *   unsettled, so the queue delivers it again once the consumer stops;
 * - `no_worker`: no worker of the pool can run its job;
 * - `shed`: it waited for a slot when the pool's capacity dropped below the jobs held;
 * - `revoked`: the queue took the delivery away (its signal fired; see `Run.revoked`);
 * - `start_timeout`: it waited for a slot past its job's start timeout (`startTimeoutMs`);
 * - `unplaceable`: its job can never be placed (a sticky "hard" worker draining or gone, more
 *   rate-limit tokens asked than the bucket holds): it fails;
 * - `rate_limited`: a rate limit holds it back past the hold bound (`Run.refusal` says why): it
 *   goes back to the queue until its token is due.
 * @internal
 */
export type Stop =
  | "cancel" | "timeout" | "lost" | "closing" | "forced_close" | "no_worker" | "shed" | "revoked" | "start_timeout" | "unplaceable" | "rate_limited";

/** One delivery on its way through the dispatcher, from receipt to settle. @internal */
export class Run {
  readonly delivery: Delivery;
  readonly job: JobEnvelope;
  readonly attempt: number;
  /** This attempt's fencing token (`fencingToken(job, attempt)`): sent to the worker and with every store transition. */
  readonly fencingToken: number;
  /** Aborts the wait for a slot or the transport call: cancel, timeout, lost lease, shutdown. */
  readonly controller = new AbortController();
  stop: Stop | undefined = undefined;
  cancel: CancelCommand | undefined = undefined;
  lease: Lease | undefined = undefined;
  /** What the pool is asked for the job (the envelope itself, or with affinity resolved); set once known. */
  needs: Needs | undefined = undefined;
  /** Why a rate limit held the job back, for the `rate_limited` stop. */
  refusal: Refusal | undefined = undefined;
  /** True while the transport call is in flight; worker events outside it are dropped. */
  executing = false;
  /**
   * The next older run of the same job id held at the same time: one whose delivery was revoked
   * and that is still winding down, or a duplicate envelope. Runs of one id form a list from the
   * newest (`RunRegistry`'s entry) to the oldest.
   */
  older: Run | undefined = undefined;
  /**
   * The reason of `delivery.signal` once it fired: the queue took the delivery away
   * (`delivery_lost`) or dead-lettered it (`consumer_timeout`). Set whatever stopped the run
   * first; from then on the run publishes no outcome for a lost delivery and settles nothing.
   */
  revoked: OrchestratorError | undefined = undefined;
  /** Resolvers of `ended()` promises, created only when a later run of the same job waits. */
  #endWaiters: Array<() => void> | undefined;
  #ended = false;

  readonly #onHalt: ((run: Run, stop: Stop, reason: OrchestratorError) => void) | undefined;

  /** `onHalt` learns of the stop that wins (telemetry records it). */
  constructor(delivery: Delivery, onHalt?: (run: Run, stop: Stop, reason: OrchestratorError) => void) {
    this.delivery = delivery;
    this.job = delivery.job;
    this.attempt = delivery.attempt;
    this.fencingToken = fencingToken(delivery.job, delivery.attempt);
    this.#onHalt = onHalt;
  }

  /** Aborts the run's wait for a slot or its transport call with `reason`; the first stop wins. */
  halt(stop: Stop, reason: OrchestratorError): void {
    if (this.stop !== undefined) return;
    this.stop = stop;
    this.#onHalt?.(this, stop, reason);
    this.controller.abort(reason);
  }

  /** Resolves once the run has ended: its transport call is over and its lease released. */
  ended(): Promise<void> {
    if (this.#ended) return Promise.resolve();
    return new Promise((resolve) => (this.#endWaiters ??= []).push(resolve));
  }

  /** Marks the run ended, resolving `ended()`. */
  end(): void {
    this.#ended = true;
    const waiters = this.#endWaiters;
    this.#endWaiters = undefined;
    if (waiters !== undefined) for (const resolve of waiters) resolve();
  }
}

/**
 * The runs a dispatcher holds, by job id, in O(1): runs of the same id (a job enqueued twice)
 * are chained from the newest through `Run.older`, so the common case costs one Map entry and no array.
 * @internal
 */
export class RunRegistry {
  readonly #byId = new Map<string, Run>();

  add(run: Run): void {
    const head = this.#byId.get(run.job.id);
    if (head !== undefined) run.older = head;
    this.#byId.set(run.job.id, run);
  }

  remove(run: Run): void {
    const id = run.job.id;
    const head = this.#byId.get(id);
    if (head === run) {
      if (run.older === undefined) this.#byId.delete(id);
      else this.#byId.set(id, run.older);
      return;
    }
    for (let newer = head; newer !== undefined; newer = newer.older) {
      if (newer.older === run) {
        newer.older = run.older;
        return;
      }
    }
  }

  /** Calls `fn` with each run of `jobId`. */
  forJob(jobId: string, fn: (run: Run) => void): void {
    for (let run = this.#byId.get(jobId); run !== undefined; run = run.older) fn(run);
  }

  /** Calls `fn` with every run. */
  forEach(fn: (run: Run) => void): void {
    for (const head of this.#byId.values()) {
      for (let run: Run | undefined = head; run !== undefined; run = run.older) fn(run);
    }
  }
}
