import { OrchestratorError } from "../errors.ts";
import type { JobEnvelope } from "../job/envelope.ts";
import type { JobStore } from "../store/types.ts";
import type { JobRequirements, WorkerInfo, WorkerState } from "../worker-pool/types.ts";
import type { DispatcherReport } from "./context.ts";

/** Most sticky keys a dispatcher remembers itself; the least recently used are forgotten first. */
const MAX_LOCAL_STICKY_KEYS = 100_000;

/** Worker states from which a hard-sticky job can no longer expect its worker. */
const GONE_STATES: ReadonlySet<WorkerState> = new Set<WorkerState>(["draining", "removed"]);

/** A run's sticky assignment, once its key was looked up. @internal */
export interface Sticky {
  readonly key: string;
  readonly hard: boolean;
  /** The worker that ran the key's latest job; undefined for a key not seen yet. */
  readonly workerId: string | undefined;
}

/** What the pool is asked for a run, and the sticky assignment behind it. @internal */
export interface Needs {
  /** Passed to `acquire()`, `canRun()`, `onAvailable()`; the envelope itself for a job without affinity. */
  readonly requirements: JobRequirements;
  readonly sticky: Sticky | undefined;
}

/**
 * Where a run may go: the pool requirements of its job (required and preferred labels, the
 * sticky worker) and the memory of "who ran key K last". That memory lives in the dispatcher's
 * job store when it has `stickyWorker`/`rememberSticky` (every dispatcher of the store then
 * agrees), else here (this dispatcher only; bounded, least recently used forgotten first). A
 * store that fails or is slow falls back to what this dispatcher remembers (reported).
 * @internal
 */
export class Placement {
  readonly #store: JobStore | undefined;
  readonly #timeoutMs: number;
  readonly #report: DispatcherReport;
  readonly #local = new Map<string, string>();

  constructor(store: JobStore | undefined, storeTimeoutMs: number, report: DispatcherReport) {
    this.#store = store?.stickyWorker !== undefined && store.rememberSticky !== undefined ? store : undefined;
    this.#timeoutMs = storeTimeoutMs;
    this.#report = report;
  }

  /** The run's needs: at once for a job without a sticky key, else once its key is looked up. */
  needsOf(job: JobEnvelope): Needs | Promise<Needs> {
    const affinity = job.affinity;
    if (affinity === undefined) return { requirements: job, sticky: undefined };
    const key = affinity.stickyKey;
    const base: JobRequirements = { type: job.type };
    if (job.labels !== undefined) base.labels = job.labels;
    if (affinity.preferred !== undefined) base.preferred = affinity.preferred;
    if (key === undefined) return { requirements: base, sticky: undefined };
    const hard = affinity.sticky === "hard";
    return this.#lookup(key, job.id).then((workerId) => {
      if (workerId !== undefined) base.worker = { id: workerId, required: hard };
      return { requirements: base, sticky: { key, hard, workerId } };
    });
  }

  /** Remembers that `workerId` runs the latest job of the sticky key (here, and in the store, best effort). */
  remember(sticky: Sticky, workerId: string, jobId: string): void {
    this.#local.delete(sticky.key);
    this.#local.set(sticky.key, workerId);
    if (this.#local.size > MAX_LOCAL_STICKY_KEYS) this.#local.delete(this.#local.keys().next().value as string);
    const store = this.#store;
    if (store === undefined) return;
    void Promise.resolve()
      .then(() => store.rememberSticky?.(sticky.key, workerId, { timeoutMs: this.#timeoutMs }))
      .catch((error: unknown) => this.#report(error, `remembering the worker of sticky key ${sticky.key}`, jobId));
  }

  async #lookup(key: string, jobId: string): Promise<string | undefined> {
    const store = this.#store;
    if (store !== undefined) {
      try {
        return (await store.stickyWorker?.(key, { timeoutMs: this.#timeoutMs })) ?? this.#local.get(key);
      } catch (error) {
        this.#report(error, `reading the worker of sticky key ${key} (using this dispatcher's memory)`, jobId);
      }
    }
    return this.#local.get(key);
  }
}

/**
 * Why a hard-sticky job can never get its worker from this pool, or undefined while it may:
 * the worker is draining, not in the pool, or no longer serves the job (type, labels). An
 * unhealthy or joining worker may come back: the job waits for it (see `unschedulableReason`).
 * @internal
 */
export function stickyGone(sticky: Sticky, worker: WorkerInfo | undefined, qualifies: boolean): OrchestratorError | undefined {
  if (!sticky.hard || sticky.workerId === undefined) return undefined;
  const why = worker === undefined || worker.state === "removed"
    ? "is no longer in the pool"
    : GONE_STATES.has(worker.state)
      ? "is draining"
      : !qualifies
        ? "no longer serves the job (its type or required labels)"
        : undefined;
  if (why === undefined) return undefined;
  return new OrchestratorError(
    "precondition_failed",
    `worker ${sticky.workerId}, which ran the previous job of sticky key \`${sticky.key}\`, ${why}: a job with sticky "hard" runs nowhere else`,
    { retryable: false, details: { reason: "sticky_worker_gone", stickyKey: sticky.key, workerId: sticky.workerId } },
  );
}
