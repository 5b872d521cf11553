import { EventEmitter } from "eventemitter3";
import { OrchestratorError, invalidArgument } from "../errors.ts";
import type { HealthTarget } from "../health/types.ts";
import { abortReason, cancelError, delay, raceSignal, throwIfAborted, waitSignal } from "../signals.ts";
import { MAX_TIMER_MS } from "../timers.ts";
import type { HealthStatus, TransportState, WorkerTransport } from "../transport/types.ts";
import {
  checkBoolean, checkFunction, checkInteger, checkKnownKeys, checkLabels, checkNumber, checkObject, checkSignal, checkString, knownKeys, optional,
} from "../validate.ts";
import { emitSafely, reportListenerError } from "../events.ts";
import { matches, ShapeIndex, type View } from "./shape-index.ts";
import { type Logger, logSafely, resolveLogger } from "../telemetry/logger.ts";
import { observePool } from "../telemetry/pool-telemetry.ts";
import { resolveTelemetry } from "../telemetry/telemetry.ts";
import { backoffDelay } from "../timers.ts";
import type { WorkerDescription } from "../transport/types.ts";
import { narrow, probe } from "./admission.ts";
import type { Admitted, Requested } from "./admission.ts";
import type {
  AvailableOptions, WorkerPoolOptions, JobRequirements, Lease, RemoveWorkerOptions, WorkerInfo, WorkerOptions, WorkerPoolEvents, WorkerState,
} from "./types.ts";

const poolOptionKeys = knownKeys<WorkerPoolOptions>()(["logger", "telemetry"], true);
const workerOptionKeys = knownKeys<WorkerOptions>()(["admission", "id", "jobTypes", "labels", "slots", "transport"], true);

interface WorkerRecord {
  readonly id: string;
  readonly transport: WorkerTransport;
  /** What the pool was told (limits and requirements); what it uses comes from the worker once admitted. */
  readonly requested: Requested;
  slots: number;
  labels: Readonly<Record<string, string>>;
  jobTypes: ReadonlySet<string> | undefined;
  jobTypeList: readonly string[] | undefined;
  /** Assigned only by `#setState`. */
  state: WorkerState;
  /** Its session opened and its first check passed (at once with `admission: "trust"`). */
  admitted: boolean;
  /** False from a `lost` report of its transport until it is admitted again on `ready`. */
  connected: boolean;
  /** Why it is not leasable (joining, unhealthy, saturated), in words; undefined while it serves. */
  reason: string | undefined;
  /** Slots held on the worker by handlers that were aborted and have not returned. */
  stuck: number;
  /** What it announced when last admitted. */
  announced: WorkerDescription | undefined;
  /** Aborts the admission in progress (on removal). */
  admission: AbortController | undefined;
  unwatchSlots: (() => void) | undefined;
  healthy: boolean;
  draining: boolean;
  removed: boolean;
  busySlots: number;
  /** Lease order: lower was leased longer ago; never-leased workers are lowest, in the order they were added. */
  order: number;
  lastLeasedAt: number | undefined;
  /** Whether it sits in the `free` heaps of its views (serving, with a free slot). */
  listed: boolean;
  /** What it adds to the pool's `capacity` and `free` totals right now. */
  countedCapacity: number;
  countedFree: number;
  readonly leases: Map<Lease, AbortController>;
  readonly views: Set<View<WorkerRecord>>;
  unwatch: (() => void) | undefined;
  /** Set when a drained removal is pending; settles as `closed` does. */
  removal: { promise: Promise<void>; resolve: (closed: Promise<void>) => void } | undefined;
  /** The transport's close, once removed. */
  closed: Promise<void> | undefined;
}

interface Waiter {
  /** The job shape waited for; undefined waits for any free slot. */
  readonly view: View<WorkerRecord> | undefined;
  /** The one worker waited for (a job's required worker); undefined: any of the view's. */
  readonly workerId: string | undefined;
  done(error?: OrchestratorError): void;
}

/** How long one admission attempt (session, description, first check) may take. */
const ADMISSION_TIMEOUT_MS = 30_000;
/** Backoff between admission attempts of a worker that cannot be reached. */
const ADMISSION_BACKOFF = { baseMs: 250, maxMs: 10_000, factor: 2, jitter: 0.2 };

