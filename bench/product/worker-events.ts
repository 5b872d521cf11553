/** Collects the `started` / `aborted` events the product workers' `hold` handler sends, by job. */
import type { ChildHandle } from "../lib/proc.ts";

/** One handler event as the worker sent it. */
export interface HoldEvent {
  name: "started" | "aborted";
  jobId: string;
  attempt: number;
  /** Epoch ms (sub-ms) on the worker. */
  at: number;
  pid: number;
}

/** Listens to worker processes (also ones added later) and waits for a job's events. */
export class WorkerEvents {
  readonly #seen: HoldEvent[] = [];
  readonly #waiters = new Set<{ match: (e: HoldEvent) => boolean; resolve: (e: HoldEvent) => void }>();

  /** Starts listening to `worker`. */
  follow(worker: ChildHandle): void {
    worker.onEvent(({ name, data }) => {
      if (name !== "started" && name !== "aborted") return;
      const event: HoldEvent = { name, ...(data as Omit<HoldEvent, "name">) };
      this.#seen.push(event);
      for (const waiter of this.#waiters) {
        if (waiter.match(event)) {
          this.#waiters.delete(waiter);
          waiter.resolve(event);
        }
      }
    });
  }

  /** Resolves with the first event (already seen or still to come) that `match` accepts; rejects after `timeoutMs`. */
  waitFor(match: (e: HoldEvent) => boolean, timeoutMs: number, what: string): Promise<HoldEvent> {
    const seen = this.#seen.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const waiter = {
        match,
        resolve: (e: HoldEvent) => {
          clearTimeout(timer);
          resolve(e);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(new Error(`no worker reported ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiters.add(waiter);
    });
  }
}
