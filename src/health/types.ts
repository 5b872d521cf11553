import type { HealthStatus, TransportState } from "../transport/types.ts";

/**
 * What a {@link HealthMonitor} checks and tells: the narrow port it needs, implemented by
 * `WorkerPool`, or by an object literal in a test.
 */
export interface HealthTarget {
  /** The workers to check now; read at every tick, so workers added or removed are followed. */
  workerIds(): Iterable<string>;
  /**
   * Checks one worker; resolves when it is healthy. The monitor aborts `signal` after its
   * `timeoutMs` and on close; an implementation should pass it on, but a check that ignores it
   * still counts as failed at the timeout.
   * @throws {OrchestratorError} any rejection counts as a failed check.
   */
  check(workerId: string, options: { signal: AbortSignal }): Promise<void>;
  /**
   * Receives the monitor's verdict: unhealthy with a reason when it turns so (and again at each
   * further failed check while it stays so), or healthy again. Must ignore a report that changes
   * nothing.
   */
  report(workerId: string, healthy: boolean, reason?: string): void;
  /**
   * Optional: the worker's health as its live connection already vouches for it (see
   * `WorkerTransport.vouchedHealth`), or `undefined` when nothing does. At each tick the monitor
   * counts a vouched `serving` as a passed check and `not_serving` as a failed one, without
   * making the check; only workers nothing vouches for are checked.
   */
  vouched?(workerId: string): HealthStatus | undefined;
  /**
   * Optional: calls `listener` when a worker's connection is `lost` (or `ready` again) between
   * checks, so the monitor can mark it unhealthy at once. Returns the unsubscribe.
   */
  watch?(listener: (workerId: string, state: TransportState) => void): () => void;
}