/**
 * The workers an orchestrator can use, their slots and states, and the leases of those slots.
 *
 * A worker is added with a transport, a number of `slots`, `labels` and optionally the
 * `jobTypes` it runs, and starts `idle`. `acquire(job)` leases a free slot of a healthy
 * (`idle`/`busy`) worker that runs the job's type and carries each of its required labels:
 * among those, the one whose carried `preferred` labels weigh most, then the least recently
 * leased (a worker with several slots goes to the back of the line after each lease). A job
 * naming a `worker` (sticky assignment) gets that worker when it has a free slot; with
 * `required`, only that worker. Health is changed only through `report()`, which the
 * {@link HealthMonitor} calls; a worker that goes unhealthy, or is removed without drain, has
 * the signals of its leases aborted with `worker_lost`.
 *
 * Cost, for a pool of n workers: the pool keeps, per job shape (type + required labels +
 * preferred labels) in use, a heap of the matching workers with a free slot ordered by score
 * then last lease. A sticky `worker` costs one map lookup more. `acquire()` and
 * `release()` cost O(v · log n), where v is the number of job shapes the leased worker matches
 * (bounded by the shapes in use, at most 256 indexed, and independent of n); the first
 * `acquire()`/`canRun()` of a new shape builds its index in O(n) once. `onAvailable()` waiters
 * are checked only when a worker goes from no free slot to a free one.
 *
 * @example
 * ```ts
 * const pool = new WorkerPool();
 * pool.add({ id: "w1", transport, slots: 4, labels: { gpu: "a100" } });
 * await pool.onAvailable({ type: "train", labels: { gpu: "a100" } }, { signal });
 * const lease = pool.acquire({ type: "train", labels: { gpu: "a100" } });
 * ```
 */
export class WorkerPool extends EventEmitter<WorkerPoolEvents> implements HealthTarget {
  readonly #workers = new Map<string, WorkerRecord>();
  /** The job shapes in use and their free-slot heaps (see shape-index.ts). */
  readonly #shapes = new ShapeIndex<WorkerRecord>(() => this.#workers.values());
  readonly #waiters = new Set<Waiter>();
  readonly #watchers = new Set<{ listener: (workerId: string, state: TransportState) => void }>();
  readonly #onListenerError = (error: OrchestratorError): void => reportListenerError(this as unknown as EventEmitter, error, this.#logger);
  #capacity = 0;
  #free = 0;
  #added = 0;
  #leased = 0;
  #closing: Promise<void> | undefined;
  readonly #logger: Logger | undefined;
  readonly #unobserve: () => void;

  /**
   * Checks the options; does no I/O. The pool's gauges (workers and slots by state) are read
   * from it at each collection until `close()`.
   * @throws {OrchestratorError} `invalid_argument` naming the first bad option.
   */
  constructor(options: WorkerPoolOptions = {}) {
    super();
    const o = checkObject("options", options);
    checkKnownKeys("the WorkerPool options", o, poolOptionKeys);
    this.#logger = resolveLogger(o.logger);
    this.#unobserve = observePool(resolveTelemetry(o.telemetry), () => this.#workers.values());
  }

  /** How many workers are in the pool, in any state but `removed`. */
  get size(): number {
    return this.#workers.size;
  }

  /** The slots of healthy (`idle`/`busy`) workers: how many jobs a dispatcher may hold at once. */
  get capacity(): number {
    return this.#capacity;
  }

  /** The slots of healthy (`idle`/`busy`) workers that are not leased. */
  get freeSlots(): number {
    return this.#free;
  }

