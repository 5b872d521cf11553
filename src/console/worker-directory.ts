import { randomUUID } from "node:crypto";
import { EventEmitter } from "eventemitter3";
import { OrchestratorError } from "../errors.ts";
import type { Subscription } from "../queue/types.ts";
import type { PoolBus, PoolTopic } from "./pool-bus.ts";
import type { PoolCommandMessage, PoolReplyMessage, PoolSnapshotMessage, ReportedWorker } from "./pool-reporter.ts";
import type { ConsoleWorker } from "./api-types.ts";

const RANK = ["draining", "unhealthy", "saturated", "busy", "idle", "joining", "removed"];
const HEALTHY: ReadonlySet<string> = new Set(["idle", "busy", "saturated", "draining"]);

/** Whether a console worker state counts as healthy (serving, or finishing as it drains). */
export function isHealthyState(state: string): boolean {
  return HEALTHY.has(state);
}

interface Pool {
  snapshot: PoolSnapshotMessage;
  expires: number;
}

interface Waiting {
  replies: PoolReplyMessage[];
  expected: number;
  done: () => void;
}

/**
 * The console's view of every orchestrator's workers, from the snapshots their
 * {@link PoolReporter}s publish; sends drain and undrain commands and waits for the replies.
 * @internal
 */
export class WorkerDirectory extends EventEmitter<{ changed: [ConsoleWorker] }> {
  readonly #bus: PoolBus;
  readonly #pools = new Map<string, Pool>();
  readonly #waiting = new Map<string, Waiting>();
  readonly #consoleId = randomUUID();
  readonly #shown = new Map<string, string>();
  #subscription: Subscription | undefined;
  #sweep: ReturnType<typeof setInterval> | undefined;

  constructor(bus: PoolBus) {
    super();
    this.#bus = bus;
  }

  async start(): Promise<void> {
    this.#subscription = await this.#bus.subscribe(["snapshot", "goodbye", "reply"], (topic, message) => this.#onMessage(topic, message));
    this.#sweep = setInterval(() => this.#expire(), 1000);
    this.#sweep.unref();
  }

  async close(): Promise<void> {
    clearInterval(this.#sweep);
    for (const waiting of this.#waiting.values()) waiting.done();
    await this.#subscription?.close();
  }

  /** Every worker any live pool lists, by id. `running` is left empty (the caller fills it from the store). */
  list(): ConsoleWorker[] {
    this.#expire();
    const byId = new Map<string, Array<{ orchestratorId: string; at: number; worker: ReportedWorker }>>();
    for (const [orchestratorId, pool] of this.#pools) {
      for (const worker of pool.snapshot.workers) {
        const entries = byId.get(worker.id) ?? [];
        entries.push({ orchestratorId, at: pool.snapshot.at, worker });
        byId.set(worker.id, entries);
      }
    }
    return [...byId.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([id, entries]) => merge(id, entries));
  }

  /**
   * Sends `action` for `workerId` to every orchestrator and resolves with those whose pool holds
   * it, once every live pool answered or `timeoutMs` passed.
   */
  async command(action: "drain" | "undrain", workerId: string, by: string, timeoutMs = 3000): Promise<{ applied: string[]; errors: string[] }> {
    this.#expire();
    const id = randomUUID();
    const replies: PoolReplyMessage[] = [];
    const finished = new Promise<void>((resolve) => {
      const timer = setTimeout(() => done(), timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        this.#waiting.delete(id);
        resolve();
      };
      this.#waiting.set(id, { replies, expected: this.#pools.size, done });
    });
    const message: PoolCommandMessage & { consoleId: string } = { v: 1, id, action, workerId, by, consoleId: this.#consoleId };
    try {
      await this.#bus.publish("command", message);
    } catch (error) {
      this.#waiting.get(id)?.done();
      throw OrchestratorError.from(error);
    }
    await finished;
    return {
      applied: replies.filter((r) => r.applied).map((r) => r.orchestratorId),
      errors: replies.filter((r) => r.error !== undefined).map((r) => `${r.orchestratorId}: ${r.error}`),
    };
  }

  #onMessage(topic: PoolTopic, value: unknown): void {
    if (typeof value !== "object" || value === null || (value as { v?: unknown }).v !== 1) return;
    if (topic === "reply") {
      const reply = value as PoolReplyMessage;
      const waiting = this.#waiting.get(String(reply.commandId));
      if (waiting === undefined) return;
      waiting.replies.push(reply);
      if (waiting.replies.length >= waiting.expected) waiting.done();
      return;
    }
    const orchestratorId = (value as { orchestratorId?: unknown }).orchestratorId;
    if (typeof orchestratorId !== "string") return;
    const before = this.#idsOf(orchestratorId);
    if (topic === "goodbye") this.#pools.delete(orchestratorId);
    else {
      const snapshot = value as PoolSnapshotMessage;
      if (!Array.isArray(snapshot.workers) || typeof snapshot.intervalMs !== "number") return;
      this.#pools.set(orchestratorId, { snapshot, expires: Date.now() + snapshot.intervalMs * 3 });
    }
    this.#announce(new Set([...before, ...this.#idsOf(orchestratorId)]));
  }

  #idsOf(orchestratorId: string): string[] {
    return this.#pools.get(orchestratorId)?.snapshot.workers.map((w) => w.id) ?? [];
  }

  #expire(): void {
    const now = Date.now();
    const gone: string[] = [];
    for (const [id, pool] of this.#pools) {
      if (pool.expires > now) continue;
      gone.push(...this.#idsOf(id));
      this.#pools.delete(id);
    }
    if (gone.length > 0) this.#announce(new Set(gone));
  }

  /** Emits `changed` for each of `ids` whose merged view changed (a worker gone shows as `removed`). */
  #announce(ids: Set<string>): void {
    if (ids.size === 0) return;
    const now = new Map(this.list().map((w) => [w.id, w]));
    for (const id of ids) {
      const worker = now.get(id) ?? { id, state: "removed", labels: {}, slots: { total: 0, busy: 0 }, running: [], history: [], orchestrators: [], lastSeenAt: Date.now() };
      const { lastSeenAt: _ignored, ...shape } = worker;
      const key = JSON.stringify(shape);
      if (this.#shown.get(id) === key) continue;
      if (worker.state === "removed") this.#shown.delete(id);
      else this.#shown.set(id, key);
      this.emit("changed", worker);
    }
  }
}

function merge(id: string, entries: Array<{ orchestratorId: string; at: number; worker: ReportedWorker }>): ConsoleWorker {
  const ranked = [...entries].sort((a, b) => RANK.indexOf(a.worker.state) - RANK.indexOf(b.worker.state));
  const top = ranked[0] as (typeof entries)[number];
  const history = entries
    .flatMap((e) => e.worker.history.map((h) => ({ ...h, orchestratorId: e.orchestratorId })))
    .sort((a, b) => a.at - b.at)
    .slice(-50);
  return {
    id,
    state: top.worker.state,
    ...(top.worker.reason === undefined ? {} : { reason: top.worker.reason }),
    labels: top.worker.labels,
    ...(top.worker.jobTypes === undefined ? {} : { jobTypes: top.worker.jobTypes }),
    slots: { total: Math.max(...entries.map((e) => e.worker.slots)), busy: entries.reduce((n, e) => n + e.worker.busySlots, 0) },
    running: [],
    history,
    orchestrators: entries.map((e) => ({ id: e.orchestratorId, state: e.worker.state, ...(e.worker.reason === undefined ? {} : { reason: e.worker.reason }), busy: e.worker.busySlots })),
    lastSeenAt: Math.max(...entries.map((e) => e.at)),
  };
}
