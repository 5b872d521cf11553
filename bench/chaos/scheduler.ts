/**
 * Injects a fault plan into a running {@link Cluster} and records every fault with its times.
 *
 * Faults fire in plan order at their due time, each once its target is fit for it: a worker fault
 * needs its worker up and at least `workers - 1` workers up (so at most two are out at once); a
 * dispatcher fault needs every dispatcher up with a working link for a second, so that one
 * dispatcher is struck at a time and the other always carries on; a node fault needs every node
 * of the private cluster up, so a majority always stands. Each fault's recovery (thaw,
 * restore, restart) runs on its own clock; `stop()` stops firing new faults and waits for the
 * recoveries under way.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { FaultRecord } from "./analysis.ts";
import type { Cluster, DispatcherSlot, WorkerSlot } from "./cluster.ts";
import type { PlannedFault } from "./plan.ts";

/** Longest wait for a fault's target to become fit; past it the fault is skipped (and recorded so). */
const MAX_ELIGIBILITY_WAIT_MS = 20_000;
/** A node fault may wait for the restart of the node struck before (10-30 s here). */
const MAX_NODE_ELIGIBILITY_WAIT_MS = 90_000;

export class FaultScheduler {
  readonly #cluster: Cluster;
  readonly #plan: readonly PlannedFault[];
  readonly #log: (line: string) => void;
  readonly #t0: number;
  readonly #stopped = new AbortController();
  readonly #recoveries = new Set<Promise<void>>();
  /** Faults injected, in order. */
  readonly faults: FaultRecord[] = [];
  /** Planned faults never injected, with why. */
  readonly skipped: Array<PlannedFault & { reason: string }> = [];
  /** Recoveries that failed (a restart that did not come up). */
  readonly recoveryErrors: string[] = [];
  #loop: Promise<void> | undefined;

  constructor(cluster: Cluster, plan: readonly PlannedFault[], options: { t0: number; log: (line: string) => void }) {
    this.#cluster = cluster;
    this.#plan = [...plan].sort((a, b) => a.atMs - b.atMs);
    this.#t0 = options.t0;
    this.#log = options.log;
  }

  /** Starts firing the plan (times count from `t0`). */
  start(): void {
    this.#loop ??= this.#run();
  }

  /** Whether every planned fault has been injected or skipped. */
  get done(): boolean {
    return this.faults.length + this.skipped.length === this.#plan.length;
  }

  /** Stops firing new faults, then waits for the loop and for every recovery under way. */
  async stop(): Promise<void> {
    this.#stopped.abort();
    await this.#loop;
    while (this.#recoveries.size > 0) await Promise.allSettled([...this.#recoveries]);
  }

  async #run(): Promise<void> {
    const signal = this.#stopped.signal;
    for (const planned of this.#plan) {
      try {
        const wait = this.#t0 + planned.atMs - Date.now();
        if (wait > 0) await sleep(wait, undefined, { signal });
        const maxWaitMs = planned.kind.startsWith("node") ? MAX_NODE_ELIGIBILITY_WAIT_MS : MAX_ELIGIBILITY_WAIT_MS;
        const waitUntil = Date.now() + maxWaitMs;
        let fired = await this.#tryFire(planned);
        while (!fired && Date.now() < waitUntil) {
          await sleep(100, undefined, { signal });
          fired = await this.#tryFire(planned);
        }
        if (!fired) this.#skip(planned, `its target was not fit for ${maxWaitMs} ms`);
      } catch {
        // Stopped: the rest of the plan is skipped.
        for (const rest of this.#plan.slice(this.faults.length + this.skipped.length)) this.#skip(rest, "the run ended first");
        return;
      }
    }
  }

  #skip(planned: PlannedFault, reason: string): void {
    this.skipped.push({ ...planned, reason });
    this.#log(`fault skipped: ${planned.kind} (${reason})`);
  }

