import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { OrchestratorError } from "../../src/errors.ts";
import { cancelReasonOf } from "../../src/signals.ts";
import { IndexedHeap } from "../../src/worker-pool/indexed-heap.ts";
import type { Lease, WorkerOptions, WorkerPoolEvents } from "../../src/worker-pool/types.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { FakeTransport } from "../helpers/fake-transport.ts";

function poolWith(...workers: Array<Omit<WorkerOptions, "transport"> & { transport?: FakeTransport }>) {
  const pool = new WorkerPool();
  const transports = new Map<string, FakeTransport>();
  for (const worker of workers) {
    const transport = worker.transport ?? new FakeTransport();
    transports.set(worker.id, transport);
    pool.add({ admission: "trust", ...worker, transport });
  }
  return { pool, transports };
}

function take(pool: WorkerPool, type = "build", labels?: Record<string, string>): Lease {
  const lease = pool.acquire(labels ? { type, labels } : { type });
  if (!lease) throw new Error(`no lease for ${type}`);
  return lease;
}

/** Records every event of the pool in order. */
function record(pool: WorkerPool) {
  const seen: Array<[keyof WorkerPoolEvents, unknown]> = [];
  for (const event of ["workerAdded", "workerRemoved", "workerStateChanged", "capacityChanged", "error"] as const) {
    pool.on(event, (payload: unknown) => seen.push([event, payload]));
  }
  return seen;
}

/** Settles pending promise callbacks (fake timers do not advance the microtask queue on their own). */
const flush = () => new Promise<void>((resolve) => setImmediate(resolve));

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
});
afterEach(() => {
  vi.useRealTimers();
});

describe("WorkerPool adding and listing", () => {
  it("adds a worker idle with one slot by default and counts it in capacity and free slots", () => {
    const pool = new WorkerPool();
    const seen = record(pool);
    const info = pool.add({ admission: "trust", id: "w1", transport: new FakeTransport(), labels: { zone: "eu" } });
    expect(info).toEqual({ id: "w1", state: "idle", slots: 1, busySlots: 0, labels: { zone: "eu" } });
    expect(pool.size).toBe(1);
    expect(pool.capacity).toBe(1);
    expect(pool.freeSlots).toBe(1);
    expect(seen).toEqual([
      ["capacityChanged", { capacity: 1, free: 1 }],
      ["workerAdded", { worker: info }],
    ]);
    pool.add({ admission: "trust", id: "w2", transport: new FakeTransport(), slots: 3, jobTypes: ["build"] });
    expect(pool.capacity).toBe(4);
    expect(pool.list().map((worker) => [worker.id, worker.slots, worker.jobTypes])).toEqual([
      ["w1", 1, undefined],
      ["w2", 3, ["build"]],
    ]);
    expect(pool.get("w3")).toBeUndefined();
  });

  it.each([
    [{ id: "", transport: new FakeTransport() }, "`id`"],
    [{ transport: new FakeTransport() }, "`id`"],
    [{ id: "w1", transport: {} }, "`transport`"],
    [{ id: "w1", transport: new FakeTransport(), slots: 0 }, "Expected `slots` to be an integer >= 1, got `0` (number)"],
    [{ id: "w1", transport: new FakeTransport(), slots: 1.5 }, "`slots`"],
    [{ id: "w1", transport: new FakeTransport(), labels: { gpu: 1 } }, "`labels.gpu`"],
    [{ id: "w1", transport: new FakeTransport(), labels: ["a"] }, "`labels`"],
    [{ id: "w1", transport: new FakeTransport(), jobTypes: [] }, "`jobTypes`"],
    [{ id: "w1", transport: new FakeTransport(), jobTypes: ["build", 7] }, "`jobTypes[1]`"],
  ])("rejects bad worker options with invalid_argument naming the field (%#)", (options, text) => {
    const pool = new WorkerPool();
    const error = catchError(() => pool.add(options as WorkerOptions));
    expect(error.code).toBe("invalid_argument");
    expect(error.message).toContain(text);
    expect(pool.size).toBe(0);
  });

  it("rejects a duplicate id with invalid_argument naming `id`", () => {
    const { pool } = poolWith({ id: "w1" });
    const error = catchError(() => pool.add({ admission: "trust", id: "w1", transport: new FakeTransport() }));
    expect(error.code).toBe("invalid_argument");
    expect(error.message).toContain("Expected `id` to be an id not already in the pool");
  });

  it("rejects a malformed job with invalid_argument naming the field", () => {
    const { pool } = poolWith({ id: "w1" });
    expect(catchError(() => pool.acquire({} as never)).message).toContain("`job.type`");
    expect(catchError(() => pool.canRun({ type: "x", labels: { gpu: 3 as never } })).message).toContain("`job.labels.gpu`");
    expect(catchError(() => pool.acquire(null as never)).code).toBe("invalid_argument");
  });

  it("rejects a health report that is not a boolean with invalid_argument, changing nothing", () => {
    const { pool } = poolWith({ id: "w1" });
    expect(catchError(() => pool.report("w1", "no" as never)).message).toContain("Expected `healthy` to be a boolean");
    expect(catchError(() => pool.report("w1", false, 42 as never)).message).toContain("`reason`");
    expect(pool.get("w1")?.state).toBe("idle");
    expect(pool.capacity).toBe(1);
  });
});

