import type {
  ExecuteOptions, ExecuteRequest, HealthStatus, TransportState, WorkerDescription, WorkerTransport,
} from "../../src/transport/types.ts";

/**
 * A scripted worker for pool and health tests: `check()` answers `health` ("hang" plays a frozen
 * worker whose connection stays open: it never settles and ignores its signal), `execute()` runs
 * until its signal fires, and `setState()` drives what `watch()` listeners hear.
 */
export class FakeTransport implements WorkerTransport {
  health: HealthStatus | "hang" | Error = "serving";
  /** How many times `check()` was called, and the signals it got. */
  readonly checkSignals: Array<AbortSignal | undefined> = [];
  closeCalls = 0;
  closeError: Error | undefined;
  readonly #watchers = new Set<(state: TransportState) => void>();

  get watchers(): number {
    return this.#watchers.size;
  }

  execute(_request: ExecuteRequest, options: ExecuteOptions): Promise<unknown> {
    const { signal } = options;
    return new Promise((_resolve, reject) => {
      if (signal.aborted) reject(signal.reason);
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
    });
  }

  check(options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<HealthStatus> {
    this.checkSignals.push(options.signal);
    const health = this.health;
    if (health === "hang") return new Promise(() => {});
    if (health instanceof Error) return Promise.reject(health);
    return Promise.resolve(health);
  }

  async describe(): Promise<WorkerDescription> {
    return { slots: 1, labels: {}, jobTypes: [], version: "fake" };
  }

  watch(listener: (state: TransportState) => void): () => void {
    this.#watchers.add(listener);
    return () => this.#watchers.delete(listener);
  }

  /** Plays a connection change, as a real transport reports it between checks. */
  setState(state: TransportState): void {
    for (const listener of [...this.#watchers]) listener(state);
  }

  async close(): Promise<void> {
    this.closeCalls += 1;
    if (this.closeError) throw this.closeError;
  }
}