  async #tryFire(planned: PlannedFault): Promise<boolean> {
    if (planned.kind === "node_kill" || planned.kind === "node_freeze") return this.#tryNodeFault(planned);
    if (planned.kind === "worker_kill" || planned.kind === "worker_freeze") {
      const workers = this.#cluster.workers;
      if (workers.filter((w) => w.state === "up").length < workers.length - 1) return false;
      // The planned worker, or the next one up.
      const slot = [...workers.slice(planned.target), ...workers.slice(0, planned.target)].find((w) => w.state === "up");
      if (!slot) return false;
      if (planned.kind === "worker_kill") this.#killWorker(slot, planned.durationMs);
      else this.#freezeWorker(slot, planned.durationMs);
      return true;
    }
    const dispatchers = this.#cluster.dispatchers;
    const now = Date.now();
    if (!dispatchers.every((d) => d.state === "up" && d.link === "ok" && now - d.quietSince >= 1000)) return false;
    const slot = dispatchers[planned.target % dispatchers.length]!;
    if (planned.kind === "connection_cut") this.#cut(slot);
    else if (planned.kind === "connection_blackhole") this.#blackhole(slot, planned.durationMs);
    else this.#killDispatcher(slot, planned.durationMs);
    return true;
  }

  #record(fault: Omit<FaultRecord, "id" | "at">): FaultRecord {
    const record: FaultRecord = { id: this.faults.length + 1, at: Date.now(), ...fault };
    this.faults.push(record);
    const pid = record.pid === undefined ? "" : ` pid ${record.pid}`;
    this.#log(`fault #${record.id} ${record.kind} ${record.target}${pid}`);
    return record;
  }

  #recover(what: string, fn: () => Promise<void>): void {
    const task = fn().catch((error: unknown) => {
      const message = `${what}: ${error instanceof Error ? error.message : String(error)}`;
      this.recoveryErrors.push(message);
      this.#log(`recovery failed: ${message}`);
    });
    this.#recoveries.add(task);
    void task.finally(() => this.#recoveries.delete(task));
  }

  #killWorker(slot: WorkerSlot, restartAfterMs: number): void {
    const proc = slot.process!;
    slot.state = "down";
    const record = this.#record({ kind: "worker_kill", target: slot.name, pid: proc.pid });
    proc.kill("SIGKILL");
    this.#recover(`restarting ${slot.name}`, async () => {
      await proc.exited;
      await sleep(restartAfterMs);
      await this.#cluster.startWorker(slot);
      record.endedAt = Date.now();
      record.newPid = slot.process!.pid;
      this.#log(`${slot.name} restarted on port ${slot.port} (pid ${record.newPid})`);
    });
  }

  #freezeWorker(slot: WorkerSlot, forMs: number): void {
    const proc = slot.process!;
    slot.state = "frozen";
    const record = this.#record({ kind: "worker_freeze", target: slot.name, pid: proc.pid });
    proc.freeze();
    this.#recover(`thawing ${slot.name}`, async () => {
      await sleep(forMs);
      proc.thaw();
      record.endedAt = Date.now();
      slot.state = "up";
      this.#log(`${slot.name} thawed (pid ${proc.pid})`);
    });
  }

  #cut(slot: DispatcherSlot): void {
    this.#record({ kind: "connection_cut", target: slot.name });
    for (const proxy of slot.proxies) proxy.cut();
    slot.quietSince = Date.now();
  }

  #blackhole(slot: DispatcherSlot, forMs: number): void {
    const record = this.#record({ kind: "connection_blackhole", target: slot.name });
    slot.link = "blackholed";
    for (const proxy of slot.proxies) proxy.blackhole();
    this.#recover(`restoring ${slot.name}'s link`, async () => {
      await sleep(forMs);
      for (const proxy of slot.proxies) proxy.restore();
      record.endedAt = slot.quietSince = Date.now();
      slot.link = "ok";
      this.#log(`${slot.name}'s link restored`);
    });
  }

  #killDispatcher(slot: DispatcherSlot, restartAfterMs: number): void {
    const child = slot.child!;
    slot.state = "down";
    const record = this.#record({ kind: "dispatcher_kill", target: slot.name, pid: child.pid, incarnation: slot.incarnation });
    child.kill("SIGKILL");
    this.#recover(`restarting ${slot.name}`, async () => {
      await child.exited;
      await sleep(restartAfterMs);
      await this.#cluster.startDispatcher(slot);
      record.endedAt = slot.quietSince = Date.now();
      record.newPid = slot.child!.pid;
      this.#log(`${slot.name} restarted (pid ${record.newPid}, incarnation ${slot.incarnation})`);
    });
  }

  /**
   * A node fault, once every node is up: `node_kill` (target -1: the job queue's leader) SIGKILLs
   * the node and, after `durationMs`, restarts it on its data (it rejoins the cluster); `node_freeze`
   * SIGSTOPs it for `durationMs`.
   */
  async #tryNodeFault(planned: PlannedFault): Promise<boolean> {
    const brokers = this.#cluster.options.brokers;
    const nodes = this.#cluster.nodes;
    if (!brokers || nodes.length === 0 || !nodes.every((n) => n.state === "up")) return false;
    let index = planned.target;
    let note = "";
    if (index < 0) {
      const leader = await brokers.queueLeader(this.#cluster.options.queue);
      index = leader ?? 0;
      note = leader === undefined ? "leader unknown: node 0" : "the job queue's leader";
    }
    const slot = nodes[index % nodes.length]!;
    const pid = brokers.node(slot.index).pid;
    if (planned.kind === "node_kill") {
      slot.state = "down";
      const record = this.#record({ kind: "node_kill", target: slot.name, ...(pid === undefined ? {} : { pid }), ...(note ? { note } : {}) });
      await brokers.kill(slot.index);
      this.#recover(`restarting ${slot.name}`, async () => {
        await sleep(planned.durationMs);
        const restarting = Date.now();
        await brokers.restart(slot.index);
        record.endedAt = Date.now();
        record.newPid = brokers.node(slot.index).pid;
        slot.state = "up";
        this.#log(`${slot.name} restarted and rejoined in ${((record.endedAt - restarting) / 1000).toFixed(1)} s (pid ${record.newPid})`);
      });
    } else {
      slot.state = "frozen";
      const record = this.#record({ kind: "node_freeze", target: slot.name, ...(pid === undefined ? {} : { pid }), ...(note ? { note } : {}) });
      brokers.freeze(slot.index);
      this.#recover(`thawing ${slot.name}`, async () => {
        await sleep(planned.durationMs);
        brokers.thaw(slot.index);
        record.endedAt = Date.now();
        slot.state = "up";
        this.#log(`${slot.name} thawed`);
      });
    }
    return true;
  }
}
