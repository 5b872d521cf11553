import { randomUUID } from "node:crypto";
import { EventEmitter } from "eventemitter3";
import { OrchestratorError } from "../errors.ts";
import { reportListenerError } from "../events.ts";
import type { Subscription } from "../queue/types.ts";
import { checkInteger, checkObject, checkString, optional } from "../validate.ts";
import type { WorkerPool } from "../worker-pool/worker-pool.ts";
import type { WorkerState } from "../worker-pool/types.ts";
import type { PoolBus } from "./pool-bus.ts";

/** One change of a worker's state, as its pool saw it. */
export interface WorkerHistoryEntry {
  /** Epoch ms. */
  at: number;
  from: WorkerState;
  to: WorkerState;
  reason?: string;
}

/** One worker of one pool, as a {@link PoolReporter} publishes it. */
export interface ReportedWorker {
  id: string;
  state: WorkerState;
  reason?: string;
  slots: number;
  busySlots: number;
  stuckSlots?: number;
  labels: Record<string, string>;
  jobTypes?: string[];
  /** The latest state changes, oldest first. */
  history: WorkerHistoryEntry[];
}

/** The `snapshot` message: every worker of one orchestrator's pool. @internal */
export interface PoolSnapshotMessage {
  v: 1;
  orchestratorId: string;
  at: number;
  /** The reporter publishes at least this often; silence for 3 of them means it is gone. */
  intervalMs: number;
  workers: ReportedWorker[];
}

/** The `command` message a console sends. @internal */
export interface PoolCommandMessage {
  v: 1;
  id: string;
  action: "drain" | "undrain";
  workerId: string;
  /** Who asked (the console's audit name). */
  by: string;
}

/** The `reply` message: what one orchestrator did with a command. @internal */
export interface PoolReplyMessage {
  v: 1;
  commandId: string;
  orchestratorId: string;
  /** Whether its pool has the worker (and so applied the command). */
  applied: boolean;
  error?: string;
}

/** Options of {@link PoolReporter}. */
export interface PoolReporterOptions {
  /** The pool to report. */
  pool: WorkerPool;
  /** Where to publish (`AmqpPoolBus`, or a `MemoryPoolBus` shared with a console in this process). */
  bus: PoolBus;
  /** This orchestrator's id, as consoles show it. @default a random UUID */
  orchestratorId?: string;
  /**
   * Milliseconds between two snapshots when nothing changes (a change is published at once).
   * @default 2000
   */
  intervalMs?: number;
  /**
   * State changes kept per worker.
   * @default 50
   */
  historyLength?: number;
}

/** Events of {@link PoolReporter}. */
export interface PoolReporterEvents {
  /** A console asked to drain or undrain a worker of this pool, and it was done. */
  commandApplied: [{ action: "drain" | "undrain"; workerId: string; by: string }];
  /** Publishing or a command failed; the reporter carried on. */
  error: [{ error: OrchestratorError }];
}

/**
 * Publishes what an orchestrator's {@link WorkerPool} holds on a {@link PoolBus}, so that a
 * console in any process shows its workers (state with the reason, labels, slots, the history of
 * state changes), and applies the drain and undrain commands consoles send for its workers.
 * Run one beside each dispatcher; a snapshot goes out on every change and every `intervalMs`.
 *
 * @example
 * ```ts
 * const bus = new AmqpPoolBus({ connection, queueName: "builds" });
 * const reporter = new PoolReporter({ pool, bus });
 * await reporter.start();
 * ```
 */
export class PoolReporter extends EventEmitter<PoolReporterEvents> {
  readonly #pool: WorkerPool;
  readonly #bus: PoolBus;
  readonly #id: string;
  readonly #intervalMs: number;
  readonly #historyLength: number;
  readonly #history = new Map<string, WorkerHistoryEntry[]>();
  #subscription: Subscription | undefined;
  #timer: ReturnType<typeof setInterval> | undefined;
  #pending: ReturnType<typeof setTimeout> | undefined;
  #started: Promise<void> | undefined;
  #closed = false;

  /** @throws {OrchestratorError} `invalid_argument` for bad options. */
  constructor(options: PoolReporterOptions) {
    super();
    const o = checkObject("options", options);
    this.#pool = checkObject("pool", o.pool) as unknown as WorkerPool;
    this.#bus = checkObject("bus", o.bus) as unknown as PoolBus;
    this.#id = optional(o.orchestratorId, randomUUID(), (v) => checkString("orchestratorId", v, 256));
    this.#intervalMs = optional(o.intervalMs, 2000, (v) => checkInteger("intervalMs", v, 50, 3_600_000));
    this.#historyLength = optional(o.historyLength, 50, (v) => checkInteger("historyLength", v, 1, 10_000));
  }

  /** This orchestrator's id on the bus. */
  get orchestratorId(): string {
    return this.#id;
  }