describe("WorkerPool fair leasing", () => {
  it("leases the least recently leased worker first", () => {
    const { pool } = poolWith({ id: "a" }, { id: "b" }, { id: "c" });
    const first = [take(pool), take(pool), take(pool)];
    expect(first.map((lease) => lease.workerId)).toEqual(["a", "b", "c"]);
    expect(pool.acquire({ type: "build" })).toBeUndefined();
    // Released in the order c, a: a was leased longer ago, so it goes first although c came back first.
    first[2]?.release();
    first[0]?.release();
    expect(take(pool).workerId).toBe("a");
    expect(take(pool).workerId).toBe("c");
  });

  it("rotates over every worker when each lease is released at once", () => {
    const { pool } = poolWith({ id: "a" }, { id: "b" }, { id: "c" });
    const order: string[] = [];
    for (let i = 0; i < 7; i += 1) {
      const lease = take(pool);
      order.push(lease.workerId);
      lease.release();
    }
    expect(order).toEqual(["a", "b", "c", "a", "b", "c", "a"]);
  });

  it("sends a multi-slot worker to the back of the line after each lease", () => {
    const { pool } = poolWith({ id: "a", slots: 3 }, { id: "b", slots: 2 });
    const order = Array.from({ length: 5 }, () => take(pool).workerId);
    expect(order).toEqual(["a", "b", "a", "b", "a"]);
    expect(pool.acquire({ type: "build" })).toBeUndefined();
    expect(pool.get("a")).toMatchObject({ state: "busy", busySlots: 3 });
  });

  it("gives a newly added worker the next lease before workers already leased", () => {
    const { pool } = poolWith({ id: "a" }, { id: "b" });
    take(pool).release();
    pool.add({ admission: "trust", id: "c", transport: new FakeTransport() });
    expect([take(pool).workerId, take(pool).workerId, take(pool).workerId]).toEqual(["b", "c", "a"]);
  });

  it("records when a worker was last leased", () => {
    vi.setSystemTime(1_700_000_000_000);
    const { pool } = poolWith({ id: "a" });
    expect(pool.get("a")?.lastLeasedAt).toBeUndefined();
    take(pool);
    expect(pool.get("a")?.lastLeasedAt).toBe(1_700_000_000_000);
  });
});

