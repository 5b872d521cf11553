import type { OrchestratorError } from "../errors.ts";
import type { WorkerDescription } from "../transport/types.ts";

/** A worker a {@link WorkerSource} found: where to reach it, and what it said about itself if it did. */
export interface DiscoveredWorker {
  /** The key it gets in the pool: the worker's own id when the source knows it, else its address. */
  readonly id: string;
  /** `host:port` of its gRPC server. */
  readonly address: string;
  /** What the worker announced, when the source carries it (broker announcements do). */
  readonly description?: WorkerDescription;
}

/** The events of a {@link WorkerSource}, each with one payload object. */
export interface WorkerSourceEvents {
  /** A worker appeared, or an already found one moved to another address (found again with the new one). */
  workerFound: [{ worker: DiscoveredWorker }];
  /**
   * A worker disappeared. `graceful`: it said goodbye or its record was withdrawn (let its jobs
   * finish); otherwise it fell silent (it is most likely dead).
   */
  workerLost: [{ id: string; reason: string; graceful: boolean }];
  /** Looking for workers failed this time (a DNS timeout, a broker outage); the source keeps trying. */
  error: [{ error: OrchestratorError }];
}

/**
 * Where workers come from: a static list (`StaticWorkers`), DNS (`DnsWorkers`) or workers
 * announcing themselves through the broker (`BrokerWorkers` in `@blacktree/orchestrator/amqp`).
 * `WorkerDiscovery` turns its events into pool members. A host can bring its own (Consul, a
 * Kubernetes Endpoints watch) by implementing these four methods.
 */
export interface WorkerSource {
  on<K extends keyof WorkerSourceEvents>(event: K, listener: (...args: WorkerSourceEvents[K]) => void): unknown;
  off<K extends keyof WorkerSourceEvents>(event: K, listener: (...args: WorkerSourceEvents[K]) => void): unknown;
  /** Starts looking; resolves after the first look (whatever it found). Idempotent. */
  start(options?: { signal?: AbortSignal }): Promise<void>;
  /** Stops looking and forgets what it found (announcing no `workerLost`). Idempotent. */
  close(): Promise<void>;
}
