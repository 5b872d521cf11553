import { EventEmitter } from "eventemitter3";
import { invalidArgument } from "../errors.ts";
import { checkObject, checkString, optional } from "../validate.ts";
import type { DiscoveredWorker, WorkerSource, WorkerSourceEvents } from "./types.ts";

/** Options of {@link StaticWorkers}. */
export interface StaticWorkersOptions {
  /** The workers: `host:port` strings, or `{ address, id }` to choose the pool id (@default the address). */
  workers: ReadonlyArray<string | { address: string; id?: string }>;
}

/**
 * A fixed list of workers, found once at `start()`: the simplest {@link WorkerSource}.
 * @example
 * ```ts
 * const discovery = new WorkerDiscovery({ pool, sources: [new StaticWorkers({ workers: ["w1:50051", "w2:50051"] })], transportFor });
 * ```
 */
export class StaticWorkers extends EventEmitter<WorkerSourceEvents> implements WorkerSource {
  readonly #workers: readonly DiscoveredWorker[];
  #started = false;

  /** @throws {OrchestratorError} `invalid_argument` naming the bad entry. */
  constructor(options: StaticWorkersOptions) {
    super();
    const o = checkObject("options", options);
    if (!Array.isArray(o.workers)) throw invalidArgument("workers", "an array of addresses", o.workers);
    this.#workers = o.workers.map((entry: unknown, index: number) => {
      if (typeof entry === "string") return { id: checkAddress(`workers[${index}]`, entry), address: entry };
      const e = checkObject(`workers[${index}]`, entry);
      const address = checkAddress(`workers[${index}].address`, e.address);
      return { id: optional(e.id, address, (v) => checkString(`workers[${index}].id`, v)), address };
    });
  }

  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    for (const worker of this.#workers) this.emit("workerFound", { worker });
  }

  async close(): Promise<void> {
    this.#started = false;
  }
}

/** Checks a `host:port` address (a bracketed IPv6 host allowed). */
export function checkAddress(field: string, value: unknown): string {
  const address = checkString(field, value, 1024);
  if (!/^(?:\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):\d{1,5}$/.test(address)) throw invalidArgument(field, "a host:port address", value);
  return address;
}