describe("WorkerPool label and type matching", () => {
  const workers: Array<Omit<WorkerOptions, "transport">> = [
    { id: "gpu-eu", labels: { gpu: "a100", zone: "eu" } },
    { id: "gpu-us", labels: { gpu: "a100", zone: "us" } },
    { id: "cpu", labels: { zone: "eu" }, jobTypes: ["lint"] },
  ];

  it("leases only workers carrying every required label with the same value", () => {
    const { pool } = poolWith(...workers);
    expect(take(pool, "train", { gpu: "a100", zone: "us" }).workerId).toBe("gpu-us");
    expect(pool.acquire({ type: "train", labels: { gpu: "a100", zone: "us" } })).toBeUndefined();
    expect(take(pool, "train", { zone: "eu" }).workerId).toBe("gpu-eu");
    expect(pool.acquire({ type: "train", labels: { gpu: "t4" } })).toBeUndefined();
  });

  it("leases a worker with jobTypes only for those types, and one without jobTypes for any", () => {
    const { pool } = poolWith(...workers);
    expect(take(pool, "lint", { zone: "eu" }).workerId).toBe("gpu-eu");
    expect(take(pool, "lint", { zone: "eu" }).workerId).toBe("cpu");
    const { pool: other } = poolWith(...workers);
    other.acquire({ type: "train", labels: { zone: "eu" } });
    expect(other.acquire({ type: "train", labels: { zone: "eu" } })).toBeUndefined();
  });

  it("does not mistake inherited object keys for labels", () => {
    const { pool } = poolWith({ id: "plain" });
    expect(pool.canRun({ type: "x", labels: { constructor: "x" } })).toBe(false);
    expect(pool.acquire({ type: "x", labels: { toString: "x" } })).toBeUndefined();
  });

  it("says whether any worker in any state can run a job, independent of free slots", () => {
    const { pool } = poolWith(...workers);
    expect(pool.canRun({ type: "train", labels: { gpu: "a100" } })).toBe(true);
    expect(pool.canRun({ type: "train", labels: { gpu: "t4" } })).toBe(false);
    expect(pool.canRun({ type: "lint", labels: { zone: "eu", gpu: "none" } })).toBe(false);
    pool.report("gpu-us", false, "down");
    pool.report("gpu-eu", false, "down");
    expect(pool.canRun({ type: "train", labels: { gpu: "a100" } })).toBe(true);
    expect(pool.acquire({ type: "train", labels: { gpu: "a100" } })).toBeUndefined();
  });

  it("keeps a job shape's index right for workers added and removed after its first use", async () => {
    const { pool } = poolWith({ id: "a", labels: { zone: "eu" } });
    expect(pool.canRun({ type: "t", labels: { zone: "us" } })).toBe(false);
    pool.add({ admission: "trust", id: "b", transport: new FakeTransport(), labels: { zone: "us" } });
    expect(pool.canRun({ type: "t", labels: { zone: "us" } })).toBe(true);
    expect(take(pool, "t", { zone: "us" }).workerId).toBe("b");
    await pool.remove("b");
    expect(pool.canRun({ type: "t", labels: { zone: "us" } })).toBe(false);
  });
});

