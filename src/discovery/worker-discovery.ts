import { EventEmitter } from "eventemitter3";
import { invalidArgument, OrchestratorError } from "../errors.ts";
import type { WorkerTransport } from "../transport/types.ts";
import { checkBoolean, checkFunction, checkObject, optional } from "../validate.ts";
import { emitSafely, reportListenerError } from "../events.ts";
import type { WorkerOptions } from "../worker-pool/types.ts";
import type { WorkerPool } from "../worker-pool/worker-pool.ts";
import type { DiscoveredWorker, WorkerSource, WorkerSourceEvents } from "./types.ts";

/** Options of {@link WorkerDiscovery}. */
export interface WorkerDiscoveryOptions {
  /** The pool the workers join. */
  pool: WorkerPool;
  /** Where workers come from: `StaticWorkers`, `DnsWorkers`, `BrokerWorkers`, or your own. */
  sources: readonly WorkerSource[];
  /** Makes the transport of a found worker, for example `(w) => new GrpcTransport({ address: w.address, tls })`. */
  transportFor: (worker: DiscoveredWorker) => WorkerTransport;
  /**
   * Limits for every worker found (each may only narrow what the worker announces): at most
   * `slots`, only `jobTypes`, required `labels`.
   * @default {}
   */
  workerOptions?: Pick<WorkerOptions, "slots" | "labels" | "jobTypes">;
  /**
   * When a source loses a worker gracefully (a goodbye, a withdrawn DNS record), let its running
   * jobs finish before it leaves the pool (`remove(id, { drain: true })`); a worker that fell
   * silent is removed at once either way (its jobs were already failed over on connection loss).
   * @default true
   */
  drainOnLeave?: boolean;
}

/** The events of a {@link WorkerDiscovery}. */
export interface WorkerDiscoveryEvents {
  /** A source found a worker and it was added to the pool (it is admitted once it answers). */
  workerDiscovered: [{ worker: DiscoveredWorker }];
  /** A source lost a worker this discovery had added, and it left (or is draining out of) the pool. */
  workerForgotten: [{ workerId: string; reason: string; graceful: boolean }];
  /** A source reported a failure, or adding/removing a worker failed; discovery carried on. */
  error: [{ error: OrchestratorError }];
}

/**
 * Keeps a {@link WorkerPool} in step with where workers are: every worker a source finds is added
 * (with a transport from `transportFor`, and admitted by the pool once its session is open and
 * its first check passed), and removed when the source loses it. Workers added to the pool by
 * hand are left alone.
 *
 * @example
 * ```ts
 * const discovery = new WorkerDiscovery({
 *   pool,
 *   sources: [new BrokerWorkers({ url: "amqp://rabbit" }), new DnsWorkers({ name: "_blacktree._tcp.workers.internal" })],
 *   transportFor: (worker) => new GrpcTransport({ address: worker.address }),
 * });
 * await discovery.start();
 * ```
 */
export class WorkerDiscovery extends EventEmitter<WorkerDiscoveryEvents> {
  readonly #pool: WorkerPool;
  readonly #sources: readonly WorkerSource[];
  readonly #transportFor: (worker: DiscoveredWorker) => WorkerTransport;
  readonly #workerOptions: Pick<WorkerOptions, "slots" | "labels" | "jobTypes">;
  readonly #drainOnLeave: boolean;
  /** Pool ids this discovery added → the address they were added with. */
  readonly #added = new Map<string, string>();
  readonly #onListenerError = (error: OrchestratorError): void => reportListenerError(this as unknown as EventEmitter, error);
  readonly #unsubscribe: Array<() => void> = [];
  #started: Promise<void> | undefined;
  #closed = false;

  /** @throws {OrchestratorError} `invalid_argument` for bad options. */
  constructor(options: WorkerDiscoveryOptions) {
    super();
    const o = checkObject("options", options);
    this.#pool = checkObject("pool", o.pool) as unknown as WorkerPool;
    if (!Array.isArray(o.sources) || o.sources.length === 0) throw invalidArgument("sources", "a non-empty array of worker sources", o.sources);
    this.#sources = o.sources.map((source: unknown, index: number) => {
      const s = checkObject(`sources[${index}]`, source);
      for (const name of ["on", "off", "start", "close"]) checkFunction(`sources[${index}].${name}`, s[name]);
      return source as WorkerSource;
    });
    this.#transportFor = checkFunction("transportFor", o.transportFor);
    this.#workerOptions = optional(o.workerOptions, {}, (v) => checkObject("workerOptions", v)) as Pick<WorkerOptions, "slots" | "labels" | "jobTypes">;
    this.#drainOnLeave = optional(o.drainOnLeave, true, (v) => checkBoolean("drainOnLeave", v));
  }

  /** The pool ids of the workers this discovery added and that are still in the pool. */
  get workerIds(): string[] {
    return [...this.#added.keys()].filter((id) => this.#pool.get(id) !== undefined);
  }

  /** Subscribes to every source and starts them; resolves once each has looked once. Idempotent. */
  start(options: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.#closed) return Promise.reject(new OrchestratorError("precondition_failed", "worker discovery is closed"));
    this.#started ??= (async () => {
      for (const source of this.#sources) {
        const found = ({ worker }: WorkerSourceEvents["workerFound"][0]) => this.#found(worker);
        const lost = (event: WorkerSourceEvents["workerLost"][0]) => this.#lost(event);
        const error = ({ error: e }: WorkerSourceEvents["error"][0]) => this.#emit("error", { error: OrchestratorError.from(e) });
        source.on("workerFound", found);
        source.on("workerLost", lost);
        source.on("error", error);
        this.#unsubscribe.push(() => {
          source.off("workerFound", found);
          source.off("workerLost", lost);
          source.off("error", error);
        });
      }
      await Promise.all(this.#sources.map((source) => source.start(options)));
    })();
    return this.#started;
  }

  /**
   * Stops following the sources and closes them. The workers found stay in the pool (the pool's
   * own `close()` removes them). Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const unsubscribe of this.#unsubscribe.splice(0)) unsubscribe();
    await Promise.allSettled(this.#sources.map((source) => source.close()));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #found(worker: DiscoveredWorker): void {
    if (this.#closed) return;
    const known = this.#pool.get(worker.id);
    if (known !== undefined) {
      // Found again at the same place (another source, a repeated announcement): nothing to do.
      // At another place: the old entry goes, the new one comes.
      if (this.#added.get(worker.id) === worker.address || !this.#added.has(worker.id)) return;
      void this.#pool.remove(worker.id).catch((error: unknown) => this.#report(error));
    }
    try {
      const transport = this.#transportFor(worker);
      this.#pool.add({ ...this.#workerOptions, id: worker.id, transport });
      this.#added.set(worker.id, worker.address);
      this.#emit("workerDiscovered", { worker });
    } catch (error) {
      this.#report(error);
    }
  }

  #lost({ id, reason, graceful }: WorkerSourceEvents["workerLost"][0]): void {
    if (this.#closed || !this.#added.has(id)) return;
    this.#added.delete(id);
    if (this.#pool.get(id) === undefined) return;
    this.#emit("workerForgotten", { workerId: id, reason, graceful });
    void this.#pool.remove(id, { drain: graceful && this.#drainOnLeave }).catch((error: unknown) => this.#report(error));
  }

  #report(error: unknown): void {
    this.#emit("error", { error: OrchestratorError.from(error) });
  }

  #emit<K extends keyof WorkerDiscoveryEvents>(event: K, ...args: WorkerDiscoveryEvents[K]): void {
    emitSafely(this as unknown as EventEmitter, this.#onListenerError, event, ...args);
  }
}