  /**
   * Adds a worker. With `admission: "announce"` (the default) it starts `joining`: the pool opens
   * its session (`transport.connect()`, or `describe()`) and runs its first health check, then
   * admits it with what it announced (narrowed by `slots`, `jobTypes` and `labels`) as `idle`.
   * Until then it gets no lease; when it cannot be reached it stays `joining` with the reason in
   * `list()` and a `workerUnavailable` event, and is tried again with backoff. With
   * `admission: "trust"` it is `idle` at once, as the options say.
   * @throws {OrchestratorError} `invalid_argument` naming the bad option, or when `id` is already
   * in the pool; `precondition_failed` after `close()`.
   */
  add(options: WorkerOptions): WorkerInfo {
    if (this.#closing) throw new OrchestratorError("precondition_failed", "the worker pool is closed");
    const spec = checkObject("options", options);
    checkKnownKeys("the options of WorkerPool.add()", spec, workerOptionKeys);
    const id = checkString("id", spec.id);
    if (this.#workers.has(id)) throw invalidArgument("id", "an id not already in the pool", id);
    const transport = checkTransport(spec.transport);
    const requestedSlots = optional<number | undefined>(spec.slots, undefined, (value) => checkInteger("slots", value, 1));
    const labels = Object.freeze(optional(spec.labels, {}, (value) => checkLabels("labels", value)));
    const jobTypeList = spec.jobTypes === undefined ? undefined : Object.freeze(checkJobTypes(spec.jobTypes));
    const admission = optional(spec.admission, "announce", (value) => {
      if (value !== "announce" && value !== "trust") throw invalidArgument("admission", '"announce" or "trust"', value);
      return value;
    });
    const trusted = admission === "trust";
    const worker: WorkerRecord = {
      id, transport, slots: requestedSlots ?? 1, labels, jobTypeList,
      requested: { slots: requestedSlots, labels, jobTypes: jobTypeList },
      jobTypes: jobTypeList === undefined ? undefined : new Set(jobTypeList),
      state: trusted ? "idle" : "joining", admitted: trusted, connected: true, reason: trusted ? undefined : "connecting",
      stuck: 0, announced: undefined, admission: undefined, unwatchSlots: undefined,
      healthy: true, draining: false, removed: false, busySlots: 0,
      order: ++this.#added - Number.MAX_SAFE_INTEGER, lastLeasedAt: undefined, listed: false,
      countedCapacity: 0, countedFree: 0, leases: new Map(), views: new Set(),
      unwatch: undefined, removal: undefined, closed: undefined,
    };
    this.#workers.set(id, worker);
    for (const view of this.#shapes.values()) {
      if (!matches(worker, view)) continue;
      worker.views.add(view);
      view.members += 1;
    }
    try {
      if (transport.watch) worker.unwatch = transport.watch((state) => this.#onTransportState(worker, state));
      if (transport.watchSlots) worker.unwatchSlots = transport.watchSlots((stuck) => this.#onStuck(worker, stuck));
    } catch (error) {
      this.#onListenerError(OrchestratorError.from(error));
    }
    this.#setState(worker);
    const info = snapshot(worker);
    this.#emit("workerAdded", { worker: info });
    if (!trusted) void this.#admit(worker);
    return info;
  }

  /**
   * Removes a worker and closes its transport. Without `drain` its leases are aborted with
   * `worker_lost` at once; with `drain` it turns `draining` and is removed when its last lease is
   * released (or when `signal` fires). Calls during a pending drained removal share its promise.
   * @throws {OrchestratorError} `not_found` for an id not in the pool; `invalid_argument` for bad
   * options; the transport's close error, after the worker is removed.
   */
  async remove(id: string, options: RemoveWorkerOptions = {}): Promise<void> {
    const spec = checkObject("options", options);
    const drain = optional(spec.drain, false, (value) => checkBoolean("drain", value));
    const signal = checkSignal("signal", spec.signal);
    const worker = this.#require(id);
    if (!drain || worker.busySlots === 0 || signal?.aborted) return this.#removeNow(worker, "removed");
    if (worker.removal === undefined) {
      let resolve!: (closed: Promise<void>) => void;
      const promise = new Promise<void>((settle) => (resolve = settle));
      worker.removal = { promise, resolve };
    }
    if (!worker.draining) {
      worker.draining = true;
      this.#setState(worker, "removing once its leases end");
    }
    if (!signal) return worker.removal.promise;
    const onAbort = (): void => void this.#removeNow(worker, "drain aborted").catch(() => {});
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      await worker.removal.promise;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  /**
   * Stops giving the worker new leases; it finishes those it holds and stays `draining` (it is
   * not removed). Idempotent.
   * @throws {OrchestratorError} `not_found` for an id not in the pool.
   */
  drain(id: string): void {
    const worker = this.#require(id);
    if (worker.draining) return;
    worker.draining = true;
    this.#setState(worker, "drain requested");
  }

  /**
   * Ends a `drain()`: the worker gets leases again (it turns `idle` or `busy`, or stays as its
   * health says). Idempotent; does nothing for a worker that is not draining.
   * @throws {OrchestratorError} `not_found` for an id not in the pool; `precondition_failed` for a
   * worker being removed (`remove(id, { drain: true })`), which no undrain brings back.
   */
  undrain(id: string): void {
    const worker = this.#require(id);
    if (!worker.draining) return;
    if (worker.removal !== undefined) throw new OrchestratorError("precondition_failed", `worker ${id} is being removed from the pool`, { details: { workerId: id } });
    worker.draining = false;
    this.#setState(worker, "undrain requested");
  }

  /** A snapshot of one worker, or undefined when it is not in the pool. */
  get(id: string): WorkerInfo | undefined {
    const worker = this.#workers.get(id);
    return worker && snapshot(worker);
  }

  /** Snapshots of every worker in the pool, in the order they were added. */
  list(): WorkerInfo[] {
    return Array.from(this.#workers.values(), snapshot);
  }

  /**
   * Leases a free slot of a healthy worker that can run `job`: its `worker` when that one has a
   * free slot (with `worker.required`, only that one), else the one with the highest score of
   * `preferred` labels, then the least recently leased. Returns undefined when none has a free
   * slot right now (see `onAvailable`). Synchronous.
   * @throws {OrchestratorError} `invalid_argument` for a malformed `job`.
   */
  acquire(job: JobRequirements): Lease | undefined {
    const view = this.#shapes.viewOf(job);
    const worker = job.worker === undefined ? view.free.peek() : this.#pick(view, job.worker);
    if (worker === undefined) return undefined;
    const controller = new AbortController();
    let released = false;
    const lease: Lease = Object.freeze({
      workerId: worker.id,
      transport: worker.transport,
      signal: controller.signal,
      release: (): void => {
        if (released) return;
        released = true;
        this.#release(worker, lease);
      },
    });
    worker.leases.set(lease, controller);
    worker.busySlots += 1;
    worker.order = ++this.#leased;
    worker.lastLeasedAt = Date.now();
    this.#setState(worker);
    return lease;
  }

  /**
   * Whether some worker in the pool, in any state, runs `job`'s type and carries its labels (with
   * a required `worker`: whether that worker is in the pool and does): when false, waiting for a
   * slot is pointless until a fitting worker is added.
   * @throws {OrchestratorError} `invalid_argument` for a malformed `job`.
   */
  canRun(job: JobRequirements): boolean {
    const view = this.#shapes.viewOf(job);
    if (job.worker === undefined || !checkWanted(job.worker).required) return view.members > 0;
    return this.#workers.get(job.worker.id)?.views.has(view) === true;
  }

  /**
   * Resolves once a healthy worker that can run `job` (any worker when `job` is omitted; its
   * `worker` when required) has a free slot: at once when one has already. Nothing is reserved: call `acquire()` next, and
   * wait again if another caller took the slot first.
   * @throws {OrchestratorError} the signal's reason; `deadline_exceeded` after `timeoutMs`;
   * `canceled` (reason `shutdown`) when the pool is or gets closed; `invalid_argument`.
   */
  async onAvailable(job?: JobRequirements, options: AvailableOptions = {}): Promise<void> {
    const view = job === undefined ? undefined : this.#shapes.viewOf(job);
    const wanted = job?.worker === undefined ? undefined : checkWanted(job.worker);
    const workerId = wanted?.required === true ? wanted.id : undefined;
    const spec = checkObject("options", options);
    const signal = checkSignal("signal", spec.signal);
    const timeoutMs = optional<number | undefined>(spec.timeoutMs, undefined, (value) => checkNumber("timeoutMs", value, 0, MAX_TIMER_MS));
    throwIfAborted(signal);
    if (this.#closing) throw cancelError("shutdown", "the worker pool is closed");
    if (workerId !== undefined) {
      const worker = this.#workers.get(workerId);
      if (worker !== undefined && (view as View<WorkerRecord>).free.has(worker)) return;
    } else if (view ? view.free.size > 0 : this.#free > 0) return;
    const wait = waitSignal({ signal, timeoutMs }, "waiting for a free worker slot");
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => waiter.done(abortReason(wait.signal as AbortSignal));
      const waiter: Waiter = {
        view,
        workerId,
        done: (error) => {
          if (!this.#waiters.delete(waiter)) return;
          wait.signal?.removeEventListener("abort", onAbort);
          wait.dispose();
          if (error) reject(error);
          else resolve();
        },
      };
      this.#waiters.add(waiter);
      wait.signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /**
   * The ids of every admitted worker, `unhealthy` and `draining` ones included (HealthTarget); a
   * `joining` worker is checked by its admission.
   */
  workerIds(): Iterable<string> {
    const ids: string[] = [];
    for (const worker of this.#workers.values()) if (worker.admitted) ids.push(worker.id);
    return ids;
  }

  /**
   * Runs the worker's transport health check (HealthTarget). Resolves only when it answers
   * `serving`; the signal bounds the wait even when the transport ignores it.
   * @throws {OrchestratorError} `unavailable` when it answers `not_serving` or cannot be reached,
   * the signal's reason when it fires, `not_found` for an id not in the pool.
   */
  async check(workerId: string, options: { signal: AbortSignal }): Promise<void> {
    const worker = this.#require(workerId);
    const signal = options?.signal;
    let status: unknown;
    try {
      status = await raceSignal(Promise.resolve().then(() => worker.transport.check({ signal })), signal);
    } catch (error) {
      throw OrchestratorError.from(error, "unavailable");
    }
    if (status !== "serving") {
      throw new OrchestratorError("unavailable", `worker ${workerId} answered its health check with ${String(status)}`);
    }
  }

  /**
   * The worker's health as its transport's live connection vouches for it (HealthTarget; see
   * `WorkerTransport.vouchedHealth`); `undefined` for an unknown id, a transport without it, or
   * when nothing vouches now. Never throws.
   */
  vouched(workerId: string): HealthStatus | undefined {
    const transport = this.#workers.get(workerId)?.transport;
    try {
      return transport?.vouchedHealth?.();
    } catch {
      // A transport that cannot tell is asked with check() instead.
      return undefined;
    }
  }

  /**
   * Sets a worker's health (HealthTarget): the only way a worker becomes `unhealthy` or healthy
   * again. Going unhealthy aborts the signals of its leases with `worker_lost`; they keep their
   * slots until released. Unknown ids and reports that change nothing are ignored.
   * @throws {OrchestratorError} `invalid_argument` unless `healthy` is a boolean and `reason` a string.
   */
  report(workerId: string, healthy: boolean, reason?: string): void {
    checkBoolean("healthy", healthy);
    if (reason !== undefined && typeof reason !== "string") throw invalidArgument("reason", "a string", reason);
    const worker = this.#workers.get(workerId);
    if (worker === undefined || worker.healthy === healthy) return;
    worker.healthy = healthy;
    this.#setState(worker, reason);
    if (healthy) return;
    const error = cancelError("worker_lost", `worker ${workerId} is unhealthy${reason ? `: ${reason}` : ""}`);
    for (const controller of [...worker.leases.values()]) controller.abort(error);
  }

  /**
   * Calls `listener(workerId, state)` whenever a worker's transport reports its connection
   * `ready` or `lost` through its optional `watch()` (HealthTarget). Returns the unsubscribe.
   */
  watch(listener: (workerId: string, state: TransportState) => void): () => void {
    const entry = { listener: checkFunction<typeof listener>("listener", listener) };
    this.#watchers.add(entry);
    return () => {
      this.#watchers.delete(entry);
    };
  }

  /**
   * Removes every worker (aborting their leases with `worker_lost`), closes their transports and
   * rejects pending `onAvailable()` waits with `canceled` (reason `shutdown`). Idempotent.
   * @throws {OrchestratorError} the first transport close error, after all were closed.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #close(): Promise<void> {
    this.#unobserve();
    const error = cancelError("shutdown", "the worker pool was closed");
    for (const waiter of [...this.#waiters]) waiter.done(error);
    const closed = await Promise.allSettled(Array.from(this.#workers.values(), (worker) => this.#removeNow(worker, "pool closed")));
    const failure = closed.find((result) => result.status === "rejected");
    if (failure) throw failure.reason;
  }

  /** Emits so that a throwing listener neither skips the others nor breaks this object's state. */
  #emit<K extends keyof WorkerPoolEvents>(event: K, ...args: WorkerPoolEvents[K]): void {
    emitSafely(this as unknown as EventEmitter, this.#onListenerError, event, ...args);
  }

  #require(id: string): WorkerRecord {
    const worker = this.#workers.get(id);
    if (worker === undefined) throw new OrchestratorError("not_found", `worker ${String(id)} is not in the pool`, { details: { workerId: id } });
    return worker;
  }

  /**
   * Sticky choice: the wanted worker when it has a free slot and qualifies for the view; else,
   * unless it is required, the view's best.
   */
  #pick(view: View<WorkerRecord>, wanted: { id: string; required?: boolean }): WorkerRecord | undefined {
    // Checked in place (no copy): this is on every sticky job's acquire.
    if (typeof wanted !== "object" || wanted === null || typeof wanted.id !== "string" || wanted.id === "" || (wanted.required !== undefined && typeof wanted.required !== "boolean")) {
      checkWanted(wanted);
    }
    const chosen = this.#workers.get(wanted.id);
    if (chosen !== undefined && view.free.has(chosen)) return chosen;
    return wanted.required === true ? undefined : view.free.peek();
  }

  #release(worker: WorkerRecord, lease: Lease): void {
    // A removed worker's leases were dropped with it: nothing to give back.
    if (!worker.leases.delete(lease)) return;
    worker.busySlots -= 1;
    this.#setState(worker);
    if (worker.busySlots === 0 && worker.removal !== undefined && !worker.removed) void this.#removeNow(worker, "drained").catch(() => {});
  }

  /** Takes the worker out at once; returns its transport's close (the same promise on later calls). */
  #removeNow(worker: WorkerRecord, reason: string): Promise<void> {
    if (worker.closed) return worker.closed;
    worker.removed = true;
    // Out of the books before any listener runs, so canRun() and size already leave it out.
    this.#workers.delete(worker.id);
    for (const view of worker.views) view.members -= 1;
    this.#setState(worker, reason);
    worker.views.clear();
    try {
      worker.unwatch?.();
    } catch (error) {
      this.#onListenerError(OrchestratorError.from(error));
    }
    worker.unwatch = undefined;
    try {
      worker.unwatchSlots?.();
    } catch (error) {
      this.#onListenerError(OrchestratorError.from(error));
    }
    worker.unwatchSlots = undefined;
    worker.admission?.abort(cancelError("shutdown", `worker ${worker.id} was removed from the pool`));
    const controllers = [...worker.leases.values()];
    worker.leases.clear();
    worker.busySlots = 0;
    const error = cancelError("worker_lost", `worker ${worker.id} was removed from the pool`);
    for (const controller of controllers) controller.abort(error);
    worker.closed = Promise.resolve()
      .then(() => worker.transport.close())
      .then(
        () => undefined,
        (cause: unknown) => {
          throw OrchestratorError.from(cause);
        },
      );
    worker.removal?.resolve(worker.closed);
    this.#emit("workerRemoved", { worker: snapshot(worker) });
    return worker.closed;
  }

  /**
   * The one place a worker's state changes: derives it from the worker's flags and slots, keeps
   * the free-slot heaps and the pool's totals in step, wakes waiters, and announces the change.
   * Every bookkeeping step is done before any listener runs, so a listener may call back in.
   */
  #setState(worker: WorkerRecord, reason?: string): void {
    const saturated = worker.stuck > 0 && worker.busySlots + worker.stuck >= worker.slots;
    const to: WorkerState = worker.removed
      ? "removed"
      : !worker.admitted
        ? "joining"
        : !worker.healthy || !worker.connected
          ? "unhealthy"
          : worker.draining
            ? "draining"
            : saturated
              ? "saturated"
              : worker.busySlots > 0
                ? "busy"
                : "idle";
    const serving = to === "idle" || to === "busy" || to === "saturated";
    const usable = Math.max(0, worker.slots - worker.stuck);
    const listed = serving && worker.busySlots < usable;
    // push() also re-positions a worker already listed, whose lease order just changed.
    if (listed) for (const view of worker.views) view.free.push(worker);
    else if (worker.listed) for (const view of worker.views) view.free.delete(worker);
    const becameFree = listed && !worker.listed;
    worker.listed = listed;

    const capacity = serving ? usable : 0;
    const free = serving ? Math.max(0, usable - worker.busySlots) : 0;
    const totalsChanged = capacity !== worker.countedCapacity || free !== worker.countedFree;
    this.#capacity += capacity - worker.countedCapacity;
    this.#free += free - worker.countedFree;
    worker.countedCapacity = capacity;
    worker.countedFree = free;

    const from = worker.state;
    worker.state = to;
    if (reason !== undefined && to !== "idle" && to !== "busy") worker.reason = reason;
    else if (to === "idle" || to === "busy" || to === "draining" || to === "removed") worker.reason = undefined;
    if (becameFree) {
      for (const waiter of this.#waiters) {
        if (waiter.workerId !== undefined && waiter.workerId !== worker.id) continue;
        if (waiter.view === undefined || matches(worker, waiter.view)) waiter.done();
      }
    }
    if (from !== to) {
      const change = reason === undefined ? { workerId: worker.id, from, to } : { workerId: worker.id, from, to, reason };
      if (this.#logger !== undefined) logSafely(this.#logger, to === "unhealthy" ? "warn" : "info", change, `worker ${worker.id} ${from} -> ${to}`);
      this.#emit("workerStateChanged", change);
    }
    if (totalsChanged) this.#emit("capacityChanged", { capacity: this.#capacity, free: this.#free });
  }

  /**
   * Connection loss alone takes an admitted worker out (its leases are aborted with `worker_lost`),
   * whether or not a health monitor runs; when the connection is back, it is admitted again.
   */
  #onTransportState(worker: WorkerRecord, state: TransportState): void {
    if (this.#workers.get(worker.id) !== worker) return;
    if (worker.admitted && state === "lost" && worker.connected) {
      worker.connected = false;
      this.#setState(worker, "its connection was lost");
      const error = cancelError("worker_lost", `worker ${worker.id} lost its connection`);
      for (const controller of [...worker.leases.values()]) controller.abort(error);
    } else if (worker.admitted && state === "ready" && !worker.connected && worker.admission === undefined) {
      void this.#admit(worker);
    }
    this.#forwardWatch(worker, state);
  }

  #onStuck(worker: WorkerRecord, stuck: number): void {
    if (this.#workers.get(worker.id) !== worker || !Number.isSafeInteger(stuck) || stuck < 0 || stuck === worker.stuck) return;
    worker.stuck = stuck;
    this.#setState(worker, stuck > 0 ? `${stuck} of its ${worker.slots} slots are held by handlers that were aborted and have not returned` : undefined);
  }

  /**
   * Opens the worker's session, reads what it announces and runs its first check, until it passes
   * or the worker is removed; then admits it (again, after a lost connection) with what it
   * announced, narrowed by what the pool was told.
   */
  async #admit(worker: WorkerRecord): Promise<void> {
    const controller = new AbortController();
    worker.admission = controller;
    let lastReason: string | undefined;
    try {
      for (let attempt = 1; !worker.removed; attempt++) {
        let admitted: Admitted;
        let description: WorkerDescription;
        try {
          // A timer cleared when the attempt ends: AbortSignal.timeout would fire ADMISSION_TIMEOUT_MS
          // later for every admitted worker anyway, a burst of aborts after a large pool joins.
          const attempt = waitSignal({ signal: controller.signal, timeoutMs: ADMISSION_TIMEOUT_MS }, `admission of worker ${worker.id}`);
          try {
            description = await probe(worker.id, worker.transport, attempt.signal!);
          } finally {
            attempt.dispose();
          }
          admitted = narrow(worker.id, description, worker.requested);
        } catch (cause) {
          if (worker.removed) return;
          const error = OrchestratorError.from(cause, "unavailable");
          const reason = error.rawMessage;
          if (reason !== lastReason) {
            lastReason = reason;
            if (worker.admitted) this.#setState(worker, `reconnecting: ${reason}`);
            else {
              worker.reason = reason;
              this.#emit("workerStateChanged", { workerId: worker.id, from: worker.state, to: worker.state, reason });
            }
            this.#emit("workerUnavailable", { workerId: worker.id, reason, error });
          }
          await delay(backoffDelay(attempt, ADMISSION_BACKOFF), { signal: controller.signal }).catch(() => {});
          continue;
        }
        if (worker.removed) return;
        this.#apply(worker, admitted, description);
        return;
      }
    } finally {
      if (worker.admission === controller) worker.admission = undefined;
    }
  }

  /** Takes what the worker announced (narrowed) as its slots, labels and job types, and lets it serve. */
  #apply(worker: WorkerRecord, admitted: Admitted, description: WorkerDescription): void {
    worker.announced = description;
    worker.slots = admitted.slots;
    worker.labels = admitted.labels;
    worker.jobTypeList = admitted.jobTypes;
    worker.jobTypes = admitted.jobTypes === undefined ? undefined : new Set(admitted.jobTypes);
    // Its job shapes may have changed: index it again.
    for (const view of worker.views) {
      view.members -= 1;
      if (worker.listed) view.free.delete(worker);
    }
    worker.views.clear();
    worker.listed = false;
    for (const view of this.#shapes.values()) {
      if (!matches(worker, view)) continue;
      worker.views.add(view);
      view.members += 1;
    }
    worker.admitted = true;
    worker.connected = true;
    this.#setState(worker, "admitted");
    this.#emit("workerAdmitted", { worker: snapshot(worker), description });
  }

  #forwardWatch(worker: WorkerRecord, state: TransportState): void {
    if (this.#workers.get(worker.id) !== worker) return;
    for (const { listener } of [...this.#watchers]) {
      try {
        listener(worker.id, state);
      } catch (error) {
        this.#onListenerError(OrchestratorError.from(error));
      }
    }
  }
}

function snapshot(worker: WorkerRecord): WorkerInfo {
  return Object.freeze({
    id: worker.id,
    state: worker.state,
    slots: worker.slots,
    busySlots: worker.busySlots,
    labels: worker.labels,
    ...(worker.jobTypeList === undefined ? {} : { jobTypes: worker.jobTypeList }),
    ...(worker.lastLeasedAt === undefined ? {} : { lastLeasedAt: worker.lastLeasedAt }),
    ...(worker.stuck === 0 ? {} : { stuckSlots: worker.stuck }),
    ...(worker.reason === undefined ? {} : { reason: worker.reason }),
    ...(worker.announced === undefined ? {} : { description: worker.announced }),
  });
}

function checkTransport(value: unknown): WorkerTransport {
  const methods = ["execute", "check", "describe", "close"] as const;
  const transport = value as Record<string, unknown> | null;
  if (typeof value !== "object" || value === null || methods.some((name) => typeof transport?.[name] !== "function")) {
    throw invalidArgument("transport", "a WorkerTransport (an object with execute, check, describe and close methods)", value);
  }
  return value as WorkerTransport;
}

function checkWanted(value: unknown): { id: string; required: boolean } {
  const o = checkObject("job.worker", value);
  return { id: checkString("job.worker.id", o.id), required: o.required === undefined ? false : checkBoolean("job.worker.required", o.required) };
}

function checkJobTypes(value: unknown): string[] {
  if (!Array.isArray(value) || value.length === 0) throw invalidArgument("jobTypes", "a non-empty array of job type names", value);
  return value.map((type, index) => checkString(`jobTypes[${index}]`, type));
}