describe("WorkerPool states, capacity and leases", () => {
  it("moves idle → busy → idle with leases and reports capacity and free slots on each change", () => {
    const { pool } = poolWith({ id: "a", slots: 2 });
    const seen = record(pool);
    const first = take(pool);
    const second = take(pool);
    first.release();
    first.release();
    second.release();
    expect(seen).toEqual([
      ["workerStateChanged", { workerId: "a", from: "idle", to: "busy" }],
      ["capacityChanged", { capacity: 2, free: 1 }],
      ["capacityChanged", { capacity: 2, free: 0 }],
      ["capacityChanged", { capacity: 2, free: 1 }],
      ["workerStateChanged", { workerId: "a", from: "busy", to: "idle" }],
      ["capacityChanged", { capacity: 2, free: 2 }],
    ]);
  });

  it("aborts the signals of an unhealthy worker's leases with worker_lost and leases it no more", () => {
    const { pool } = poolWith({ id: "a", slots: 2 }, { id: "b" });
    const lease = take(pool);
    expect(lease.workerId).toBe("a");
    pool.report("a", false, "3 failed checks");
    expect(lease.signal.aborted).toBe(true);
    const reason = lease.signal.reason as OrchestratorError;
    expect(reason).toBeInstanceOf(OrchestratorError);
    expect(reason.code).toBe("worker_lost");
    expect(cancelReasonOf(reason)).toBe("worker_lost");
    expect(reason.message).toContain("3 failed checks");
    expect(pool.get("a")).toMatchObject({ state: "unhealthy", busySlots: 1 });
    expect(pool.capacity).toBe(1);
    expect(pool.freeSlots).toBe(1);
    expect(take(pool).workerId).toBe("b");
    expect(pool.acquire({ type: "build" })).toBeUndefined();
  });

  it("brings a recovered worker back busy while an old lease is unreleased, then idle", () => {
    const { pool } = poolWith({ id: "a", slots: 2 });
    const seen = record(pool);
    const lease = take(pool);
    pool.report("a", false, "lost");
    pool.report("a", false, "still lost");
    pool.report("a", true);
    expect(pool.get("a")?.state).toBe("busy");
    expect(pool.freeSlots).toBe(1);
    lease.release();
    expect(pool.get("a")?.state).toBe("idle");
    expect(seen.filter(([event]) => event === "workerStateChanged").map(([, change]) => change)).toEqual([
      { workerId: "a", from: "idle", to: "busy" },
      { workerId: "a", from: "busy", to: "unhealthy", reason: "lost" },
      { workerId: "a", from: "unhealthy", to: "busy" },
      { workerId: "a", from: "busy", to: "idle" },
    ]);
  });

  it("ignores reports about unknown workers", () => {
    const { pool } = poolWith({ id: "a" });
    pool.report("nobody", false, "x");
    expect(pool.capacity).toBe(1);
  });

  it("drains a worker: it keeps its leases, gets no new ones, and does not leave", () => {
    const { pool } = poolWith({ id: "a", slots: 2 });
    const lease = take(pool);
    pool.drain("a");
    pool.drain("a");
    expect(pool.get("a")?.state).toBe("draining");
    expect(pool.capacity).toBe(0);
    expect(pool.acquire({ type: "build" })).toBeUndefined();
    expect(lease.signal.aborted).toBe(false);
    lease.release();
    expect(pool.get("a")).toMatchObject({ state: "draining", busySlots: 0 });
    expect(() => pool.drain("zzz")).toThrow(expect.objectContaining({ code: "not_found" }));
  });

  it("undrains a worker: it gets leases again, and a drained removal cannot be undone", () => {
    const { pool } = poolWith({ id: "a", slots: 2 });
    pool.undrain("a"); // not draining: nothing happens
    expect(pool.get("a")?.state).toBe("idle");
    const lease = take(pool);
    pool.drain("a");
    expect(pool.acquire({ type: "build" })).toBeUndefined();
    pool.undrain("a");
    expect(pool.get("a")?.state).toBe("busy");
    expect(pool.capacity).toBe(2);
    expect(pool.acquire({ type: "build" })).toBeDefined();
    lease.release();
    void pool.remove("a", { drain: true });
    expect(() => pool.undrain("a")).toThrow(expect.objectContaining({ code: "precondition_failed" }));
    expect(() => pool.undrain("zzz")).toThrow(expect.objectContaining({ code: "not_found" }));
  });

  it("removes with drain only after the last lease is released, then closes the transport", async () => {
    const { pool, transports } = poolWith({ id: "a", slots: 2 });
    const seen = record(pool);
    const leases = [take(pool), take(pool)];
    let removed = false;
    const removal = pool.remove("a", { drain: true }).then(() => (removed = true));
    expect(pool.get("a")?.state).toBe("draining");
    leases[0]?.release();
    await flush();
    expect(removed).toBe(false);
    leases[1]?.release();
    await removal;
    expect(leases.map((lease) => lease.signal.aborted)).toEqual([false, false]);
    expect(pool.get("a")).toBeUndefined();
    expect(transports.get("a")?.closeCalls).toBe(1);
    expect(seen.at(-1)).toEqual(["workerRemoved", { worker: expect.objectContaining({ id: "a", state: "removed" }) }]);
  });

  it("removes without drain at once, aborting its leases with worker_lost", async () => {
    const { pool, transports } = poolWith({ id: "a" });
    const lease = take(pool);
    await pool.remove("a");
    expect(cancelReasonOf(lease.signal.reason)).toBe("worker_lost");
    expect(pool.size).toBe(0);
    expect(pool.capacity).toBe(0);
    expect(transports.get("a")?.closeCalls).toBe(1);
    lease.release();
    expect(pool.freeSlots).toBe(0);
    await expect(pool.remove("a")).rejects.toMatchObject({ code: "not_found" });
  });

  it("forces a drained removal when its signal fires", async () => {
    const { pool } = poolWith({ id: "a" });
    const lease = take(pool);
    const controller = new AbortController();
    const removal = pool.remove("a", { drain: true, signal: controller.signal });
    expect(lease.signal.aborted).toBe(false);
    controller.abort();
    await removal;
    expect(cancelReasonOf(lease.signal.reason)).toBe("worker_lost");
    expect(pool.get("a")).toBeUndefined();
  });

  it("lets a forced removal finish a pending drained one", async () => {
    const { pool } = poolWith({ id: "a" });
    take(pool);
    const drained = pool.remove("a", { drain: true });
    await pool.remove("a");
    await expect(drained).resolves.toBeUndefined();
  });

  it("rejects bad remove options with invalid_argument naming the field", async () => {
    const { pool } = poolWith({ id: "a" });
    await expect(pool.remove("a", { drain: "yes" as never })).rejects.toThrow("`drain`");
    await expect(pool.remove("a", { signal: {} as never })).rejects.toThrow("`signal`");
    expect(pool.size).toBe(1);
  });

  it("rejects remove with the transport's close error after the worker is gone", async () => {
    const transport = new FakeTransport();
    transport.closeError = new Error("socket stuck");
    const { pool } = poolWith({ id: "a", transport });
    await expect(pool.remove("a")).rejects.toThrow("socket stuck");
    expect(pool.size).toBe(0);
  });
});

