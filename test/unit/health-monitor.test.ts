import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { OrchestratorError } from "../../src/errors.ts";
import { HealthMonitor, type HealthMonitorOptions } from "../../src/health/health-monitor.ts";
import type { HealthTarget } from "../../src/health/types.ts";
import { cancelReasonOf } from "../../src/signals.ts";
import type { HealthStatus, TransportState } from "../../src/transport/types.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { FakeTransport } from "../helpers/fake-transport.ts";

type Answer = "ok" | "fail" | "hang" | Promise<void>;

/** An object-literal HealthTarget: scripted answers per worker, recorded checks and reports. */
function fakeTarget(...ids: string[]) {
  const answers = new Map<string, Answer>();
  const checks: Array<{ workerId: string; at: number; signal: AbortSignal }> = [];
  const reports: Array<[string, boolean, string | undefined]> = [];
  const watchers = new Set<(workerId: string, state: TransportState) => void>();
  const target: HealthTarget = {
    workerIds: () => ids,
    check(workerId, { signal }) {
      checks.push({ workerId, at: Date.now(), signal });
      const answer = answers.get(workerId) ?? "ok";
      if (answer === "hang") return new Promise(() => {});
      if (answer === "fail") return Promise.reject(new Error(`${workerId} refused`));
      return answer === "ok" ? Promise.resolve() : answer;
    },
    report: (workerId, healthy, reason) => void reports.push([workerId, healthy, reason]),
    watch(listener) {
      watchers.add(listener);
      return () => void watchers.delete(listener);
    },
  };
  return {
    target, ids, answers, checks, reports, watchers,
    checksOf: (workerId: string) => checks.filter((check) => check.workerId === workerId).length,
    setState: (workerId: string, state: TransportState) => watchers.forEach((listener) => listener(workerId, state)),
  };
}

