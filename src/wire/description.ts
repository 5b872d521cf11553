import type { WorkerDescription as WireDescription } from "../gen/blacktree/orchestrator/v1/worker_pb.ts";

/** What a worker says about itself. */
export interface WorkerDescription {
  /** Jobs it runs at once. */
  slots: number;
  labels: Record<string, string>;
  /** Job types it has handlers for. */
  jobTypes: string[];
  /** Worker SDK or implementation version. */
  version: string;
  /** The worker's own id, stable across restarts; absent when the worker does not say. */
  workerId?: string;
  /** The protocol it speaks (`WORKER_PROTOCOL`); absent when the worker does not say. */
  protocol?: string;
}

/**
 * A worker's description as the protocol carries it (Hello, Describe), in the transport's shape;
 * fields an older worker leaves empty are left out.
 * @internal
 */
export function descriptionFromWire(worker: WireDescription): WorkerDescription {
  return {
    slots: worker.slots,
    labels: { ...worker.labels },
    jobTypes: [...worker.jobTypes],
    version: worker.version,
    ...(worker.workerId === "" ? {} : { workerId: worker.workerId }),
    ...(worker.protocol === "" ? {} : { protocol: worker.protocol }),
  };
}