describe("WorkerPool.onAvailable", () => {
  it("resolves at once when a matching slot is free", async () => {
    const { pool } = poolWith({ id: "a", labels: { gpu: "a100" } });
    await pool.onAvailable();
    await pool.onAvailable({ type: "t", labels: { gpu: "a100" } });
  });

  it("waits for a matching worker's slot and ignores slots of others", async () => {
    const { pool } = poolWith({ id: "gpu", labels: { gpu: "a100" } }, { id: "cpu" });
    const gpuLease = take(pool, "t", { gpu: "a100" });
    const cpuLease = take(pool);
    let resolved = false;
    const waiting = pool.onAvailable({ type: "t", labels: { gpu: "a100" } }).then(() => (resolved = true));
    cpuLease.release();
    await flush();
    expect(resolved).toBe(false);
    gpuLease.release();
    await waiting;
    expect(take(pool, "t", { gpu: "a100" }).workerId).toBe("gpu");
  });

  it("resolves a wait for any slot when a worker is added or recovers", async () => {
    const { pool } = poolWith({ id: "a" });
    pool.report("a", false, "down");
    const first = pool.onAvailable();
    pool.report("a", true);
    await first;
    take(pool);
    const second = pool.onAvailable({ type: "t" });
    pool.add({ admission: "trust", id: "b", transport: new FakeTransport() });
    await second;
  });

  it("rejects with the signal's reason and stops waiting when the signal fires", async () => {
    const { pool } = poolWith({ id: "a" });
    const lease = take(pool);
    const controller = new AbortController();
    const waiting = pool.onAvailable(undefined, { signal: controller.signal });
    controller.abort(new OrchestratorError("canceled", "caller gave up"));
    await expect(waiting).rejects.toThrow("caller gave up");
    lease.release();
    await expect(pool.onAvailable(undefined, { signal: AbortSignal.abort() })).rejects.toMatchObject({ code: "canceled" });
  });

  it("rejects with deadline_exceeded after timeoutMs", async () => {
    const { pool } = poolWith({ id: "a" });
    take(pool);
    const waiting = pool.onAvailable({ type: "t" }, { timeoutMs: 1000 });
    const outcome = expect(waiting).rejects.toMatchObject({ code: "deadline_exceeded" });
    await vi.advanceTimersByTimeAsync(1000);
    await outcome;
    expect(vi.getTimerCount()).toBe(0);
  });

  it("rejects bad wait options with invalid_argument naming the field", async () => {
    const { pool } = poolWith({ id: "a" });
    await expect(pool.onAvailable(undefined, { timeoutMs: -1 })).rejects.toThrow("`timeoutMs`");
    await expect(pool.onAvailable({ type: "" })).rejects.toThrow("`job.type`");
  });
});