function deferred() {
  let resolve!: () => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

/** Records the monitor's events in order. */
function record(monitor: HealthMonitor) {
  const seen: Array<[string, Record<string, unknown>]> = [];
  monitor.on("checkFailed", (event) => seen.push(["checkFailed", { ...event }]));
  monitor.on("workerUnhealthy", (event) => seen.push(["workerUnhealthy", { ...event }]));
  monitor.on("workerRecovered", (event) => seen.push(["workerRecovered", { ...event }]));
  return seen;
}

const base = { intervalMs: 1000, timeoutMs: 500, jitter: 0, failureThreshold: 3, recoveryThreshold: 2 };
const monitors: HealthMonitor[] = [];
function monitorFor(target: HealthTarget, options: Partial<HealthMonitorOptions> = {}): HealthMonitor {
  const monitor = new HealthMonitor({ ...base, target, ...options });
  monitors.push(monitor);
  return monitor;
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
});
afterEach(async () => {
  await Promise.all(monitors.splice(0).map((monitor) => monitor.close()));
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe("HealthMonitor options", () => {
  it.each([
    [{ intervalMs: 0 }, "Expected `intervalMs` to be a finite number from 1 to 2147483647, got `0` (number)"],
    [{ intervalMs: 2 ** 31 }, "`intervalMs`"],
    [{ timeoutMs: -5 }, "`timeoutMs`"],
    [{ jitter: 1.5 }, "Expected `jitter` to be a finite number from 0 to 1"],
    [{ failureThreshold: 0 }, "`failureThreshold`"],
    [{ recoveryThreshold: 1.5 }, "`recoveryThreshold`"],
    [{ target: undefined }, "`target`"],
    [{ target: { workerIds: () => [], report: () => {} } }, "`target.check`"],
    [{ target: { workerIds: () => [], check: async () => {}, report: () => {}, watch: 1 } }, "`target.watch`"],
  ])("rejects bad options with invalid_argument naming the field (%#)", (options, text) => {
    const construct = () => new HealthMonitor({ target: fakeTarget().target, ...options } as HealthMonitorOptions);
    expect(construct).toThrow(OrchestratorError);
    expect(construct).toThrow(text);
    try {
      construct();
    } catch (error) {
      expect((error as OrchestratorError).code).toBe("invalid_argument");
    }
  });

  it("does no work before start()", async () => {
    const fake = fakeTarget("w1");
    monitorFor(fake.target);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(fake.checks).toEqual([]);
    expect(fake.watchers.size).toBe(0);
  });
});

describe("HealthMonitor thresholds", () => {
  it("reports a worker unhealthy after failureThreshold consecutive failures, announces it once, and repeats the verdict while it fails", async () => {
    const fake = fakeTarget("w1");
    fake.answers.set("w1", "fail");
    const monitor = monitorFor(fake.target);
    const seen = record(monitor);
    monitor.start();
    await vi.advanceTimersByTimeAsync(0);
    await vi.advanceTimersByTimeAsync(1000);
    expect(fake.reports).toEqual([]);
    await vi.advanceTimersByTimeAsync(1000);
    expect(fake.reports).toEqual([["w1", false, "3 consecutive failed health checks, the last: w1 refused"]]);
    await vi.advanceTimersByTimeAsync(1000);
    // The target hears the verdict again (a pool ignores it unless it lost track of the worker);
    // the event announces the change once.
    expect(fake.reports.slice(1)).toEqual([["w1", false, "4 consecutive failed health checks, the last: w1 refused"]]);
    expect(seen.map(([event, payload]) => [event, payload.consecutiveFailures ?? payload.reason])).toEqual([
      ["checkFailed", 1],
      ["checkFailed", 2],
      ["checkFailed", 3],
      ["workerUnhealthy", "3 consecutive failed health checks, the last: w1 refused"],
      ["checkFailed", 4],
    ]);
    const failure = seen[0]?.[1].error as OrchestratorError;
    expect(failure).toBeInstanceOf(OrchestratorError);
    expect(failure.code).toBe("unavailable");
  });

  it("does not evict when a success breaks the run of failures", async () => {
    const fake = fakeTarget("w1");
    fake.answers.set("w1", "fail");
    const monitor = monitorFor(fake.target);
    monitor.start();
    await vi.advanceTimersByTimeAsync(1000);
    fake.answers.set("w1", "ok");
    await vi.advanceTimersByTimeAsync(1000);
    fake.answers.set("w1", "fail");
    await vi.advanceTimersByTimeAsync(2000);
    expect(fake.checksOf("w1")).toBe(5);
    expect(fake.reports).toEqual([]);
  });

  it("reports recovery after recoveryThreshold consecutive successes, restarting the count on a failure", async () => {
    const fake = fakeTarget("w1");
    fake.answers.set("w1", "fail");
    const monitor = monitorFor(fake.target, { failureThreshold: 1 });
    const seen = record(monitor);
    monitor.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(fake.reports).toEqual([["w1", false, expect.stringContaining("1 consecutive failed")]]);
    for (const answer of ["ok", "fail", "ok"] as const) {
      fake.answers.set("w1", answer);
      await vi.advanceTimersByTimeAsync(1000);
    }
    expect(fake.reports.map(([, healthy]) => healthy)).toEqual([false, false]);
    await vi.advanceTimersByTimeAsync(1000);
    expect(fake.reports).toEqual([
      ["w1", false, expect.any(String)],
      ["w1", false, expect.any(String)],
      ["w1", true, undefined],
    ]);
    expect(seen.at(-1)).toEqual(["workerRecovered", { workerId: "w1" }]);
  });
});

describe("HealthMonitor and a connection that vouches for its worker", () => {
  it("makes no check of a worker its connection vouches for, and checks it again once nothing does", async () => {
    const fake = fakeTarget("w1", "w2");
    const vouched = new Map<string, HealthStatus | undefined>([["w1", "serving"]]);
    const target: HealthTarget = { ...fake.target, vouched: (id) => vouched.get(id) };
    const monitor = monitorFor(target);
    monitor.start();
    await vi.advanceTimersByTimeAsync(3000);
    expect([fake.checksOf("w1"), fake.checksOf("w2")]).toEqual([0, 4]);
    // The connection is gone (not yet reported lost): the next tick asks the worker itself.
    vouched.set("w1", undefined);
    await vi.advanceTimersByTimeAsync(1000);
    expect([fake.checksOf("w1"), fake.checksOf("w2")]).toEqual([1, 5]);
    expect(fake.reports).toEqual([]);
  });

  it("counts a vouched not_serving as a failed check and a vouched serving as a passed one", async () => {
    const fake = fakeTarget("w1");
    let vouched: HealthStatus = "not_serving";
    const monitor = monitorFor({ ...fake.target, vouched: () => vouched });
    const seen = record(monitor);
    monitor.start();
    await vi.advanceTimersByTimeAsync(2000);
    expect(fake.reports).toEqual([["w1", false, "3 consecutive failed health checks, the last: worker w1 reports not_serving on its connection"]]);
    vouched = "serving";
    await vi.advanceTimersByTimeAsync(2000);
    expect(fake.reports.at(-1)).toEqual(["w1", true, undefined]);
    expect(seen.map(([event]) => event)).toEqual(["checkFailed", "checkFailed", "checkFailed", "workerUnhealthy", "workerRecovered"]);
    expect(fake.checks).toEqual([]);
  });

  it("reports a vouched worker unhealthy at once when its connection is lost, as before", async () => {
    const fake = fakeTarget("w1");
    const monitor = monitorFor({ ...fake.target, vouched: () => "serving" });
    monitor.start();
    await vi.advanceTimersByTimeAsync(1500);
    fake.setState("w1", "lost");
    expect(fake.reports).toEqual([["w1", false, "connection lost"]]);
  });

  it("checks the worker when vouched() throws, and reports the throw", async () => {
    const fake = fakeTarget("w1");
    const monitor = monitorFor({ ...fake.target, vouched: () => { throw new Error("boom"); } });
    const errors: string[] = [];
    monitor.on("error", ({ error }) => errors.push(error.message));
    monitor.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(fake.checksOf("w1")).toBe(1);
    expect(errors).toEqual(["[internal] target.vouched() threw: boom"]);
  });
});

describe("HealthMonitor timing", () => {
  it("counts a check that never answers as failed at timeoutMs and aborts its signal", async () => {
    const fake = fakeTarget("w1");
    fake.answers.set("w1", "hang");
    const monitor = monitorFor(fake.target, { failureThreshold: 1 });
    const seen = record(monitor);
    monitor.start();
    await vi.advanceTimersByTimeAsync(499);
    expect(seen).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    const signal = fake.checks[0]?.signal as AbortSignal;
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toMatchObject({ code: "deadline_exceeded" });
    expect(seen[0]).toEqual(["checkFailed", { workerId: "w1", consecutiveFailures: 1, error: expect.objectContaining({ code: "deadline_exceeded" }) }]);
    expect(fake.reports).toEqual([["w1", false, expect.stringContaining("timed out after 500 ms")]]);
  });

  it("never runs two checks of one worker at once", async () => {
    const fake = fakeTarget("w1", "w2");
    const slow = deferred();
    fake.answers.set("w1", slow.promise);
    const monitor = monitorFor(fake.target, { timeoutMs: 10_000 });
    monitor.start();
    await vi.advanceTimersByTimeAsync(3000);
    const joined = monitor.checkNow("w1");
    expect(fake.checksOf("w2")).toBe(4);
    expect(fake.checksOf("w1")).toBe(1);
    fake.answers.set("w1", "ok");
    slow.resolve();
    await joined;
    await vi.advanceTimersByTimeAsync(1000);
    expect(fake.checksOf("w1")).toBe(2);
  });

  it("starts each check a random 0..jitter × intervalMs after the tick", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0.5);
    const fake = fakeTarget("w1");
    const monitor = monitorFor(fake.target, { jitter: 0.5 });
    const start = Date.now();
    monitor.start();
    await vi.advanceTimersByTimeAsync(249);
    expect(fake.checks).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1001);
    expect(fake.checks.map((check) => check.at - start)).toEqual([250, 1250]);
  });

  it("spreads the checks of many workers within the jitter window", async () => {
    const ids = Array.from({ length: 40 }, (_, i) => `w${i}`);
    const fake = fakeTarget(...ids);
    const monitor = monitorFor(fake.target, { jitter: 0.2 });
    const start = Date.now();
    monitor.start();
    // Up to the next tick, not onto it: a check whose jitter rounds under 1 ms starts with its tick.
    await vi.advanceTimersByTimeAsync(999);
    const offsets = fake.checks.map((check) => check.at - start);
    expect(offsets).toHaveLength(40);
    expect(Math.min(...offsets)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...offsets)).toBeLessThanOrEqual(200);
    expect(new Set(offsets).size).toBeGreaterThan(1);
  });

  it("unrefs every timer so it never holds the process open", async () => {
    const created: Array<{ hasRef(): boolean }> = [];
    const capture = <F extends (...args: never[]) => unknown>(fn: F) =>
      ((...args: Parameters<F>) => {
        const timer = fn(...args) as { hasRef(): boolean };
        created.push(timer);
        return timer;
      }) as unknown as F;
    const [fakeTimeout, fakeInterval] = [globalThis.setTimeout, globalThis.setInterval];
    vi.spyOn(globalThis, "setTimeout").mockImplementation(capture(fakeTimeout));
    vi.spyOn(globalThis, "setInterval").mockImplementation(capture(fakeInterval));
    const fake = fakeTarget("w1");
    fake.answers.set("w1", "hang");
    const monitor = monitorFor(fake.target, { jitter: 0.3 });
    monitor.start();
    await vi.advanceTimersByTimeAsync(400);
    expect(created.length).toBeGreaterThanOrEqual(3);
    expect(created.every((timer) => !timer.hasRef())).toBe(true);
  });
});