  /** Listens for commands and publishes the first snapshot. Idempotent. */
  start(): Promise<void> {
    this.#started ??= this.#start();
    return this.#started;
  }

  async #start(): Promise<void> {
    this.#pool.on("workerStateChanged", this.#onChange);
    this.#pool.on("workerAdded", this.#onAdded);
    this.#pool.on("workerRemoved", this.#onRemoved);
    this.#pool.on("capacityChanged", this.#schedule);
    this.#subscription = await this.#bus.subscribe(["command"], (_topic, message) => void this.#onCommand(message));
    if (this.#closed) {
      await this.#subscription.close();
      return;
    }
    await this.#publish();
    this.#timer = setInterval(() => void this.#publish(), this.#intervalMs);
    this.#timer.unref();
  }

  /** The snapshot as it would be published now. */
  snapshot(): PoolSnapshotMessage {
    const workers = this.#pool.list().map((info): ReportedWorker => ({
      id: info.id,
      state: info.state,
      ...(info.reason === undefined ? {} : { reason: info.reason }),
      slots: info.slots,
      busySlots: info.busySlots,
      ...(info.stuckSlots === undefined ? {} : { stuckSlots: info.stuckSlots }),
      labels: { ...info.labels },
      ...(info.jobTypes === undefined ? {} : { jobTypes: [...info.jobTypes] }),
      history: [...(this.#history.get(info.id) ?? [])],
    }));
    return { v: 1, orchestratorId: this.#id, at: Date.now(), intervalMs: this.#intervalMs, workers };
  }

  readonly #onChange = ({ workerId, from, to, reason }: { workerId: string; from: WorkerState; to: WorkerState; reason?: string }): void => {
    if (from !== to) this.#remember(workerId, { at: Date.now(), from, to, ...(reason === undefined ? {} : { reason }) });
    this.#schedule();
  };

  readonly #onAdded = ({ worker }: { worker: { id: string; state: WorkerState } }): void => {
    this.#history.delete(worker.id);
    this.#remember(worker.id, { at: Date.now(), from: "removed", to: worker.state, reason: "added to the pool" });
    this.#schedule();
  };

  readonly #onRemoved = ({ worker }: { worker: { id: string } }): void => {
    this.#history.delete(worker.id);
    this.#schedule();
  };

  #remember(workerId: string, entry: WorkerHistoryEntry): void {
    const list = this.#history.get(workerId) ?? [];
    list.push(entry);
    if (list.length > this.#historyLength) list.splice(0, list.length - this.#historyLength);
    this.#history.set(workerId, list);
  }

  /** Coalesces the changes of one burst into one snapshot. */
  readonly #schedule = (): void => {
    if (this.#closed || this.#pending !== undefined || this.#started === undefined) return;
    this.#pending = setTimeout(() => {
      this.#pending = undefined;
      void this.#publish();
    }, 50);
    this.#pending.unref();
  };

  async #publish(): Promise<void> {
    if (this.#closed) return;
    try {
      await this.#bus.publish("snapshot", this.snapshot(), { expirationMs: this.#intervalMs * 3 });
    } catch (error) {
      if (!this.#closed) reportListenerError(this as unknown as EventEmitter, OrchestratorError.from(error));
    }
  }

  async #onCommand(value: unknown): Promise<void> {
    const command = value as Partial<PoolCommandMessage> | null;
    if (typeof command !== "object" || command === null || command.v !== 1 || typeof command.id !== "string" || typeof command.workerId !== "string") return;
    if (command.action !== "drain" && command.action !== "undrain") return;
    const reply: PoolReplyMessage = { v: 1, commandId: command.id, orchestratorId: this.#id, applied: false };
    if (this.#pool.get(command.workerId) !== undefined) {
      try {
        if (command.action === "drain") this.#pool.drain(command.workerId);
        else this.#pool.undrain(command.workerId);
        reply.applied = true;
        this.emit("commandApplied", { action: command.action, workerId: command.workerId, by: typeof command.by === "string" ? command.by : "unknown" });
      } catch (error) {
        reply.error = OrchestratorError.from(error).rawMessage;
      }
    }
    try {
      await this.#bus.publish("reply", reply);
      if (reply.applied) await this.#publish();
    } catch (error) {
      if (!this.#closed) reportListenerError(this as unknown as EventEmitter, OrchestratorError.from(error));
    }
  }

  /** Publishes `goodbye` (consoles drop this pool at once), stops listening. Idempotent; leaves the pool and the bus open. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    clearTimeout(this.#pending);
    this.#pool.off("workerStateChanged", this.#onChange);
    this.#pool.off("workerAdded", this.#onAdded);
    this.#pool.off("workerRemoved", this.#onRemoved);
    this.#pool.off("capacityChanged", this.#schedule);
    await this.#subscription?.close();
    if (this.#started !== undefined) await this.#bus.publish("goodbye", { v: 1, orchestratorId: this.#id }).catch(() => {});
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