describe("WorkerPool health port", () => {
  it("resolves check() only for a serving worker", async () => {
    const { pool, transports } = poolWith({ id: "a" });
    const signal = new AbortController().signal;
    await pool.check("a", { signal });
    expect(transports.get("a")?.checkSignals).toEqual([signal]);
    transports.get("a")!.health = "not_serving";
    await expect(pool.check("a", { signal })).rejects.toMatchObject({ code: "unavailable", message: expect.stringContaining("not_serving") });
    transports.get("a")!.health = new Error("ECONNREFUSED");
    await expect(pool.check("a", { signal })).rejects.toMatchObject({ code: "unavailable", message: expect.stringContaining("ECONNREFUSED") });
    await expect(pool.check("zzz", { signal })).rejects.toMatchObject({ code: "not_found" });
  });

  it("ends a check the transport never answers when the signal fires", async () => {
    const { pool, transports } = poolWith({ id: "a" });
    transports.get("a")!.health = "hang";
    const controller = new AbortController();
    const checking = pool.check("a", { signal: controller.signal });
    controller.abort(new OrchestratorError("deadline_exceeded", "too slow"));
    await expect(checking).rejects.toMatchObject({ code: "deadline_exceeded" });
  });

  it("lists every worker id, unhealthy and draining ones included", () => {
    const { pool } = poolWith({ id: "a" }, { id: "b" }, { id: "c" });
    pool.report("a", false);
    pool.drain("b");
    expect([...pool.workerIds()]).toEqual(["a", "b", "c"]);
  });

  it("forwards each transport's connection state until the worker is removed or the listener unsubscribes", async () => {
    const { pool, transports } = poolWith({ id: "a" }, { id: "b" });
    const heard: Array<[string, string]> = [];
    const unsubscribe = pool.watch((workerId, state) => heard.push([workerId, state]));
    transports.get("a")!.setState("lost");
    transports.get("b")!.setState("ready");
    await pool.remove("a");
    expect(transports.get("a")?.watchers).toBe(0);
    transports.get("a")!.setState("lost");
    unsubscribe();
    transports.get("b")!.setState("lost");
    expect(heard).toEqual([["a", "lost"], ["b", "ready"]]);
  });
});

describe("WorkerPool listeners and close", () => {
  it("keeps its state and tells the other listeners when a listener throws", () => {
    const { pool } = poolWith({ id: "a" }, { id: "b" });
    const errors: OrchestratorError[] = [];
    const changes: string[] = [];
    pool.on("workerStateChanged", () => {
      throw new Error("listener bug");
    });
    pool.on("workerStateChanged", ({ workerId, to }) => changes.push(`${workerId}:${to}`));
    pool.on("error", ({ error }) => errors.push(error));
    const lease = take(pool);
    take(pool);
    lease.release();
    expect(changes).toEqual(["a:busy", "b:busy", "a:idle"]);
    expect(errors).toHaveLength(3);
    expect(errors[0]).toMatchObject({ code: "internal", cause: new Error("listener bug") });
    expect(pool.freeSlots).toBe(1);
    expect(take(pool).workerId).toBe("a");
  });

  it("keeps once-listeners once and survives a throwing listener without an error listener", () => {
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    const { pool } = poolWith({ id: "a" });
    let calls = 0;
    pool.once("capacityChanged", () => (calls += 1));
    pool.on("capacityChanged", () => {
      throw new Error("boom");
    });
    take(pool).release();
    expect(calls).toBe(1);
    expect(warn).toHaveBeenCalledTimes(1);
    expect(pool.freeSlots).toBe(1);
    warn.mockRestore();
  });

  it("closes every transport, aborts leases, rejects waits and refuses new workers", async () => {
    const { pool, transports } = poolWith({ id: "a" }, { id: "b" });
    const lease = take(pool);
    take(pool);
    const waiting = pool.onAvailable();
    await pool.close();
    await pool.close();
    await expect(waiting).rejects.toMatchObject({ code: "canceled", details: { reason: "shutdown" } });
    expect(cancelReasonOf(lease.signal.reason)).toBe("worker_lost");
    expect([...transports.values()].map((transport) => transport.closeCalls)).toEqual([1, 1]);
    expect(pool.size).toBe(0);
    expect(() => pool.add({ admission: "trust", id: "c", transport: new FakeTransport() })).toThrow(expect.objectContaining({ code: "precondition_failed" }));
    await expect(pool.onAvailable()).rejects.toMatchObject({ code: "canceled" });
  });

  it("closes through await using", async () => {
    const transport = new FakeTransport();
    {
      await using pool = new WorkerPool();
      pool.add({ admission: "trust", id: "a", transport });
    }
    expect(transport.closeCalls).toBe(1);
  });
});