describe("HealthMonitor connection loss and membership", () => {
  it("reports a worker unhealthy at once when its connection is lost, and lets checks bring it back", async () => {
    const fake = fakeTarget("w1");
    const monitor = monitorFor(fake.target);
    const seen = record(monitor);
    monitor.start();
    await vi.advanceTimersByTimeAsync(0);
    fake.setState("w1", "lost");
    expect(fake.reports).toEqual([["w1", false, "connection lost"]]);
    expect(seen).toEqual([["workerUnhealthy", { workerId: "w1", reason: "connection lost" }]]);
    await vi.advanceTimersByTimeAsync(1000);
    fake.setState("w1", "lost");
    fake.setState("w1", "ready");
    await vi.advanceTimersByTimeAsync(1000);
    expect(fake.reports).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1000);
    expect(fake.reports).toEqual([
      ["w1", false, "connection lost"],
      ["w1", true, undefined],
    ]);
  });

  it("does not count a check begun before the loss towards recovery", async () => {
    const fake = fakeTarget("w1");
    const pending = deferred();
    fake.answers.set("w1", pending.promise);
    const monitor = monitorFor(fake.target, { recoveryThreshold: 1 });
    monitor.start();
    await vi.advanceTimersByTimeAsync(0);
    fake.setState("w1", "lost");
    pending.resolve();
    await vi.advanceTimersByTimeAsync(0);
    expect(fake.reports).toEqual([["w1", false, "connection lost"]]);
    fake.answers.set("w1", "ok");
    await vi.advanceTimersByTimeAsync(1000);
    expect(fake.reports.at(-1)).toEqual(["w1", true, undefined]);
  });

  it("picks up workers added between ticks at the next tick and forgets removed ones", async () => {
    const fake = fakeTarget("w1");
    fake.answers.set("w1", "hang");
    const monitor = monitorFor(fake.target, { timeoutMs: 2000, failureThreshold: 1 });
    const seen = record(monitor);
    monitor.start();
    await vi.advanceTimersByTimeAsync(100);
    fake.ids.push("w2");
    fake.ids.splice(0, 1);
    await vi.advanceTimersByTimeAsync(800);
    expect(fake.checksOf("w2")).toBe(0);
    await vi.advanceTimersByTimeAsync(100);
    expect(fake.checksOf("w2")).toBe(1);
    // w1's hanging check was aborted when it was forgotten, and its failure concerns nobody.
    expect(fake.checks[0]?.signal.aborted).toBe(true);
    await vi.advanceTimersByTimeAsync(5000);
    expect(fake.checksOf("w1")).toBe(1);
    expect(seen).toEqual([]);
    expect(fake.reports).toEqual([]);
  });

  it("tracks a worker whose connection is lost before the tick that would pick it up", () => {
    const fake = fakeTarget("w1");
    const monitor = monitorFor(fake.target);
    monitor.start();
    fake.ids.push("w2");
    fake.setState("w2", "lost");
    fake.setState("w9", "lost");
    expect(fake.reports).toEqual([["w2", false, "connection lost"]]);
  });
});

