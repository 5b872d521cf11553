import { OrchestratorError } from "../errors.ts";
import type { JobEvents } from "../queue/types.ts";
import { expireAndPublish } from "../store/expire-and-publish.ts";
import type { JobRecord, JobStore } from "../store/types.ts";

/** What the poller needs of its client: the jobs it follows and where records go. @internal */
export interface RecordPollerPort {
  /** Ids of the unfinished jobs followed, oldest first. */
  followed(): Iterable<string>;
  /** A record read again (or just expired): bring the job's handle up to it. */
  apply(record: JobRecord): void;
  report(error: OrchestratorError): void;
}

/** Records read per tick at most, so a client following thousands of jobs stays cheap. */
const MAX_READS_PER_TICK = 100;

/**
 * Reads the records of a client's followed, unfinished jobs again every `intervalMs`, so a
 * handle settles even when its result event never reached this process (a subscription
 * reconnecting), and fails the jobs past their start timeout (`store.expireUnstarted()`),
 * publishing their outcome, so that a job that sits in a queue no dispatcher reads does not wait
 * forever in silence. Runs only while something is followed; its timer never keeps the process
 * alive. @internal
 */
export class RecordPoller {
  readonly #store: JobStore;
  readonly #events: JobEvents;
  readonly #intervalMs: number;
  readonly #port: RecordPollerPort;
  #timer: NodeJS.Timeout | undefined;
  #ticking = false;
  #cursor = 0;

  constructor(store: JobStore, events: JobEvents, intervalMs: number, port: RecordPollerPort) {
    this.#store = store;
    this.#events = events;
    this.#intervalMs = intervalMs;
    this.#port = port;
  }

  /** Starts ticking (idempotent). */
  start(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => void this.tick(), this.#intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** One round: expire what passed its start timeout, then read up to 100 followed records. */
  async tick(): Promise<void> {
    if (this.#ticking) return;
    this.#ticking = true;
    try {
      await expireAndPublish(this.#store, this.#events, this.#port.report, this.#port.apply);
      const ids = [...this.#port.followed()];
      if (ids.length === 0) return this.stop();
      // Round-robin over the followed jobs, MAX_READS_PER_TICK per tick.
      const start = this.#cursor % ids.length;
      const batch = [...ids.slice(start), ...ids.slice(0, start)].slice(0, MAX_READS_PER_TICK);
      this.#cursor = start + batch.length;
      for (const id of batch) {
        const record = await this.#store.get(id);
        if (record !== undefined) this.#port.apply(record);
      }
    } catch (error) {
      this.#port.report(OrchestratorError.from(error));
    } finally {
      this.#ticking = false;
    }
  }
}