describe("WorkerPool at scale", () => {
  it("leases and releases 10,000 workers in least-recently-leased order", () => {
    const pool = new WorkerPool();
    const count = 10_000;
    for (let i = 0; i < count; i += 1) pool.add({ admission: "trust", id: `w${i}`, transport: new FakeTransport(), labels: { host: `h${i}`, zone: i % 2 ? "odd" : "even" } });
    for (let round = 0; round < 3; round += 1) {
      const leases = Array.from({ length: count }, () => take(pool));
      expect(leases.map((lease) => lease.workerId)).toEqual(Array.from({ length: count }, (_, i) => `w${i}`));
      expect(pool.acquire({ type: "build" })).toBeUndefined();
      expect(pool.freeSlots).toBe(0);
      for (const lease of leases.reverse()) lease.release();
      expect(pool.freeSlots).toBe(count);
    }
    // A label shape and a unique-label shape, each indexed once and then served from its heap.
    const odd = Array.from({ length: count / 2 }, () => take(pool, "build", { zone: "odd" }).workerId);
    expect(new Set(odd).size).toBe(count / 2);
    expect(odd.every((id) => Number(id.slice(1)) % 2 === 1)).toBe(true);
    expect(take(pool, "build", { host: "h9998" }).workerId).toBe("w9998");
  });
});

describe("IndexedHeap", () => {
  it("keeps a min-order under pushes, key changes and deletions", () => {
    const keys = new Map<string, number>();
    const heap = new IndexedHeap<string>((a, b) => (keys.get(a) ?? 0) < (keys.get(b) ?? 0));
    for (const [item, key] of [["a", 5], ["b", 3], ["c", 8], ["d", 1], ["e", 4]] as const) {
      keys.set(item, key);
      heap.push(item);
    }
    expect(heap.peek()).toBe("d");
    keys.set("d", 10);
    heap.update("d");
    expect(heap.delete("e")).toBe(true);
    expect(heap.delete("e")).toBe(false);
    expect(heap.has("e")).toBe(false);
    const out: string[] = [];
    while (heap.size > 0) out.push(heap.pop() as string);
    expect(out).toEqual(["b", "a", "c", "d"]);
    expect(heap.pop()).toBeUndefined();
  });

  it("moves a leased item to the back in O(log n) comparisons for 10,000 items", () => {
    const count = 10_000;
    const order = new Map<number, number>();
    let comparisons = 0;
    const heap = new IndexedHeap<number>((a, b) => {
      comparisons += 1;
      return (order.get(a) as number) < (order.get(b) as number);
    });
    for (let i = 0; i < count; i += 1) {
      order.set(i, i);
      heap.push(i);
    }
    comparisons = 0;
    let clock = count;
    const leased: number[] = [];
    for (let i = 0; i < 3 * count; i += 1) {
      const top = heap.peek() as number;
      leased.push(top);
      order.set(top, (clock += 1));
      heap.update(top);
    }
    expect(leased.slice(0, count)).toEqual(Array.from({ length: count }, (_, i) => i));
    // Each move costs at most 2 comparisons per level: 2 * ceil(log2(10,000)) = 28.
    expect(comparisons / (3 * count)).toBeLessThanOrEqual(2 * Math.ceil(Math.log2(count)));
  });
});

function catchError(run: () => unknown): OrchestratorError {
  try {
    run();
  } catch (error) {
    if (error instanceof OrchestratorError) return error;
    throw error;
  }
  throw new Error("expected a throw");
}