describe("HealthMonitor checkNow, errors and close", () => {
  it("checks at once on checkNow(), before start() too, and rejects unknown workers", async () => {
    const fake = fakeTarget("w1", "w2");
    fake.answers.set("w2", "fail");
    const monitor = monitorFor(fake.target, { failureThreshold: 1 });
    await monitor.checkNow("w2");
    expect(fake.reports).toEqual([["w2", false, expect.any(String)]]);
    await monitor.checkNow();
    expect(fake.checksOf("w1")).toBe(1);
    expect(fake.checksOf("w2")).toBe(2);
    await expect(monitor.checkNow("nobody")).rejects.toMatchObject({ code: "not_found" });
  });

  it("carries on when a listener or the target's report() throws", async () => {
    const fake = fakeTarget("w1");
    const errors: OrchestratorError[] = [];
    fake.target.report = () => {
      throw new Error("report bug");
    };
    fake.answers.set("w1", "fail");
    const monitor = monitorFor(fake.target, { failureThreshold: 1, recoveryThreshold: 1 });
    monitor.on("workerUnhealthy", () => {
      throw new Error("listener bug");
    });
    const seen = record(monitor);
    monitor.on("error", ({ error }) => errors.push(error));
    await monitor.checkNow("w1");
    fake.answers.set("w1", "ok");
    await monitor.checkNow("w1");
    expect(seen.map(([event]) => event)).toEqual(["checkFailed", "workerUnhealthy", "workerRecovered"]);
    expect(errors.map((error) => error.message)).toEqual([
      "[internal] target.report() threw: report bug",
      '[internal] a "workerUnhealthy" listener threw: listener bug',
      "[internal] target.report() threw: report bug",
    ]);
  });

  it("close() stops every timer, aborts checks in flight, ignores their outcome and unsubscribes", async () => {
    const fake = fakeTarget("w1", "w2");
    fake.answers.set("w1", "hang");
    const monitor = monitorFor(fake.target, { failureThreshold: 1, jitter: 0.5 });
    const seen = record(monitor);
    vi.spyOn(Math, "random").mockReturnValueOnce(0).mockReturnValue(0.9);
    monitor.start();
    await vi.advanceTimersByTimeAsync(1);
    expect(fake.checks.map((check) => check.workerId)).toEqual(["w1"]);
    await monitor.close();
    await monitor.close();
    expect(vi.getTimerCount()).toBe(0);
    const signal = fake.checks[0]?.signal as AbortSignal;
    expect(cancelReasonOf(signal.reason)).toBe("shutdown");
    expect(fake.watchers.size).toBe(0);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(fake.checks).toHaveLength(1);
    expect(seen).toEqual([]);
    expect(fake.reports).toEqual([]);
    await expect(monitor.checkNow()).rejects.toMatchObject({ code: "canceled" });
    expect(() => monitor.start()).toThrow(expect.objectContaining({ code: "precondition_failed" }));
  });

  it("closes through await using", async () => {
    const fake = fakeTarget("w1");
    {
      await using monitor = new HealthMonitor({ ...base, target: fake.target });
      monitor.start();
    }
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe("WorkerPool and HealthMonitor together", () => {
  it("aborts a frozen worker's running job with worker_lost, frees no slot elsewhere, and takes it back on recovery", async () => {
    const pool = new WorkerPool();
    const frozen = new FakeTransport();
    const other = new FakeTransport();
    pool.add({ admission: "trust", id: "a", transport: frozen });
    pool.add({ admission: "trust", id: "b", transport: other });
    const lease = pool.acquire({ type: "build" });
    expect(lease?.workerId).toBe("a");
    const running = lease!.transport.execute(
      { jobId: "j1", type: "build", payload: {}, attempt: 1, deadline: Date.now() + 60_000 },
      { signal: lease!.signal, onEvent: () => {} },
    );
    const outcome = expect(running).rejects.toMatchObject({ code: "worker_lost" });
    const monitor = monitorFor(pool, { failureThreshold: 2, timeoutMs: 300 });
    monitor.start();
    // The worker stops answering while its connection stays open.
    frozen.health = "hang";
    await vi.advanceTimersByTimeAsync(300);
    expect(pool.get("a")?.state).toBe("busy");
    await vi.advanceTimersByTimeAsync(1000);
    expect(pool.get("a")?.state).toBe("unhealthy");
    await outcome;
    expect(cancelReasonOf(lease!.signal.reason)).toBe("worker_lost");
    expect(pool.capacity).toBe(1);
    expect(pool.acquire({ type: "build" })?.workerId).toBe("b");
    expect(pool.acquire({ type: "build" })).toBeUndefined();

    frozen.health = "serving";
    await vi.advanceTimersByTimeAsync(2000);
    expect(pool.get("a")?.state).toBe("busy");
    lease!.release();
    expect(pool.acquire({ type: "build" })?.workerId).toBe("a");
    await pool.close();
  });

  it("evicts a worker re-added under the id of one it found unhealthy once the newcomer fails its checks too", async () => {
    const pool = new WorkerPool();
    const first = new FakeTransport();
    first.health = "not_serving";
    pool.add({ admission: "trust", id: "a", transport: first });
    const monitor = monitorFor(pool, { failureThreshold: 2 });
    monitor.start();
    await vi.advanceTimersByTimeAsync(1000);
    expect(pool.get("a")?.state).toBe("unhealthy");

    // Replaced between two ticks: the monitor still tracks the id, the pool has a fresh, healthy worker.
    await pool.remove("a");
    const second = new FakeTransport();
    second.health = "not_serving";
    pool.add({ admission: "trust", id: "a", transport: second });
    expect(pool.get("a")?.state).toBe("idle");
    await vi.advanceTimersByTimeAsync(1000);
    expect(second.checkSignals).toHaveLength(1);
    expect(pool.get("a")?.state).toBe("unhealthy");
    await pool.close();
  });

  it("evicts a worker at once when its transport reports the connection lost", async () => {
    const pool = new WorkerPool();
    const transport = new FakeTransport();
    pool.add({ admission: "trust", id: "a", transport });
    const lease = pool.acquire({ type: "build" });
    const monitor = monitorFor(pool);
    monitor.start();
    transport.setState("lost");
    expect(pool.get("a")?.state).toBe("unhealthy");
    expect(cancelReasonOf(lease?.signal.reason)).toBe("worker_lost");
    await pool.close();
  });
});
