import { ATTR } from "./names.ts";
import type { Labels } from "./prometheus.ts";
import type { Telemetry } from "./telemetry.ts";

/** What the pool gauges read of each worker. @internal */
export interface WorkerFigures {
  readonly state: string;
  readonly slots: number;
  readonly busySlots: number;
}

const SERVING = new Set(["idle", "busy"]);

/**
 * Registers the pool's gauges: workers by state, and slots by state (`free` and `busy` slots of
 * healthy workers, `unavailable` slots of unhealthy or draining ones). Read at each collection.
 * Returns the unregister function (a no-op when nothing records).
 * @internal
 */
export function observePool(t: Telemetry, list: () => Iterable<WorkerFigures>): () => void {
  if (t.api === undefined && t.registry === undefined) return () => {};
  const m = t.metrics;
  const unWorkers = m.gauge("workers", () => {
    const counts = new Map<string, number>([["idle", 0], ["busy", 0], ["unhealthy", 0], ["draining", 0]]);
    for (const worker of list()) counts.set(worker.state, (counts.get(worker.state) ?? 0) + 1);
    return [...counts].map(([state, n]): readonly [Labels, number] => [{ [ATTR.workerState]: state }, n]);
  });
  const unSlots = m.gauge("workerSlots", () => {
    let free = 0;
    let busy = 0;
    let unavailable = 0;
    for (const worker of list()) {
      busy += worker.busySlots;
      if (SERVING.has(worker.state)) free += worker.slots - worker.busySlots;
      else unavailable += Math.max(0, worker.slots - worker.busySlots);
    }
    return [
      [{ [ATTR.slotState]: "free" }, free],
      [{ [ATTR.slotState]: "busy" }, busy],
      [{ [ATTR.slotState]: "unavailable" }, unavailable],
    ];
  });
  return () => {
    unWorkers();
    unSlots();
  };
}

/** Records one health check's duration (`outcome`: serving, not_serving, or an error code). @internal */
export function recordHealthCheck(t: Telemetry, seconds: number, outcome: string): void {
  if (t.api === undefined && t.registry === undefined) return;
  t.metrics.instruments.healthCheckDuration.record(seconds, { [ATTR.healthOutcome]: outcome });
}
